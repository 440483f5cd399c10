/* CPL time switches (RFC 3880 §4.4) on libical.
 *
 * A <time> element is an iCalendar recurrence (RFC 5545 §3.3.10, RFC 2445
 * in RFC 3880's words) whose occurrences each last 'duration' (or dtend -
 * dtstart).  libical computes the occurrences from an RRULE string made of
 * the attributes; this file only checks the attributes strictly first (libical
 * accepts "1,,2" as 1,0,2 and aborts on some errors in debug builds), turns
 * wall-clock times into instants, and asks libical for as few occurrences as
 * it can per match.
 *
 * Time scales.  The recurrence runs on the wall clock of one zone (RFC 5545
 * §3.3.10: "the time of day of DTSTART"): the <time-switch>'s tzid, UTC when
 * dtstart ends in 'Z', or the server's local time for floating times (RFC
 * 3880 §4.4.1).  The iterator is given floating times and every occurrence
 * is turned into an instant here (ct_wall_to_instant), with iCalendar's
 * rules (RFC 5545 §3.3.5; RFC 3880 §4.4 defers to iCalendar) for the hour a
 * DST change skips or repeats: a time that does not exist is read with the
 * offset in force before the gap (02:30 on a spring-forward night is 03:30
 * new time), one that exists twice is its first instance.
 *
 * Durations.  dtend - dtstart is an exact length, the same for every
 * occurrence (RFC 5545 §3.8.5.3); a 'duration' in days or weeks is nominal
 * (RFC 5545 §3.3.6: P1D ends at the same wall time the next day, 23 or 25
 * hours across a DST change), its hours, minutes and seconds exact.
 *
 * Overlap.  Occurrences longer than the step between them (RFC 3880 §4.4.1
 * asks scripts not to write those) are not refused: a moment matches when
 * any occurrence covers it, which is what the loop below computes.
 *
 * Cost.  A match never iterates from dtstart: it starts a libical iterator
 * on dtstart moved forward by whole repetitions of the rule (interval
 * years, months, weeks, days, ...; ct_shifted_start) to just before the
 * earliest start whose occurrence could still cover 'now', and stops at the
 * first occurrence that does or the first that starts after 'now'.
 * (libical's own icalrecur_iterator_set_start was tried and skips ahead: a
 * YEARLY;BYHOUR rule set to December resumes on January 1st, an HOURLY one
 * with an interval loses its phase.)  COUNT and UNTIL are taken out of the
 * rule so that the shifted iterator stays valid: UNTIL becomes a bound on
 * the start instant, and COUNT too, after compile counts the occurrences
 * once (at most SIP_CPL_TIME_MAX_COUNT of them; a larger count is refused
 * unless libical's calendar ends first).  Compile refuses rules with more
 * than a few thousand occurrences per period, so each match takes at
 * most SIP_CPL_TIME_MAX_STEPS occurrences from libical. */
#include "sip_cpl_time.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apr_lib.h"
#include "apr_strings.h"

#include <libical/ical.h>

/* Occurrences counted at compile to turn COUNT into a last start: about
 * 2 us each with libical 3.0, so a refused count costs some 40 ms once. */
#define SIP_CPL_TIME_MAX_COUNT 20000
/* Occurrences looked at per match: positioning makes it 1 or 2 for sane
 * rules; a SECONDLY rule near a DST change needs up to ~3 h of them. */
#define SIP_CPL_TIME_MAX_STEPS 20000
/* A DST change moves the wall clock by 2 h at most (1 h nearly everywhere). */
#define SIP_CPL_TIME_DST_SLACK (3 * 3600)
#define SIP_CPL_TIME_DAY 86400

typedef enum { SCALE_FLOATING, SCALE_UTC, SCALE_ZONE } time_scale_t;

struct sip_cpl_time {
    time_scale_t scale;             /* the wall clock the recurrence runs on */
    icaltimezone *zone;             /* SCALE_ZONE: libical's built-in zone */
    struct icaltimetype dtstart;    /* floating: wall-clock fields only */
    apr_int64_t dtstart_w;          /* the same as seconds (wall clock) */
    apr_int64_t dtstart_i;          /* its instant (Unix seconds) */
    apr_int64_t exact;              /* exact part of each occurrence's length */
    int nominal_days;               /* days (weeks * 7) added on the wall clock */
    apr_int64_t reach;              /* longest possible occurrence, seconds */
    int recurs;
    struct icalrecurrencetype rule; /* without COUNT and UNTIL */
    int bounded;
    apr_int64_t last_i;             /* bounded: no occurrence starts later */
    apr_int64_t period;             /* sub-daily, daily, weekly: interval in seconds */
    int interval;
};

