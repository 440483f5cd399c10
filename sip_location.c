#include "sip_location.h"
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
#include <unistd.h>
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
static sip_timer_t sweep_timer;
static apr_size_t max_bindings = SIP_DEFAULT_MAX_BINDINGS;
static apr_interval_time_t max_lifetime = apr_time_from_sec(SIP_DEFAULT_MAX_EXPIRES);

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

static void journal_write(const char *line)
{
    apr_size_t len = strlen(line), off = 0;

    if (journal < 0)
        return;
    while (off < len) {
        ssize_t n = write(journal, line + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                         "sip location: cannot write the journal; registrations may be lost "
                         "on restart");
            return;
        }
        off += (apr_size_t)n;
    }
    journal_lines++;
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
 * lines, 'D', 'A', 'K', 'V'), or 0 for a line to skip; numbers out of
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
    if (n >= 2 && (strcmp(f[0], "A") == 0 || strcmp(f[0], "K") == 0) && *f[1]) {
        r->b.aor = f[1];
        return r->type = f[0][0];
    }
    return 0;
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

static int by_q(const void *a, const void *b)
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
    qsort(out->elts, (size_t)out->nelts, sizeof(sip_binding_t *), by_q);
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
     * Several engines append to it, each for the AoRs homed there: a
     * rewrite by one would lose lines another wrote meanwhile, so it is
     * compacted only with one engine (docs/architecture.md). */
    if (journal_lines > 10000 && journal_lines > 4 * live && sip_engine_count() == 1)
        compact();
    else
        apr_pool_clear(loc_pool);
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
    default:
        if (*line)
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
    const char *out = apr_psprintf(p, "A\t%s\n", jesc(p, aor));
    int i;

    for (i = 0; e && i < e->n; i++)
        if (e->b[i]->b.expires > now)
            out = apr_pstrcat(p, out, replica_line(p, &e->b[i]->b), NULL);
    return out;
}

