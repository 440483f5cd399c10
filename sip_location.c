#include "sip_location.h"
#include "sip_location_dbd.h"
#include "sip_script_store.h"
#include "sip_log.h"
#include "sip_stats.h"
#include "sip_message.h"
#include "sip_transport.h"
#include "sip_handover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include "apr_hash.h"
#include "apr_strings.h"
#include "apr_lib.h"


/* A binding as the memory store keeps it: malloc'd, found through one
 * hash over every binding ("aor \2 uri key" -> stored_t), so adding,
 * refreshing or removing a binding costs the same however many its AoR
 * has (no comparison with each of them). */
typedef struct stored {
    sip_binding_t b;
    char *hkey;
    int idx;                    /* position in its aor_entry */
} stored_t;

typedef struct aor_entry {
    char *aor;
    stored_t **b;
    int n, cap;
    struct aor_entry *older, *newer;    /* in the list of empty entries */
    int listed;
} aor_entry_t;

static apr_hash_t *aors;        /* aor -> aor_entry_t (malloc'd, lives forever) */
static apr_hash_t *index_;      /* hkey -> stored_t */
static apr_pool_t *loc_pool, *scratch;
static sip_loop_t *loc_loop;
static int journal = -1;
static apr_size_t journal_lines, live;
static apr_size_t compact_lines = 10000;    /* SipLocationCompact */
/* With several engines: the journal's size and lines when engine 0 last
 * read or rewrote it, to estimate its lines from its size. */
static apr_off_t shared_base_bytes;
static apr_size_t shared_base_lines;
static sip_timer_t sweep_timer;
static apr_size_t max_bindings = SIP_DEFAULT_MAX_BINDINGS;
static apr_interval_time_t max_lifetime = apr_time_from_sec(SIP_DEFAULT_MAX_EXPIRES);

const char *sip_location_set_compact(const char *arg)
{
    char *end;
    long n = strtol(arg, &end, 10);

    if (*end || n < 10 || n > 100000000L)
        return "SipLocationCompact must be a number of lines from 10 to 100000000";
    compact_lines = (apr_size_t)n;
    return NULL;
}

void sip_location_compact_reset(void)
{
    compact_lines = 10000;
}

void sip_location_configure(apr_size_t bindings, long lifetime_sec)
{
    max_bindings = bindings;
    max_lifetime = apr_time_from_sec(lifetime_sec);
}

apr_size_t sip_location_count(void)
{
    return live;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void binding_strings_free(sip_binding_t *b)
{
    free((char *)b->aor);
    free((char *)b->contact);
    free((char *)b->params);
    free((char *)b->call_id);
    free((char *)b->path);
    free((char *)b->display);
    free((char *)b->key);
    free((char *)b->received);
    free((char *)b->instance);
}

/* AoRs without a binding are kept, so that they get 480 rather than 404;
 * the list (oldest first) lets the oldest be forgotten when there are more
 * than SipMaxBindings of them, so that registering and removing ever new
 * AoRs cannot grow the table without bound. */
static aor_entry_t *empty_oldest, *empty_newest;
static apr_size_t nempty;

static void empty_add(aor_entry_t *e)
{
    if (e->listed)
        return;
    e->listed = 1;
    e->newer = NULL;
    e->older = empty_newest;
    if (empty_newest)
        empty_newest->newer = e;
    else
        empty_oldest = e;
    empty_newest = e;
    nempty++;
}

static void empty_del(aor_entry_t *e)
{
    if (!e->listed)
        return;
    if (e->older)
        e->older->newer = e->newer;
    else
        empty_oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        empty_newest = e->older;
    e->listed = 0;
    nempty--;
}

/* Not while iterating over 'aors'. */
static void forget_excess_empty(void)
{
    while (max_bindings && nempty > max_bindings) {
        aor_entry_t *e = empty_oldest;
        empty_del(e);
        apr_hash_set(aors, e->aor, APR_HASH_KEY_STRING, NULL);
        free(e->b);
        free(e->aor);
        free(e);
    }
}

static aor_entry_t *entry_for(const char *aor, int create)
{
    aor_entry_t *e = apr_hash_get(aors, aor, APR_HASH_KEY_STRING);

    if (!e && create) {
        e = calloc(1, sizeof(*e));
        e->aor = strdup(aor);
        apr_hash_set(aors, e->aor, APR_HASH_KEY_STRING, e);
        empty_add(e);
    }
    return e;
}

/* The key a contact is stored under: its sip_uri_key, or the text itself
 * for one that does not parse (found again only by the same spelling). */
static const char *contact_key(apr_pool_t *p, const char *contact)
{
    const char *k = sip_uri_key(p, contact);
    return k ? k : apr_pstrcat(p, "!", contact, NULL);
}

const char *sip_binding_identity(apr_pool_t *p, const sip_binding_t *b)
{
    /* \1 cannot start a URI key: the two kinds never meet */
    if (b->instance && *b->instance)
        return apr_psprintf(p, "\1%s\1%d", b->instance, b->reg_id);
    return b->key ? b->key : contact_key(p, b->contact);
}

static stored_t *find(const char *aor, const char *key, apr_pool_t *p)
{
    return apr_hash_get(index_, apr_pstrcat(p, aor, "\2", key, NULL), APR_HASH_KEY_STRING);
}

/* ---- journal ----
 *
 * One line per change, fields separated by TAB:
 *   V 2                                      format version (first line)
 *   B aor contact params call-id cseq expires(us) q1000 path display [transport]
 *   D aor contact        A aor (all removed)        K aor (known, no binding)
 * From version 2 on, '\' TAB CR LF inside a field are written \\ \t \r \n,
 * so any value a REGISTER got a 2xx for is kept.  A journal without the V
 * line is version 1: S lines (no display), no escapes.  The transport a
 * binding was registered over ("ws", "tls"...; empty for UDP) came later,
 * as an eleventh field older engines ignore: its connection (the flow) is
 * not kept, so after a restart a binding made over WebSocket is known as
 * one and not used until the phone registers again.
 * Version 3 (issue 17) writes every B line with fourteen fields: the
 * transport (empty for UDP), then the address the REGISTER came from
 * ("ip:port"), the +sip.instance and the reg-id (RFC 5626 §6; empty and 0
 * when none); D lines of a binding with an instance add the instance and
 * reg-id, which name it (sip_binding_identity).  Shorter lines of older
 * versions still replay (those fields unknown). */

#define JOURNAL_VERSION 3

/* With several engines every engine appends to one shared descriptor
 * and engine 0 rewrites it (compact_shared): a POSIX record lock on the
 * whole file (per process, unlike flock on a shared open file
 * description) is held for one line's write or for the whole rewrite.
 * Returns 0, or -1 when the lock cannot be had (the write goes on). */
static int journal_lock(short type)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;     /* l_start 0, l_len 0: the whole file */
    while (fcntl(journal, F_SETLKW, &fl) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

/* The rewrite clears O_APPEND on the shared description for its
 * overwrite; an engine killed then leaves it cleared, so each writer puts
 * it back under its lock before appending. */
static void journal_appending(void)
{
    int fl = fcntl(journal, F_GETFL);

    if (fl >= 0 && !(fl & O_APPEND))
        fcntl(journal, F_SETFL, fl | O_APPEND);
}

/* Append 'len' bytes holding 'lines' journal lines. */
static void journal_append(const char *text, apr_size_t len, apr_size_t lines)
{
    apr_size_t off = 0;
    int shared = sip_engine_count() > 1, locked = 0;

    if (journal < 0)
        return;
    if (shared) {
        locked = journal_lock(F_WRLCK) == 0;
        journal_appending();
    }
    while (off < len) {
        ssize_t n = write(journal, text + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                         "sip location: cannot write the journal; registrations may be lost "
                         "on restart");
            break;
        }
        off += (apr_size_t)n;
    }
    if (locked)
        journal_lock(F_UNLCK);
    if (off == len)
        journal_lines += lines;
}

/* With several engines a loop turn's lines are written together, under
 * one lock, at the turn's end (journal_flush) instead of a lock, a write
 * and an unlock each: the turn's REGISTERs are answered only after that
 * (replica_flush), so a 200 still means its line is in the journal. */
static char *jbuf;
static apr_size_t jbuf_len, jbuf_cap, jbuf_lines;
static int jbuf_on;
static sip_timer_t jbuf_timer;

static void journal_flush(void)
{
    if (!jbuf_len)
        return;
    journal_append(jbuf, jbuf_len, jbuf_lines);
    jbuf_len = jbuf_lines = 0;
}

static void journal_flush_due(void *baton)
{
    (void)baton;
    journal_flush();
}

static apr_status_t journal_flush_cleanup(void *data)
{
    (void)data;
    journal_flush();
    jbuf_on = 0;
    return APR_SUCCESS;
}

static void journal_write(const char *line)
{
    apr_size_t len = strlen(line);

    if (journal < 0)
        return;
    if (jbuf_on) {
        if (jbuf_len + len > jbuf_cap) {
            apr_size_t cap = jbuf_cap ? jbuf_cap : 16384;
            char *bigger;
            while (cap < jbuf_len + len)
                cap *= 2;
            if ((bigger = realloc(jbuf, cap)) != NULL) {
                jbuf = bigger;
                jbuf_cap = cap;
            }
        }
        if (jbuf_len + len <= jbuf_cap) {
            if (!jbuf_len)
                sip_timer_set(loc_loop, &jbuf_timer, 0, journal_flush_due, NULL);
            memcpy(jbuf + jbuf_len, line, len);
            jbuf_len += len;
            jbuf_lines++;
            return;
        }
        journal_flush();        /* no memory for more: what is held, then this line */
    }
    journal_append(line, len, 1);
}

static const char *jesc(apr_pool_t *p, const char *s)
{
    apr_size_t n = 0;
    const char *c;
    char *out, *o;

    if (!s)
        return "";
    if (!strpbrk(s, "\\\t\r\n"))
        return s;
    for (c = s; *c; c++)
        n += strchr("\\\t\r\n", *c) ? 2 : 1;
    o = out = apr_palloc(p, n + 1);
    for (c = s; *c; c++) {
        switch (*c) {
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        default: *o++ = *c;
        }
    }
    *o = '\0';
    return out;
}

/* Undo jesc in place. */
static void junesc(char *s)
{
    char *o = s;

    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            *o++ = *s == 't' ? '\t' : *s == 'r' ? '\r' : *s == 'n' ? '\n' : *s;
        }
        else
            *o++ = *s;
    }
    *o = '\0';
}