/* ------------------------------------------------------------------ */
/* time scales                                                          */

static apr_int64_t ct_wall_secs(struct icaltimetype tt)
{
    tt.zone = NULL;
    return (apr_int64_t)icaltime_as_timet(tt);    /* fields read as UTC */
}

static struct icaltimetype ct_wall_from_secs(apr_int64_t w)
{
    struct icaltimetype tt = icaltime_from_timet_with_zone((time_t)w, 0, NULL);
    tt.zone = NULL;
    tt.is_daylight = 0;
    return tt;
}

/* Seconds east of UTC of the time scale at an instant. */
static long ct_scale_offset(const sip_cpl_time_t *t, apr_int64_t instant)
{
    if (t->scale == SCALE_UTC)
        return 0;
    if (t->scale == SCALE_ZONE) {
        struct icaltimetype u = ct_wall_from_secs(instant);
        return icaltimezone_get_utc_offset_of_utc_time(t->zone, &u, NULL);
    }
    time_t tt = (time_t)instant;
    struct tm tm;
    if (!localtime_r(&tt, &tm))
        return 0;
    return tm.tm_gmtoff;
}

static apr_int64_t ct_instant_to_wall(const sip_cpl_time_t *t, apr_int64_t instant)
{
    return instant + ct_scale_offset(t, instant);
}

/* RFC 5545 §3.3.5: a wall time that exists twice is its first instant, one
 * in a gap uses the offset before the gap (*exact = 0 then).  One zone
 * changes its offset at most once within a day of any moment. */
static apr_int64_t ct_wall_to_instant(const sip_cpl_time_t *t, apr_int64_t w, int *exact)
{
    long before = ct_scale_offset(t, w - SIP_CPL_TIME_DAY);
    long after = ct_scale_offset(t, w + SIP_CPL_TIME_DAY);
    apr_int64_t ta = w - before, tb = w - after;
    int va = ct_scale_offset(t, ta) == before, vb = ct_scale_offset(t, tb) == after;

    if (exact)
        *exact = va || vb;
    if (va && vb)
        return ta < tb ? ta : tb;
    if (vb)
        return tb;
    return ta;
}

/* End of the occurrence starting at wall time 'w', instant 's'. */
static apr_int64_t ct_occurrence_end(const sip_cpl_time_t *t, apr_int64_t w, apr_int64_t s)
{
    if (!t->nominal_days)
        return s + t->exact;
    return ct_wall_to_instant(t, w + (apr_int64_t)t->nominal_days * SIP_CPL_TIME_DAY, NULL)
           + t->exact;
}

/* ------------------------------------------------------------------ */
/* attribute syntax (strict: the iCalendar grammar, RFC 5545 §3.3)      */

static int ct_digits(const char *s, apr_size_t n)
{
    for (apr_size_t i = 0; i < n; i++)
        if (!apr_isdigit(s[i]))
            return 0;
    return 1;
}