void sip_location_replica_apply(const char *text, apr_size_t len)
{
    char *copy = malloc(len + 1), *line, *nl;
    int version = JOURNAL_VERSION;

    if (!copy)
        return;
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

/* After a change by the home engine: the AoR's state to the others. */
static void replica_broadcast(apr_pool_t *p, const char *aor)
{
    sip_ho_origin_t o;
    const char *text;

    if (sip_engine_count() < 2)
        return;
    text = sip_location_replica_text(p, aor);
    memset(&o, 0, sizeof(o));
    o.engine = sip_engine_self();
    o.flow = sip_transport_flow_generation();
    sip_handover_broadcast(SIP_HO_REPLICA, &o, text, strlen(text));
}

static apr_status_t dbd_start(apr_pool_t *p);
static server_rec *dbd_server;

apr_status_t sip_location_init(sip_loop_t *loop, apr_pool_t *p, int journal_fd)
{
    loc_loop = loop;
    apr_pool_create(&loc_pool, p);
    apr_pool_create(&scratch, p);
    aors = apr_hash_make(p);
    index_ = apr_hash_make(p);
    if (dbd_server) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, dbd_server,
                     "sip location: bindings are kept in the mod_dbd database");
        return dbd_start(p);
    }
    journal = journal_fd;
    if (journal >= 0) {
        FILE *f;
        char *line = NULL;
        size_t cap = 0;
        int fd2 = dup(journal), version = 1;
        apr_size_t lines = 0;
        apr_time_t t0 = apr_time_now();

        bad_lines = 0;
        if (fd2 >= 0 && lseek(journal, 0, SEEK_SET) >= 0 && (f = fdopen(fd2, "r"))) {
            while (getline(&line, &cap, f) > 0) {
                line[strcspn(line, "\n")] = '\0';
                replay_line(line, &version, 0);
                lines++;
            }
            free(line);
            fclose(f);
        }
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
static int reg_check(apr_pool_t *p, const apr_array_header_t *existing,
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

static apr_array_header_t *copy_bindings(apr_pool_t *p, const apr_array_header_t *in)
{
    apr_array_header_t *out;
    int i;

    if (!in)
        return NULL;
    out = apr_array_make(p, in->nelts ? in->nelts : 1, sizeof(sip_binding_t *));
    for (i = 0; i < in->nelts; i++) {
        const sip_binding_t *b = APR_ARRAY_IDX(in, i, sip_binding_t *);
        sip_binding_t *c = apr_pmemdup(p, b, sizeof(*c));
        c->aor = apr_pstrdup(p, b->aor);
        c->contact = apr_pstrdup(p, b->contact);
        c->params = apr_pstrdup(p, b->params ? b->params : "");
        c->call_id = apr_pstrdup(p, b->call_id);
        c->path = b->path ? apr_pstrdup(p, b->path) : NULL;
        c->display = b->display ? apr_pstrdup(p, b->display) : NULL;
        c->key = b->key ? apr_pstrdup(p, b->key) : NULL;
        c->received = b->received ? apr_pstrdup(p, b->received) : NULL;
        c->instance = b->instance ? apr_pstrdup(p, b->instance) : NULL;
        *(sip_binding_t **)apr_array_push(out) = c;
    }
    return out;
}

/* Scripts made in one pool, copied to another (NULL stays NULL). */
static apr_array_header_t *copy_scripts(apr_pool_t *p, const apr_array_header_t *in)
{
    apr_array_header_t *out;
    int i;

    if (!in || !p)
        return NULL;
    out = apr_array_make(p, in->nelts ? in->nelts : 1, sizeof(sip_script_t *));
    for (i = 0; i < in->nelts; i++) {
        const sip_script_t *s = APR_ARRAY_IDX(in, i, sip_script_t *);
        sip_script_t *c = apr_pmemdup(p, s, sizeof(*s));
        c->aor = apr_pstrdup(p, s->aor);
        c->type = apr_pstrdup(p, s->type);
        c->content_type = apr_pstrdup(p, s->content_type);
        c->body = apr_pstrmemdup(p, s->body, s->len);
        *(sip_script_t **)apr_array_push(out) = c;
    }
    return out;
}

static const apr_array_header_t *copy_ops(apr_pool_t *p, const apr_array_header_t *in)
{
    apr_array_header_t *out;
    int i;

    if (!in)
        return NULL;
    out = apr_array_copy(p, in);
    for (i = 0; i < out->nelts; i++) {
        sip_script_op_t *op = &APR_ARRAY_IDX(out, i, sip_script_op_t);
        op->type = apr_pstrdup(p, op->type);
        op->content_type = op->content_type ? apr_pstrdup(p, op->content_type) : NULL;
        op->body = apr_pstrmemdup(p, op->body ? op->body : "", op->len);
    }
    return out;
}

/* ---- the database store (mod_dbd), worked by its own thread ---- */

#include "apr_dbd.h"
#include "apr_thread_proc.h"
#include "apr_thread_mutex.h"
#include "apr_thread_cond.h"
#include "apr_optional.h"
#include "apr_portable.h"
#include "mod_dbd.h"
#include <fcntl.h>

typedef struct loc_job {
    struct loc_job *next;
    apr_pool_t *pool;           /* the job's own; the DB thread works in it */
    int fetch;                  /* 1: bindings, 2: scripts */
    const char *aor;
    sip_reg_change_t chg;
    int status;
    apr_array_header_t *result;
    apr_array_header_t *scripts;
    apr_pool_t *caller_pool;
    sip_location_cb cb;
    sip_location_reg_cb reg_cb;
    sip_location_scripts_cb scripts_cb;
    void *baton;
} loc_job_t;

static apr_thread_mutex_t *dbd_lock;
static apr_thread_cond_t *dbd_cond;
static loc_job_t *dbd_todo, *dbd_todo_tail, *dbd_done;
static int dbd_wake[2] = {-1, -1};
static sip_io_t dbd_wake_io;
static int dbd_stopping;
static sip_timer_t dbd_cleanup_timer;

void sip_location_use_dbd(server_rec *s)
{
    dbd_server = s;
}

int sip_location_is_dbd(void)
{
    return dbd_server != NULL;
}

static const char *esc(apr_pool_t *p, ap_dbd_t *db, const char *s)
{
    return apr_pstrcat(p, "'", apr_dbd_escape(db->driver, p, s ? s : "", db->handle), "'", NULL);
}

/* What names a row (ON CONFLICT, PRIMARY KEY). */
#define DB_KEY "(aor, contact, instance, reg_id)"

static int db_exec(apr_pool_t *p, ap_dbd_t *db, const char *sql)
{
    int rows = 0, rc = apr_dbd_query(db->driver, db->handle, &rows, sql);

    if (rc != 0)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server, "sip location: SQL failed: %s (%s)",
                     apr_dbd_error(db->driver, db->handle, rc), sql);
    (void)p;
    return rc;
}

/* Bindings of an AoR as stored; NULL when it was never registered. */
static apr_array_header_t *db_select(apr_pool_t *p, ap_dbd_t *db, const char *aor, int *err)
{
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    apr_array_header_t *out = apr_array_make(p, 4, sizeof(sip_binding_t *));
    apr_time_t now = apr_time_now();
    int known = 0, rc;
    const char *sql = apr_pstrcat(p, "SELECT contact, params, call_id, cseq, expires, q, path, "
                                  "display, transport, received, instance, reg_id "
                                  "FROM sip_location WHERE aor = ", esc(p, db, aor), NULL);

    *err = 0;
    rc = apr_dbd_select(db->driver, p, db->handle, &res, sql, 0);
    if (rc != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server, "sip location: SQL failed: %s",
                     apr_dbd_error(db->driver, db->handle, rc));
        *err = 1;
        return NULL;
    }
    while (apr_dbd_get_row(db->driver, p, res, &row, -1) == 0) {
        const char *contact = apr_dbd_get_entry(db->driver, row, 0);
        const char *path = apr_dbd_get_entry(db->driver, row, 6);
        const char *display = apr_dbd_get_entry(db->driver, row, 7);
        const char *transport = apr_dbd_get_entry(db->driver, row, 8);
        const char *received = apr_dbd_get_entry(db->driver, row, 9);
        const char *instance = apr_dbd_get_entry(db->driver, row, 10);
        const char *reg_id = apr_dbd_get_entry(db->driver, row, 11);
        sip_binding_t *b;
        known = 1;
        if (!contact || !*contact)
            continue;   /* the marker row that makes the AoR "known" */
        b = apr_pcalloc(p, sizeof(*b));
        b->aor = aor;
        b->contact = apr_pstrdup(p, contact);
        b->params = apr_pstrdup(p, apr_dbd_get_entry(db->driver, row, 1));
        b->call_id = apr_pstrdup(p, apr_dbd_get_entry(db->driver, row, 2));
        b->cseq = (apr_uint32_t)apr_atoi64(apr_dbd_get_entry(db->driver, row, 3));
        b->expires = (apr_time_t)apr_atoi64(apr_dbd_get_entry(db->driver, row, 4));
        b->q1000 = atoi(apr_dbd_get_entry(db->driver, row, 5));
        b->path = path && *path ? apr_pstrdup(p, path) : NULL;
        b->display = display && *display ? apr_pstrdup(p, display) : NULL;
        b->transport = transport && sip_tp_from_name(transport) > 0 ? sip_tp_from_name(transport)
                                                                    : SIP_TP_UDP;
        b->received = received && *received ? apr_pstrdup(p, received) : NULL;
        b->instance = instance && *instance ? apr_pstrdup(p, instance) : NULL;
        b->reg_id = b->instance && reg_id ? atoi(reg_id) : 0;
        if (b->expires > now)
            *(sip_binding_t **)apr_array_push(out) = b;
    }
    if (!known)
        return NULL;
    qsort(out->elts, (size_t)out->nelts, sizeof(sip_binding_t *), by_q);
    return out;
}