/* The B line of 'b' (version 3). */
static const char *journal_line(apr_pool_t *p, const sip_binding_t *b)
{
    return apr_psprintf(p, "B\t%s\t%s\t%s\t%s\t%u\t%" APR_TIME_T_FMT "\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n",
                        jesc(p, b->aor), jesc(p, b->contact), jesc(p, b->params),
                        jesc(p, b->call_id), b->cseq, b->expires, b->q1000, jesc(p, b->path),
                        jesc(p, b->display),
                        b->transport != SIP_TP_UDP ? sip_tp_param(b->transport) : "",
                        jesc(p, b->received), jesc(p, b->instance),
                        b->instance ? b->reg_id : 0);
}

static void journal_set(apr_pool_t *p, const sip_binding_t *b)
{
    journal_write(journal_line(p, b));
}

static void journal_del(apr_pool_t *p, const sip_binding_t *b)
{
    if (b->instance && *b->instance)
        journal_write(apr_psprintf(p, "D\t%s\t%s\t%s\t%d\n", jesc(p, b->aor),
                                   jesc(p, b->contact), jesc(p, b->instance), b->reg_id));
    else
        journal_write(apr_psprintf(p, "D\t%s\t%s\n", jesc(p, b->aor), jesc(p, b->contact)));
}

/* A journal line split and checked.  Returns its type ('B' for S and B
 * lines, 'D', 'A', 'K', 'V'; 'C' continues a replica's AoR in a later
 * piece, never journaled), or 0 for a line to skip; numbers out of
 * range are brought back in: an expiry further than 'max_life' from 'now'
 * (a corrupt or hand-made line) is cut to it, q to 0..1000. */
typedef struct journal_rec {
    int type;
    sip_binding_t b;
    int version;    /* for 'V' */
} journal_rec_t;

static int journal_parse(char *line, int version, apr_time_t now, apr_interval_time_t max_life,
                         journal_rec_t *r)
{
    char *f[15], *end;
    int n = 0, i;
    long long ll;

    memset(r, 0, sizeof(*r));
    /* fields may be empty, so split on every tab */
    f[n++] = line;
    for (char *s = line; *s && n < 15; s++)
        if (*s == '\t') {
            *s = '\0';
            f[n++] = s + 1;
        }
    if (n == 2 && strcmp(f[0], "V") == 0) {
        r->version = atoi(f[1]);
        return r->version > 0 ? (r->type = 'V') : 0;
    }
    if (version >= 2)
        for (i = 1; i < n; i++)
            junesc(f[i]);
    if ((n >= 9 && strcmp(f[0], "S") == 0) || (n >= 10 && strcmp(f[0], "B") == 0)) {
        if (!*f[1] || !*f[2] || !apr_isdigit(*f[5]) || !apr_isdigit(*f[6]))
            return 0;
        r->b.aor = f[1];
        r->b.contact = f[2];
        r->b.params = f[3];
        r->b.call_id = f[4];
        errno = 0;
        ll = strtoll(f[5], &end, 10);
        if (*end || errno || ll > 0xffffffffLL)
            return 0;
        r->b.cseq = (apr_uint32_t)ll;
        ll = strtoll(f[6], &end, 10);
        if (*end || errno)
            return 0;
        r->b.expires = (apr_time_t)ll;
        if (r->b.expires > now + max_life)
            r->b.expires = now + max_life;
        ll = strtoll(f[7], &end, 10);
        if (*end || errno || end == f[7])
            return 0;
        r->b.q1000 = ll < 0 ? 0 : ll > 1000 ? 1000 : (int)ll;
        r->b.path = *f[8] ? f[8] : NULL;
        r->b.display = f[0][0] == 'B' && *f[9] ? f[9] : NULL;
        if (f[0][0] == 'B' && n >= 11) {
            int k = sip_tp_from_name(f[10]);
            r->b.transport = k > 0 ? k : SIP_TP_UDP;
        }
        if (f[0][0] == 'B' && n >= 14) {
            r->b.received = *f[11] ? f[11] : NULL;
            r->b.instance = *f[12] ? f[12] : NULL;
            ll = strtoll(f[13], &end, 10);
            /* RFC 5626 §6: a reg-id only with an instance */
            r->b.reg_id = r->b.instance && !*end && ll > 0 && ll <= 0x7fffffffLL ? (int)ll : 0;
        }
        /* a replica's fifteenth field (never in the journal): the flow */
        if (f[0][0] == 'B' && n >= 15 && apr_isxdigit(*f[14])) {
            apr_uint64_t fl = (apr_uint64_t)strtoull(f[14], &end, 16);
            r->b.flow = *end ? 0 : fl;
        }
        return r->type = 'B';
    }
    if (n >= 3 && strcmp(f[0], "D") == 0 && *f[1]) {
        r->b.aor = f[1];
        r->b.contact = f[2];
        if (n >= 5 && *f[3]) {
            r->b.instance = f[3];
            ll = strtoll(f[4], &end, 10);
            r->b.reg_id = !*end && ll > 0 && ll <= 0x7fffffffLL ? (int)ll : 0;
        }
        return r->type = 'D';
    }
    if (n >= 2 && (strcmp(f[0], "A") == 0 || strcmp(f[0], "K") == 0
                   || strcmp(f[0], "C") == 0) && *f[1]) {
        r->b.aor = f[1];
        return r->type = f[0][0];
    }
    return 0;
}