static int ct_num(const char *s, apr_size_t n)
{
    int v = 0;
    for (apr_size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* DATE-TIME "YYYYMMDDTHHMMSS" with an optional 'Z' (or, with 'date_ok', a
 * DATE, read as its last second).  Years 1970-2500: what time_t arithmetic
 * and libical's calendar both cover. */
static int ct_parse_datetime(const char *s, struct icaltimetype *tt, int *utc, int date_ok)
{
    apr_size_t n = strlen(s);
    int is_date = date_ok && n == 8;

    *utc = 0;
    if (!is_date) {
        if (n == 16 && s[15] == 'Z')
            *utc = 1;
        else if (n != 15)
            return 0;
        if (s[8] != 'T' || !ct_digits(s + 9, 6))
            return 0;
    }
    if (!ct_digits(s, 8))
        return 0;
    int y = ct_num(s, 4), mo = ct_num(s + 4, 2), d = ct_num(s + 6, 2);
    int h = is_date ? 23 : ct_num(s + 9, 2), mi = is_date ? 59 : ct_num(s + 11, 2);
    int sec = is_date ? 59 : ct_num(s + 13, 2);
    if (y < 1970 || y > 2500 || mo < 1 || mo > 12 || d < 1 || d > icaltime_days_in_month(mo, y)
        || h > 23 || mi > 59 || sec > 59)
        return 0;
    if (is_date) {
        *tt = icaltime_null_time();
        tt->year = y, tt->month = mo, tt->day = d, tt->hour = h, tt->minute = mi,
        tt->second = sec;
        return 1;
    }
    *tt = icaltime_from_string(s);
    if (icaltime_is_null_time(*tt))
        return 0;
    tt->zone = NULL;
    tt->is_daylight = 0;
    return 1;
}

/* RFC 5545 §3.3.6 dur-value, positive only: [+]P then nW alone, or nD
 * and/or T with nH, nM, nS (each unit once, in that order). */
static int ct_duration_syntax(const char *s)
{
    if (*s == '+')
        s++;
    if (*s++ != 'P' || !*s)
        return 0;
    const char *units = "WDTHMS";
    int in_time = 0, parts = 0, weeks = 0;
    while (*s) {
        if (*s == 'T') {
            if (in_time || !s[1] || !strchr(units, 'T'))
                return 0;
            in_time = 1;
            units = strchr(units, 'T') + 1;
            s++;
            continue;
        }
        apr_size_t n = 0;
        while (apr_isdigit(s[n]))
            n++;
        if (!n || n > 6 || !s[n] || s[n] == 'T' || !strchr(units, s[n]))
            return 0;
        char u = s[n];
        if (in_time != (u == 'H' || u == 'M' || u == 'S'))
            return 0;
        weeks |= u == 'W';
        parts++;
        units = strchr(units, u) + 1;
        s += n + 1;
    }
    return parts && !(weeks && parts > 1) && !(in_time && s[-1] == 'T');
}

/* A comma list of integers within [lo, hi] (0 never when 'signed_ok':
 * -n counts from the end), at most 'max' of them. */
static int ct_int_list(const char *v, int lo, int hi, int signed_ok, int max)
{
    int items = 0;
    const char *s = v;
    if (!*s)
        return 0;
    for (;;) {
        int neg = 0;
        if (signed_ok && (*s == '+' || *s == '-'))
            neg = *s++ == '-';
        apr_size_t n = 0;
        while (apr_isdigit(s[n]))
            n++;
        if (!n || n > 3)
            return 0;
        int x = ct_num(s, n);
        if (x < lo || x > hi || (signed_ok && x == 0) || (neg && !signed_ok))
            return 0;
        if (++items > max)
            return 0;
        s += n;
        if (!*s)
            return 1;
        if (*s++ != ',')
            return 0;
    }
}

static int ct_weekday(const char *s)
{
    static const char *const days[] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};
    for (int i = 0; i < 7; i++)
        if (apr_toupper(s[0]) == days[i][0] && apr_toupper(s[1]) == days[i][1])
            return 1;
    return 0;
}

/* byday: [+|-][n]DD with n in 1-53, comma separated. */
static int ct_byday_list(const char *v)
{
    const char *s = v;
    int items = 0;
    if (!*s)
        return 0;
    for (;;) {
        int sign = *s == '+' || *s == '-';
        s += sign;
        apr_size_t n = 0;
        while (apr_isdigit(s[n]))
            n++;
        if (n > 2 || (n && (ct_num(s, n) < 1 || ct_num(s, n) > 53)) || (sign && !n))
            return 0;
        s += n;
        if (!s[0] || !s[1] || !ct_weekday(s))
            return 0;
        s += 2;
        if (++items > ICAL_BY_DAY_SIZE - 1)
            return 0;
        if (!*s)
            return 1;
        if (*s++ != ',')
            return 0;
    }
}

static const char *ct_upper(apr_pool_t *p, const char *s)
{
    char *c = apr_pstrdup(p, s);
    for (char *q = c; *q; q++)
        *q = (char)apr_toupper(*q);
    return c;
}

static int ct_positive(const char *s, long max, long *out)
{
    apr_size_t n = strlen(s);
    if (!n || n > 10 || !ct_digits(s, n))
        return 0;
    long v = strtol(s, NULL, 10);
    if (v < 1 || v > max)
        return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------ */
/* compile                                                              */

static apr_status_t ct_time_cleanup(void *data)
{
    sip_cpl_time_t *t = data;
    free(t->rule.rscale);       /* libical's strdup; NULL without RSCALE */
    t->rule.rscale = NULL;
    return APR_SUCCESS;
}

static const struct {
    const char *name, *rrule;
    int lo, hi, signed_ok, max;
} ct_time_lists[] = {
    {"bysecond", "BYSECOND", 0, 59, 0, ICAL_BY_SECOND_SIZE - 1},
    {"byminute", "BYMINUTE", 0, 59, 0, ICAL_BY_MINUTE_SIZE - 1},
    {"byhour", "BYHOUR", 0, 23, 0, ICAL_BY_HOUR_SIZE - 1},
    {"bymonthday", "BYMONTHDAY", 1, 31, 1, ICAL_BY_MONTHDAY_SIZE - 1},
    {"byyearday", "BYYEARDAY", 1, 366, 1, ICAL_BY_YEARDAY_SIZE - 1},
    {"byweekno", "BYWEEKNO", 1, 53, 1, ICAL_BY_WEEKNO_SIZE - 1},
    {"bymonth", "BYMONTH", 1, 12, 0, ICAL_BY_MONTH_SIZE - 1},
    {"bysetpos", "BYSETPOS", 1, 366, 1, ICAL_BY_SETPOS_SIZE - 1},
};

static const char *const ct_time_freqs[] = {
    "secondly", "minutely", "hourly", "daily", "weekly", "monthly", "yearly", NULL
};

#define TIME_NATTRS 17
static const char *const ct_time_attr_names[TIME_NATTRS] = {
    "dtstart", "dtend", "duration", "freq", "interval", "until", "count", "bysecond",
    "byminute", "byhour", "byday", "bymonthday", "byyearday", "byweekno", "bymonth",
    "wkst", "bysetpos"
};

static int ct_attr_index(const char *name)
{
    for (int i = 0; i < TIME_NATTRS; i++)
        if (!strcmp(name, ct_time_attr_names[i]))
            return i;
    return -1;
}

static sip_cpl_time_t *ct_refuse(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return NULL;
}

sip_cpl_time_t *sip_cpl_time_compile(apr_pool_t *p, const char *tzid, const char *tzurl,
                                     const char *const *attrs, const char **why)
{
    const char *v[TIME_NATTRS] = {0};
    enum { DTSTART, DTEND, DURATION, FREQ, INTERVAL, UNTIL, COUNT, BYSECOND, BYMINUTE,
           BYHOUR, BYDAY, BYMONTHDAY, BYYEARDAY, BYWEEKNO, BYMONTH, WKST, BYSETPOS };
    sip_cpl_time_t *t = apr_pcalloc(p, sizeof(*t));
    int utc;
    (void)tzurl;                /* RFC 3880 §4.4: never fetched; tzid names the zone */

    /* Out of the box libical may be built to abort() on bad data. */
    icalerror_set_errors_are_fatal(0);

    for (const char *const *a = attrs; a && a[0]; a += 2) {
        int i = ct_attr_index(a[0]);
        if (i < 0)
            return ct_refuse(why, "unknown <time> attribute");
        if (!a[1])
            return ct_refuse(why, "attribute without a value");
        if (v[i])
            return ct_refuse(why, "repeated <time> attribute");
        v[i] = a[1];
    }
    if (!v[DTSTART])
        return ct_refuse(why, "dtstart missing");
    if (v[DTEND] && v[DURATION])
        return ct_refuse(why, "both dtend and duration");
    if (!v[DTEND] && !v[DURATION])
        return ct_refuse(why, "dtend or duration missing");

    if (tzid) {
        apr_size_t n = strlen(tzid);
        if (!n || n > 64 || strstr(tzid, "..") || strspn(tzid,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") != n)
            return ct_refuse(why, "unknown tzid");
        t->zone = icaltimezone_get_builtin_timezone(tzid);
        if (!t->zone)
            return ct_refuse(why, "unknown tzid");
    }

    if (!ct_parse_datetime(v[DTSTART], &t->dtstart, &utc, 0))
        return ct_refuse(why, "bad dtstart (YYYYMMDDTHHMMSS[Z])");
    t->scale = utc ? SCALE_UTC : t->zone ? SCALE_ZONE : SCALE_FLOATING;
    t->dtstart_w = ct_wall_secs(t->dtstart);
    t->dtstart_i = ct_wall_to_instant(t, t->dtstart_w, NULL);

    if (v[DTEND]) {
        struct icaltimetype e;
        if (!ct_parse_datetime(v[DTEND], &e, &utc, 0))
            return ct_refuse(why, "bad dtend (YYYYMMDDTHHMMSS[Z])");
        /* dtend in UTC, or on dtstart's clock (RFC 5545 §3.3.5) */
        sip_cpl_time_t tmp = *t;
        tmp.scale = utc ? SCALE_UTC : t->scale;
        apr_int64_t end = ct_wall_to_instant(&tmp, ct_wall_secs(e), NULL);
        if (end <= t->dtstart_i)
            return ct_refuse(why, "dtend not after dtstart");
        t->exact = end - t->dtstart_i;
    }
    else {
        if (!ct_duration_syntax(v[DURATION]))
            return ct_refuse(why, "bad duration (e.g. PT8H, P1D, P1W)");
        icalerror_clear_errno();
        struct icaldurationtype d = icaldurationtype_from_string(v[DURATION]);
        if (icaldurationtype_is_bad_duration(d) || d.is_neg || icalerrno != ICAL_NO_ERROR)
            return ct_refuse(why, "bad duration (e.g. PT8H, P1D, P1W)");
        t->nominal_days = (int)(d.weeks * 7 + d.days);
        t->exact = (apr_int64_t)d.hours * 3600 + (apr_int64_t)d.minutes * 60 + d.seconds;
        if (!t->nominal_days && !t->exact)
            return ct_refuse(why, "duration is zero");
        if (t->nominal_days > 3660 || t->exact > (apr_int64_t)3660 * SIP_CPL_TIME_DAY)
            return ct_refuse(why, "duration longer than ten years");
    }
    t->reach = t->exact + (apr_int64_t)t->nominal_days * SIP_CPL_TIME_DAY
               + (t->nominal_days ? SIP_CPL_TIME_DST_SLACK : 0);

    /* Without freq the others "are not meaningful" (RFC 3880 Appendix C's
     * TimeType): one period, whatever they say (a schema may even have
     * filled in interval="1"). */
    if (!v[FREQ])
        return t;

    /* The RRULE (RFC 5545 §3.3.10), its parts checked here first. */
    int f;
    for (f = 0; ct_time_freqs[f] && strcasecmp(v[FREQ], ct_time_freqs[f]); f++)
        ;
    if (!ct_time_freqs[f])
        return ct_refuse(why, "bad freq");
    const char *rrule = apr_pstrcat(p, "FREQ=", ct_upper(p, v[FREQ]), NULL);
    long interval = 1;
    if (v[INTERVAL] && !ct_positive(v[INTERVAL], SHRT_MAX, &interval))
        return ct_refuse(why, "bad interval (1-32767)");
    rrule = apr_psprintf(p, "%s;INTERVAL=%ld", rrule, interval);
    for (apr_size_t i = 0; i < sizeof(ct_time_lists) / sizeof(ct_time_lists[0]); i++) {
        const char *val = v[ct_attr_index(ct_time_lists[i].name)];
        if (!val)
            continue;
        if (!ct_int_list(val, ct_time_lists[i].lo, ct_time_lists[i].hi, ct_time_lists[i].signed_ok,
                      ct_time_lists[i].max))
            return ct_refuse(why, apr_psprintf(p, "bad %s list", ct_time_lists[i].name));
        rrule = apr_pstrcat(p, rrule, ";", ct_time_lists[i].rrule, "=", val, NULL);
    }
    if (v[BYDAY]) {
        if (!ct_byday_list(v[BYDAY]))
            return ct_refuse(why, "bad byday list (e.g. MO,TU or -1FR)");
        rrule = apr_pstrcat(p, rrule, ";BYDAY=", ct_upper(p, v[BYDAY]), NULL);
    }
    if (v[WKST]) {
        if (strlen(v[WKST]) != 2 || !ct_weekday(v[WKST]))
            return ct_refuse(why, "bad wkst");
        rrule = apr_pstrcat(p, rrule, ";WKST=", ct_upper(p, v[WKST]), NULL);
    }
    if (v[COUNT] && v[UNTIL])
        return ct_refuse(why, "both count and until");

    icalerror_clear_errno();
    t->rule = icalrecurrencetype_from_string(rrule);
    apr_pool_cleanup_register(p, t, ct_time_cleanup, apr_pool_cleanup_null);
    if (icalerrno != ICAL_NO_ERROR || t->rule.freq == ICAL_NO_RECURRENCE)
        return ct_refuse(why, "bad recurrence");
    /* libical refuses BY* parts the frequency does not allow (RFC 5545
     * §3.3.10's table: byweekno only yearly, bymonthday not weekly, ...) */
    icalrecur_iterator *it = icalrecur_iterator_new(t->rule, t->dtstart);
    if (!it) {
        icalerror_clear_errno();
        return ct_refuse(why, "by-parts not allowed with this freq (RFC 5545 3.3.10)");
    }
    t->recurs = 1;
    /* Below daily, libical restarts a filtered rule (MINUTELY;BYHOUR=9) on
     * dtstart's minute at each new hour instead of keeping dtstart + k *
     * interval (RFC 5545 §3.3.10), so its answer would depend on where it
     * started: such rules are refused rather than matched wrongly. */
    if (t->rule.freq < ICAL_DAILY_RECURRENCE) {
        for (int i = BYSECOND; i < TIME_NATTRS; i++)
            if (v[i] && i != WKST) {
                icalrecur_iterator_free(it);
                return ct_refuse(why, "by-parts need freq daily or longer");
            }
    }
    static const long unit[] = {1, 60, 3600, SIP_CPL_TIME_DAY, 7 * SIP_CPL_TIME_DAY};
    t->interval = (int)interval;
    if (t->rule.freq <= ICAL_WEEKLY_RECURRENCE)
        t->period = interval * unit[t->rule.freq];

    /* A match may walk through one period's occurrences: refuse rules with
     * so many that it would take long (FREQ=YEARLY with every minute). */
    apr_int64_t span = 3 * (t->period ? t->period : (t->rule.freq == ICAL_MONTHLY_RECURRENCE
                                                   ? 31 : 366) * SIP_CPL_TIME_DAY * interval);
    int dense = 0;
    struct icaltimetype occ;
    while (!icaltime_is_null_time(occ = icalrecur_iterator_next(it))
           && ct_wall_secs(occ) < t->dtstart_w + span)
        if (++dense > SIP_CPL_TIME_MAX_STEPS / 4) {
            icalrecur_iterator_free(it);
            return ct_refuse(why, "too many occurrences per freq period");
        }
    icalrecur_iterator_free(it);
    it = icalrecur_iterator_new(t->rule, t->dtstart);
    if (!it)
        return ct_refuse(why, "bad recurrence");

    if (v[UNTIL]) {
        struct icaltimetype u;
        if (!ct_parse_datetime(v[UNTIL], &u, &utc, 1)) {
            icalrecur_iterator_free(it);
            return ct_refuse(why, "bad until (YYYYMMDD[THHMMSS[Z]])");
        }
        sip_cpl_time_t tmp = *t;
        tmp.scale = utc ? SCALE_UTC : t->scale;
        t->last_i = ct_wall_to_instant(&tmp, ct_wall_secs(u), NULL);
        t->bounded = 1;
        if (t->last_i < t->dtstart_i) {
            icalrecur_iterator_free(it);
            return ct_refuse(why, "until before dtstart");
        }
    }
    else if (v[COUNT]) {
        long count, seen = 0;
        struct icaltimetype occ = icaltime_null_time(), last = occ;
        if (!ct_positive(v[COUNT], LONG_MAX, &count)) {
            icalrecur_iterator_free(it);
            return ct_refuse(why, "bad count");
        }
        while (seen < count && seen < SIP_CPL_TIME_MAX_COUNT
               && !icaltime_is_null_time(occ = icalrecur_iterator_next(it)))
            seen++, last = occ;
        if (seen == count) {
            t->bounded = 1;
            t->last_i = ct_wall_to_instant(t, ct_wall_secs(last), NULL);
        }
        else if (!icaltime_is_null_time(occ)) {
            icalrecur_iterator_free(it);
            return ct_refuse(why, "count too large for the frequency");
        }
        /* else libical's calendar ended first: nothing to bound */
    }
    icalrecur_iterator_free(it);
    return t;
}

/* ------------------------------------------------------------------ */
/* match                                                                */

/* dtstart moved forward by whole repetitions of the rule (interval years,
 * months, or 'period' seconds) to the last one at or before wall time 'w'.
 * The rule from there on is the rule from dtstart: the period's phase and
 * the fields that dtstart gives when no by-part does (month, day, weekday,
 * time of day) are the same; a month or year where dtstart's day does not
 * exist (the 31st, February 29th) is stepped over. */
static struct icaltimetype ct_shifted_start(const sip_cpl_time_t *t, apr_int64_t w)
{
    struct icaltimetype d = t->dtstart, x = ct_wall_from_secs(w), c;
    long k;

    if (w <= t->dtstart_w)
        return d;
    if (t->period)
        return ct_wall_from_secs(t->dtstart_w + (w - t->dtstart_w) / t->period * t->period);
    c = d;
    if (t->rule.freq == ICAL_MONTHLY_RECURRENCE) {
        k = ((long)(x.year - d.year) * 12 + x.month - d.month) / t->interval;
        for (int tries = 0; k >= 0 && tries < 48; k--, tries++) {
            long m = d.month - 1 + k * t->interval;
            c.year = d.year + (int)(m / 12);
            c.month = (int)(m % 12) + 1;
            if (c.day <= icaltime_days_in_month(c.month, c.year) && ct_wall_secs(c) <= w)
                return c;
        }
    }
    else {
        k = (long)(x.year - d.year) / t->interval;
        for (int tries = 0; k >= 0 && tries < 48; k--, tries++) {
            c.year = d.year + (int)(k * t->interval);
            if (c.day <= icaltime_days_in_month(c.month, c.year) && ct_wall_secs(c) <= w)
                return c;
        }
    }
    return d;
}

int sip_cpl_time_match(const sip_cpl_time_t *t, apr_time_t now)
{
    /* whole seconds, rounded down: start <= now < end holds for the
     * microseconds exactly when it holds for these */
    apr_int64_t n = now / APR_USEC_PER_SEC - (now % APR_USEC_PER_SEC < 0);
    int hit = 0, exact;

    if (n < t->dtstart_i)
        return 0;
    if (!t->recurs)
        return n < ct_occurrence_end(t, t->dtstart_w, t->dtstart_i);
    if (t->bounded && n - t->reach > t->last_i)
        return 0;

    /* The earliest wall time an occurrence covering 'now' can start at:
     * its nominal days end on the wall clock, its exact part in real time.
     * Near a DST change wall times and instants part, so start earlier. */
    apr_int64_t w = ct_instant_to_wall(t, n - t->exact)
                    - (apr_int64_t)t->nominal_days * SIP_CPL_TIME_DAY;
    if (ct_scale_offset(t, n - t->reach - SIP_CPL_TIME_DST_SLACK) != ct_scale_offset(t, n))
        w -= SIP_CPL_TIME_DST_SLACK;
    if (w < t->dtstart_w)
        w = t->dtstart_w;
    icalrecur_iterator *it = icalrecur_iterator_new(t->rule, ct_shifted_start(t, w));
    if (!it)
        return 0;
    for (int steps = 0; steps < SIP_CPL_TIME_MAX_STEPS; steps++) {
        struct icaltimetype occ = icalrecur_iterator_next(it);
        if (icaltime_is_null_time(occ))
            break;
        apr_int64_t w = ct_wall_secs(occ);
        apr_int64_t s = ct_wall_to_instant(t, w, &exact);
        /* Past the bound or past now: done, except after a time in a DST
         * gap, whose instant is later than the next real wall times'. */
        if ((t->bounded && s > t->last_i) || s > n) {
            if (exact)
                break;
            continue;
        }
        if (n < ct_occurrence_end(t, w, s)) {
            hit = 1;
            break;
        }
    }
    icalrecur_iterator_free(it);
    return hit;
}