/* The columns of sip_location, each with its type, as created today. */
#define DB_COLUMNS "aor VARCHAR(255) NOT NULL, contact VARCHAR(1024) NOT NULL, " \
    "params VARCHAR(1024) NOT NULL DEFAULT '', call_id VARCHAR(255) NOT NULL, " \
    "cseq BIGINT NOT NULL, expires BIGINT NOT NULL, q INTEGER NOT NULL, " \
    "path VARCHAR(2048), display VARCHAR(1024) NOT NULL DEFAULT '', " \
    "transport VARCHAR(8) NOT NULL DEFAULT '', received VARCHAR(64) NOT NULL DEFAULT '', " \
    "instance VARCHAR(255) NOT NULL DEFAULT '', reg_id INTEGER NOT NULL DEFAULT 0"

static int db_has_column(apr_pool_t *p, ap_dbd_t *db, const char *col)
{
    int rows = 0;

    return apr_dbd_query(db->driver, db->handle, &rows,
                         apr_pstrcat(p, "SELECT ", col, " FROM sip_location WHERE 1 = 0",
                                     NULL)) == 0;
}

/* Create the table, or bring an older one up to date; 1 when done.
 * RFC-neutral schema: one row per binding, plus a marker row (empty
 * contact) per known AoR; works on SQLite and PostgreSQL.  A binding is
 * named by (aor, contact, instance, reg_id): two flows of one instance
 * (RFC 5626 §6) may register the same Contact URI. */