/* ---- compaction of the journal's text (several engines) ----
 *
 * With several engines no table is a safe source for a rewrite: a peer's
 * line may be in the file before its replica reached the compacting
 * engine, or its replica may have been dropped.  So the rewrite is made
 * from the file itself: the journal 'text' (any version) replayed into
 * the last state of each binding, written back as version 3: a V line,
 * a K line for each AoR known without a live binding, a B line for each
 * binding not expired at 'now'.  Replaying the result gives the same
 * table as replaying 'text'; the B lines are idempotent, so replaying
 * the result after 'text' (or after any part of it) does too. */
typedef struct jc_aor {
    const char *aor;
    apr_hash_t *keys;       /* identity -> jc_binding_t */
} jc_aor_t;

typedef struct jc_binding {
    sip_binding_t b;
    int live;
} jc_binding_t;

static char *journal_compact_text(apr_pool_t *p, const char *text, apr_size_t len,
                                  apr_time_t now, apr_size_t *lines_in, apr_size_t *lines_out)
{
    apr_hash_t *aors_seen = apr_hash_make(p);
    apr_array_header_t *order = apr_array_make(p, 64, sizeof(jc_aor_t *));
    apr_array_header_t *bindings = apr_array_make(p, 256, sizeof(jc_binding_t *));
    apr_array_header_t *out = apr_array_make(p, 256, sizeof(const char *));
    const char *line = text, *end = text + len, *nl;
    int version = 1, i;
    apr_size_t in = 0;

    for (; line < end; line = nl + 1) {
        journal_rec_t r;
        jc_aor_t *a;
        jc_binding_t *jb;
        const char *key;
        char *copy;

        nl = memchr(line, '\n', (apr_size_t)(end - line));
        if (!nl)
            nl = end;
        copy = apr_pstrndup(p, line, (apr_size_t)(nl - line));
        if (*copy)
            in++;
        /* no lifetime cut here: the replay that reads the result cuts */
        if (!journal_parse(copy, version, now, APR_INT64_C(0x7fffffffffffffff) - now, &r))
            continue;
        if (r.type == 'V') {
            version = r.version;
            continue;
        }
        if (r.type == 'C')
            continue;
        a = apr_hash_get(aors_seen, r.b.aor, APR_HASH_KEY_STRING);
        if (!a) {
            a = apr_pcalloc(p, sizeof(*a));
            a->aor = r.b.aor;
            a->keys = apr_hash_make(p);
            apr_hash_set(aors_seen, a->aor, APR_HASH_KEY_STRING, a);
            APR_ARRAY_PUSH(order, jc_aor_t *) = a;
        }
        switch (r.type) {
        case 'A':
            a->keys = apr_hash_make(p);
            break;
        case 'D':
            apr_hash_set(a->keys, sip_binding_identity(p, &r.b), APR_HASH_KEY_STRING, NULL);
            break;
        case 'B':
            key = sip_binding_identity(p, &r.b);
            r.b.flow = 0;       /* a journal's flows died with its engine */
            jb = apr_hash_get(a->keys, key, APR_HASH_KEY_STRING);
            if (!jb) {
                jb = apr_pcalloc(p, sizeof(*jb));
                APR_ARRAY_PUSH(bindings, jc_binding_t *) = jb;
                apr_hash_set(a->keys, key, APR_HASH_KEY_STRING, jb);
            }
            jb->b = r.b;
            break;
        }
    }
    /* which bindings are still named by their AoR (a later A or D drops
     * them from its keys), in the order they were first set */
    for (i = 0; i < order->nelts; i++) {
        jc_aor_t *a = APR_ARRAY_IDX(order, i, jc_aor_t *);
        apr_hash_index_t *hi;
        for (hi = apr_hash_first(p, a->keys); hi; hi = apr_hash_next(hi)) {
            jc_binding_t *jb = apr_hash_this_val(hi);
            jb->live = jb->b.expires > now;
        }
    }
    APR_ARRAY_PUSH(out, const char *) = apr_psprintf(p, "V\t%d\n", JOURNAL_VERSION);
    for (i = 0; i < order->nelts; i++) {
        jc_aor_t *a = APR_ARRAY_IDX(order, i, jc_aor_t *);
        apr_hash_index_t *hi;
        int any = 0;
        for (hi = apr_hash_first(p, a->keys); hi && !any; hi = apr_hash_next(hi))
            any = ((jc_binding_t *)apr_hash_this_val(hi))->live;
        if (!any)       /* keep the AoR known: it answers 480, not 404 */
            APR_ARRAY_PUSH(out, const char *) = apr_psprintf(p, "K\t%s\n", jesc(p, a->aor));
    }
    for (i = 0; i < bindings->nelts; i++) {
        jc_binding_t *jb = APR_ARRAY_IDX(bindings, i, jc_binding_t *);
        if (jb->live)
            APR_ARRAY_PUSH(out, const char *) = journal_line(p, &jb->b);
    }
    if (lines_in)
        *lines_in = in;
    if (lines_out)
        *lines_out = (apr_size_t)out->nelts;
    return apr_array_pstrcat(p, out, '\0');
}

/* ---- the table ---- */

static void entry_remove_at(aor_entry_t *e, int i)
{
    stored_t *st = e->b[i];

    apr_hash_set(index_, st->hkey, APR_HASH_KEY_STRING, NULL);
    binding_strings_free(&st->b);
    free(st->hkey);
    free(st);
    e->b[i] = e->b[--e->n];
    if (i < e->n)
        e->b[i]->idx = i;
    if (!e->n)
        empty_add(e);
    live--;
    sip_stats->now.bindings = live;
}

static void set_binding(const sip_binding_t *nb, int log)
{
    aor_entry_t *e;
    stored_t *st;
    sip_binding_t *b;
    const char *key = sip_binding_identity(scratch, nb);

    st = find(nb->aor, key, scratch);
    if (nb->expires <= apr_time_now()) {
        if (st)
            entry_remove_at(entry_for(nb->aor, 0), st->idx);
        if (log)
            journal_del(scratch, nb);
        apr_pool_clear(scratch);
        return;
    }
    e = entry_for(nb->aor, 1);
    if (!st) {
        if (e->n == e->cap) {
            e->cap = e->cap ? e->cap * 2 : 4;
            e->b = realloc(e->b, (size_t)e->cap * sizeof(*e->b));
        }
        st = calloc(1, sizeof(*st));
        st->hkey = strdup(apr_pstrcat(scratch, nb->aor, "\2", key, NULL));
        st->idx = e->n;
        e->b[e->n++] = st;
        empty_del(e);
        apr_hash_set(index_, st->hkey, APR_HASH_KEY_STRING, st);
        live++;
        sip_stats->now.bindings = live;
    }
    else
        binding_strings_free(&st->b);
    b = &st->b;
    b->aor = xstrdup(nb->aor);
    b->contact = xstrdup(nb->contact);
    b->params = xstrdup(nb->params ? nb->params : "");
    b->call_id = xstrdup(nb->call_id);
    b->cseq = nb->cseq;
    b->expires = nb->expires;
    b->q1000 = nb->q1000;
    b->path = nb->path && *nb->path ? xstrdup(nb->path) : NULL;
    b->display = nb->display && *nb->display ? xstrdup(nb->display) : NULL;
    b->key = xstrdup(key);
    b->transport = nb->transport;
    b->flow = nb->flow;
    b->received = nb->received && *nb->received ? xstrdup(nb->received) : NULL;
    b->instance = nb->instance && *nb->instance ? xstrdup(nb->instance) : NULL;
    b->reg_id = b->instance ? nb->reg_id : 0;
    if (log)
        journal_set(scratch, b);
    apr_pool_clear(scratch);
}

