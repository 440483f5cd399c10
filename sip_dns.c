/* Asynchronous DNS (sip_dns.h): c-ares on the engine's event loop, RFC 3263
 * §4 target selection, a TTL cache, and the reverse lookups of
 * HostnameLookups / Require host.
 *
 * Three parts:
 *  - pure functions (answer parsing, NAPTR filtering and ordering, SRV
 *    ordering, default transports) that the unit tests and the fuzzer call;
 *  - the record cache: one entry per (name, type), filled by one c-ares
 *    query at a time, however many jobs wait for it;
 *  - jobs: one per sip_dns_resolve_* / sip_dns_reverse call, walking
 *    NAPTR -> SRV -> A/AAAA (or PTR -> A/AAAA) through the cache.
 * A job copies what it needs out of an entry when the entry is answered, so
 * an entry may be evicted at any time it has no query in flight. */
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <netdb.h>
#include <ares.h>

#include "apr_strings.h"
#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_portable.h"
#include "sip_dns.h"
#include "sip_log.h"
#include "sip_stats.h"

#define DNS_MAX_TTL      86400   /* positive answers: at most a day */
#define DNS_MAX_NEG_TTL  3600    /* NXDOMAIN / NODATA (RFC 2308 §5: hours at most) */
#define DNS_FAIL_TTL     5       /* SERVFAIL, timeout (RFC 2308 §7: at most 5 min) */
#define DNS_HOSTS_TTL    60      /* an /etc/hosts answer */
#define DNS_MAX_HOSTS    32      /* addresses looked up for one resolution */

/* ------------------------------------------------------------------ */
/* Records and pure functions                                          */
/* ------------------------------------------------------------------ */

typedef struct dns_naptr {
    int order, pref;
    const char *flags, *service, *regexp, *replacement;
} dns_naptr_t;

typedef struct dns_srv {
    int prio, weight, port;
    const char *target;
} dns_srv_t;

/* One parsed answer: 'recs' holds dns_naptr_t, dns_srv_t, or char * (the
 * text of an address, or a PTR name) according to 'type'. */
typedef struct dns_answer {
    int status;             /* SIP_DNS_DONE, NOTFOUND, TIMEOUT, FAILED */
    int ttl;                /* seconds it may be cached */
    apr_array_header_t *recs;
} dns_answer_t;

/* A character-string of NAPTR rdata at *pp (RFC 1035 §3.3). */
static const char *dns_rd_cstr(apr_pool_t *p, const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *s = *pp;
    unsigned n;

    if (s >= end)
        return NULL;
    n = *s++;
    if ((apr_size_t)(end - s) < n)
        return NULL;
    *pp = s + n;
    return apr_pstrmemdup(p, (const char *)s, n);
}

static const char *dns_rd_name(apr_pool_t *p, ns_msg *msg, const unsigned char *at)
{
    char buf[NS_MAXDNAME];

    if (dn_expand(ns_msg_base(*msg), ns_msg_end(*msg), at, buf, sizeof(buf)) < 0)
        return NULL;
    return apr_pstrdup(p, buf[0] ? buf : ".");
}

/* The records of 'type' in a DNS answer (abuf, as c-ares hands it over),
 * with the TTL to cache them for: the smallest TTL of the answer section
 * (CNAMEs included), or for an empty answer the SOA's negative TTL (RFC
 * 2308 §5: min of the SOA's TTL and its MINIMUM; no SOA: a second).
 * Returns the answer's status; malformed data is SIP_DNS_FAILED. */
static int dns_parse(apr_pool_t *p, int type, const unsigned char *abuf, int alen,
                     dns_answer_t *out)
{
    ns_msg msg;
    ns_rr rr;
    int i, n, minttl = -1;
    apr_size_t esz = type == ns_t_naptr ? sizeof(dns_naptr_t)
                     : type == ns_t_srv ? sizeof(dns_srv_t) : sizeof(char *);

    out->recs = apr_array_make(p, 4, (int)esz);
    out->ttl = 0;
    out->status = SIP_DNS_FAILED;
    if (!abuf || alen <= 0 || ns_initparse(abuf, alen, &msg) < 0)
        return out->status;
    n = ns_msg_count(msg, ns_s_an);
    for (i = 0; i < n; i++) {
        const unsigned char *rd, *end;
        int ok = 1;

        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
            return out->status;
        if (ns_rr_class(rr) != ns_c_in)
            continue;
        if (ns_rr_type(rr) == ns_t_cname) {
            minttl = minttl < 0 || (int)ns_rr_ttl(rr) < minttl ? (int)ns_rr_ttl(rr) : minttl;
            continue;
        }
        if ((int)ns_rr_type(rr) != type)
            continue;
        rd = ns_rr_rdata(rr);
        end = rd + ns_rr_rdlen(rr);
        if (type == ns_t_a || type == ns_t_aaaa) {
            char txt[INET6_ADDRSTRLEN];
            int af = type == ns_t_a ? AF_INET : AF_INET6;
            if (ns_rr_rdlen(rr) != (type == ns_t_a ? 4 : 16) || !inet_ntop(af, rd, txt, sizeof(txt)))
                ok = 0;
            else
                APR_ARRAY_PUSH(out->recs, const char *) = apr_pstrdup(p, txt);
        }
        else if (type == ns_t_srv) {
            dns_srv_t s;
            if (ns_rr_rdlen(rr) < 7 || !(s.target = dns_rd_name(p, &msg, rd + 6)))
                ok = 0;
            else {
                s.prio = ns_get16(rd);
                s.weight = ns_get16(rd + 2);
                s.port = ns_get16(rd + 4);
                APR_ARRAY_PUSH(out->recs, dns_srv_t) = s;
            }
        }
        else if (type == ns_t_naptr) {
            dns_naptr_t r;
            const unsigned char *q = rd + 4;
            if (ns_rr_rdlen(rr) < 8 || !(r.flags = dns_rd_cstr(p, &q, end))
                || !(r.service = dns_rd_cstr(p, &q, end)) || !(r.regexp = dns_rd_cstr(p, &q, end))
                || q >= end || !(r.replacement = dns_rd_name(p, &msg, q)))
                ok = 0;
            else {
                r.order = ns_get16(rd);
                r.pref = ns_get16(rd + 2);
                APR_ARRAY_PUSH(out->recs, dns_naptr_t) = r;
            }
        }
        else if (type == ns_t_ptr) {
            const char *name = dns_rd_name(p, &msg, rd);
            if (!name)
                ok = 0;
            else
                APR_ARRAY_PUSH(out->recs, const char *) = name;
        }
        if (!ok)
            return out->status;
        minttl = minttl < 0 || (int)ns_rr_ttl(rr) < minttl ? (int)ns_rr_ttl(rr) : minttl;
    }
    if (out->recs->nelts) {
        out->status = SIP_DNS_DONE;
        /* at least a second: TTL 0 is for "the transaction in progress"
         * (RFC 1035 §3.2.1), which the request that asked still is */
        out->ttl = minttl < 1 ? 1 : minttl > DNS_MAX_TTL ? DNS_MAX_TTL : minttl;
        return out->status;
    }
    /* no data: the negative TTL from the authority section's SOA; without
     * one (RFC 2308 §5: not to be cached) still a second, for the request
     * that asked (see above) */
    out->status = SIP_DNS_NOTFOUND;
    out->ttl = 1;
    n = ns_msg_count(msg, ns_s_ns);
    for (i = 0; i < n; i++) {
        if (ns_parserr(&msg, ns_s_ns, i, &rr) < 0)
            break;
        if (ns_rr_type(rr) == ns_t_soa && ns_rr_rdlen(rr) >= 22) {
            int neg = (int)ns_get32(ns_rr_rdata(rr) + ns_rr_rdlen(rr) - 4);
            if ((int)ns_rr_ttl(rr) < neg)
                neg = (int)ns_rr_ttl(rr);
            out->ttl = neg < 1 ? 1 : neg > DNS_MAX_NEG_TTL ? DNS_MAX_NEG_TTL : neg;
            break;
        }
    }
    return out->status;
}