static int db_schema(apr_pool_t *p, ap_dbd_t *db)
{
    int ok = db_exec(p, db, "CREATE TABLE IF NOT EXISTS sip_location (" DB_COLUMNS ", "
                     "PRIMARY KEY " DB_KEY ")") == 0;

    /* columns added over time (each check fails harmlessly; not logged) */
    if (!db_has_column(p, db, "display"))
        db_exec(p, db, "ALTER TABLE sip_location ADD COLUMN "
                "display VARCHAR(1024) NOT NULL DEFAULT ''");
    if (!db_has_column(p, db, "transport"))
        db_exec(p, db, "ALTER TABLE sip_location ADD COLUMN "
                "transport VARCHAR(8) NOT NULL DEFAULT ''");
    if (!db_has_column(p, db, "instance")) {
        /* issue 17: the primary key changes, which neither SQLite nor
         * every PostgreSQL allows in place: copy into a new table */
        apr_dbd_transaction_t *tx = NULL;
        apr_dbd_transaction_start(db->driver, p, db->handle, &tx);
        if (db_exec(p, db, "ALTER TABLE sip_location RENAME TO sip_location_v2") == 0
            && db_exec(p, db, "CREATE TABLE sip_location (" DB_COLUMNS ", "
                       "PRIMARY KEY " DB_KEY ")") == 0
            && db_exec(p, db, "INSERT INTO sip_location (aor, contact, params, call_id, cseq, "
                       "expires, q, path, display, transport) SELECT aor, contact, params, "
                       "call_id, cseq, expires, q, path, display, transport "
                       "FROM sip_location_v2") == 0
            && db_exec(p, db, "DROP TABLE sip_location_v2") == 0)
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, dbd_server, "sip location: table "
                         "sip_location brought to the issue 17 schema (received, instance, "
                         "reg_id)");
        else {
            apr_dbd_transaction_mode_set(db->driver, tx, APR_DBD_TRANSACTION_ROLLBACK);
            ok = 0;
        }
        apr_dbd_transaction_end(db->driver, p, tx);
    }
    db_exec(p, db, "CREATE INDEX IF NOT EXISTS sip_location_expires ON sip_location (expires)");
    sip_script_db_schema(p, db->driver, db->handle);
    return ok;
}