void sip_location_set(const sip_binding_t *b)
{
    set_binding(b, 1);
}

void sip_location_remove(const char *aor, const char *contact)
{
    stored_t *st = find(aor, contact_key(scratch, contact), scratch);

    if (st) {
        sip_binding_t b = {0};
        b.aor = aor;
        b.contact = contact;
        entry_remove_at(entry_for(aor, 0), st->idx);
        journal_del(scratch, &b);
    }
    apr_pool_clear(scratch);
}

static void remove_all(const char *aor, int log)
{
    aor_entry_t *e = entry_for(aor, 1);

    while (e->n)
        entry_remove_at(e, e->n - 1);
    if (log)
        journal_write(apr_psprintf(scratch, "A\t%s\n", jesc(scratch, aor)));
    apr_pool_clear(scratch);
}

void sip_location_remove_all(const char *aor)
{
    if (entry_for(aor, 0))
        remove_all(aor, 1);
}

int sip_location_by_q(const void *a, const void *b)
{
    const sip_binding_t *x = *(sip_binding_t *const *)a, *y = *(sip_binding_t *const *)b;
    if (x->q1000 != y->q1000)
        return y->q1000 - x->q1000;
    return x->expires < y->expires ? 1 : x->expires > y->expires ? -1 : 0;
}

apr_array_header_t *sip_location_lookup(apr_pool_t *p, const char *aor)
{
    aor_entry_t *e = entry_for(aor, 0);
    apr_array_header_t *out;
    apr_time_t now = apr_time_now();
    int i;

    if (!e)
        return NULL;
    out = apr_array_make(p, e->n ? e->n : 1, sizeof(sip_binding_t *));
    for (i = 0; i < e->n; i++) {
        sip_binding_t *c;
        if (e->b[i]->b.expires <= now)
            continue;   /* never report an expired binding, swept or not */
        c = apr_pmemdup(p, &e->b[i]->b, sizeof(*c));
        *(sip_binding_t **)apr_array_push(out) = c;
    }
    qsort(out->elts, (size_t)out->nelts, sizeof(sip_binding_t *), sip_location_by_q);
    return out;
}

/* ---- flows ---- */

static int v4_private(const unsigned char *a)
{
    return a[0] == 10 || a[0] == 127 || a[0] == 0                     /* RFC 1918, loopback */
           || (a[0] == 172 && (a[1] & 0xf0) == 16)
           || (a[0] == 192 && a[1] == 168)
           || (a[0] == 169 && a[1] == 254)                             /* link-local */
           || (a[0] == 100 && (a[1] & 0xc0) == 64);                    /* CGNAT, RFC 6598 */
}

int sip_addr_is_private(const char *host)
{
    unsigned char a[16];
    char buf[64];
    apr_size_t n;

    if (!host)
        return 0;
    n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= sizeof(buf))
            return 0;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET, host, a) == 1)
        return v4_private(a);
    if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char zero[15] = {0};
        if (!memcmp(a, zero, 15) && a[15] <= 1)                        /* ::, ::1 */
            return 1;
        if (!memcmp(a, zero, 10) && a[10] == 0xff && a[11] == 0xff)   /* v4-mapped */
            return v4_private(a + 12);
        return (a[0] & 0xfe) == 0xfc                                   /* ULA, RFC 4193 */
               || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80);             /* link-local */
    }
    return 0;
}

/* The address part of "ip:port" / "[ip]:port", without brackets. */
static const char *received_ip(apr_pool_t *p, const char *received)
{
    const char *c;

    if (!received)
        return NULL;
    if (*received == '[')
        return (c = strchr(received, ']')) ? apr_pstrmemdup(p, received + 1,
                                                            (apr_size_t)(c - received - 1)) : NULL;
    c = strrchr(received, ':');
    return c ? apr_pstrmemdup(p, received, (apr_size_t)(c - received)) : received;
}

/* Does the Contact say the UA cannot be reached at it (behind NAT)?  An
 * address literal of a private kind that is not where the REGISTER came
 * from, ;ob, or an outbound flow (RFC 5626 §5.3, §6: reached over its
 * flow, never at its Contact). */
static int contact_unreachable(apr_pool_t *p, const sip_binding_t *b)
{
    sip_uri_info_t ui;
    const char *src;
    char h[64];

    if (sip_uri_param(p, b->contact, "ob") || (b->instance && b->reg_id))
        return 1;
    if (!sip_uri_info(p, b->contact, &ui) || !sip_addr_is_private(ui.host))
        return 0;
    src = received_ip(p, b->received);
    if (!src)
        return 0;       /* from before issue 17: as it was then */
    /* the same address, spelt alike (IPv6 compared in canonical form) */
    if (!strcasecmp(src, ui.host))
        return 0;
    apr_cpystrn(h, ui.host[0] == '[' ? ui.host + 1 : ui.host, sizeof(h));
    h[strcspn(h, "]")] = '\0';
    {
        unsigned char x[16], y[16];
        int fam = strchr(h, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(fam, h, x) == 1 && inet_pton(fam, src, y) == 1
            && !memcmp(x, y, fam == AF_INET ? 4 : 16))
            return 0;
    }
    return 1;
}

sip_reach_t sip_binding_reach_mode(apr_pool_t *p, const sip_binding_t *b, int flow_open,
                                   int nat_mode)
{
    const char *t = sip_uri_param(p, b->contact, "transport");
    int ws = t && (!strcasecmp(t, "ws") || !strcasecmp(t, "wss"));
    int behind = nat_mode == SIP_NAT_ALWAYS
                 || (nat_mode == SIP_NAT_AUTO && contact_unreachable(p, b));

    /* RFC 3327 §5.4, RFC 5626 §5.3: through the registered proxies, which
     * reach the UA over their own flow */
    if (b->path && *b->path && !ws)
        return SIP_REACH_CONTACT;
    switch (b->transport) {
    case SIP_TP_WS:
    case SIP_TP_WSS:
    case SIP_TP_TLS:
        return flow_open ? SIP_REACH_FLOW : SIP_REACH_NONE;
    case SIP_TP_TCP:
        if (t && strcasecmp(t, "tcp"))
            return ws ? (flow_open ? SIP_REACH_FLOW : SIP_REACH_NONE) : SIP_REACH_CONTACT;
        if (flow_open)
            return SIP_REACH_FLOW;
        /* §5.4: ;ob says "only over my flows"; a NATed source port is no
         * server: nothing to dial */
        if (sip_uri_param(p, b->contact, "ob") || behind)
            return SIP_REACH_NONE;
        return SIP_REACH_CONTACT;
    default:
        if (ws)
            return SIP_REACH_NONE;
        /* RFC 3581 §4 / RFC 5626 §5.3: back to where the REGISTER came from */
        return behind && b->received ? SIP_REACH_SOURCE : SIP_REACH_CONTACT;
    }
}

sip_reach_t sip_binding_reach(apr_pool_t *p, const sip_binding_t *b, int flow_open)
{
    return sip_binding_reach_mode(p, b, flow_open, SIP_NAT_AUTO);
}

/* ---- expiry and compaction ---- */

static void compact(void)
{
    apr_hash_index_t *hi;
    apr_pool_t *p;

    if (journal < 0)
        return;
    if (ftruncate(journal, 0) < 0 || lseek(journal, 0, SEEK_SET) < 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                     "sip location: cannot rewrite the journal");
        return;
    }
    journal_lines = 0;
    apr_pool_create(&p, loc_pool);
    journal_write(apr_psprintf(p, "V\t%d\n", JOURNAL_VERSION));
    for (hi = apr_hash_first(NULL, aors); hi; hi = apr_hash_next(hi)) {
        aor_entry_t *e = apr_hash_this_val(hi);
        int i;
        if (!e->n)      /* keep the AoR known: it answers 480, not 404 */
            journal_write(apr_psprintf(p, "K\t%s\n", jesc(p, e->aor)));
        for (i = 0; i < e->n; i++)
            journal_set(p, &e->b[i]->b);
        if (i)
            apr_pool_clear(p);
    }
    apr_pool_destroy(p);
    apr_pool_clear(loc_pool);
}

