#include "sip_log.h"
#include "sip_conf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "apr_strings.h"
#include "http_protocol.h"
#include <osipparser2/osip_port.h>

static server_rec *trace_server;

static void osip_trace_to_errorlog(const char *fi, int li, osip_trace_level_t level,
                                   const char *chfr, va_list ap)
{
    char buf[1024];
    int aplevel = level <= OSIP_ERROR ? APLOG_INFO : APLOG_TRACE1;

    vsnprintf(buf, sizeof(buf), chfr, ap);
    ap_log_error(APLOG_MARK, aplevel, 0, trace_server, "osip %s:%d: %s", fi, li, buf);
}

void sip_log_init_osip(server_rec *s)
{
    trace_server = s;
    osip_trace_initialize_func(TRACE_LEVEL3, /* fatal, bug, error */ osip_trace_to_errorlog);
}

/* ---- rate-limited lines ---- */

static int rate_burst = SIP_DEFAULT_LOG_RATE_BURST;
static apr_interval_time_t rate_interval = SIP_DEFAULT_LOG_RATE_INTERVAL;

void sip_log_rate_setup(int burst, apr_interval_time_t interval)
{
    rate_burst = burst < 0 ? 0 : burst;
    rate_interval = interval > 0 ? interval : SIP_DEFAULT_LOG_RATE_INTERVAL;
}

static apr_size_t rate_slot_of(const char *source, int kind)
{
    apr_uint32_t h = 2166136261u;   /* FNV-1a */
    const unsigned char *c;

    for (c = (const unsigned char *)source; *c; c++)
        h = (h ^ *c) * 16777619u;
    h = (h ^ (apr_uint32_t)kind) * 16777619u;
    return h % SIP_LOG_RATE_SLOTS;
}

int sip_log_limited_(const char *file, int line, int module_index, sip_log_rate_t *rate,
                     const char *source, int kind, int level, const server_rec *s,
                     const char *fmt, ...)
{
    char msg[2048], note[160] = "";
    sip_log_rate_slot_t *sl;
    apr_time_t now;
    va_list ap;
    unsigned all_cap;

    if (!APLOG_MODULE_IS_LEVEL(s, module_index, level))
        return 0;
    if (!source)
        source = "-";
    if (rate_burst > 0) {
        now = apr_time_now();
        all_cap = 10u * (unsigned)rate_burst;
        sl = &rate->slot[rate_slot_of(source, kind)];
        if (sl->kind != kind || strcmp(sl->source, source) != 0) {
            /* a colliding source takes the slot over; what it held back
             * is reported with the all-sources count */
            rate->held_before += sl->held + sl->held_before;
            memset(sl, 0, sizeof(*sl));
            apr_cpystrn(sl->source, source, sizeof(sl->source));
            sl->kind = kind;
            sl->start = now;
        }
        if (now - sl->start >= rate_interval) {
            sl->held_before += sl->held;
            sl->start = now;
            sl->lines = sl->held = 0;
        }
        if (now - rate->start >= rate_interval) {
            rate->held_before += rate->held;
            rate->start = now;
            rate->lines = rate->held = 0;
        }
        if (sl->lines >= (unsigned)rate_burst) {
            if (sl->held++ == 0)
                ap_log_error_(file, line, module_index, level, 0, s,
                              "sip: %d %s from %s within %d s: logging no more of "
                              "them from there for the rest of that time", rate_burst, rate->what, source,
                              (int)apr_time_sec(rate_interval));
            return 0;
        }
        if (rate->lines >= all_cap) {
            if (rate->held++ == 0)
                ap_log_error_(file, line, module_index, level, 0, s,
                              "sip: %u %s from all sources within %d s: logging no "
                              "more of them for the rest of that time", all_cap, rate->what,
                              (int)apr_time_sec(rate_interval));
            return 0;
        }
        sl->lines++;
        rate->lines++;
        if (sl->held_before || rate->held_before) {
            apr_snprintf(note, sizeof(note), " (earlier ones not logged: %u from %s, %u from "
                         "elsewhere)", sl->held_before, source, rate->held_before);
            sl->held_before = rate->held_before = 0;
        }
    }
    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ap_log_error_(file, line, module_index, level, 0, s, "%s%s", msg, note);
    return 1;
}

/* ---- the access log ---- */

/* Whether a log_transaction hook can use what sip_request_log builds.  A
 * hook of a module we don't know always can.  mod_logio's only resets its
 * per-connection counters, and mod_log_config's writes only where a
 * CustomLog, TransferLog or CookieLog directive stands somewhere in the
 * configuration (a vhost without one inherits the main server's, so any
 * one counts).  Settled once: hooks and configuration don't change in
 * the engine, which a restart re-forks. */
static int log_dir_in(const ap_directive_t *d)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "CustomLog") || !strcasecmp(d->directive, "TransferLog")
            || !strcasecmp(d->directive, "CookieLog"))
            return 1;
        if (d->first_child && log_dir_in(d->first_child))
            return 1;
    }
    return 0;
}

int sip_log_access_wanted(const apr_array_header_t *hooks, const ap_directive_t *conftree)
{
    const ap_LINK_log_transaction_t *h;
    int i, log_config = 0;

    for (i = 0; hooks && i < hooks->nelts; i++) {
        h = &APR_ARRAY_IDX(hooks, i, ap_LINK_log_transaction_t);
        if (h->szName && !strcmp(h->szName, "mod_logio.c"))
            continue;
        if (h->szName && !strcmp(h->szName, "mod_log_config.c"))
            log_config = 1;
        else
            return 1;
    }
    return log_config && log_dir_in(conftree);
}