static void db_run_job(ap_dbd_t *db, loc_job_t *j)
{
    apr_pool_t *p = j->pool;
    apr_dbd_transaction_t *tx = NULL;
    apr_array_header_t *cur;
    apr_hash_t *spelling;
    long added;
    int err, i;

    if (j->fetch == 2) {
        j->status = sip_script_db_list(p, db->driver, db->handle, j->aor, &j->scripts);
        return;
    }
    if (j->fetch) {
        j->result = db_select(p, db, j->aor, &err);
        return;
    }
    /* read, check, write and read again in one transaction, so that two
     * nodes registering the same AoR at once do not mix their changes */
    apr_dbd_transaction_start(db->driver, p, db->handle, &tx);
    cur = db_select(p, db, j->chg.aor, &err);
    if (err) {
        j->status = 500;
        goto done;
    }
    j->status = reg_check(p, cur, &j->chg, &added);
    if (j->status) {
        j->result = cur;
        goto done;
    }
    if (j->chg.script_ops && j->chg.script_ops->nelts) {
        /* draft-lennox-sip-reg-payload §4.1: the scripts first; if they
         * fail, the bindings are not touched either */
        apr_array_header_t *stored;
        j->status = sip_script_db_list(p, db->driver, db->handle, j->chg.aor, &stored);
        if (!j->status)
            j->status = sip_script_check(stored, j->chg.script_ops, j->chg.if_unmodified_since,
                                         j->chg.max_script_total);
        if (!j->status)
            j->status = sip_script_db_apply(p, db->driver, db->handle, j->chg.aor,
                                            j->chg.script_ops,
                                            sip_script_next_mtime(stored, j->chg.script_ops,
                                                                  apr_time_now()));
        if (j->status) {
            j->result = cur;
            goto done;
        }
    }
    if (!j->chg.star && j->chg.bindings->nelts)     /* known from now on: 480, not 404 */
        db_exec(p, db, apr_pstrcat(p, "INSERT INTO sip_location (aor, contact, params, call_id, "
                                   "cseq, expires, q, path) VALUES (", esc(p, db, j->chg.aor),
                                   ", '', '', '', 0, 0, 0, '') ON CONFLICT " DB_KEY " DO NOTHING",
                                   NULL));
    if (j->chg.star)
        db_exec(p, db, apr_pstrcat(p, "DELETE FROM sip_location WHERE aor = ",
                                   esc(p, db, j->chg.aor), " AND contact <> ''", NULL));
    /* the row of an equal URI keeps its spelling as the key */
    spelling = apr_hash_make(p);
    for (i = 0; cur && i < cur->nelts; i++) {
        const sip_binding_t *old = APR_ARRAY_IDX(cur, i, sip_binding_t *);
        apr_hash_set(spelling, binding_key(p, old), APR_HASH_KEY_STRING, old->contact);
    }
    for (i = 0; !j->chg.star && i < j->chg.bindings->nelts; i++) {
        sip_binding_t *b = &APR_ARRAY_IDX(j->chg.bindings, i, sip_binding_t);
        const char *key = apr_hash_get(spelling, binding_key(p, b), APR_HASH_KEY_STRING);
        const char *inst = b->instance ? b->instance : "";
        int rid = b->instance ? b->reg_id : 0;
        /* RFC 5626 §6: an instance's binding keeps its name when its
         * Contact changes: the row of the old Contact goes */
        if (!key || (b->instance && !sip_uri_equal(key, b->contact)))
            key = b->contact;
        if (b->instance)
            db_exec(p, db, apr_psprintf(p, "DELETE FROM sip_location WHERE aor = %s AND instance "
                                        "= %s AND reg_id = %d AND contact <> %s",
                                        esc(p, db, j->chg.aor), esc(p, db, inst), rid,
                                        esc(p, db, key)));
        if (b->expires <= apr_time_now()) {
            db_exec(p, db, apr_psprintf(p, "DELETE FROM sip_location WHERE aor = %s AND contact "
                                        "= %s AND instance = %s AND reg_id = %d",
                                        esc(p, db, j->chg.aor), esc(p, db, key),
                                        esc(p, db, inst), rid));
            continue;
        }
        db_exec(p, db, apr_psprintf(p, "INSERT INTO sip_location (aor, contact, params, call_id, "
                                    "cseq, expires, q, path, display, transport, received, "
                                    "instance, reg_id) VALUES (%s, %s, %s, %s, %u, "
                                    "%" APR_TIME_T_FMT ", %d, %s, %s, %s, %s, %s, %d) ON CONFLICT "
                                    DB_KEY " DO UPDATE "
                                    "SET params = excluded.params, call_id = excluded.call_id, "
                                    "cseq = excluded.cseq, expires = excluded.expires, "
                                    "q = excluded.q, path = excluded.path, "
                                    "display = excluded.display, transport = excluded.transport, "
                                    "received = excluded.received",
                                    esc(p, db, j->chg.aor), esc(p, db, key),
                                    esc(p, db, b->params), esc(p, db, b->call_id), b->cseq,
                                    b->expires, b->q1000, esc(p, db, b->path),
                                    esc(p, db, b->display),
                                    esc(p, db, b->transport != SIP_TP_UDP
                                               ? sip_tp_param(b->transport) : ""),
                                    esc(p, db, b->received), esc(p, db, inst), rid));
    }
    j->result = db_select(p, db, j->chg.aor, &err);
    if (err)
        j->status = 500;
    if (!j->status && j->chg.want_scripts)
        j->status = sip_script_db_list(p, db->driver, db->handle, j->chg.aor, &j->scripts);
done:
    if (tx) {
        if (j->status)      /* nothing of a refused REGISTER may stay */
            apr_dbd_transaction_mode_set(db->driver, tx, APR_DBD_TRANSACTION_ROLLBACK);
        apr_dbd_transaction_end(db->driver, p, tx);
    }
}