/* The SRV query a transport means (RFC 3263 §4.1), or NULL. */
static const char *dns_srv_prefix(sip_tp_kind_t k)
{
    switch (k) {
    case SIP_TP_UDP: return "_sip._udp.";
    case SIP_TP_TCP: return "_sip._tcp.";
    case SIP_TP_TLS: return "_sips._tcp.";
    default: return NULL;
    }
}

/* A NAPTR service field as a transport (RFC 3263 §4.1), or -1.  WS
 * services (RFC 7118) are not ours to resolve. */
static int dns_naptr_kind(const char *service)
{
    if (!strcasecmp(service, "SIP+D2U"))
        return SIP_TP_UDP;
    if (!strcasecmp(service, "SIP+D2T"))
        return SIP_TP_TCP;
    if (!strcasecmp(service, "SIPS+D2T"))
        return SIP_TP_TLS;
    return -1;
}

typedef struct dns_srvq {
    const char *name;       /* the SRV name to query */
    sip_tp_kind_t kind;
} dns_srvq_t;

static int dns_naptr_cmp(const void *a, const void *b)
{
    const dns_naptr_t *x = a, *y = b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return x->pref < y->pref ? -1 : x->pref > y->pref;
}

/* NAPTR records -> the SRV queries to make, in order (RFC 3263 §4.1, RFC
 * 3403 §4: ascending order, then preference).  Only "s" records of the
 * services above whose transport is in 'allowed' (a bit per sip_tp_kind_t)
 * are kept.  *sip_seen says whether any record was a SIP service at all
 * (a domain that publishes SIP NAPTRs but none we may use is not
 * resolved another way). */
static apr_array_header_t *dns_naptr_select(apr_pool_t *p, const apr_array_header_t *recs,
                                        unsigned allowed, int *sip_seen)
{
    apr_array_header_t *sorted = apr_array_copy(p, recs);
    apr_array_header_t *out = apr_array_make(p, 4, sizeof(dns_srvq_t));
    int i, j;

    *sip_seen = 0;
    if (sorted->nelts > 1)
        qsort(sorted->elts, (size_t)sorted->nelts, sizeof(dns_naptr_t), dns_naptr_cmp);
    for (i = 0; i < sorted->nelts; i++) {
        const dns_naptr_t *r = &APR_ARRAY_IDX(sorted, i, dns_naptr_t);
        int k = dns_naptr_kind(r->service);
        dns_srvq_t *q;
        int dup = 0;

        if (k < 0)
            continue;
        *sip_seen = 1;
        if (strcasecmp(r->flags, "s") || !(allowed & (1u << k)) || !r->replacement[0]
            || !strcmp(r->replacement, "."))
            continue;
        for (j = 0; j < out->nelts; j++) {
            const dns_srvq_t *o = &APR_ARRAY_IDX(out, j, dns_srvq_t);
            if ((int)o->kind == k && !strcasecmp(o->name, r->replacement))
                dup = 1;
        }
        if (dup)
            continue;
        q = apr_array_push(out);
        q->name = r->replacement;
        q->kind = (sip_tp_kind_t)k;
    }
    return out;
}

static int dns_srv_prio_cmp(const void *a, const void *b)
{
    const dns_srv_t *x = a, *y = b;
    return x->prio < y->prio ? -1 : x->prio > y->prio;
}

/* RFC 2782 ordering: ascending priority; within one priority, repeatedly
 * pick a record at random with probability proportional to its weight
 * (zero-weight records first in the running sum, so they are picked rarely
 * but can be).  'rnd' returns a uniform value in [0, bound]. A lone "."
 * target means the service is not offered: no records. */
static apr_array_header_t *dns_srv_order(apr_pool_t *p, const apr_array_header_t *recs,
                                     unsigned long (*rnd)(unsigned long bound))
{
    apr_array_header_t *in = apr_array_copy(p, recs);
    apr_array_header_t *out = apr_array_make(p, in->nelts ? in->nelts : 1, sizeof(dns_srv_t));
    dns_srv_t *r = (dns_srv_t *)in->elts;
    int n = in->nelts, i = 0;

    if (n == 1 && !strcmp(r[0].target, "."))
        return out;
    if (n > 1)
        qsort(r, (size_t)n, sizeof(*r), dns_srv_prio_cmp);
    while (i < n) {
        int j, end = i;
        while (end < n && r[end].prio == r[i].prio)
            end++;
        /* zero weights first (RFC 2782: "arrange ... with all those with
         * weight 0 placed at the beginning") */
        for (j = i; j < end; j++) {
            if (r[j].weight == 0) {
                int k;
                dns_srv_t t = r[j];
                for (k = j; k > i && r[k - 1].weight != 0; k--)
                    r[k] = r[k - 1];
                r[k] = t;
            }
        }
        while (i < end) {
            unsigned long sum = 0, pick, run = 0;
            for (j = i; j < end; j++)
                sum += (unsigned long)r[j].weight;
            if (sum == 0)       /* only weight 0 left: any of them, uniformly */
                j = i + (int)(rnd((unsigned long)(end - i) - 1));
            else {
                pick = rnd(sum);
                for (j = i; j < end; j++) {
                    run += (unsigned long)r[j].weight;
                    if (run >= pick)
                        break;
                }
            }
            if (j == end)
                j = end - 1;
            if (strcmp(r[j].target, "."))
                APR_ARRAY_PUSH(out, dns_srv_t) = r[j];
            {
                dns_srv_t t = r[j];
                memmove(&r[i + 1], &r[i], (size_t)(j - i) * sizeof(*r));
                r[i] = t;
            }
            i++;
        }
    }
    return out;
}

static unsigned long dns_srv_random(unsigned long bound)
{
    unsigned long v;

    if (bound == 0)
        return 0;
    /* random() is good enough to spread load; this is not a secret */
    v = ((unsigned long)random() << 16) ^ (unsigned long)random();
    return v % (bound + 1);
}