/* Read all of the journal from offset 0 (the caller holds a lock).
 * Returns a malloc'd buffer (NUL-terminated) or NULL. */
static char *journal_read_all(apr_size_t *len)
{
    struct stat st;
    apr_size_t cap, have = 0;
    char *buf;

    if (fstat(journal, &st) < 0)
        return NULL;
    cap = (apr_size_t)st.st_size + 65536;
    if (!(buf = malloc(cap + 1)))
        return NULL;
    for (;;) {
        ssize_t n;
        if (have == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
        n = pread(journal, buf + have, cap - have, (off_t)have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (apr_size_t)n;
    }
    buf[have] = '\0';
    *len = have;
    return buf;
}

/* The compacted text 'c' padded up to the next line boundary of the old
 * 'text' (of 'len' bytes) at or after its own length, with a comment line
 * ('#', skipped by replay): once it is written over the old text, what
 * follows it is whole old lines, never a line cut in the middle that a
 * replay could misread.  Returns 'c' itself when no padding is needed. */
static char *journal_compact_pad(apr_pool_t *p, char *c, const char *text, apr_size_t len)
{
    apr_size_t L = strlen(c), at = L;
    char *padded;

    while (at < len && at > 0 && text[at - 1] != '\n')
        at++;
    if (at == L)
        return c;
    padded = apr_palloc(p, at + 1);
    memcpy(padded, c, L);
    if (at - L == 1)
        padded[L] = '\n';
    else {
        memset(padded + L, ' ', at - L);
        padded[L] = '#';
        padded[at - 1] = '\n';
    }
    padded[at] = '\0';
    return padded;
}

static int pwrite_all(const char *s, apr_size_t len, off_t at)
{
    while (len) {
        ssize_t n = pwrite(journal, s, len, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (apr_size_t)n;
        at += n;
    }
    return 0;
}

/* Compaction with several engines (docs/architecture.md, "The journal
 * with N engines"), by engine 0 under the whole-file write lock, so no
 * engine appends meanwhile.  In place, because every engine (and the
 * parent, which forks restarted engines) holds the one descriptor: a new
 * file renamed over the old would need each of them to reopen a path it
 * may no longer have the rights to open.  Crash safety: the compacted
 * text C (of length L, smaller than the file's S) is first appended and
 * synced, so from then on the file ends with the whole state; only then
 * is C written over [0, L) and the file cut.  A crash before the
 * cut leaves a prefix of C, the rest of the old lines (a suffix of the
 * history, which replays consistently) and the whole C last: every
 * binding comes back.  C is padded to end on an old line's end
 * (journal_compact_pad), so once it is written no old line is left cut
 * in two; only a kill inside the one pwrite could leave a cut line, which
 * then fails to parse or is overridden by the whole C after it. */
static void compact_shared(void)
{
    apr_size_t len = 0, lines_in = 0, lines_out = 0, L;
    apr_pool_t *p;
    char *text, *c, *front;
    int fl;
    apr_time_t t0 = apr_time_now();

    journal_flush();            /* ours first, so the rewrite has them */
    if (journal_lock(F_WRLCK) < 0)
        return;
    journal_appending();
    text = journal_read_all(&len);
    if (!text) {
        journal_lock(F_UNLCK);
        return;
    }
    apr_pool_create(&p, loc_pool);
    c = journal_compact_text(p, text, len, apr_time_now(), &lines_in, &lines_out);
    front = journal_compact_pad(p, c, text, len);
    if (len && text[len - 1] != '\n')     /* an appender's cut last line */
        c = apr_pstrcat(p, "\n", c, NULL);
    L = strlen(c);
    free(text);
    if (strlen(front) < len) {
        apr_size_t off = 0;
        while (off < L) {       /* O_APPEND: the whole state after the old */
            ssize_t n = write(journal, c + off, L - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            off += (apr_size_t)n;
        }
        fl = fcntl(journal, F_GETFL);
        if (off == L && fdatasync(journal) == 0 && fl >= 0
            && fcntl(journal, F_SETFL, fl & ~O_APPEND) == 0) {
            /* without O_APPEND, pwrite writes where it is told (Linux) */
            L = strlen(front);
            if (pwrite_all(front, L, 0) == 0 && ftruncate(journal, (off_t)L) == 0) {
                shared_base_bytes = (apr_off_t)L;
                shared_base_lines = lines_out;
                ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                             "sip location: journal compacted from %" APR_SIZE_T_FMT " to %"
                             APR_SIZE_T_FMT " lines (%" APR_SIZE_T_FMT " to %" APR_SIZE_T_FMT
                             " bytes) in %" APR_TIME_T_FMT " ms", lines_in, lines_out, len, L,
                             apr_time_as_msec(apr_time_now() - t0));
            }
            else
                ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                             "sip location: cannot rewrite the journal");
            fcntl(journal, F_SETFL, fl | O_APPEND);
        }
        else
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                         "sip location: cannot append the compacted journal");
    }
    else {
        shared_base_bytes = (apr_off_t)len;
        shared_base_lines = lines_in;
    }
    journal_lock(F_UNLCK);
    apr_pool_destroy(p);
}

/* With several engines, engine 0 compacts when the journal's lines
 * (estimated from its size and the mean line of its last full read) pass
 * SipLocationCompact and four times the bindings (every engine holds
 * every binding, as replicas). */
static int shared_compaction_due(void)
{
    struct stat st;
    apr_off_t mean;
    apr_size_t est;

    if (sip_engine_self() != 0 || fstat(journal, &st) < 0)
        return 0;
    mean = shared_base_lines ? shared_base_bytes / (apr_off_t)shared_base_lines : 128;
    if (mean < 32)
        mean = 32;
    est = shared_base_lines;
    if (st.st_size > shared_base_bytes)
        est += (apr_size_t)((st.st_size - shared_base_bytes) / mean);
    else
        est = (apr_size_t)(st.st_size / mean);
    return est > compact_lines && est > 4 * live;
}

static void sweep(void *baton)
{
    apr_hash_index_t *hi;
    apr_time_t now = apr_time_now();

    (void)baton;
    for (hi = apr_hash_first(NULL, aors); hi; hi = apr_hash_next(hi)) {
        aor_entry_t *e = apr_hash_this_val(hi);
        int i = 0;
        while (i < e->n) {
            if (e->b[i]->b.expires <= now)
                entry_remove_at(e, i);
            else
                i++;
        }
    }
    forget_excess_empty();
    /* The journal only grows between compactions; keep it near the table.
     * Several engines append to it, each for the AoRs homed there: engine
     * 0 rewrites it from its own text, under a lock (compact_shared). */
    if (sip_engine_count() == 1) {
        if (journal_lines > compact_lines && journal_lines > 4 * live)
            compact();
        else
            apr_pool_clear(loc_pool);
    }
    else {
        if (journal >= 0 && shared_compaction_due())
            compact_shared();
        apr_pool_clear(loc_pool);
    }
    sip_timer_set(loc_loop, &sweep_timer, apr_time_from_sec(1), sweep, NULL);
}

static apr_size_t bad_lines;

/* One journal or replica line into the table, never journaled again; a
 * flow only from a replica (a journal's flows died with its engine). */
static void replay_line(char *line, int *version, int replica)
{
    journal_rec_t r;
    stored_t *st;

    switch (journal_parse(line, *version, apr_time_now(), max_lifetime, &r)) {
    case 'V':
        *version = r.version;
        break;
    case 'B':
        if (!replica)
            r.b.flow = 0;
        set_binding(&r.b, 0);
        break;
    case 'D':
        st = find(r.b.aor, sip_binding_identity(scratch, &r.b), scratch);
        if (st)
            entry_remove_at(entry_for(r.b.aor, 0), st->idx);
        apr_pool_clear(scratch);
        break;
    case 'A':
        remove_all(r.b.aor, 0);
        break;
    case 'K':
        entry_for(r.b.aor, 1);
        break;
    case 'C':           /* the AoR's bindings go on (sip_location_replica_pieces) */
        break;
    default:
        if (*line)
            if (*line != '#')   /* compaction's padding (journal_compact_pad) */
                bad_lines++;
    }
}

/* ---- replicas (several engines, docs/architecture.md) ----
 *
 * The home engine of an AoR (sip_engine_home) alone changes it; after
 * each change it sends the AoR's whole state to every other engine as
 * journal lines: "A aor" (forget its bindings, keep it known), then a B
 * line per binding with a fifteenth field, its flow in hex.  A whole
 * state rather than the change: a lost or reordered datagram is repaired
 * by the next one, and applying it twice changes nothing. */

static const char *replica_line(apr_pool_t *p, const sip_binding_t *b)
{
    const char *l = journal_line(p, b);

    return apr_psprintf(p, "%.*s\t%016" APR_UINT64_T_HEX_FMT "\n", (int)strlen(l) - 1, l,
                        b->flow);
}

const char *sip_location_replica_text(apr_pool_t *p, const char *aor)
{
    aor_entry_t *e = entry_for(aor, 0);
    apr_time_t now = apr_time_now();
    apr_array_header_t *lines;
    int i;

    if (!e)
        return "";     /* never registered: nothing to tell (404, not 480) */
    /* one concatenation at the end: an AoR may have thousands */
    lines = apr_array_make(p, e->n + 1, sizeof(const char *));
    APR_ARRAY_PUSH(lines, const char *) = apr_psprintf(p, "A\t%s\n", jesc(p, aor));
    for (i = 0; i < e->n; i++)
        if (e->b[i]->b.expires > now)
            APR_ARRAY_PUSH(lines, const char *) = replica_line(p, &e->b[i]->b);
    return apr_array_pstrcat(p, lines, '\0');
}

/* A replica text cut at line ends into pieces of at most 'max' bytes (a
 * longer line alone), so an AoR with thousands of bindings fits the
 * hand-over channel's datagrams.  A piece that starts inside an AoR
 * starts with "C aor" (its bindings continue; no reset as "A" would),
 * and every piece of a text starting with the SYNC's "F flows" mark
 * starts with it too.  Applied in order (one channel keeps order) the
 * pieces give the whole state. */
apr_array_header_t *sip_location_replica_pieces(apr_pool_t *p, const char *text,
                                                const char *mark, apr_size_t max)
{
    apr_array_header_t *out = apr_array_make(p, 4, sizeof(const char *));
    apr_size_t mlen = mark ? strlen(mark) : 0;
    const char *at = text, *start = text, *aor = NULL, *head = "";
    apr_size_t aor_len = 0;

    if (mlen && strncmp(text, mark, mlen) == 0)
        at = start = text + mlen;
    else
        mlen = 0;
    while (*at) {
        const char *nl = strchr(at, '\n');
        const char *next = nl ? nl + 1 : at + strlen(at);
        if (at > start && strlen(head) + (apr_size_t)(next - start) + mlen > max) {
            APR_ARRAY_PUSH(out, const char *) = apr_pstrcat(p, mlen ? mark : "", head,
                                                            apr_pstrndup(p, start,
                                                                (apr_size_t)(at - start)),
                                                            NULL);
            start = at;
            head = aor && *at != 'A' ? apr_psprintf(p, "C\t%.*s\n", (int)aor_len, aor) : "";
        }
        if (at[0] == 'A' && at[1] == '\t') {
            aor = at + 2;
            aor_len = (apr_size_t)((nl ? nl : next) - aor);
        }
        at = next;
    }
    if (at > start || !out->nelts)
        APR_ARRAY_PUSH(out, const char *) = apr_pstrcat(p, mlen ? mark : "", head,
                                                        apr_pstrndup(p, start,
                                                                     (apr_size_t)(at - start)),
                                                        NULL);
    return out;
}

/* Every piece of a replica text to engine 'to', or to all others (-1). */
static void replica_send(apr_pool_t *p, int to, const char *text)
{
    apr_array_header_t *pieces = sip_location_replica_pieces(p, text, NULL,
                                                             SIP_LOCATION_REPLICA_PIECE);
    sip_ho_origin_t o;
    int i;

    memset(&o, 0, sizeof(o));
    o.engine = sip_engine_self();
    o.cookie = sip_transport_flow_generation();
    for (i = 0; i < pieces->nelts; i++) {
        const char *t = APR_ARRAY_IDX(pieces, i, const char *);
        if (to < 0)
            sip_handover_broadcast(SIP_HO_REPLICA, &o, t, strlen(t));
        else
            sip_handover_send(to, SIP_HO_REPLICA, &o, t, strlen(t));
    }
}

/* The mod_dbd store: the database has the bindings already; the cache
 * forgets the AoR, and the flows (in memory only) are taken. */
static void replica_apply_dbd(char *text)
{
    apr_pool_t *p;
    sip_reg_change_t chg;
    journal_rec_t r;
    char *line, *nl;

    apr_pool_create(&p, loc_pool);
    memset(&chg, 0, sizeof(chg));
    chg.bindings = apr_array_make(p, 4, sizeof(sip_binding_t));
    for (line = text; *line; line = nl) {
        nl = line + strcspn(line, "\n");
        if (*nl)
            *nl++ = '\0';
        switch (journal_parse(line, JOURNAL_VERSION, apr_time_now(), max_lifetime, &r)) {
        case 'A':
            if (chg.aor)
                sip_location_dbd_flows(p, &chg);
            sip_location_dbd_invalidate(r.b.aor);
            chg.aor = apr_pstrdup(p, r.b.aor);
            chg.star = 1;       /* the AoR's flows as they are now: */
            sip_location_dbd_flows(p, &chg);
            chg.star = 0;
            chg.bindings->nelts = 0;
            break;
        case 'B':
            if (chg.aor && !strcmp(chg.aor, r.b.aor) && r.b.flow) {
                sip_binding_t *b = apr_array_push(chg.bindings);
                *b = r.b;
                b->aor = chg.aor;
                b->contact = apr_pstrdup(p, r.b.contact);
                b->instance = r.b.instance ? apr_pstrdup(p, r.b.instance) : NULL;
            }
            break;
        default:
            break;
        }
    }
    if (chg.aor && chg.bindings->nelts)
        sip_location_dbd_flows(p, &chg);
    apr_pool_destroy(p);
}

void sip_location_replica_apply(const char *text, apr_size_t len)
{
    char *copy = malloc(len + 1), *line, *nl;
    int version = JOURNAL_VERSION;

    if (!copy)
        return;
    if (sip_location_dbd_on()) {
        memcpy(copy, text, len);
        copy[len] = '\0';
        replica_apply_dbd(copy);
        free(copy);
        return;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    for (line = copy; *line; line = nl) {
        nl = line + strcspn(line, "\n");
        if (*nl)
            *nl++ = '\0';
        replay_line(line, &version, 1);
    }
    free(copy);
    forget_excess_empty();
}

static char *taking_aor;    /* the AoR sip_location_replica_flows took whole last */

void sip_location_replica_flows(const char *text, apr_size_t len)
{
    char *copy = malloc(len + 1), *line, *nl;
    journal_rec_t r;
    stored_t *st;
    int taking = 0;

    if (!copy)
        return;
    memcpy(copy, text, len);
    copy[len] = '\0';
    for (line = copy; *line; line = nl) {
        char *again;
        int type;
        nl = line + strcspn(line, "\n");
        if (*nl)
            *nl++ = '\0';
        again = apr_pstrdup(scratch, line);
        type = journal_parse(line, JOURNAL_VERSION, apr_time_now(), max_lifetime, &r);
        if (type == 'A') {
            taking = !entry_for(r.b.aor, 0);
            free(taking_aor);
            taking_aor = taking ? strdup(r.b.aor) : NULL;
        }
        /* a later piece of an AoR taken whole: taken on */
        if (type == 'C')
            taking = taking_aor && !strcmp(taking_aor, r.b.aor);
        /* an AoR the journal did not give back (SipLocationFile none, or a
         * line lost): the peer's copy is all there is */
        if (taking && (type == 'A' || type == 'B')) {
            int version = JOURNAL_VERSION;
            replay_line(again, &version, 1);
            apr_pool_clear(scratch);
            continue;
        }
        if (type != 'B' || !r.b.flow) {
            apr_pool_clear(scratch);
            continue;
        }
        /* the same registration (Call-ID and CSeq) that lost its flow */
        st = find(r.b.aor, sip_binding_identity(scratch, &r.b), scratch);
        if (st && !st->b.flow && st->b.cseq == r.b.cseq && !strcmp(st->b.call_id, r.b.call_id))
            st->b.flow = r.b.flow;
        apr_pool_clear(scratch);
    }
    free(copy);
    forget_excess_empty();
}

apr_array_header_t *sip_location_flow_aors(apr_pool_t *p, int home)
{
    apr_array_header_t *out = apr_array_make(p, 16, sizeof(const char *));
    apr_hash_index_t *hi;

    for (hi = apr_hash_first(p, aors); hi; hi = apr_hash_next(hi)) {
        aor_entry_t *e = apr_hash_this_val(hi);
        if (sip_engine_home(e->aor) == home)
            *(const char **)apr_array_push(out) = apr_pstrdup(p, e->aor);
    }
    return out;
}

apr_array_header_t *sip_location_homed_aors(apr_pool_t *p)
{
    apr_array_header_t *out = apr_array_make(p, 64, sizeof(const char *));
    apr_hash_index_t *hi;
    int self = sip_engine_self();

    for (hi = apr_hash_first(p, aors); hi; hi = apr_hash_next(hi)) {
        aor_entry_t *e = apr_hash_this_val(hi);
        if (sip_engine_home(e->aor) == self)
            *(const char **)apr_array_push(out) = apr_pstrdup(p, e->aor);
    }
    return out;
}

/* The AoRs changed during this loop turn, told to the other engines once
 * at its end (a timer due at once runs after the turn's reads): a burst of
 * REGISTERs (up to 64 datagrams a read) makes one channel datagram per
 * peer instead of one each, and an AoR changed twice is sent once, in its
 * state at the end of the turn. */
static apr_pool_t *replica_due_pool;
static apr_hash_t *replica_due;         /* AoR -> "" */
static sip_timer_t replica_due_timer;

static const char *replica_state(apr_pool_t *p, const char *aor)
{
    const char *text = sip_location_replica_text(p, aor);

    /* gone since (forgotten once empty): an empty AoR, so peers drop it */
    return *text ? text : apr_psprintf(p, "A\t%s\n", jesc(p, aor));
}

/* A REGISTER's answer waits for its replica: once a phone has its 200, the
 * other engines have been sent the change, and apply it before they route
 * the phone's next request (sip_handover_catch_up). */
typedef struct reg_answer {
    struct reg_answer *next;
    apr_pool_t *p;              /* the caller's */
    const char *aor;
    int want_scripts;
    sip_location_reg_cb cb;
    void *baton;
} reg_answer_t;
static reg_answer_t *answers, **answers_tail = &answers;

static void reg_answer(apr_pool_t *p, const char *aor, int want_scripts,
                       sip_location_reg_cb cb, void *baton)
{
    apr_array_header_t *scripts = NULL;

    if (want_scripts && sip_script_store_list(p, aor, &scripts) != APR_SUCCESS)
        scripts = NULL;
    cb(baton, 0, sip_location_lookup(p, aor), scripts);
}

static void replica_flush(void *baton)
{
    apr_pool_t *p = replica_due_pool;
    apr_array_header_t *texts;
    apr_hash_index_t *hi;
    reg_answer_t *a;

    (void)baton;
    if (!replica_due)
        return;
    journal_flush();            /* the lines of the REGISTERs answered below */
    texts = apr_array_make(p, (int)apr_hash_count(replica_due), sizeof(const char *));
    for (hi = apr_hash_first(p, replica_due); hi; hi = apr_hash_next(hi))
        APR_ARRAY_PUSH(texts, const char *) = replica_state(p, apr_hash_this_key(hi));
    replica_due = NULL;
    replica_send(p, -1, apr_array_pstrcat(p, texts, '\0'));
    apr_pool_clear(p);
    a = answers;
    answers = NULL;
    answers_tail = &answers;
    for (; a; a = a->next)
        reg_answer(a->p, a->aor, a->want_scripts, a->cb, a->baton);
}

/* After a change by the home engine: the AoR's state to the others. */
static void replica_broadcast(apr_pool_t *p, const char *aor)
{
    if (sip_engine_count() < 2)
        return;
    if (!loc_loop) {            /* no loop to end a turn: at once */
        replica_send(p, -1, replica_state(p, aor));
        return;
    }
    if (!replica_due_pool)
        apr_pool_create(&replica_due_pool, loc_pool ? apr_pool_parent_get(loc_pool) : NULL);
    if (!replica_due) {
        replica_due = apr_hash_make(replica_due_pool);
        sip_timer_set(loc_loop, &replica_due_timer, 0, replica_flush, NULL);
    }
    apr_hash_set(replica_due, apr_pstrdup(replica_due_pool, aor), APR_HASH_KEY_STRING, "");
}

/* The mod_dbd store with several engines: after the home stored changes,
 * the others drop the AoRs from their cache and learn their flows.  The
 * changes a batch committed go to them together (sip_location_dbd.c),
 * before their REGISTERs are answered: a few datagrams per batch rather
 * than one per REGISTER. */
void sip_location_dbd_announce(apr_pool_t *p, apr_array_header_t *lines, const char *aor,
                               const apr_array_header_t *current)
{
    int i;

    APR_ARRAY_PUSH(lines, const char *) = apr_psprintf(p, "A\t%s\n", jesc(p, aor));
    for (i = 0; current && i < current->nelts; i++)
        APR_ARRAY_PUSH(lines, const char *) =
            replica_line(p, APR_ARRAY_IDX(current, i, sip_binding_t *));
}

void sip_location_dbd_announce_send(apr_pool_t *p, const apr_array_header_t *lines)
{
    if (lines->nelts)
        replica_send(p, -1, apr_array_pstrcat(p, lines, '\0'));
}

int sip_location_is_dbd(void)
{
    return sip_location_dbd_on();
}

apr_status_t sip_location_init(sip_loop_t *loop, apr_pool_t *p, int journal_fd)
{
    loc_loop = loop;
    apr_pool_create(&loc_pool, p);
    apr_pool_create(&scratch, p);
    aors = apr_hash_make(p);
    index_ = apr_hash_make(p);
    if (sip_location_dbd_on())
        return sip_location_dbd_start(loop, p);
    journal = journal_fd;
    if (journal >= 0) {
        /* pread, not read: with several engines the descriptor (and so
         * its offset) is shared by all of them, reading at once */
        apr_size_t cap = 65536, have = 0, lines = 0;
        char *buf = malloc(cap + 1);
        off_t at = 0;
        int version = 1, eof = 0;
        apr_time_t t0 = apr_time_now();
        int locked = sip_engine_count() > 1 && journal_lock(F_RDLCK) == 0;

        bad_lines = 0;
        while (buf && !eof) {
            ssize_t n;
            char *line, *nl;
            if (have == cap) {          /* a line longer than the buffer */
                char *bigger = realloc(buf, 2 * cap + 1);
                if (!bigger)
                    break;
                buf = bigger;
                cap *= 2;
            }
            n = pread(journal, buf + have, cap - have, at);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                eof = 1;
                if (!have)
                    break;
                buf[have++] = '\n';     /* the last line, unterminated */
            }
            else {
                at += n;
                have += (apr_size_t)n;
            }
            buf[have] = '\0';
            for (line = buf; (nl = memchr(line, '\n', have - (apr_size_t)(line - buf)));
                 line = nl + 1) {
                *nl = '\0';
                replay_line(line, &version, 0);
                lines++;
            }
            have -= (apr_size_t)(line - buf);
            memmove(buf, line, have);
        }
        free(buf);
        if (locked) {   /* not while engine 0 rewrites it */
            journal_lock(F_UNLCK);
            shared_base_bytes = (apr_off_t)at;
            shared_base_lines = lines;
        }
        /* With several engines nothing rewrites the journal at start, so
         * the lines they append (escaped, version 3) must follow a V line
         * of their version, or a replay of an empty or older journal reads
         * them unescaped.  Two engines may both write it: harmless. */
        if (sip_engine_count() > 1 && version != JOURNAL_VERSION)
            journal_write(apr_psprintf(scratch, "V\t%d\n", JOURNAL_VERSION));
        if (bad_lines)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf,
                         "sip location: %" APR_SIZE_T_FMT " unreadable journal lines skipped",
                         bad_lines);
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                     "sip location: %" APR_SIZE_T_FMT " bindings restored from %" APR_SIZE_T_FMT
                     " journal lines in %" APR_TIME_T_FMT " ms", live, lines,
                     apr_time_as_msec(apr_time_now() - t0));
        sweep(NULL);
        if (sip_engine_count() == 1)
            compact();
        else if (loop) {
            jbuf_on = 1;
            apr_pool_cleanup_register(p, NULL, journal_flush_cleanup,
                                      apr_pool_cleanup_null);
        }
    }
    sip_timer_set(loop, &sweep_timer, apr_time_from_sec(1), sweep, NULL);
    return APR_SUCCESS;
}