static void *APR_THREAD_FUNC db_thread(apr_thread_t *thd, void *data)
{
    APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    apr_pool_t *tp;
    int schema_done = 0;

    (void)data;
    apr_pool_create(&tp, NULL);
    for (;;) {
        loc_job_t *j;
        ap_dbd_t *db;
        char one = 1;

        apr_thread_mutex_lock(dbd_lock);
        while (!dbd_todo && !dbd_stopping)
            apr_thread_cond_wait(dbd_cond, dbd_lock);
        if (dbd_stopping) {
            apr_thread_mutex_unlock(dbd_lock);
            break;
        }
        j = dbd_todo;
        dbd_todo = j->next;
        if (!dbd_todo)
            dbd_todo_tail = NULL;
        apr_thread_mutex_unlock(dbd_lock);

        db = dbd_open ? dbd_open(tp, dbd_server) : NULL;
        if (!db) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, dbd_server,
                         "sip location: no database connection (is mod_dbd configured?)");
            j->status = 500;
        }
        else {
            if (!schema_done)
                schema_done = db_schema(tp, db);
            if (j->aor && !j->fetch && j->chg.aor == NULL) {
                /* the periodic cleanup job: safe with several nodes */
                db_exec(j->pool, db, apr_psprintf(j->pool, "DELETE FROM sip_location WHERE "
                                                  "contact <> '' AND expires < %" APR_TIME_T_FMT,
                                                  apr_time_now()));
            }
            else
                db_run_job(db, j);
            if (dbd_close)
                dbd_close(dbd_server, db);
        }
        apr_pool_clear(tp);
        apr_thread_mutex_lock(dbd_lock);
        j->next = dbd_done;
        dbd_done = j;
        apr_thread_mutex_unlock(dbd_lock);
        if (write(dbd_wake[1], &one, 1) < 0) {
            /* the pipe is full: the loop is already awake */
        }
    }
    apr_pool_destroy(tp);
    apr_thread_exit(thd, APR_SUCCESS);
    return NULL;
}

/* The flows of bindings kept in the database: a connection belongs to this
 * engine alone, so it is kept here ("aor \2 uri key" -> flow_rec_t), set
 * when a REGISTER made over one is stored, and added to what the database
 * answers.  Another node sharing the database sees the binding without
 * its flow (and does not use it when its transport needs one). */
typedef struct flow_rec {
    char *hkey;
    apr_uint64_t flow;
    apr_time_t expires;
} flow_rec_t;

static apr_hash_t *dbd_flows;

static int flow_open(apr_uint64_t id)
{
    sip_source_t src;

    if (!sip_transport_flow_source(id, &src))
        return 0;
    sip_source_release(&src);
    return 1;
}

static void dbd_flow_del(const char *hkey)
{
    flow_rec_t *r = apr_hash_get(dbd_flows, hkey, APR_HASH_KEY_STRING);

    if (r) {
        apr_hash_set(dbd_flows, hkey, APR_HASH_KEY_STRING, NULL);
        free(r->hkey);
        free(r);
    }
}

/* A stored change: its bindings' flows ("Contact: *" forgets the AoR's). */
static void dbd_flows_apply(apr_pool_t *p, const sip_reg_change_t *chg)
{
    apr_hash_index_t *hi;
    int i;

    if (chg->star) {
        const char *prefix = apr_pstrcat(p, chg->aor, "\2", NULL);
        apr_array_header_t *gone = apr_array_make(p, 4, sizeof(const char *));
        for (hi = apr_hash_first(p, dbd_flows); hi; hi = apr_hash_next(hi)) {
            const char *k = apr_hash_this_key(hi);
            if (!strncmp(k, prefix, strlen(prefix)))
                *(const char **)apr_array_push(gone) = k;
        }
        for (i = 0; i < gone->nelts; i++)
            dbd_flow_del(APR_ARRAY_IDX(gone, i, const char *));
        return;
    }
    for (i = 0; i < chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(chg->bindings, i, sip_binding_t);
        const char *hkey = apr_pstrcat(p, chg->aor, "\2", binding_key(p, b), NULL);
        flow_rec_t *r;
        dbd_flow_del(hkey);
        if (!b->flow || b->expires <= apr_time_now())
            continue;
        r = malloc(sizeof(*r));
        if (!r || !(r->hkey = strdup(hkey))) {
            free(r);
            continue;
        }
        r->flow = b->flow;
        r->expires = b->expires;
        apr_hash_set(dbd_flows, r->hkey, APR_HASH_KEY_STRING, r);
    }
}