/* Is 'host' (maybe "[v6]") a dns_literal address?  Its bare text in *bare. */
static int dns_host_literal(apr_pool_t *p, const char *host, const char **bare)
{
    unsigned char buf[16];
    char *h = apr_pstrdup(p, host);

    if (h[0] == '[') {
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    *bare = h;
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* Which transports a URI allows, as a bit mask of sip_tp_kind_t, and which
 * one to use without NAPTR/SRV (RFC 3263 §4.1: the transport parameter;
 * sips: TLS; else UDP, or the caller's hint).  0 = none usable. */
static unsigned dns_uri_transports(const sip_uri_info_t *uri, int hint, int *deflt)
{
    int k = uri->transport ? sip_tp_from_name(uri->transport) : -1;

    if (uri->transport && k < 0) {
        *deflt = -1;
        return 0;
    }
    if (uri->secure) {
        /* sips: TLS on the next hop (RFC 3261 §26.2.2); a transport=tcp
         * on a sips: URI still means TLS over TCP (RFC 5630 §3.1.3) */
        if (k >= 0 && k != SIP_TP_TCP && k != SIP_TP_TLS && k != SIP_TP_WSS) {
            *deflt = -1;
            return 0;
        }
        *deflt = k == SIP_TP_WSS ? SIP_TP_WSS : SIP_TP_TLS;
        return 1u << *deflt;
    }
    if (k >= 0) {
        *deflt = k;
        return 1u << k;
    }
    *deflt = hint >= 0 && hint < SIP_TP_COUNT ? hint : SIP_TP_UDP;
    return (1u << SIP_TP_UDP) | (1u << SIP_TP_TCP) | (1u << SIP_TP_TLS);
}

/* The SRV queries without NAPTR (RFC 3263 §4.1: "SRV queries for those
 * transport protocols it supports"): the preferred transport first. */
static apr_array_header_t *dns_srv_fallback(apr_pool_t *p, const char *domain, unsigned allowed,
                                        int prefer)
{
    static const sip_tp_kind_t order[] = { SIP_TP_UDP, SIP_TP_TCP, SIP_TP_TLS };
    apr_array_header_t *out = apr_array_make(p, 3, sizeof(dns_srvq_t));
    int i;

    if (prefer >= 0 && dns_srv_prefix((sip_tp_kind_t)prefer) && (allowed & (1u << prefer))) {
        dns_srvq_t *q = apr_array_push(out);
        q->kind = (sip_tp_kind_t)prefer;
        q->name = apr_pstrcat(p, dns_srv_prefix(q->kind), domain, NULL);
    }
    for (i = 0; i < 3; i++) {
        dns_srvq_t *q;
        if (!(allowed & (1u << order[i])) || (int)order[i] == prefer)
            continue;
        q = apr_array_push(out);
        q->kind = order[i];
        q->name = apr_pstrcat(p, dns_srv_prefix(q->kind), domain, NULL);
    }
    return out;
}

static int dns_default_port(sip_tp_kind_t k)
{
    return sip_tp_secure(k) ? 5061 : 5060;
}

/* The reverse-lookup name of an address (RFC 1035 §3.5, RFC 3596 §2.5);
 * a v4-mapped IPv6 address is looked up as IPv4. */
static const char *dns_ptr_name(apr_pool_t *p, const sip_sockaddr_t *a, const char **ip)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    char txt[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET6) {
        const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        char *s, *o;
        int i;

        if (!memcmp(b, mapped, 12)) {
            *ip = apr_psprintf(p, "%u.%u.%u.%u", b[12], b[13], b[14], b[15]);
            return apr_psprintf(p, "%u.%u.%u.%u.in-addr.arpa", b[15], b[14], b[13], b[12]);
        }
        inet_ntop(AF_INET6, b, txt, sizeof(txt));
        *ip = apr_pstrdup(p, txt);
        o = s = apr_palloc(p, 64 + sizeof("ip6.arpa"));
        for (i = 15; i >= 0; i--) {
            *o++ = "0123456789abcdef"[b[i] & 15];
            *o++ = '.';
            *o++ = "0123456789abcdef"[b[i] >> 4];
            *o++ = '.';
        }
        strcpy(o, "ip6.arpa");
        return s;
    }
    if (sa->sa_family == AF_INET) {
        const unsigned char *b = (const unsigned char *)
                                 &((const struct sockaddr_in *)sa)->sin_addr.s_addr;
        *ip = apr_psprintf(p, "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
        return apr_psprintf(p, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
    }
    return NULL;
}

/* Two address texts name the same address. */
static int dns_same_ip(const char *a, const char *b)
{
    unsigned char x[16], y[16];

    if (inet_pton(AF_INET, a, x) == 1)
        return inet_pton(AF_INET, b, y) == 1 && !memcmp(x, y, 4);
    if (inet_pton(AF_INET6, a, x) == 1)
        return inet_pton(AF_INET6, b, y) == 1 && !memcmp(x, y, 16);
    return 0;
}

static const char *dns_type_name(int type)
{
    switch (type) {
    case ns_t_naptr: return "NAPTR";
    case ns_t_srv: return "SRV";
    case ns_t_a: return "A";
    case ns_t_aaaa: return "AAAA";
    case ns_t_ptr: return "PTR";
    default: return "?";
    }
}

static const char *dns_status_text(int st)
{
    switch (st) {
    case SIP_DNS_DONE: return "ok";
    case SIP_DNS_NOTFOUND: return "no such name or record";
    case SIP_DNS_TIMEOUT: return "no DNS server answered";
    case SIP_DNS_NOTRANSPORT: return "no record for a usable transport";
    default: return "DNS failure";
    }
}

/* ------------------------------------------------------------------ */
/* Configuration (SipDNSServer & co.; mod_sip.c has the thin handlers)  */
/* ------------------------------------------------------------------ */

const char *sip_dns_parse_servers(apr_pool_t *p, const char *arg, const char **csv)
{
    char *list = apr_pstrdup(p, arg), *last = NULL, *tok;
    apr_array_header_t *out = apr_array_make(p, 4, sizeof(const char *));

    for (tok = apr_strtok(list, ", \t", &last); tok; tok = apr_strtok(NULL, ", \t", &last)) {
        char *host = NULL, *scope = NULL;
        apr_port_t port = 0;
        unsigned char buf[16];

        if (apr_parse_addr_port(&host, &scope, &port, tok, p) != APR_SUCCESS || !host || scope
            || (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1))
            return apr_psprintf(p, "SipDNSServer: '%s' is not ip[:port] (IPv6 as [ip]:port)", tok);
        APR_ARRAY_PUSH(out, const char *) =
            strchr(host, ':') ? apr_psprintf(p, "[%s]:%u", host, port ? port : 53)
                              : apr_psprintf(p, "%s:%u", host, port ? port : 53);
    }
    if (!out->nelts)
        return "SipDNSServer needs at least one ip[:port]";
    *csv = apr_array_pstrcat(p, out, ',');
    return NULL;
}

const char *sip_dns_directive(apr_pool_t *p, const char *name, const char *arg,
                              const char **servers, apr_interval_time_t *timeout, int *tries,
                              long *cache_size)
{
    char *end;
    long n;

    if (!strcasecmp(name, "SipDNSServer"))
        return sip_dns_parse_servers(p, arg, servers);
    n = strtol(arg, &end, 10);
    if (!strcasecmp(name, "SipDNSTimeout")) {
        int ms = !strcasecmp(end, "ms");
        if (end == arg || (*end && !ms) || n <= 0 || n > (ms ? 300000 : 300))
            return "SipDNSTimeout needs seconds (1-300) or milliseconds (NNNms, up to 300000)";
        *timeout = ms ? apr_time_from_msec(n) : apr_time_from_sec(n);
        return NULL;
    }
    if (!strcasecmp(name, "SipDNSTries")) {
        if (end == arg || *end || n < 1 || n > 10)
            return "SipDNSTries needs a number from 1 to 10";
        *tries = (int)n;
        return NULL;
    }
    if (end == arg || *end || n < 0 || n > 10000000)
        return "SipDNSCacheSize needs a number of entries (0: no cache, at most 10000000)";
    *cache_size = n;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The resolver: cache entries and the c-ares channel                  */
/* ------------------------------------------------------------------ */

typedef struct dns_waiter dns_waiter_t;

typedef struct dns_entry {
    apr_pool_t *pool;           /* the entry, its key and its records */
    const char *key, *name;
    int type;
    dns_answer_t ans;           /* valid when 'filled' */
    apr_pool_t *recpool;        /* ans's records (a child of 'pool') */
    int filled;
    apr_time_t expires;
    int inflight;               /* a c-ares query is under way */
    int busy;                   /* its waiters are being answered: not to be evicted */
    dns_waiter_t *waiters;
    struct dns_entry *prev, *next;      /* LRU list, most recent first */
} dns_entry_t;

typedef struct dns_watch {
    sip_io_t io;
    apr_socket_t *sock;
    ares_socket_t fd;           /* ARES_SOCKET_BAD: free slot */
    struct dns_watch *next;
} dns_watch_t;

typedef struct dns_resolver {
    apr_pool_t *pool;
    sip_loop_t *loop;
    ares_channel channel;
    ares_channel files;         /* lookups "f": /etc/hosts only, never a socket */
    int down;
    sip_timer_t timer;
    apr_hash_t *cache;
    apr_size_t count, max;
    dns_entry_t *lru_head, *lru_tail;
    dns_watch_t *watches;
    dns_waiter_t *free_waiters;
} dns_resolver_t;

static dns_resolver_t *dns_res;

static sip_log_rate_t dns_log_rate = SIP_LOG_RATE_INIT("DNS failures");

enum { DNS_JOB_URI, DNS_JOB_REVERSE };
enum { DNS_PH_NAPTR, DNS_PH_SRV, DNS_PH_ADDR, DNS_PH_PTR, DNS_PH_FWD };

typedef struct dns_host {
    const char *name;
    int port;
    sip_tp_kind_t kind;
    apr_array_header_t *v4, *v6;        /* char * */
} dns_host_t;

struct sip_dns_query {
    apr_pool_t *pool;           /* the job's own (a child of the resolver's) */
    int kind, phase;
    int outstanding;            /* lookups not answered yet */
    int starting;               /* inside the call that created it: no callback */
    int cancelled;
    int result;                 /* when finished while 'starting' */
    const char *why;

    /* forward jobs */
    apr_pool_t *up;             /* the caller's pool: targets go there */
    const char *domain;         /* the name looked up (maddr or host) */
    const char *tls_host;       /* the URI's domain (RFC 5922) */
    unsigned allowed;
    int deflt, prefer, port;
    apr_array_header_t *srvq;   /* dns_srvq_t */
    apr_array_header_t *srvres; /* apr_array_header_t * (dns_srv_t) per srvq */
    apr_array_header_t *hosts;  /* dns_host_t */
    apr_array_header_t *targets;/* when done while starting */
    int worst;                  /* most telling failure seen */
    sip_dns_cb cb;
    void *baton;

    /* reverse jobs */
    const char *ip, *ptr;
    int dbl;
    const char *name;
    int verified;
    sip_dns_name_cb ncb;
};

struct dns_waiter {
    dns_waiter_t *next;
    sip_dns_query_t *job;
    int tag;
};

static void djob_answer(sip_dns_query_t *job, int tag, const dns_entry_t *e);

/* ---- c-ares on the loop ---- */

static void dns_arm_timer(void);

static void dns_watch_event(void *baton, apr_int16_t ev)
{
    dns_watch_t *w = baton;
    ares_socket_t fd = w->fd;

    if (!dns_res || dns_res->down || fd == ARES_SOCKET_BAD)
        return;
    ares_process_fd(dns_res->channel,
                    (ev & (APR_POLLIN | APR_POLLERR | APR_POLLHUP)) ? fd : ARES_SOCKET_BAD,
                    (ev & APR_POLLOUT) ? fd : ARES_SOCKET_BAD);
    dns_arm_timer();
}

/* c-ares opens, changes and closes its sockets: watch them on the loop.
 * A slot is never freed, only reused, so an event already returned for a
 * closed socket finds a valid (idle) slot. */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    dns_watch_t *w, *free_slot = NULL;
    apr_os_sock_t os = fd;

    (void)data;
    if (!dns_res)
        return;
    for (w = dns_res->watches; w; w = w->next) {
        if (w->fd == fd)
            break;
        if (w->fd == ARES_SOCKET_BAD && !free_slot)
            free_slot = w;
    }
    if (!w && !readable && !writable)
        return;
    if (!w) {
        w = free_slot;
        if (!w) {
            w = apr_pcalloc(dns_res->pool, sizeof(*w));
            w->next = dns_res->watches;
            dns_res->watches = w;
        }
        w->fd = fd;
        apr_os_sock_put(&w->sock, &os, dns_res->pool);
        sip_io_init_socket(&w->io, w->sock, dns_watch_event, w);
    }
    sip_io_watch(dns_res->loop, &w->io, (apr_int16_t)((readable ? APR_POLLIN : 0)
                                                | (writable ? APR_POLLOUT : 0)));
    if (!readable && !writable)
        w->fd = ARES_SOCKET_BAD;
}

static void dns_on_timer(void *baton)
{
    (void)baton;
    if (!dns_res || dns_res->down)
        return;
    ares_process_fd(dns_res->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_arm_timer();
}

static void dns_arm_timer(void)
{
    struct timeval tv, *t;

    if (!dns_res || dns_res->down)
        return;
    t = ares_timeout(dns_res->channel, NULL, &tv);
    if (t)
        sip_timer_set(dns_res->loop, &dns_res->timer, apr_time_make(t->tv_sec, t->tv_usec), dns_on_timer, NULL);
    else
        sip_timer_cancel(dns_res->loop, &dns_res->timer);
}

/* ---- the cache ---- */

static void dns_lru_unlink(dns_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        dns_res->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        dns_res->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void dns_lru_front(dns_entry_t *e)
{
    if (e->prev || e->next || dns_res->lru_head == e)     /* a new entry is in no list */
        dns_lru_unlink(e);
    e->next = dns_res->lru_head;
    if (dns_res->lru_head)
        dns_res->lru_head->prev = e;
    dns_res->lru_head = e;
    if (!dns_res->lru_tail)
        dns_res->lru_tail = e;
}

/* Keep at most dns_res->max entries (SipDNSCacheSize), oldest used first out;
 * entries with a query in flight stay. */
static void dns_cache_trim(void)
{
    dns_entry_t *e = dns_res->lru_tail;

    while (dns_res->count > dns_res->max && e) {
        dns_entry_t *prev = e->prev;
        if (!e->inflight && !e->busy) {
            dns_lru_unlink(e);
            apr_hash_set(dns_res->cache, e->key, APR_HASH_KEY_STRING, NULL);
            dns_res->count--;
            apr_pool_destroy(e->pool);
        }
        e = prev;
    }
}

static void dns_log_failure(const dns_entry_t *e, const char *reason)
{
    sip_log_limited(&dns_log_rate, e->name, e->type, APLOG_WARNING, ap_server_conf,
                    "sip dns: %s %s: %s", dns_type_name(e->type), e->name, reason);
}

static void dns_entry_done(dns_entry_t *e)
{
    dns_waiter_t *w = e->waiters, *next;

    e->waiters = NULL;
    e->busy = 1;        /* a job going on may trim the cache meanwhile */
    for (; w; w = next) {
        next = w->next;
        djob_answer(w->job, w->tag, e);
        w->next = dns_res->free_waiters;
        dns_res->free_waiters = w;
    }
    e->busy = 0;
}

static void dns_on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_entry_t *e = arg;
    apr_pool_t *np;
    dns_answer_t ans;

    (void)timeouts;
    if (!dns_res || dns_res->down || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
        return;
    e->inflight = 0;
    /* the new answer replaces the old records: a fresh pool for them */
    apr_pool_create(&np, e->pool);
    switch (status) {
    case ARES_SUCCESS:
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
        dns_parse(np, e->type, abuf, alen, &ans);
        if (ans.status == SIP_DNS_FAILED) {
            sip_stats->dns_failures++;
            dns_log_failure(e, "malformed answer");
            ans.ttl = DNS_FAIL_TTL;
        }
        else if (ans.status == SIP_DNS_NOTFOUND && e->type != ns_t_ptr)
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, ap_server_conf, "sip dns: %s %s: %s",
                         dns_type_name(e->type), e->name,
                         status == ARES_ENOTFOUND ? "no such name" : "no record");
        break;
    case ARES_ETIMEOUT:
        sip_stats->dns_timeouts++;
        ans.status = SIP_DNS_TIMEOUT;
        ans.ttl = DNS_FAIL_TTL;
        ans.recs = apr_array_make(np, 1, sizeof(char *));
        dns_log_failure(e, "timeout (no DNS server answered)");
        break;
    default:
        sip_stats->dns_failures++;
        ans.status = SIP_DNS_FAILED;
        ans.ttl = DNS_FAIL_TTL;
        ans.recs = apr_array_make(np, 1, sizeof(char *));
        dns_log_failure(e, ares_strerror(status));
        break;
    }
    if (e->recpool)
        apr_pool_destroy(e->recpool);
    e->recpool = np;
    e->ans = ans;
    e->filled = 1;
    e->expires = apr_time_now() + apr_time_from_sec(ans.ttl);
    dns_entry_done(e);
    dns_cache_trim();
}

/* The address a reverse-lookup name stands for (dns_ptr_name's inverse). */
static int dns_ptr_addr(const char *name, unsigned char *b, int *family)
{
    unsigned v[4];
    int i, n = 0;

    if (sscanf(name, "%u.%u.%u.%u.in-addr.arpa%n", &v[0], &v[1], &v[2], &v[3], &n) == 4
        && !name[n]) {
        for (i = 0; i < 4; i++) {
            if (v[i] > 255)
                return 0;
            b[3 - i] = (unsigned char)v[i];
        }
        *family = AF_INET;
        return 1;
    }
    if (strlen(name) != 64 + 8 || strcmp(name + 64, "ip6.arpa"))
        return 0;
    memset(b, 0, 16);
    for (i = 0; i < 32; i++) {
        const char *h = strchr("0123456789abcdef", name[2 * i]);
        if (!h || !*h || name[2 * i + 1] != '.')
            return 0;
        b[15 - i / 2] |= (unsigned char)((h - "0123456789abcdef") << ((i & 1) ? 4 : 0));
    }
    *family = AF_INET6;
    return 1;
}

static void dns_files_ptr(void *arg, int status, int timeouts, struct hostent *he)
{
    const char **out = ((void **)arg)[0];
    apr_pool_t *p = ((void **)arg)[1];

    (void)timeouts;
    if (status == ARES_SUCCESS && he && he->h_name)
        *out = apr_pstrdup(p, he->h_name);
}

/* An /etc/hosts answer (a local file, read without waiting on the
 * network), as the system resolver would give it before asking DNS. */
static int dns_hosts_answer(dns_entry_t *e)
{
    struct hostent *he = NULL;
    apr_pool_t *np;
    char **a;

    if (e->type == ns_t_ptr) {
        unsigned char b[16];
        const char *name = NULL;
        void *arg[2];
        int family;

        if (!dns_res->files || !dns_ptr_addr(e->name, b, &family))
            return 0;
        apr_pool_create(&np, e->pool);
        arg[0] = (void *)&name;
        arg[1] = np;
        /* lookups "f": answered before this returns */
        ares_gethostbyaddr(dns_res->files, b, family == AF_INET ? 4 : 16, family,
                           dns_files_ptr, arg);
        if (!name) {
            apr_pool_destroy(np);
            return 0;
        }
        e->ans.recs = apr_array_make(np, 1, sizeof(char *));
        APR_ARRAY_PUSH(e->ans.recs, const char *) = name;
    }
    else {
        if ((e->type != ns_t_a && e->type != ns_t_aaaa)
            || ares_gethostbyname_file(dns_res->channel, e->name,
                                       e->type == ns_t_a ? AF_INET : AF_INET6, &he) != ARES_SUCCESS
            || !he)
            return 0;
        apr_pool_create(&np, e->pool);
        e->ans.recs = apr_array_make(np, 2, sizeof(char *));
        for (a = he->h_addr_list; a && *a; a++) {
            char txt[INET6_ADDRSTRLEN];
            if (inet_ntop(he->h_addrtype, *a, txt, sizeof(txt)))
                APR_ARRAY_PUSH(e->ans.recs, const char *) = apr_pstrdup(np, txt);
        }
        ares_free_hostent(he);
    }
    if (e->recpool)
        apr_pool_destroy(e->recpool);
    e->recpool = np;
    e->ans.status = e->ans.recs->nelts ? SIP_DNS_DONE : SIP_DNS_NOTFOUND;
    e->ans.ttl = DNS_HOSTS_TTL;
    e->filled = 1;
    e->expires = apr_time_now() + apr_time_from_sec(DNS_HOSTS_TTL);
    return 1;
}

/* Ask for (name, type) on behalf of 'job': from the cache when fresh (the
 * job is answered before this returns), else joined to the query under way
 * or a new one. */
static void dns_lookup(sip_dns_query_t *job, const char *name, int type, int tag)
{
    char *key = apr_psprintf(job->pool, "%d/%s", type, name);
    dns_entry_t *e;
    dns_waiter_t *w;
    char *c;

    for (c = key; *c; c++)
        *c = (char)apr_tolower(*c);
    if (c > key && c[-1] == '.' && c - 1 > strchr(key, '/') + 1)
        c[-1] = '\0';
    e = apr_hash_get(dns_res->cache, key, APR_HASH_KEY_STRING);
    if (e && e->filled && !e->inflight && e->expires > apr_time_now()) {
        sip_stats->dns_cache_hits++;
        dns_lru_front(e);
        job->outstanding++;     /* djob_answer releases it */
        djob_answer(job, tag, e);
        return;
    }
    if (!e) {
        apr_pool_t *ep;
        apr_pool_create(&ep, dns_res->pool);
        e = apr_pcalloc(ep, sizeof(*e));
        e->pool = ep;
        e->key = apr_pstrdup(ep, key);
        e->name = strchr(e->key, '/') + 1;
        e->type = type;
        apr_hash_set(dns_res->cache, e->key, APR_HASH_KEY_STRING, e);
        dns_res->count++;
    }
    dns_lru_front(e);
    w = dns_res->free_waiters;
    if (w)
        dns_res->free_waiters = w->next;
    else
        w = apr_palloc(dns_res->pool, sizeof(*w));
    w->job = job;
    w->tag = tag;
    w->next = e->waiters;
    e->waiters = w;
    job->outstanding++;
    if (e->inflight) {
        sip_stats->dns_cache_hits++;
        return;
    }
    if (dns_hosts_answer(e)) {
        dns_entry_done(e);
        dns_cache_trim();
        return;
    }
    e->inflight = 1;
    sip_stats->dns_queries++;
    ares_query(dns_res->channel, e->name, ns_c_in, type, dns_on_answer, e);
    dns_arm_timer();
}

static void djob_step(sip_dns_query_t *job);

/* The job's lookups of one phase are made between hold and release, so an
 * answer from the cache cannot end the phase before they are all asked. */
static void djob_hold(sip_dns_query_t *job)
{
    job->outstanding++;
}

static void djob_release(sip_dns_query_t *job)
{
    if (--job->outstanding == 0)
        djob_step(job);
}

static void djob_worst(sip_dns_query_t *job, int st)
{
    /* a timeout or failure explains an empty result better than NOTFOUND */
    if (st == SIP_DNS_TIMEOUT || (st == SIP_DNS_FAILED && job->worst != SIP_DNS_TIMEOUT))
        job->worst = st;
}

static void djob_answer(sip_dns_query_t *job, int tag, const dns_entry_t *e)
{
    const dns_answer_t *a = &e->ans;
    char *c;
    int i;

    if (!job->cancelled) {
        if (a->status != SIP_DNS_DONE)
            djob_worst(job, a->status);
        switch (job->phase) {
        case DNS_PH_NAPTR:
            if (a->status == SIP_DNS_DONE) {
                int sip_seen;
                job->srvq = dns_naptr_select(job->pool, a->recs, job->allowed, &sip_seen);
                if (!job->srvq->nelts && sip_seen)
                    job->worst = SIP_DNS_NOTRANSPORT;
            }
            else if (a->status == SIP_DNS_TIMEOUT || a->status == SIP_DNS_FAILED)
                job->worst = a->status;
            break;
        case DNS_PH_SRV: {
            apr_array_header_t *o = dns_srv_order(job->pool, a->recs, dns_srv_random);
            for (i = 0; i < o->nelts; i++) {
                dns_srv_t *s = &APR_ARRAY_IDX(o, i, dns_srv_t);
                s->target = apr_pstrdup(job->pool, s->target);
            }
            APR_ARRAY_IDX(job->srvres, tag, apr_array_header_t *) = o;
            break;
        }
        case DNS_PH_ADDR:
        case DNS_PH_FWD: {
            dns_host_t *h = &APR_ARRAY_IDX(job->hosts, tag / 2, dns_host_t);
            apr_array_header_t *to = (tag & 1) ? h->v6 : h->v4;
            for (i = 0; a->status == SIP_DNS_DONE && i < a->recs->nelts; i++)
                APR_ARRAY_PUSH(to, const char *) =
                    apr_pstrdup(job->pool, APR_ARRAY_IDX(a->recs, i, const char *));
            break;
        }
        case DNS_PH_PTR:
            if (a->status == SIP_DNS_DONE && a->recs->nelts) {
                job->name = apr_pstrdup(job->pool, APR_ARRAY_IDX(a->recs, 0, const char *));
                i = (int)strlen(job->name);
                if (i > 1 && job->name[i - 1] == '.')
                    ((char *)job->name)[i - 1] = '\0';
                for (c = (char *)job->name; *c; c++)    /* as httpd keeps names */
                    *c = (char)apr_tolower(*c);
            }
            break;
        }
    }
    djob_release(job);
}

static void djob_free(sip_dns_query_t *job)
{
    apr_pool_destroy(job->pool);
}

/* The job's result: to the caller now (still inside the starting call) or
 * through its callback. */
static void djob_finish(sip_dns_query_t *job, int status, const char *why)
{
    apr_array_header_t *targets = NULL;
    int i, j;

    job->phase = -1;
    if (job->cancelled) {
        djob_free(job);
        return;
    }
    if (job->kind == DNS_JOB_REVERSE) {
        const char *name = job->name ? apr_pstrdup(job->up, job->name) : NULL;
        if (job->starting) {
            job->result = name ? SIP_DNS_DONE : SIP_DNS_NOTFOUND;
            job->name = name;
            return;
        }
        job->ncb(job->baton, name, job->verified);
        djob_free(job);
        return;
    }
    if (status == SIP_DNS_DONE) {
        targets = apr_array_make(job->up, 4, sizeof(sip_dns_target_t));
        for (i = 0; i < job->hosts->nelts; i++) {
            const dns_host_t *h = &APR_ARRAY_IDX(job->hosts, i, dns_host_t);
            for (j = 0; j < h->v4->nelts + h->v6->nelts; j++) {
                const char *ip = j < h->v4->nelts ? APR_ARRAY_IDX(h->v4, j, const char *)
                                 : APR_ARRAY_IDX(h->v6, j - h->v4->nelts, const char *);
                sip_dns_target_t *t = apr_array_push(targets);
                memset(t, 0, sizeof(*t));
                t->kind = h->kind;
                t->host = apr_pstrdup(job->up, job->tls_host);
                if (sip_sockaddr_set(&t->addr, ip, h->port) != APR_SUCCESS)
                    targets->nelts--;
            }
        }
        if (!targets->nelts) {
            status = job->worst ? job->worst : SIP_DNS_NOTFOUND;
            why = NULL;
        }
    }
    if (status != SIP_DNS_DONE && !why)
        why = apr_psprintf(job->up, "%s: %s", job->domain, dns_status_text(status));
    if (job->starting) {
        job->result = status;
        job->targets = targets;
        job->why = why;
        return;
    }
    job->cb(job->baton, status, status == SIP_DNS_DONE ? targets : NULL, why);
    djob_free(job);
}

static void djob_addr_phase(sip_dns_query_t *job)
{
    int i;

    job->phase = job->kind == DNS_JOB_REVERSE ? DNS_PH_FWD : DNS_PH_ADDR;
    djob_hold(job);
    for (i = 0; i < job->hosts->nelts; i++) {
        const dns_host_t *h = &APR_ARRAY_IDX(job->hosts, i, dns_host_t);
        dns_lookup(job, h->name, ns_t_a, 2 * i);
        dns_lookup(job, h->name, ns_t_aaaa, 2 * i + 1);
    }
    djob_release(job);
}

static dns_host_t *djob_add_host(sip_dns_query_t *job, const char *name, int port,
                                sip_tp_kind_t kind)
{
    dns_host_t *h;

    if (job->hosts->nelts >= DNS_MAX_HOSTS)
        return NULL;
    h = apr_array_push(job->hosts);
    h->name = name;
    h->port = port;
    h->kind = kind;
    h->v4 = apr_array_make(job->pool, 2, sizeof(char *));
    h->v6 = apr_array_make(job->pool, 2, sizeof(char *));
    return h;
}

static void djob_srv_phase(sip_dns_query_t *job)
{
    int i;

    job->phase = DNS_PH_SRV;
    job->srvres = apr_array_make(job->pool, job->srvq->nelts, sizeof(apr_array_header_t *));
    job->srvres->nelts = job->srvq->nelts;
    memset(job->srvres->elts, 0, (size_t)job->srvq->nelts * sizeof(apr_array_header_t *));
    djob_hold(job);
    for (i = 0; i < job->srvq->nelts; i++)
        dns_lookup(job, APR_ARRAY_IDX(job->srvq, i, dns_srvq_t).name, ns_t_srv, i);
    djob_release(job);
}

/* Every lookup of the current phase is answered: on to the next. */
static void djob_step(sip_dns_query_t *job)
{
    int i, j;

    if (job->cancelled) {
        djob_free(job);
        return;
    }
    switch (job->phase) {
    case DNS_PH_NAPTR:
        if (job->worst == SIP_DNS_TIMEOUT || job->worst == SIP_DNS_FAILED
            || job->worst == SIP_DNS_NOTRANSPORT) {
            djob_finish(job, job->worst, NULL);
            return;
        }
        if (!job->srvq || !job->srvq->nelts)      /* no NAPTR: SRV per transport */
            job->srvq = dns_srv_fallback(job->pool, job->domain, job->allowed, job->prefer);
        djob_srv_phase(job);
        return;
    case DNS_PH_SRV:
        for (i = 0; i < job->srvq->nelts; i++) {
            const apr_array_header_t *o = APR_ARRAY_IDX(job->srvres, i, apr_array_header_t *);
            for (j = 0; o && j < o->nelts; j++) {
                const dns_srv_t *s = &APR_ARRAY_IDX(o, j, dns_srv_t);
                djob_add_host(job, s->target, s->port, APR_ARRAY_IDX(job->srvq, i, dns_srvq_t).kind);
            }
        }
        if (!job->hosts->nelts) {
            /* RFC 3263 §4.2: no SRV, the domain's own A/AAAA on the default
             * port of the default transport; not when the SRV queries could
             * not be made (timeout: the answer is unknown, not "none") */
            if (job->worst == SIP_DNS_TIMEOUT || job->worst == SIP_DNS_FAILED) {
                djob_finish(job, job->worst, NULL);
                return;
            }
            if (!dns_srv_prefix((sip_tp_kind_t)job->deflt)) {
                djob_finish(job, SIP_DNS_NOTRANSPORT, NULL);
                return;
            }
            djob_add_host(job, job->domain, dns_default_port((sip_tp_kind_t)job->deflt),
                         (sip_tp_kind_t)job->deflt);
        }
        job->worst = 0;
        djob_addr_phase(job);
        return;
    case DNS_PH_ADDR:
        djob_finish(job, SIP_DNS_DONE, NULL);
        return;
    case DNS_PH_PTR:
        if (!job->name || !job->dbl) {
            djob_finish(job, SIP_DNS_DONE, NULL);
            return;
        }
        djob_add_host(job, job->name, 0, SIP_TP_UDP);
        djob_addr_phase(job);
        return;
    case DNS_PH_FWD: {
        /* httpd's double-reverse rule: the name's addresses include the peer */
        const dns_host_t *h = &APR_ARRAY_IDX(job->hosts, 0, dns_host_t);
        for (j = 0; j < h->v4->nelts + h->v6->nelts && !job->verified; j++)
            job->verified = dns_same_ip(job->ip, j < h->v4->nelts
                                    ? APR_ARRAY_IDX(h->v4, j, const char *)
                                    : APR_ARRAY_IDX(h->v6, j - h->v4->nelts, const char *));
        if (!job->verified)
            job->name = NULL;
        djob_finish(job, SIP_DNS_DONE, NULL);
        return;
    }
    default:
        return;
    }
}

static sip_dns_query_t *djob_new(int kind, apr_pool_t *up)
{
    apr_pool_t *jp;
    sip_dns_query_t *job;

    apr_pool_create(&jp, dns_res->pool);
    job = apr_pcalloc(jp, sizeof(*job));
    job->pool = jp;
    job->kind = kind;
    job->up = up;
    job->starting = 1;
    job->hosts = apr_array_make(jp, 4, sizeof(dns_host_t));
    job->prefer = -1;
    return job;
}

/* The job was started (its first lookups asked): DONE or a failure when it
 * already ended, else PENDING with the callback to come. */
static int djob_started(sip_dns_query_t *job, apr_array_header_t **out, sip_dns_query_t **q)
{
    int st;

    job->starting = 0;
    if (job->phase >= 0) {
        *q = job;
        return SIP_DNS_PENDING;
    }
    st = job->result;
    if (out)
        *out = job->targets;
    djob_free(job);
    return st;
}

/* ------------------------------------------------------------------ */
/* The contract (sip_dns.h)                                            */
/* ------------------------------------------------------------------ */

apr_status_t sip_dns_init(sip_loop_t *loop, apr_pool_t *p, const char *servers,
                          apr_interval_time_t timeout, int tries, apr_size_t cache_max)
{
    struct ares_options o;
    int rc, mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    apr_pool_t *rp;

    if (dns_res)
        sip_dns_shutdown();
    rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf, "sip dns: c-ares: %s",
                     ares_strerror(rc));
        return APR_EGENERAL;
    }
    apr_pool_create(&rp, p);
    apr_pool_tag(rp, "sip_dns");
    dns_res = apr_pcalloc(rp, sizeof(*dns_res));
    dns_res->pool = rp;
    dns_res->loop = loop;
    dns_res->cache = apr_hash_make(rp);
    dns_res->max = cache_max;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = dns_sock_state;
    o.timeout = (int)apr_time_as_msec(timeout > 0 ? timeout : SIP_DNS_DEFAULT_TIMEOUT);
    if (o.timeout <= 0)
        o.timeout = 1;
    o.tries = tries > 0 ? tries : SIP_DNS_DEFAULT_TRIES;
    rc = ares_init_options(&dns_res->channel, &o, mask);
    if (rc == ARES_SUCCESS && servers)
        rc = ares_set_servers_ports_csv(dns_res->channel, servers);
    if (rc != ARES_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf,
                     "sip dns: cannot start the resolver (%s%s): %s; only dns_literal addresses "
                     "will be used", servers ? "SipDNSServer " : "/etc/resolv.conf",
                     servers ? servers : "", ares_strerror(rc));
        if (rc != ARES_SUCCESS && servers)
            ares_destroy(dns_res->channel);
        apr_pool_destroy(rp);
        dns_res = NULL;
        ares_library_cleanup();
        return APR_EGENERAL;
    }
    {
        struct ares_options fo;
        memset(&fo, 0, sizeof(fo));
        fo.lookups = (char *)"f";
        if (ares_init_options(&dns_res->files, &fo, ARES_OPT_LOOKUPS) != ARES_SUCCESS)
            dns_res->files = NULL;
    }
    srandom((unsigned)(apr_time_now() ^ getpid()));
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                 "sip dns: resolver on %s, %d ms per try, %d tries, cache of %" APR_SIZE_T_FMT
                 " entries", servers ? servers : "the servers of /etc/resolv.conf", o.timeout,
                 o.tries, cache_max);
    return APR_SUCCESS;
}

void sip_dns_shutdown(void)
{
    dns_watch_t *w;

    if (!dns_res)
        return;
    dns_res->down = 1;
    sip_timer_cancel(dns_res->loop, &dns_res->timer);
    ares_destroy(dns_res->channel);       /* its callbacks see 'down' and do nothing */
    if (dns_res->files)
        ares_destroy(dns_res->files);
    for (w = dns_res->watches; w; w = w->next)
        sip_io_watch(dns_res->loop, &w->io, 0);
    apr_pool_destroy(dns_res->pool);      /* every entry and every job */
    dns_res = NULL;
    ares_library_cleanup();
}

static int dns_literal(apr_pool_t *p, const char *ip, const char *host, int port,
                   sip_tp_kind_t kind, apr_array_header_t **out)
{
    sip_dns_target_t *t;

    *out = apr_array_make(p, 1, sizeof(sip_dns_target_t));
    t = apr_array_push(*out);
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->host = host;
    if (sip_sockaddr_set(&t->addr, ip, port ? port : dns_default_port(kind)) != APR_SUCCESS)
        return SIP_DNS_FAILED;
    return SIP_DNS_DONE;
}

int sip_dns_resolve_uri(apr_pool_t *p, const sip_uri_info_t *uri, int hint,
                        apr_array_header_t **out, sip_dns_query_t **q, sip_dns_cb cb,
                        void *baton)
{
    const char *domain = uri->maddr ? uri->maddr : uri->host, *bare;
    sip_dns_query_t *job;
    unsigned allowed;
    int deflt;

    *q = NULL;
    *out = NULL;
    if (!domain || !*domain)
        return SIP_DNS_FAILED;
    allowed = dns_uri_transports(uri, hint, &deflt);
    if (!allowed)
        return SIP_DNS_NOTRANSPORT;
    if (dns_host_literal(p, domain, &bare))     /* RFC 3263 §4.2 */
        return dns_literal(p, bare, uri->host, uri->port, (sip_tp_kind_t)deflt, out);
    if (!dns_srv_prefix((sip_tp_kind_t)deflt) && !(allowed & ~(1u << deflt)))
        return SIP_DNS_NOTRANSPORT;         /* ws/wss by name: RFC 7118 §5 */
    if (!dns_res)
        return SIP_DNS_FAILED;
    job = djob_new(DNS_JOB_URI, p);
    job->domain = apr_pstrdup(job->pool, domain);
    job->tls_host = apr_pstrdup(job->pool, uri->host);
    job->allowed = allowed;
    job->deflt = deflt;
    job->prefer = hint >= 0 && !uri->transport && !uri->secure ? hint : -1;
    job->cb = cb;
    job->baton = baton;
    if (uri->port) {                        /* §4.2: a port means A/AAAA only */
        djob_add_host(job, job->domain, uri->port, (sip_tp_kind_t)deflt);
        djob_addr_phase(job);
    }
    else if (uri->transport) {              /* §4.1: the transport is known: its SRV */
        job->srvq = dns_srv_fallback(job->pool, job->domain, 1u << deflt, deflt);
        djob_srv_phase(job);
    }
    else {
        job->phase = DNS_PH_NAPTR;
        djob_hold(job);
        dns_lookup(job, job->domain, ns_t_naptr, 0);
        djob_release(job);
    }
    return djob_started(job, out, q);
}

int sip_dns_resolve_via(apr_pool_t *p, const char *host, int port, sip_tp_kind_t kind,
                        apr_array_header_t **out, sip_dns_query_t **q, sip_dns_cb cb,
                        void *baton)
{
    sip_dns_query_t *job;
    const char *bare;

    *q = NULL;
    *out = NULL;
    if (!host || !*host)
        return SIP_DNS_FAILED;
    if (dns_host_literal(p, host, &bare))
        return dns_literal(p, bare, host, port, kind, out);
    if (!dns_srv_prefix(kind))
        return SIP_DNS_NOTRANSPORT;
    if (!dns_res)
        return SIP_DNS_FAILED;
    job = djob_new(DNS_JOB_URI, p);
    job->domain = apr_pstrdup(job->pool, host);
    job->tls_host = job->domain;
    job->allowed = 1u << kind;
    job->deflt = kind;
    job->cb = cb;
    job->baton = baton;
    if (port) {
        djob_add_host(job, job->domain, port, kind);
        djob_addr_phase(job);
    }
    else {                                  /* RFC 3263 §5: SRV of the transport */
        job->srvq = dns_srv_fallback(job->pool, job->domain, 1u << kind, kind);
        djob_srv_phase(job);
    }
    return djob_started(job, out, q);
}

void sip_dns_cancel(sip_dns_query_t *q)
{
    if (q && dns_res)
        q->cancelled = 1;   /* freed when its last lookup is answered */
}

int sip_dns_reverse(apr_pool_t *p, const sip_sockaddr_t *peer, int dbl, const char **host,
                    int *verified, sip_dns_query_t **q, sip_dns_name_cb cb, void *baton)
{
    sip_dns_query_t *job;
    const char *ip, *name;
    int st;

    *q = NULL;
    *host = NULL;
    *verified = 0;
    if (!dns_res)
        return SIP_DNS_FAILED;
    job = djob_new(DNS_JOB_REVERSE, p);
    name = dns_ptr_name(job->pool, peer, &ip);
    if (!name) {
        djob_free(job);
        return SIP_DNS_FAILED;
    }
    job->ip = ip;
    job->ptr = name;
    job->dbl = dbl;
    job->ncb = cb;
    job->baton = baton;
    job->phase = DNS_PH_PTR;
    djob_hold(job);
    dns_lookup(job, name, ns_t_ptr, 0);
    djob_release(job);
    job->starting = 0;
    if (job->phase >= 0) {
        *q = job;
        return SIP_DNS_PENDING;
    }
    st = job->result;
    *host = job->name;
    *verified = job->verified;
    djob_free(job);
    return st;
}

const char *sip_dns_cached_name(apr_pool_t *p, const sip_sockaddr_t *peer, int dbl)
{
    sip_dns_query_t *q = NULL;
    const char *host = NULL;
    int verified = 0;

    if (sip_dns_reverse(p, peer, dbl, &host, &verified, &q, NULL, NULL) == SIP_DNS_PENDING) {
        /* the lookup goes on and fills the cache; nothing waits for it */
        sip_dns_cancel(q);
        return NULL;
    }
    return host;
}