/* ---- change checking, shared by both stores ---- */

static const char *binding_key(apr_pool_t *p, const sip_binding_t *b)
{
    return sip_binding_identity(p, b);
}

/* Check one REGISTER against the bindings its AoR has now ('existing', as
 * returned by a lookup): 500 when it is older than what a binding has seen
 * (§10.3 step 7: same Call-ID, CSeq not higher; refused as a whole), 403
 * when it would leave more than chg->max_contacts bindings, 0 when it may
 * be applied.  *added gets the number of bindings it creates less those it
 * removes.  One hash of the existing bindings: O(existing + new). */
int sip_location_reg_check(apr_pool_t *p, const apr_array_header_t *existing,
                           const sip_reg_change_t *chg, long *added)
{
    apr_hash_t *have = apr_hash_make(p), *seen = apr_hash_make(p);
    apr_time_t now = apr_time_now();
    long count = 0, delta = 0;
    int i;

    *added = 0;
    for (i = 0; existing && i < existing->nelts; i++) {
        const sip_binding_t *old = APR_ARRAY_IDX(existing, i, sip_binding_t *);
        if (strcmp(old->call_id, chg->call_id) == 0 && chg->cseq <= old->cseq && chg->star)
            return 500;
        apr_hash_set(have, binding_key(p, old), APR_HASH_KEY_STRING, old);
        count++;
    }
    if (chg->star) {
        *added = -count;
        return 0;
    }
    for (i = 0; i < chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *k = binding_key(p, b);
        const sip_binding_t *old = apr_hash_get(have, k, APR_HASH_KEY_STRING);
        if (old && strcmp(old->call_id, chg->call_id) == 0 && chg->cseq <= old->cseq)
            return 500;
        if (apr_hash_get(seen, k, APR_HASH_KEY_STRING))
            continue;   /* the same contact twice: the last one wins, counted once */
        apr_hash_set(seen, k, APR_HASH_KEY_STRING, b);
    }
    /* what is there after the change, counting each contact once */
    for (i = chg->bindings->nelts - 1; i >= 0; i--) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *k = binding_key(p, b);
        if (apr_hash_get(seen, k, APR_HASH_KEY_STRING) == NULL)
            continue;
        apr_hash_set(seen, k, APR_HASH_KEY_STRING, NULL);
        if (b->expires <= now)
            delta -= apr_hash_get(have, k, APR_HASH_KEY_STRING) != NULL;
        else
            delta += apr_hash_get(have, k, APR_HASH_KEY_STRING) == NULL;
    }
    *added = delta;
    if (delta > 0 && chg->max_contacts > 0 && count + delta > chg->max_contacts)
        return 403;
    return 0;
}