/* The flows of bindings read from the database. */
static void dbd_flows_add(apr_pool_t *p, apr_array_header_t *bs)
{
    int i;

    for (i = 0; bs && i < bs->nelts; i++) {
        sip_binding_t *b = APR_ARRAY_IDX(bs, i, sip_binding_t *);
        flow_rec_t *r = apr_hash_get(dbd_flows, apr_pstrcat(p, b->aor, "\2", binding_key(p, b),
                                                            NULL), APR_HASH_KEY_STRING);
        b->flow = r ? r->flow : 0;
    }
}

/* Every minute: forget the flows of expired bindings and closed connections. */
static void dbd_flows_sweep(apr_pool_t *p)
{
    apr_array_header_t *gone = apr_array_make(p, 4, sizeof(const char *));
    apr_hash_index_t *hi;
    apr_time_t now = apr_time_now();
    int i;

    for (hi = apr_hash_first(p, dbd_flows); hi; hi = apr_hash_next(hi)) {
        flow_rec_t *r = apr_hash_this_val(hi);
        if (r->expires <= now || !flow_open(r->flow))
            *(const char **)apr_array_push(gone) = r->hkey;
    }
    for (i = 0; i < gone->nelts; i++)
        dbd_flow_del(APR_ARRAY_IDX(gone, i, const char *));
}

static void dbd_completed(void *baton, apr_int16_t ev)
{
    char buf[64];
    loc_job_t *list, *rev = NULL;

    (void)baton;
    (void)ev;
    while (read(dbd_wake[0], buf, sizeof(buf)) > 0)
        ;
    apr_thread_mutex_lock(dbd_lock);
    list = dbd_done;
    dbd_done = NULL;
    apr_thread_mutex_unlock(dbd_lock);
    while (list) {                  /* oldest first */
        loc_job_t *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        loc_job_t *j = rev;
        rev = j->next;
        if (j->reg_cb) {
            apr_array_header_t *cur = copy_bindings(j->caller_pool, j->result);
            if (!j->status)
                dbd_flows_apply(j->pool, &j->chg);
            dbd_flows_add(j->pool, cur);
            j->reg_cb(j->baton, j->status, cur, copy_scripts(j->caller_pool, j->scripts));
        }
        else if (j->scripts_cb)
            j->scripts_cb(j->baton, j->status, j->status ? NULL
                          : copy_scripts(j->caller_pool, j->scripts));
        else if (j->cb) {
            apr_array_header_t *cur = copy_bindings(j->caller_pool, j->result);
            dbd_flows_add(j->pool, cur);
            j->cb(j->baton, j->status, cur);
        }
        else if (j->aor && !*j->aor)
            dbd_flows_sweep(j->pool);   /* the cleanup job is back */
        apr_pool_destroy(j->pool);
    }
}

static void dbd_submit(loc_job_t *j)
{
    apr_thread_mutex_lock(dbd_lock);
    if (dbd_todo_tail)
        dbd_todo_tail->next = j;
    else
        dbd_todo = j;
    dbd_todo_tail = j;
    apr_thread_cond_signal(dbd_cond);
    apr_thread_mutex_unlock(dbd_lock);
}

static loc_job_t *new_job(apr_pool_t *caller, sip_location_cb cb, void *baton);

static void dbd_cleanup(void *baton)
{
    loc_job_t *j = new_job(NULL, NULL, NULL);

    (void)baton;
    j->aor = "";    /* neither fetch nor register: the cleanup */
    dbd_submit(j);
    sip_timer_set(loc_loop, &dbd_cleanup_timer, apr_time_from_sec(60), dbd_cleanup, NULL);
}