/* ---- the interface ---- */

void sip_location_register(apr_pool_t *p, const sip_reg_change_t *chg, sip_location_reg_cb cb,
                           void *baton)
{
    apr_array_header_t *cur;
    long added;
    int i, status;

    if (sip_location_dbd_on()) {
        sip_location_dbd_register(p, chg, sip_engine_count() > 1
                                  && (chg->star || chg->bindings->nelts), cb, baton);
        return;
    }
    cur = sip_location_lookup(p, chg->aor);
    status = sip_location_reg_check(p, cur, chg, &added);
    /* the memory store holds every binding in the engine: a total cap */
    if (!status && added > 0 && max_bindings && live + (apr_size_t)added > max_bindings)
        status = 503;
    if (!status && chg->script_ops && chg->script_ops->nelts) {
        /* draft-lennox-sip-reg-payload §4.1: the scripts first (the only
         * step that can still fail); if they fail, no binding changes */
        apr_array_header_t *stored;
        status = sip_script_store_list(p, chg->aor, &stored) == APR_SUCCESS ? 0 : 500;
        if (!status)
            status = sip_script_check(stored, chg->script_ops, chg->if_unmodified_since,
                                      chg->max_script_total);
        if (!status)
            status = sip_script_store_apply(p, chg->aor, chg->script_ops,
                                            sip_script_next_mtime(stored, chg->script_ops,
                                                                  apr_time_now()));
    }
    if (status) {
        cb(baton, status, cur, NULL);
        return;
    }
    if (chg->star)
        sip_location_remove_all(chg->aor);
    else
        for (i = 0; i < chg->bindings->nelts; i++)
            sip_location_set(&APR_ARRAY_IDX(chg->bindings, i, sip_binding_t));
    if (chg->star || chg->bindings->nelts) {   /* a fetch changes nothing */
        replica_broadcast(p, chg->aor);
        if (replica_due) {      /* answered once the turn's replicas are sent */
            reg_answer_t *a = apr_pcalloc(p, sizeof(*a));
            a->p = p;
            a->aor = chg->aor;
            a->want_scripts = chg->want_scripts;
            a->cb = cb;
            a->baton = baton;
            *answers_tail = a;
            answers_tail = &a->next;
            return;
        }
    }
    reg_answer(p, chg->aor, chg->want_scripts, cb, baton);
}

void sip_location_fetch_scripts(apr_pool_t *p, const char *aor, sip_location_scripts_cb cb,
                                void *baton)
{
    apr_array_header_t *scripts;

    if (sip_location_dbd_on()) {
        sip_location_dbd_fetch_scripts(p, aor, cb, baton);
        return;
    }
    if (sip_script_store_list(p, aor, &scripts) != APR_SUCCESS)
        cb(baton, 500, NULL);
    else
        cb(baton, 0, scripts);
}

void sip_location_fetch(apr_pool_t *p, const char *aor, sip_location_cb cb, void *baton)
{
    if (sip_location_dbd_on()) {
        sip_location_dbd_fetch(p, aor, cb, baton);
        return;
    }
    cb(baton, 0, sip_location_lookup(p, aor));
}