static apr_status_t dbd_start(apr_pool_t *p)
{
    apr_thread_t *thd;
    apr_status_t rv;
    apr_socket_t *sock = NULL;
    apr_file_t *rf = NULL;

    (void)sock;
    if (pipe2(dbd_wake, O_NONBLOCK | O_CLOEXEC) < 0)
        return errno;
    if ((rv = apr_thread_mutex_create(&dbd_lock, APR_THREAD_MUTEX_DEFAULT, p))
        || (rv = apr_thread_cond_create(&dbd_cond, p)))
        return rv;
    dbd_flows = apr_hash_make(p);
    apr_os_pipe_put(&rf, &dbd_wake[0], p);
    sip_io_init_file(&dbd_wake_io, rf, dbd_completed, NULL);
    sip_io_watch(loc_loop, &dbd_wake_io, APR_POLLIN);
    rv = apr_thread_create(&thd, NULL, db_thread, NULL, p);
    if (rv == APR_SUCCESS)
        sip_timer_set(loc_loop, &dbd_cleanup_timer, apr_time_from_sec(5), dbd_cleanup, NULL);
    return rv;
}

/* ---- the interface ---- */

/* A job for the database thread, in a pool of its own (the thread must not
 * touch the caller's). */
static loc_job_t *new_job(apr_pool_t *caller, sip_location_cb cb, void *baton)
{
    apr_pool_t *jp;
    loc_job_t *j;

    apr_pool_create(&jp, NULL);
    j = apr_pcalloc(jp, sizeof(*j));
    j->pool = jp;
    j->caller_pool = caller;
    j->cb = cb;
    j->baton = baton;
    return j;
}

void sip_location_register(apr_pool_t *p, const sip_reg_change_t *chg, sip_location_reg_cb cb,
                           void *baton)
{
    apr_array_header_t *cur, *scripts = NULL;
    long added;
    int i, status;

    if (dbd_server) {
        loc_job_t *j = new_job(p, NULL, baton);
        apr_pool_t *jp = j->pool;
        j->reg_cb = cb;
        j->chg = *chg;
        j->chg.script_ops = copy_ops(jp, chg->script_ops);
        j->chg.aor = apr_pstrdup(jp, chg->aor);
        j->chg.call_id = apr_pstrdup(jp, chg->call_id);
        j->chg.bindings = apr_array_copy(jp, chg->bindings);
        for (i = 0; i < j->chg.bindings->nelts; i++) {
            sip_binding_t *b = &APR_ARRAY_IDX(j->chg.bindings, i, sip_binding_t);
            b->aor = j->chg.aor;
            b->contact = apr_pstrdup(jp, b->contact);
            b->params = apr_pstrdup(jp, b->params ? b->params : "");
            b->call_id = j->chg.call_id;
            b->path = b->path ? apr_pstrdup(jp, b->path) : NULL;
            b->display = b->display ? apr_pstrdup(jp, b->display) : NULL;
            b->key = b->key ? apr_pstrdup(jp, b->key) : NULL;
            b->received = b->received ? apr_pstrdup(jp, b->received) : NULL;
            b->instance = b->instance ? apr_pstrdup(jp, b->instance) : NULL;
        }
        dbd_submit(j);
        return;
    }
    cur = sip_location_lookup(p, chg->aor);
    status = reg_check(p, cur, chg, &added);
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
    replica_broadcast(p, chg->aor);
    if (chg->want_scripts && sip_script_store_list(p, chg->aor, &scripts) != APR_SUCCESS)
        scripts = NULL;
    cb(baton, 0, sip_location_lookup(p, chg->aor), scripts);
}

void sip_location_fetch_scripts(apr_pool_t *p, const char *aor, sip_location_scripts_cb cb,
                                void *baton)
{
    apr_array_header_t *scripts;

    if (dbd_server) {
        loc_job_t *j = new_job(p, NULL, baton);
        j->scripts_cb = cb;
        j->fetch = 2;
        j->aor = apr_pstrdup(j->pool, aor);
        dbd_submit(j);
        return;
    }
    if (sip_script_store_list(p, aor, &scripts) != APR_SUCCESS)
        cb(baton, 500, NULL);
    else
        cb(baton, 0, scripts);
}

void sip_location_fetch(apr_pool_t *p, const char *aor, sip_location_cb cb, void *baton)
{
    if (dbd_server) {
        loc_job_t *j = new_job(p, cb, baton);
        j->fetch = 1;
        j->aor = apr_pstrdup(j->pool, aor);
        dbd_submit(j);
        return;
    }
    cb(baton, 0, sip_location_lookup(p, aor));
}
