#include "sip_proxy.h"
#include "sip_handover.h"
#include "sip_conf.h"
#include "sip_log.h"
#include "sip_route.h"
#include "sip_auth.h"
#include "sip_dns.h"
#include "sip_stats.h"

#include <stdlib.h>
#include <string.h>

#include "apr_strings.h"
#include "apr_md5.h"
#include "apr_lib.h"
#include "apr_atomic.h"

#include <unistd.h>

typedef struct branch {
    sip_proxy_t *px;
    const char *uri;
    double q;
    const sip_msg_t *block;     /* script headers/body to merge, or NULL */
    const char *token;          /* CGI-Request-Token */
    int originated;             /* a new request of the script, not a fork */
    sip_ctxn_t *ctxn;           /* NULL once the client transaction is gone */
    sip_sockaddr_t dest;
    int started;
    int done;                   /* a final response (or failure) arrived */
    int provisional;
    int expired;                /* the script's Expires ran out (local 408) */
    int held;                   /* its final response waits with the owner */
    sip_timer_t timer_c;
    sip_timer_t expires;
    apr_uint64_t flow;          /* a registered flow to send on (RFC 5626 §5.3), or 0 */
    /* how a registered binding is reached (sip_proxy_reach_t) */
    int binding;                /* the target is a registered binding */
    const char *received;       /* "ip:port" to send to instead of resolving, or NULL */
    int received_kind;
    const char *path;           /* RFC 3327 Path values: the Route set, or NULL */
    apr_array_header_t *flows;  /* apr_uint64_t: 'flow' and the instance's other flows */
    int fi;                     /* the flow in use (index in 'flows') */
    int on_flow;                /* the request in flight went over a flow */
    int flows_gone;             /* ended 480: the binding's flows closed since the lookup */
    /* RFC 3263 §4.3: the targets of the next hop, tried in order */
    sip_dns_query_t *dq;        /* resolving: the pending query, else NULL */
    apr_pool_t *qpool;          /* the query's and the targets' pool */
    apr_array_header_t *targets;    /* sip_dns_target_t, NULL before resolution */
    int ti;                     /* the target in use */
    int fail_status;            /* the best failure of a target so far, 0 none */
    const char *fail_reason;
    sip_msg_t *fail_msg;        /* its copy when it came from the network */
    const char *own_text;       /* originated: the script's request without Via */
    apr_size_t own_len;
    const char *own_next;       /* originated: its next hop */
    const char *next;           /* the next hop looked up, for the log */
    int own_ack;
} branch_t;

struct sip_proxy {
    apr_pool_t *pool;
    sip_txn_t *st;
    server_rec *s;
    sip_server_conf *conf;
    apr_array_header_t *branches;   /* branch_t * */
    int sequential;
    int invite;
    int final_sent;
    int cancelled;
    int six_xx;
    sip_msg_t *best;                /* Via already removed */
    int best_status;
    apr_array_header_t *challenges; /* stored 401/407s */
    const char *loop_hash;
    unsigned counter;
    int forked;                     /* sip_proxy_fork* was called */
    const sip_proxy_owner_t *owner;
    void *owner_baton;
    int released;
    int idle_told;
};

static apr_pool_t *px_root;

void sip_proxy_init(apr_pool_t *p)
{
    px_root = p;
}

/* ---- addresses ---- */

/* "ip:port" or "[ip6]:port" (a binding's received address) into 'out'. */
static int parse_hostport(apr_pool_t *p, const char *hp, sip_sockaddr_t *out)
{
    char *h = apr_pstrdup(p, hp), *colon;
    int port = 5060;

    if (h[0] == '[') {
        char *end = strchr(++h, ']');
        if (!end)
            return 0;
        *end = '\0';
        if (end[1] == ':')
            port = atoi(end + 2);
    }
    else if ((colon = strchr(h, ':')) && colon == strrchr(h, ':')) {   /* not a bare IPv6 */
        *colon = '\0';
        port = atoi(colon + 1);
    }
    return port > 0 && port < 65536 && sip_sockaddr_set(out, h, port) == APR_SUCCESS;
}

/* The transport toward a next hop: sips: and transport=tls mean TLS
 * (RFC 3261 §26.2.2, §19.1.1), else the transport parameter, else the
 * one our recorded route names ('hint'), else UDP. */
static sip_tp_kind_t hop_kind(const sip_uri_info_t *hop, const char *hint)
{
    int k = sip_tp_from_name(hop->transport ? hop->transport : hint);

    if (hop->secure)
        return SIP_TP_TLS;
    return k > SIP_TP_UDP ? (sip_tp_kind_t)k : SIP_TP_UDP;
}

/* Send outside a transaction; TLS checks the certificate against the
 * hop's host (RFC 5922 §4). */
static void send_hop(sip_tp_kind_t kind, server_rec *s, const sip_uri_info_t *hop,
                     const sip_sockaddr_t *dest, const char *buf, apr_size_t len)
{
    if (kind == SIP_TP_TLS)
        sip_transport_send_tls(s, dest, hop->host, buf, len, NULL);
    else
        sip_transport_send_to(kind, s, dest, buf, len, NULL);
}

/* Ours: one of our addresses, or ServerName/ServerAlias, on the port this
 * vhost listens on.  A URI without a port means the vhost's port. */
int sip_proxy_vhost_has_name(server_rec *s, const char *host)
{
    int i;

    if (s->server_hostname && strcasecmp(host, s->server_hostname) == 0)
        return 1;
    if (s->names)
        for (i = 0; i < s->names->nelts; i++)
            if (strcasecmp(host, APR_ARRAY_IDX(s->names, i, const char *)) == 0)
                return 1;
    if (s->wild_names)
        for (i = 0; i < s->wild_names->nelts; i++)
            if (!ap_strcasecmp_match(host, APR_ARRAY_IDX(s->wild_names, i, const char *)))
                return 1;
    return 0;
}

static int host_is_ours(const char *host, int port, server_rec *s)
{
    sip_sockaddr_t local;

    if (!sip_transport_local_addr(s, &local))
        return 1;
    if (!port)
        port = sip_sockaddr_port(&local);
    if (sip_sockaddr_set(&(sip_sockaddr_t){0}, host, 1) == APR_SUCCESS)
        return sip_transport_is_local(host, port);
    if (port != sip_sockaddr_port(&local))
        return 0;
    return sip_proxy_vhost_has_name(s, host);
}

int sip_proxy_uri_is_local(const char *uri, server_rec *s, apr_pool_t *p)
{
    sip_uri_info_t u;

    if (!uri || !sip_uri_info(p, uri, &u))
        return 1;   /* nothing to route on: handle it here */
    return host_is_ours(u.maddr ? u.maddr : u.host, u.port, s);
}

int sip_proxy_request_is_local(const sip_msg_t *req, server_rec *s, apr_pool_t *p)
{
    sip_uri_info_t u;

    if (!sip_msg_request_uri(req) || !sip_msg_uri_info(p, req, &u))
        return 1;   /* nothing to route on: handle it here */
    return host_is_ours(u.maddr ? u.maddr : u.host, u.port, s);
}

/* ---- §16.4 route information preprocessing ---- */

/* Is this value of ours one we recorded for the dialog of 'req'? */
static int route_recorded(apr_pool_t *p, const sip_msg_t *req, const char *value)
{
    return sip_route_verify(p, value, sip_msg_call_id(req), sip_msg_from_tag(req),
                            sip_msg_to_tag(req));
}

sip_route_kind_t sip_proxy_route_preprocess(sip_msg_t *req, server_rec *s)
{
    apr_pool_t *p;
    const char *top;
    int ours = 0, recorded = 0, k;
    int n = sip_msg_route_count(req);

    if (n == 0)
        return SIP_ROUTE_NONE;
    apr_pool_create(&p, px_root);
    /* A strict router before us put our Record-Route URI in the
     * Request-URI: restore the real target from the last Route. */
    if (sip_proxy_request_is_local(req, s, p)) {
        sip_uri_info_t u;
        const char *ruri = sip_msg_request_uri(req);
        if (sip_uri_info(p, ruri, &u) && u.lr) {
            const char *last = sip_msg_route_uri(p, req, n - 1);
            if (last && sip_msg_set_request_uri(req, last) == APR_SUCCESS) {
                sip_msg_remove_route(req, n - 1);
                ours++;
                recorded |= route_recorded(p, req, ruri);
            }
        }
    }
    /* Our entry on top; two of them when we recorded a transport change
     * (RFC 5658 double Record-Route). */
    for (k = 0; k < 2 && sip_msg_route_count(req); k++) {
        top = sip_msg_route_uri(p, req, 0);
        if (!top || !sip_proxy_uri_is_local(top, s, p))
            break;
        sip_msg_remove_route(req, 0);
        ours++;
        /* one entry we signed is the proof: a client may put our
         * address in front of it again (an outbound proxy setting) */
        recorded |= route_recorded(p, req, sip_msg_removed_route(p, req,
                                                                sip_msg_routes_removed(req) - 1));
    }
    apr_pool_destroy(p);
    if (!ours)
        return SIP_ROUTE_NONE;
    return recorded ? SIP_ROUTE_RECORDED : SIP_ROUTE_OURS;
}

/* ---- forwarding a request (§16.6) ---- */

/* The loop-detection part of our branch (§16.3 step 4, §16.6 step 8):
 * equal for the same request coming back, different in a spiral. */
static const char *loop_hash(apr_pool_t *p, const sip_msg_t *req)
{
    unsigned char d[APR_MD5_DIGESTSIZE];
    const char *ft = sip_msg_from_tag(req), *tt = sip_msg_to_tag(req);
    const char *in = apr_pstrcat(p, sip_msg_request_uri(req), "|", ft ? ft : "", "|",
                                 tt ? tt : "", "|", sip_msg_call_id(req), "|",
                                 sip_msg_cseq_number(req), NULL);
    char *hex = apr_palloc(p, 17);
    int i;

    apr_md5(d, in, strlen(in));
    for (i = 0; i < 8; i++)
        apr_snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return hex;
}

/* Our branches: "z9hG4bKmS", the generating engine's mark (sip_handover.h),
 * then the loop hash and "." (or "N" and random bits for our own
 * requests).  A loop is found whichever engine forwarded it before. */
static const char *branch_prefix(apr_pool_t *p)
{
    char mark[2] = {sip_engine_mark(sip_engine_self()), '\0'};

    return apr_pstrcat(p, "z9hG4bKmS", mark, NULL);
}

static int looped(apr_pool_t *p, const sip_msg_t *req, const char *hash)
{
    const char *tail = apr_pstrcat(p, hash, ".", NULL);
    apr_size_t tlen = strlen(tail);
    int i, n = sip_msg_via_count(req);

    for (i = 0; i < n; i++) {
        const char *host, *received, *branch;
        int port, rport, tcp;
        if (sip_msg_via_info(p, req, i, &host, &port, &received, &rport, &tcp, &branch)
            && branch && strncmp(branch, "z9hG4bKmS", 9) == 0 && branch[9]
            && strncmp(branch + 10, tail, tlen) == 0
            && sip_transport_is_local(host, port ? port : 5060))
            return 1;
    }
    return 0;
}

static const char *local_hostport(apr_pool_t *p, server_rec *s)
{
    sip_sockaddr_t a;
    const char *ip;

    if (!sip_transport_local_addr(s, &a))
        return s->server_hostname;
    ip = sip_sockaddr_ip(p, &a);
    if (strchr(ip, ':'))
        ip = apr_pstrcat(p, "[", ip, "]", NULL);
    return apr_psprintf(p, "%s:%d", ip, sip_sockaddr_port(&a));
}

/* The transport of the hop after us when a Route entry of ours we
 * recorded says it: the last of ours removed is the one facing the next
 * hop (RFC 5658), e.g. TCP toward a TCP-only phone. */
static const char *recorded_transport(apr_pool_t *p, const sip_msg_t *req)
{
    int n = sip_msg_routes_removed(req);
    const char *last = n > 0 ? sip_msg_removed_route(p, req, n - 1) : NULL;

    if (!last || !route_recorded(p, req, last))
        return NULL;
    return sip_route_transport(p, last);
}

/* The flow our recorded Route entry facing the next hop names (RFC 5626
 * §5.3), or 0; *needs_flow gets 1 when its transport can only be reached
 * over that flow (WS/WSS, RFC 7118 §5; TLS: the far end's connection). */
static apr_uint64_t recorded_flow(apr_pool_t *p, const sip_msg_t *req, int *needs_flow)
{
    int n = sip_msg_routes_removed(req);
    const char *last = n > 0 ? sip_msg_removed_route(p, req, n - 1) : NULL;
    const char *t;
    apr_uint64_t f;

    *needs_flow = 0;
    if (!last || !(f = sip_route_flow(p, last)) || !route_recorded(p, req, last))
        return 0;
    t = sip_route_transport(p, last);
    *needs_flow = t && sip_tp_from_name(t) > SIP_TP_TCP;
    return f;
}

/* Our host:port on transport 'kind' ('me' is this vhost's): TLS is
 * served on a TLS virtual host's port, which may not be this one's. */
static const char *hostport_on(apr_pool_t *p, server_rec *s, const char *me, int kind)
{
    int port = kind == SIP_TP_TLS ? sip_transport_tls_port(s) : 0;
    const char *colon = strrchr(me, ':'), *bracket = strchr(me, ']');

    if (!port)
        return me;
    if (!colon || (me[0] == '[' && (!bracket || colon < bracket)))
        return apr_psprintf(p, "%s:%d", me, port);
    return apr_psprintf(p, "%.*s:%d", (int)(colon - me), me, port);
}

/* §16.6 step 4: our Record-Route value(s), top first, or NULL.  When the
 * two sides use different transports each side gets its own value
 * (RFC 5658); a value equal to the top one already there (a spiral) is
 * not added twice. */
static const char *const *record_route_values(apr_pool_t *p, const sip_msg_t *req,
                                              server_rec *s, const char *me, int in_kind,
                                              apr_uint64_t in_flow, sip_tp_kind_t out,
                                              apr_uint64_t out_flow)
{
    const char **v = apr_pcalloc(p, 3 * sizeof(*v));
    const char *cid = sip_msg_call_id(req), *ftag = sip_msg_from_tag(req);
    const char *top = sip_msg_top_record_route(p, req);
    const char *out_t = out != SIP_TP_UDP ? sip_tp_param(out) : NULL;
    const char *out_v = apr_pstrcat(p, "<", sip_route_uri_flow(p, hostport_on(p, s, me, out),
                                                                out_t, cid, ftag, out_flow),
                                    ">", NULL);
    const char *in_v = NULL;
    int n = 0;

    /* two flows (browser to browser) need two entries too: each names the
     * connection toward its side */
    if (in_kind >= 0 && ((sip_tp_kind_t)in_kind != out || in_flow != out_flow))
        in_v = apr_pstrcat(p, "<", sip_route_uri_flow(p, hostport_on(p, s, me, in_kind),
                                                      in_kind != SIP_TP_UDP
                                                               ? sip_tp_param(in_kind) : NULL,
                                                      cid, ftag, in_flow), ">", NULL);
    if (in_v && top && !strcmp(top, in_v))
        in_v = NULL;
    else if (in_v)
        top = in_v;
    if (!(top && !strcmp(top, out_v)))
        v[n++] = out_v;
    if (in_v)
        v[n++] = in_v;
    return n ? v : NULL;
}

/* Where a request goes over a flow (RFC 5626 §5.3, RFC 7118 §5): the
 * target binding's own ('out_flow', when no Route is left to follow), or
 * the one our recorded Route entry names (in a dialog).  1 and a held
 * source in 'on'; 0 when there is no flow to use; -1 when there was one
 * and it is gone while nothing else reaches that side. */
static int flow_hop(apr_pool_t *p, const sip_msg_t *orig, apr_uint64_t out_flow, sip_source_t *on)
{
    int needs = 1;
    apr_uint64_t f = sip_msg_route_count(orig) ? 0 : out_flow;

    /* our entry facing the next hop names the connection to it, even
     * when that hop (an edge proxy) left Route entries of its own */
    if (!f)
        f = recorded_flow(p, orig, &needs);
    if (!f)
        return 0;
    if (sip_transport_flow_source(f, on))
        return 1;
    return needs ? -1 : 0;
}

/* §16.6 steps 2, 3 and 6 for 'orig' sent to 'ruri': the edits in 'e',
 * and the URI of the next hop (the first Route, else the Request-URI).
 * A binding's Path values (RFC 3327 §5.4) become the Route set, the
 * first one routed loosely or strictly as steps 6 and 7 say. */
static const char *route_edits(apr_pool_t *p, const sip_msg_t *orig, const char *ruri,
                               const char *path, sip_wire_edit_t *e)
{
    sip_uri_info_t hop;
    const char *next;

    memset(e, 0, sizeof(*e));
    e->request_uri = ruri;      /* step 2 */
    e->max_forwards = 1;        /* step 3 */
    if (path && !sip_msg_route_count(orig)) {
        apr_array_header_t *v = apr_array_make(p, 4, sizeof(const char *));
        const char *first;
        sip_header_split_list(p, path, v);
        first = v->nelts ? sip_header_uri(p, APR_ARRAY_IDX(v, 0, const char *), NULL) : NULL;
        if (first && sip_uri_info(p, first, &hop)) {
            const char *set = apr_array_pstrcat(p, v, ',');
            if (!hop.lr) {      /* step 6: a strict first hop takes the Request-URI */
                e->request_uri = first;
                v->nelts--;
                memmove(v->elts, v->elts + sizeof(const char *),
                        (size_t)v->nelts * sizeof(const char *));
                *(const char **)apr_array_push(v) = apr_pstrcat(p, "<", ruri, ">", NULL);
                set = apr_array_pstrcat(p, v, ',');
            }
            e->extra = apr_pstrcat(p, "Route: ", set, "\r\n", NULL);
            return first;
        }
    }
    /* step 6: a strict next hop gets the Request-URI appended */
    next = sip_msg_route_count(orig) ? sip_msg_route_uri(p, orig, 0) : NULL;
    if (next && sip_uri_info(p, next, &hop) && !hop.lr) {
        e->route_append = apr_pstrcat(p, "<", ruri, ">", NULL);
        e->request_uri = next;
        e->route_drop = 1;
    }
    else if (!next)
        next = ruri;
    return next;
}

/* §16.6 steps 4 and 8 (and §22.3) on top of route_edits: the text of the
 * request as it goes over 'kind' ('out_flow': the connection it goes
 * on, 0 none).  'in_kind' is the transport it came on (-1: not known, no
 * Record-Route then), 'in_flow' its connection when requests in the
 * dialog must come back on it. */
static const char *finish_request(apr_pool_t *p, const sip_msg_t *orig, sip_wire_edit_t *e,
                                  server_rec *s, int record_route, int in_kind,
                                  apr_uint64_t in_flow, sip_tp_kind_t kind, apr_uint64_t out_flow,
                                  const char *branch, apr_size_t *len)
{
    const char *me = local_hostport(p, s);

    /* step 4: for requests that may create a dialog; inside one the
     * route set is fixed already (§12.2.1.2) */
    e->record_route = NULL;
    if (record_route && in_kind >= 0 && strcmp(sip_msg_method(orig), "REGISTER") != 0
        && !sip_msg_to_tag(orig))
        e->record_route = record_route_values(p, orig, s, me, in_kind, in_flow, kind, out_flow);
    /* RFC 3261 §22.3: credentials for our own realm were for us */
    if (sip_msg_header(orig, "Authorization") || sip_msg_header(orig, "Proxy-Authorization"))
        e->realm = sip_auth_realm(s, p, orig);
    /* step 8 */
    e->via = apr_psprintf(p, "SIP/2.0/%s %s;branch=%s;rport", sip_tp_via_name(kind),
                          hostport_on(p, s, me, kind), branch);
    return sip_msg_wire_text(p, orig, e, len);
}

/* What RFC 3263 §4 gets for a next hop 'next' (parsed into 'hop'): the
 * transport our recorded route names when the URI names none, -1 when
 * there is nothing to look up (RFC 7118 §5: a WebSocket peer is reached
 * over its flow only, its host is made up) or 'next' is not a URI. */
static int lookup_hint(apr_pool_t *p, const sip_msg_t *orig, const char *next,
                       sip_uri_info_t *hop, int *hint)
{
    const char *rt = orig ? recorded_transport(p, orig) : NULL;
    sip_tp_kind_t kind;

    if (!next || !sip_uri_info(p, next, hop) || !hop->host)
        return 0;
    kind = hop_kind(hop, hop->transport ? NULL : rt);
    if (kind == SIP_TP_WS || kind == SIP_TP_WSS)
        return 0;
    *hint = hop->transport || !rt ? -1 : sip_tp_from_name(rt);
    return 1;
}

/* The SIP answer and log words for a next hop that did not resolve
 * (issue 17 point 5).  No record at all: RFC 3263 §4 leaves nothing to
 * try; for a foreign domain that is a definitive 404 (RFC 3261
 * §21.4.5), for a registered binding the user exists but cannot be
 * reached now, 480 (§21.4.18).  No DNS answer in time: §16.7 step 6
 * treats a hop that never answered as 408.  Any other DNS failure is a
 * failure to reach the hop: §16.9 says to behave as on a 503. */
static int unresolved_status(int status, int binding, const char **reason, const char **what)
{
    switch (status) {
    case SIP_DNS_NOTFOUND:
    case SIP_DNS_NOTRANSPORT:
        *what = status == SIP_DNS_NOTFOUND ? "no such name or no usable record"
                                           : "no record for a transport we can use";
        *reason = binding ? "Temporarily Unavailable" : "Not Found";
        return binding ? 480 : 404;
    case SIP_DNS_TIMEOUT:
        *what = "no DNS answer";
        *reason = "Request Timeout";
        return 408;
    default:
        *what = "DNS failure";
        *reason = "Service Unavailable";
        return 503;
    }
}

/* What decides where a response to our Via goes: the Via below it
 * (index 'idx': 0 in the request we forward, 1 in its responses). */
static const char *next_via_key(apr_pool_t *p, const sip_msg_t *m, int idx)
{
    const char *host, *received, *branch;
    int port, rport, tcp;

    if (!sip_msg_via_info(p, m, idx, &host, &port, &received, &rport, &tcp, &branch))
        return "";
    return apr_psprintf(p, "via\n%s\n%d\n%s\n%d\n%d\n%s", host, port, received ? received : "",
                        rport, tcp, branch ? branch : "");
}

#define SL_MARK ".sl"

/* A request forwarded statelessly while its next hop resolves: its text
 * for each transport the answer may name (the request itself is gone
 * by then). */
typedef struct {
    apr_pool_t *pool;
    server_rec *s;
    sip_uri_info_t hop;
    const char *what;                   /* "METHOD uri", for the log */
    const char *text[SIP_TP_TLS + 1];
    apr_size_t len[SIP_TP_TLS + 1];
} sl_fwd_t;

static void sl_resolved(void *baton, int status, apr_array_header_t *targets, const char *why)
{
    sl_fwd_t *f = baton;
    const sip_dns_target_t *t;

    /* no transaction, nothing to fail over with: the first target */
    if (status == SIP_DNS_DONE && targets && targets->nelts
        && (t = &APR_ARRAY_IDX(targets, 0, sip_dns_target_t))->kind <= SIP_TP_TLS
        && f->text[t->kind])
        send_hop(t->kind, f->s, &f->hop, &t->addr, f->text[t->kind], f->len[t->kind]);
    else
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, f->s, "sip proxy: cannot forward %s: "
                     "cannot resolve the next hop %s (%s)", f->what, f->hop.host,
                     why ? why : "no target");
    apr_pool_destroy(f->pool);
}

void sip_proxy_forward_stateless(sip_msg_t *req, server_rec *s, apr_pool_t *p)
{
    /* signed: only the responses to this request are forwarded back by
     * Via (sip_proxy_forward_response), to where its sender asked */
    const char *branch = apr_pstrcat(p, branch_prefix(p), loop_hash(p, req), SL_MARK,
                                     sip_route_mac(p, next_via_key(p, req, 0)), NULL);
    const char *buf, *next, *what;
    apr_size_t len = 0;
    sip_source_t on;
    sip_wire_edit_t e;
    sip_uri_info_t hop;
    apr_array_header_t *targets = NULL;
    sip_dns_query_t *q = NULL;
    sl_fwd_t *f;
    apr_pool_t *fp;
    int hint = -1, rc, k;

    if (sip_msg_max_forwards(req) == 0)
        return;
    what = apr_pstrcat(p, sip_msg_method(req), " ", sip_msg_request_uri(req), NULL);
    next = route_edits(p, req, sip_msg_request_uri(req), NULL, &e);
    memset(&on, 0, sizeof(on));
    switch (flow_hop(p, req, 0, &on)) {
    case 1:
        buf = finish_request(p, req, &e, s, 0, -1, 0, on.kind, 0, branch, &len);
        if (buf && on.tcp)
            sip_transport_send(&on, NULL, buf, len);
        else if (buf)
            sip_transport_send_to(on.kind, s, &on.peer, buf, len, NULL);
        sip_source_release(&on);
        return;
    case -1:
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip proxy: cannot forward %s: the "
                     "connection (flow) it must go on is closed", what);
        return;
    }
    if (!lookup_hint(p, req, next, &hop, &hint)) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip proxy: cannot forward %s: no next hop "
                     "to look up", what);
        return;
    }
    apr_pool_create(&fp, px_root);
    f = apr_pcalloc(fp, sizeof(*f));
    f->pool = fp;
    f->s = s;
    f->what = apr_pstrdup(fp, what);
    sip_uri_info(fp, next, &f->hop);
    rc = sip_dns_resolve_uri(fp, &f->hop, hint, &targets, &q, sl_resolved, f);
    if (rc == SIP_DNS_PENDING) {
        for (k = SIP_TP_UDP; k <= SIP_TP_TLS; k++)
            if ((buf = finish_request(p, req, &e, s, 0, -1, 0, (sip_tp_kind_t)k, 0, branch,
                                      &len))) {
                f->text[k] = apr_pstrmemdup(fp, buf, len);
                f->len[k] = len;
            }
        return;
    }
    if (rc == SIP_DNS_DONE && targets->nelts) {
        const sip_dns_target_t *t = &APR_ARRAY_IDX(targets, 0, sip_dns_target_t);
        if (t->kind <= SIP_TP_TLS
            && (buf = finish_request(p, req, &e, s, 0, -1, 0, t->kind, 0, branch, &len)))
            send_hop(t->kind, s, &f->hop, &t->addr, buf, len);
    }
    else
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip proxy: cannot forward %s: cannot "
                     "resolve the next hop %s", what, f->hop.host);
    apr_pool_destroy(fp);
}

/* ---- responses ---- */

static void px_maybe_finish(sip_proxy_t *px, int may_answer);
static int all_flows_gone(const sip_proxy_t *px);
static void forward_by_via(sip_msg_t *resp, server_rec *s, apr_pool_t *p);
static void start_branch(sip_proxy_t *px, branch_t *b);

static int final_sent(const sip_proxy_t *px)
{
    return px->final_sent || sip_txn_final_sent(px->st);
}

/* §16.7 step 6: 6xx first, else the lowest class; within 4xx prefer the
 * responses a client can act on. */
static int rank(int status)
{
    int cls = status / 100, pref;

    if (cls == 6)
        return 0;
    pref = (status == 401 || status == 407 || status == 415 || status == 420 || status == 484)
           ? 0 : 1;
    return cls * 10 + pref;
}

/* 'resp' is a stored copy (Via already removed), sent with 'e''s edits. */
static void send_upstream(sip_proxy_t *px, sip_msg_t *resp, const sip_wire_edit_t *e)
{
    apr_size_t len = 0;
    sip_wire_edit_t none;
    const char *buf;

    memset(&none, 0, sizeof(none));
    buf = sip_msg_wire_text(px->pool, resp, e ? e : &none, &len);
    if (buf)
        sip_txn_respond(px->st, e && e->status ? e->status : sip_msg_status(resp), buf, len);
}

/* A response that goes upstream as soon as it comes (1xx, 2xx): its text
 * without our Via, from the text it came in, with no copy kept. */
static void relay_upstream(sip_proxy_t *px, const sip_msg_t *resp, int status)
{
    apr_pool_t *p;
    apr_size_t len = 0;
    const char *buf;

    apr_pool_create(&p, px->pool);
    buf = sip_msg_relay_text(p, resp, &len);
    if (buf)
        sip_txn_respond(px->st, status, buf, len);
    apr_pool_destroy(p);
}

static void local_final(branch_t *b, int status, const char *reason);

static void cancel_pending(sip_proxy_t *px)
{
    int i;
    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        if (b->started && !b->done && b->dq) {
            /* §9.1: nothing went out yet, so nothing is sent; the branch
             * ends as if its 487 had come */
            sip_dns_cancel(b->dq);
            b->dq = NULL;
            local_final(b, 487, "Request Terminated");
        }
        else if (b->started && !b->done && b->ctxn && !b->originated)
            sip_ctxn_cancel(b->ctxn);
    }
}

void sip_proxy_cancel(sip_proxy_t *px)
{
    cancel_pending(px);
}

static void send_best(sip_proxy_t *px)
{
    sip_msg_t *out = px->best;
    sip_wire_edit_t e;
    int i;

    px->final_sent = 1;
    if (!out) {
        sip_txn_reply(px->st, 408, "Request Timeout", NULL);
        return;
    }
    if (px->best_status == 480 && all_flows_gone(px))
        sip_stats->flows_dead++;
    memset(&e, 0, sizeof(e));
    /* §16.7 step 6: 503 becomes 500 so the client does not retry us. */
    if (px->best_status == 503) {
        e.status = 500;
        e.reason = "Server Internal Error";
    }
    /* §16.7 step 7: collect every challenge into the 401/407 sent up. */
    if (px->best_status == 401 || px->best_status == 407) {
        const char *extra = "";
        for (i = 0; i < px->challenges->nelts; i++) {
            sip_msg_t *c = APR_ARRAY_IDX(px->challenges, i, sip_msg_t *);
            if (c != out)
                extra = apr_pstrcat(px->pool, extra,
                                    sip_msg_raw_headers(px->pool, c, "WWW-Authenticate"),
                                    sip_msg_raw_headers(px->pool, c, "Proxy-Authenticate"), NULL);
        }
        e.extra = *extra ? extra : NULL;
    }
    send_upstream(px, out, &e);
}

/* A response that will be stored: the received text with the Via
 * popped, or built afresh when the proxy made it up itself. */
static sip_msg_t *own_copy(sip_proxy_t *px, const sip_msg_t *resp, int local)
{
    sip_msg_t *copy = NULL;
    sip_msg_error_t err;
    const char *text;
    apr_size_t len = 0;

    if (local)
        text = sip_msg_response_text(px->pool, sip_txn_request(px->st), sip_msg_status(resp),
                                     sip_msg_reason(resp), sip_txn_to_tag(px->st), NULL, NULL,
                                     NULL, 0, &len);
    else
        text = sip_msg_relay_text(px->pool, resp, &len);
    if (!text || sip_msg_parse(px->pool, text, len, NULL, 0, &copy, &err) != APR_SUCCESS)
        return NULL;
    return copy;
}

void sip_proxy_default_response(sip_proxy_t *px, sip_proxy_branch_t *b, sip_msg_t *resp,
                                int local)
{
    int status = sip_msg_status(resp);
    sip_msg_t *copy;

    if (status >= 200)
        b->held = 0;
    if (b->originated || status == 100)
        return;     /* a script's own request; 100 is hop by hop (§16.7 step 3) */
    if (status < 200) {
        if (!final_sent(px) && !local)
            relay_upstream(px, resp, status);
        return;
    }
    if (status < 300) {
        /* §16.7 step 5: every 2xx goes up at once, then the rest is cancelled */
        if (px->invite && sip_txn_final_sent(px->st) && sip_txn_last_status(px->st) >= 300) {
            /* a 2xx racing our own non-2xx final: it still goes to the caller */
            if (!local)
                forward_by_via(resp, px->s, px->pool);
        }
        else if (!sip_txn_final_sent(px->st) || px->invite) {
            if (!local)
                relay_upstream(px, resp, status);
            else if ((copy = own_copy(px, resp, local)))
                send_upstream(px, copy, NULL);
        }
        px->final_sent = 1;
        cancel_pending(px);
        px_maybe_finish(px, 0);
        return;
    }
    if (status >= 600 && !px->six_xx) {
        px->six_xx = 1;
        cancel_pending(px);
    }
    copy = own_copy(px, resp, local);
    if (copy && (status == 401 || status == 407))
        *(sip_msg_t **)apr_array_push(px->challenges) = copy;
    if (copy && (!px->best || rank(status) < rank(px->best_status))) {
        px->best = copy;
        px->best_status = status;
    }
    px_maybe_finish(px, 1);
}

apr_status_t sip_proxy_forward_upstream(sip_proxy_t *px, const sip_msg_t *resp,
                                        const sip_msg_t *block)
{
    apr_pool_t *p;
    const char *text, *merged;
    apr_size_t len = 0, mlen = 0;
    int status = sip_msg_status(resp);
    apr_status_t rv = APR_EGENERAL;

    apr_pool_create(&p, px->pool);
    text = sip_msg_relay_text(p, resp, &len);
    merged = text && block ? sip_msg_merge_text(p, text, len, block, &mlen) : text;
    if (!block)
        mlen = len;
    if (merged)
        rv = sip_txn_respond(px->st, status, merged, mlen);
    apr_pool_destroy(p);
    if (rv == APR_SUCCESS && status >= 200) {
        px->final_sent = 1;
        cancel_pending(px);
    }
    return rv;
}

static void branch_end(branch_t *b)
{
    b->done = 1;
    if (b->dq) {
        sip_dns_cancel(b->dq);
        b->dq = NULL;
    }
    sip_timer_cancel(sip_txn_loop(), &b->timer_c);
    sip_timer_cancel(sip_txn_loop(), &b->expires);
}

/* A final response made up here (timer C, Expires, unreachable target). */
static void local_final(branch_t *b, int status, const char *reason)
{
    sip_proxy_t *px = b->px;
    apr_pool_t *p;
    sip_msg_t *resp;

    branch_end(b);
    apr_pool_create(&p, px->pool);
    resp = sip_msg_make_response(p, sip_txn_request(px->st), status, reason,
                                 sip_txn_to_tag(px->st));
    if (resp && px->owner && px->owner->response(px->owner_baton, b, resp, 1))
        b->held = 1;
    else if (resp)
        sip_proxy_default_response(px, b, resp, 1);
    apr_pool_destroy(p);
}

/* RFC 5626 §5.3: no flow of the branch is left: 480 for a binding, 430
 * for a dialog's flow.  A binding's flows that closed after the lookup (on
 * another engine the stand-in may still have looked open) make the same
 * answer as flows already closed at the lookup: send_best counts it. */
static void branch_flows_gone(branch_t *b)
{
    if (b->flows && b->flows->nelts) {
        b->flows_gone = 1;
        local_final(b, 480, "Temporarily Unavailable");
    }
    else
        local_final(b, 430, "Flow Failed");
}

/* The 480 going up says only that every binding's flow closed: SipFlowsDead
 * counts it, as the registrar does for flows closed at the lookup. */
static int all_flows_gone(const sip_proxy_t *px)
{
    int i, any = 0;

    for (i = 0; i < px->branches->nelts; i++) {
        const branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        if (b->originated)
            continue;
        if (!b->flows_gone)
            return 0;
        any = 1;
    }
    return any;
}

static void timer_c_fired(void *baton)
{
    branch_t *b = baton;

    /* §16.8: a provisional means someone is ringing: CANCEL it and let its
     * 487 finish the branch; otherwise the branch is over (408). */
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, b->px->s, "sip proxy: timer C for %s", b->uri);
    if (b->ctxn)
        sip_ctxn_cancel(b->ctxn);
    /* The client transaction lives on (without retransmitting): a late
     * 2xx must still reach the caller. */
    if (!b->provisional && !b->done)
        local_final(b, 408, "Request Timeout");
}

static void expires_fired(void *baton)
{
    branch_t *b = baton;

    /* RFC 3050 §5.7: the script's Expires ran out: CANCEL, local 408. */
    if (b->done)
        return;
    b->expired = 1;
    if (b->ctxn)
        sip_ctxn_cancel(b->ctxn);
    local_final(b, 408, "Request Timeout");
}

static void branch_try_target(branch_t *b);
static int branch_try_flows(branch_t *b);

/* A failure worth trying the next target for: RFC 3263 §4.3 (a
 * transport error, a timeout, a 503), or RFC 5626 §5.3 (a flow that
 * failed: a transport error), while another target or flow is left and
 * nobody has given up on the branch. */
static int may_fail_over(const branch_t *b, int status, int from_network)
{
    const sip_proxy_t *px = b->px;

    if (b->done || b->expired || px->cancelled || px->six_xx
        || (!b->originated && final_sent(px)))
        return 0;
    if (b->on_flow)
        return !from_network && status == 503 && b->flows && b->fi + 1 < b->flows->nelts;
    if (status != 503 && !(status == 408 && !from_network))
        return 0;
    return b->targets && b->ti + 1 < b->targets->nelts;
}

/* Keep the best failure among a branch's targets (§16.7 step 6 order;
 * the first one on a tie).  1 when 'resp' is it now. */
static int note_failure(branch_t *b, sip_msg_t *resp, int from_network)
{
    int status = sip_msg_status(resp);

    if (b->fail_status && rank(status) >= rank(b->fail_status))
        return 0;
    b->fail_status = status;
    b->fail_reason = apr_pstrdup(b->px->pool, sip_msg_reason(resp));
    b->fail_msg = from_network ? sip_msg_dup(b->px->pool, resp) : NULL;
    return 1;
}

static void branch_response(void *baton, sip_ctxn_t *c, sip_msg_t *resp, int from_network)
{
    branch_t *b = baton;
    sip_proxy_t *px = b->px;
    int status;

    if (from_network < 0) {         /* the client transaction is gone */
        if (c != b->ctxn)
            return;                 /* one we failed over from */
        b->ctxn = NULL;
        if (!b->done)
            branch_end(b);
        px_maybe_finish(px, !px->owner);
        return;
    }
    status = sip_msg_status(resp);
    if (status == 100)
        return;
    if ((b->expired || b->done) && status >= 300)
        return;                     /* the branch already has its final answer */
    if (status >= 300 && may_fail_over(b, status, from_network)) {
        const sip_dns_target_t *t = b->on_flow ? NULL
                                    : &APR_ARRAY_IDX(b->targets, b->ti + 1, sip_dns_target_t);
        note_failure(b, resp, from_network);
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: %s at %s: %d%s; trying %s",
                     b->uri ? b->uri : "request of the script", sip_sockaddr_ip(px->pool, &b->dest),
                     status, from_network ? "" : " (local)",
                     t ? apr_psprintf(px->pool, "%s:%d", sip_sockaddr_ip(px->pool, &t->addr),
                                      sip_sockaddr_port(&t->addr))
                       : "the next flow");
        /* the old transaction still ACKs a non-2xx where it went (§17.1.1.3) */
        sip_ctxn_abandon(c);
        b->ctxn = NULL;
        if (b->on_flow) {
            b->fi++;
            branch_try_flows(b);
        }
        else {
            b->ti++;
            branch_try_target(b);
        }
        return;
    }
    if (status >= 300 && b->on_flow && !from_network && status == 503 && !b->done
        && !px->cancelled) {
        /* RFC 5626 §5.3: no flow left: 480 for a binding, 430 for a dialog */
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: the connection (flow) to "
                     "%s failed", b->uri);
        sip_ctxn_abandon(c);
        b->ctxn = NULL;
        branch_flows_gone(b);
        return;
    }
    if (b->fail_status && (status == 503 || (status == 408 && !from_network))
        && !note_failure(b, resp, from_network)) {
        /* every target failed: the best failure seen is the branch's */
        if (!b->fail_msg) {
            sip_ctxn_abandon(c);
            b->ctxn = NULL;
            local_final(b, b->fail_status, b->fail_reason);
            return;
        }
        resp = b->fail_msg;
        from_network = 1;
    }
    if (status < 200) {
        b->provisional = 1;
        if (px->invite && !b->originated)   /* §16.7 step 2: restart timer C */
            sip_timer_set(sip_txn_loop(), &b->timer_c, px->conf->timer_c, timer_c_fired, b);
    }
    else if (!b->done)
        branch_end(b);
    if (px->owner && px->owner->response(px->owner_baton, b, resp, !from_network)) {
        b->held = status >= 200;
        return;
    }
    sip_proxy_default_response(px, b, resp, !from_network);
}

/* Once the proxy has sent its final answer and every branch has had its
 * own, the client transactions need nothing of it (a 2xx retransmitted
 * to an Accepted one goes up by the server transaction): the request's
 * state can go now rather than after timer D, K or M (32 s, 5 s, 32 s
 * over UDP). */
static int settled(sip_proxy_t *px, const branch_t *b)
{
    return !px->owner && px->st && final_sent(px) && sip_ctxn_settled(b->ctxn);
}

static void px_destroy_if_idle(sip_proxy_t *px)
{
    int i;

    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        if ((b->ctxn && !settled(px, b)) || b->dq || sip_timer_armed(&b->timer_c)
            || sip_timer_armed(&b->expires))
            return;
    }
    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        if (b->ctxn && !sip_ctxn_retire(b->ctxn, px->st))
            return;     /* kept as it was: it ends with its timer */
        b->ctxn = NULL;
    }
    if (px->owner) {
        if (!px->released) {
            if (!px->idle_told) {
                px->idle_told = 1;
                px->owner->idle(px->owner_baton);
            }
            return;
        }
    }
    else {
        if (!final_sent(px))
            return;
        sip_txn_detach(px->st);
    }
    px->st = NULL;
    sip_stats->now.proxies--;
    sip_loop_defer_destroy(sip_txn_loop(), px->pool);
}

void sip_proxy_branch_settled(sip_proxy_t *px, sip_proxy_branch_t *b)
{
    if (!b->held)
        return;
    b->held = 0;
    px_maybe_finish(px, 1);
}

void sip_proxy_send_best(sip_proxy_t *px)
{
    if (!px->st || final_sent(px))
        return;
    send_best(px);
    cancel_pending(px);
}

void sip_proxy_release(sip_proxy_t *px)
{
    px->released = 1;
    px->idle_told = 0;
    px_destroy_if_idle(px);
}

/* Start the next sequential branch, or answer when every branch is done
 * ('may_answer': the proxy's own algorithm is in charge of the answer). */
static void px_maybe_finish(sip_proxy_t *px, int may_answer)
{
    int i;

    if (!px->st)
        return;
    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        /* a final response still queued for the owner counts as pending:
         * the owner may yet take it, or hand it back in its turn */
        if (b->started && (!b->done || b->held) && !b->originated)
            goto out;
    }
    if (may_answer && !final_sent(px) && !px->six_xx && !px->cancelled) {
        for (i = 0; i < px->branches->nelts; i++) {
            branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
            if (!b->started) {
                start_branch(px, b);
                if (!b->done)
                    goto out;
            }
        }
    }
    if (may_answer && !final_sent(px))
        send_best(px);
out:
    px_destroy_if_idle(px);
}

static int script_gives(const sip_msg_t *block, const char *name)
{
    return block && sip_msg_has_header(block, name);
}

/* The connection requests in the dialog must come back on (RFC 5626
 * §5.3, RFC 7118 §5): a WebSocket one always (nothing else reaches a
 * browser), a TCP or TLS one when the Contact asks for it with ;ob (RFC
 * 5626 §5.4); 0 otherwise, and the dialog keeps the plain RFC 5658
 * Record-Route it had before flows. */
static apr_uint64_t incoming_flow(apr_pool_t *p, const sip_source_t *src, const sip_msg_t *req)
{
    const char *contact;

    if (src->kind == SIP_TP_UDP)
        return 0;
    if (src->kind == SIP_TP_TCP || src->kind == SIP_TP_TLS) {
        contact = sip_msg_header(req, "Contact");
        if (!contact || !sip_uri_param(p, sip_header_uri(p, contact, NULL), "ob"))
            return 0;
    }
    return sip_source_flow_id(src);
}

static const char *with_via(apr_pool_t *p, const char *text, apr_size_t len, sip_tp_kind_t kind,
                            const char *me, const char *branch, apr_size_t *out_len);

/* The request of branch 'b' as it goes over 'kind' with branch id 'id'
 * ('out_flow': the connection it goes on, 0 none): the received request
 * with §16.6's edits and the script's block merged in, or the script's
 * own request with our Via on top. */
static const char *branch_text(apr_pool_t *p, branch_t *b, sip_tp_kind_t kind,
                               apr_uint64_t out_flow, const char *id, apr_size_t *len)
{
    sip_proxy_t *px = b->px;
    const sip_msg_t *req = sip_txn_request(px->st);
    const sip_source_t *src = sip_txn_source(px->st);
    sip_wire_edit_t e;
    const char *text, *merged;
    apr_size_t mlen = 0;

    if (b->originated)
        return with_via(p, b->own_text, b->own_len, kind,
                        hostport_on(p, px->s, local_hostport(p, px->s), kind), id, len);
    route_edits(p, req, b->uri ? b->uri : sip_msg_request_uri(req), b->path, &e);
    text = finish_request(p, req, &e, px->s,
                          px->conf->record_route && !script_gives(b->block, "Record-Route"),
                          (int)src->kind, incoming_flow(p, src, req), kind, out_flow, id, len);
    if (!text || !b->block)
        return text;
    merged = sip_msg_merge_text(p, text, *len, b->block, &mlen);
    *len = mlen;
    return merged;
}

/* The URI the request of 'b' is routed by (RFC 3261 §16.6 step 7):
 * the script's first Route when it gave one (*script_route set: it
 * wins over any flow), else the first Route after §16.6, else the
 * target. */
static const char *branch_next_hop(apr_pool_t *p, branch_t *b, int *script_route)
{
    const sip_msg_t *req = sip_txn_request(b->px->st);
    sip_wire_edit_t e;
    const char *next, *text;
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    apr_size_t len = 0;

    *script_route = 0;
    if (b->originated)
        return b->own_next;
    next = route_edits(p, req, b->uri ? b->uri : sip_msg_request_uri(req), b->path, &e);
    if (!script_gives(b->block, "Route"))
        return next;
    *script_route = 1;
    text = branch_text(p, b, SIP_TP_UDP, 0, "z9hG4bKmSnexthop", &len);
    if (!text || sip_msg_parse(p, text, len, NULL, 0, &m, &err) != APR_SUCCESS)
        return NULL;
    return sip_msg_route_count(m) ? sip_msg_route_uri(p, m, 0) : sip_msg_request_uri(m);
}

/* Send the request of 'b' now, as a new client transaction (a new
 * branch id for every target, RFC 3263 §4.3), over the connection 'on'
 * when given, else to 'dest'. */
static void branch_transmit(branch_t *b, sip_tp_kind_t kind, const sip_sockaddr_t *dest,
                            const sip_source_t *on, apr_uint64_t out_flow)
{
    sip_proxy_t *px = b->px;
    const char *id = apr_psprintf(px->pool, "%s%s.%u", branch_prefix(px->pool), px->loop_hash,
                                  ++px->counter);
    const char *text;
    apr_size_t len = 0;
    apr_pool_t *p;

    apr_pool_create(&p, px->pool);
    b->dest = *dest;
    text = branch_text(p, b, kind, out_flow, id, &len);
    if (text && b->originated && b->own_ack) {
        /* §17.1.1.3: an ACK has no transaction; it is sent once */
        sip_uri_info_t hop;
        memset(&hop, 0, sizeof(hop));
        sip_uri_info(p, b->own_next, &hop);
        send_hop(kind, px->s, &hop, dest, text, len);
        apr_pool_destroy(p);
        branch_end(b);
        return;
    }
    if (text && !b->originated && !b->block)
        /* our edits of a request already parsed: not parsed once more */
        b->ctxn = sip_ctxn_send_known(text, len, id, sip_msg_method(sip_txn_request(px->st)),
                                      kind, px->s, dest, on, branch_response, b);
    else if (text && on)
        b->ctxn = sip_ctxn_send_text_on(text, len, on, px->s, branch_response, b);
    else if (text)
        b->ctxn = sip_ctxn_send_text(text, len, kind, px->s, dest, branch_response, b);
    apr_pool_destroy(p);
    if (!b->ctxn) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: cannot reach %s", b->uri);
        local_final(b, 503, "Service Unavailable");
    }
}

/* RFC 5626 §5.3: send over the first usable flow from b->fi on (the
 * binding's, then the other flows of its instance; or the one our
 * recorded route names).  1 when sent or answered (480 for a binding
 * whose flows are all gone, 430 for a dialog's flow), 0 when no flow
 * applies. */
static int branch_try_flows(branch_t *b)
{
    sip_proxy_t *px = b->px;
    apr_pool_t *p;
    sip_source_t on;
    int n = b->flows ? b->flows->nelts : 0;

    apr_pool_create(&p, px->pool);
    for (;;) {
        apr_uint64_t f = b->fi < n ? APR_ARRAY_IDX(b->flows, b->fi, apr_uint64_t) : 0;
        int r;
        memset(&on, 0, sizeof(on));
        r = flow_hop(p, sip_txn_request(px->st), f, &on);
        if (r == 1) {
            b->on_flow = 1;
            branch_transmit(b, on.kind, &on.peer, on.tcp ? &on : NULL, f);
            sip_source_release(&on);
            apr_pool_destroy(p);
            return 1;
        }
        if (r == 0 && !b->on_flow && !n) {
            apr_pool_destroy(p);
            return 0;
        }
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: the connection (flow) to "
                     "%s is closed%s", b->uri, b->fi + 1 < n ? "; trying the next flow" : "");
        if (b->fi + 1 < n) {
            b->fi++;
            continue;
        }
        apr_pool_destroy(p);
        /* a binding's flows gone since the lookup: as if it had none */
        branch_flows_gone(b);
        return 1;
    }
}

/* Send to the target in use, skipping any we cannot open ourselves. */
static void branch_try_target(branch_t *b)
{
    for (; b->ti < b->targets->nelts; b->ti++) {
        const sip_dns_target_t *t = &APR_ARRAY_IDX(b->targets, b->ti, sip_dns_target_t);
        if (t->kind <= SIP_TP_TLS) {
            branch_transmit(b, t->kind, &t->addr, NULL, 0);
            return;
        }
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, b->px->s, "sip proxy: cannot reach %s", b->uri);
    local_final(b, 503, "Service Unavailable");
}

/* One log line and the answer for a next hop that did not resolve. */
static void branch_unresolved(branch_t *b, int status, const char *why)
{
    const char *reason, *what;
    int code = unresolved_status(status, b->binding, &reason, &what);

    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, b->px->s, "sip proxy: cannot resolve %s for %s "
                 "(%s%s%s): %d %s", b->next ? b->next : "(none)",
                 b->uri ? b->uri : "a request of the script", what, why ? ": " : "",
                 why ? why : "", code, reason);
    if (b->originated && b->own_ack)
        branch_end(b);
    else
        local_final(b, code, reason);
}

static void branch_resolved(void *baton, int status, apr_array_header_t *targets,
                            const char *why)
{
    branch_t *b = baton;

    b->dq = NULL;
    if (b->done)
        return;
    if (status == SIP_DNS_DONE && targets && targets->nelts) {
        b->targets = targets;
        b->ti = 0;
        branch_try_target(b);
    }
    else
        branch_unresolved(b, status, why);
    if (b->done && b->originated && b->own_ack)
        px_maybe_finish(b->px, 0);
}

/* RFC 3263 §4 for the next hop of 'b' (or its binding's received
 * address): SIP_DNS_DONE (sent), SIP_DNS_PENDING (resolving: the
 * branch waits, timer C running), the failure (nothing sent), or
 * NO_LOOKUP when there is nothing to look up. */
#define NO_LOOKUP (-100)
static int branch_lookup(branch_t *b, const char *next, int script_route)
{
    sip_proxy_t *px = b->px;
    sip_uri_info_t *hop;
    apr_array_header_t *targets = NULL;
    int hint = -1, rc;

    b->next = next ? apr_pstrdup(px->pool, next) : NULL;
    if (!b->qpool)
        apr_pool_create(&b->qpool, px->pool);
    hop = apr_pcalloc(b->qpool, sizeof(*hop));
    if (b->received && !b->path && !script_route) {
        /* RFC 3581 / RFC 5626 §5.3: where the REGISTER came from; the
         * Request-URI stays the Contact */
        sip_dns_target_t *t;
        targets = apr_array_make(b->qpool, 1, sizeof(sip_dns_target_t));
        t = apr_array_push(targets);
        memset(t, 0, sizeof(*t));
        t->kind = (sip_tp_kind_t)b->received_kind;
        if (sip_uri_info(b->qpool, b->uri, hop))
            t->host = hop->host;
        if (!parse_hostport(b->qpool, b->received, &t->addr))
            return NO_LOOKUP;
        b->targets = targets;
        branch_try_target(b);
        return SIP_DNS_DONE;
    }
    if (!lookup_hint(b->qpool, b->originated ? NULL : sip_txn_request(px->st), next, hop, &hint))
        return NO_LOOKUP;
    rc = sip_dns_resolve_uri(b->qpool, hop, hint, &targets, &b->dq, branch_resolved, b);
    if (rc == SIP_DNS_DONE) {
        b->dq = NULL;
        b->targets = targets;
        b->ti = 0;
        branch_try_target(b);
    }
    else if (rc != SIP_DNS_PENDING)
        b->dq = NULL;
    return rc;
}

static void start_branch(sip_proxy_t *px, branch_t *b)
{
    apr_pool_t *p;
    const char *next;
    int script_route = 0, rc;

    b->started = 1;
    /* timer C runs while the next hop resolves too (§16.6 step 11) */
    if (px->invite && !b->originated)
        sip_timer_set(sip_txn_loop(), &b->timer_c, px->conf->timer_c, timer_c_fired, b);
    if (b->block && !b->originated && sip_msg_header(b->block, "Expires")) {
        /* delta-seconds only; anything else arms no timer */
        const char *v = sip_msg_header(b->block, "Expires");
        char *end;
        long secs = strtol(v, &end, 10);
        if (apr_isdigit(*v) && !*end && secs >= 0)
            sip_timer_set(sip_txn_loop(), &b->expires, apr_time_from_sec(secs), expires_fired, b);
        else
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, px->s,
                         "sip-cgi: Expires \"%s\" is not delta-seconds; no local timer", v);
    }
    apr_pool_create(&p, px->pool);
    next = branch_next_hop(p, b, &script_route);
    if (!b->originated && !script_route && branch_try_flows(b)) {
        apr_pool_destroy(p);
        return;
    }
    rc = branch_lookup(b, next, script_route);
    apr_pool_destroy(p);
    if (rc == NO_LOOKUP) {
        /* nothing to look up: a WebSocket peer without its flow, or no URI */
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: cannot reach %s", b->uri);
        local_final(b, 503, "Service Unavailable");
    }
    else if (rc != SIP_DNS_DONE && rc != SIP_DNS_PENDING)
        branch_unresolved(b, rc, NULL);
}

static int px_cancelled(void *tu)
{
    sip_proxy_t *px = tu;

    /* §16.10: cancel every branch; their 487s make the final response. */
    px->cancelled = 1;
    cancel_pending(px);
    return 1;
}

static sip_proxy_t *px_create(sip_txn_t *t, server_rec *s)
{
    apr_pool_t *p;
    sip_proxy_t *px;

    apr_pool_create(&p, px_root);
    px = apr_pcalloc(p, sizeof(*px));
    px->pool = p;
    sip_stats->now.proxies++;
    px->st = t;
    px->s = s;
    px->conf = sip_get_conf(s);
    px->branches = apr_array_make(p, 4, sizeof(branch_t *));
    px->challenges = apr_array_make(p, 2, sizeof(sip_msg_t *));
    px->invite = strcmp(sip_msg_method(sip_txn_request(t)), "INVITE") == 0;
    px->loop_hash = loop_hash(p, sip_txn_request(t));
    sip_txn_set_proxied(t);
    return px;
}

sip_proxy_t *sip_proxy_new(sip_txn_t *t, server_rec *s)
{
    static const sip_txn_tu_ops_t ops = {px_cancelled, NULL, NULL};
    sip_proxy_t *px = px_create(t, s);

    sip_txn_attach(t, &ops, px);
    return px;
}

sip_proxy_t *sip_proxy_new_owned(sip_txn_t *t, server_rec *s, const sip_proxy_owner_t *owner,
                                 void *baton)
{
    sip_proxy_t *px = px_create(t, s);

    px->owner = owner;
    px->owner_baton = baton;
    return px;
}

static branch_t *new_branch(sip_proxy_t *px, const char *uri, double q)
{
    branch_t *b = apr_pcalloc(px->pool, sizeof(*b));

    /* a branch started after the owner heard "idle" makes it busy again:
     * it hears "idle" once more when this one is over */
    px->idle_told = 0;
    b->px = px;
    b->uri = uri ? apr_pstrdup(px->pool, uri) : NULL;
    b->q = q;
    return b;
}

/* What the registrar knows about reaching a binding, kept in the
 * proxy's pool: its flows in the order to try them, its received
 * address and Path. */
static void set_reach(branch_t *b, apr_uint64_t flow, const sip_proxy_reach_t *r)
{
    apr_pool_t *p = b->px->pool;
    int i;

    if (r) {
        b->binding = 1;
        flow = r->flow;
        b->received = r->received ? apr_pstrdup(p, r->received) : NULL;
        b->received_kind = r->kind;
        b->path = r->path ? apr_pstrdup(p, r->path) : NULL;
    }
    b->flow = flow;
    if (flow || (r && r->alt_flows && r->alt_flows->nelts)) {
        b->flows = apr_array_make(p, 2, sizeof(apr_uint64_t));
        if (flow)
            *(apr_uint64_t *)apr_array_push(b->flows) = flow;
        for (i = 0; r && r->alt_flows && i < r->alt_flows->nelts; i++)
            if (APR_ARRAY_IDX(r->alt_flows, i, apr_uint64_t))
                *(apr_uint64_t *)apr_array_push(b->flows) =
                    APR_ARRAY_IDX(r->alt_flows, i, apr_uint64_t);
    }
}

void sip_proxy_add_target(sip_proxy_t *px, const char *uri, double q)
{
    sip_proxy_add_target_reach(px, uri, q, NULL);
}

void sip_proxy_add_target_flow(sip_proxy_t *px, const char *uri, double q, apr_uint64_t flow)
{
    sip_proxy_reach_t r;

    if (!flow) {
        sip_proxy_add_target_reach(px, uri, q, NULL);
        return;
    }
    memset(&r, 0, sizeof(r));
    r.flow = flow;
    sip_proxy_add_target_reach(px, uri, q, &r);
}

void sip_proxy_add_target_reach(sip_proxy_t *px, const char *uri, double q,
                                const sip_proxy_reach_t *r)
{
    branch_t *b = new_branch(px, uri, q);
    int i;

    /* Keep the list in descending q order (stable for equal q). */
    for (i = px->branches->nelts; i > 0; i--) {
        if (APR_ARRAY_IDX(px->branches, i - 1, branch_t *)->q >= q)
            break;
    }
    apr_array_push(px->branches);
    memmove(&APR_ARRAY_IDX(px->branches, i + 1, branch_t *), &APR_ARRAY_IDX(px->branches, i, branch_t *),
            (size_t)(px->branches->nelts - 1 - i) * sizeof(branch_t *));
    APR_ARRAY_IDX(px->branches, i, branch_t *) = b;
    set_reach(b, 0, r);
}

void sip_proxy_set_sequential(sip_proxy_t *px, int on)
{
    px->sequential = on;
}

static int px_checks(sip_proxy_t *px)
{
    const sip_msg_t *req = sip_txn_request(px->st);

    /* §16.3 step 3 */
    if (sip_msg_max_forwards(req) == 0) {
        px->final_sent = 1;
        sip_txn_refuse(px->st, 483, "Too Many Hops", NULL, "Max-Forwards is 0");
        return 0;
    }
    /* §16.3 step 4 */
    if (looped(px->pool, req, px->loop_hash)) {
        px->final_sent = 1;
        sip_txn_refuse(px->st, 482, "Loop Detected", NULL, "our own Via with the same branch hash");
        return 0;
    }
    return 1;
}

void sip_proxy_start(sip_proxy_t *px)
{
    int i;

    if (!px_checks(px)) {
        px_destroy_if_idle(px);
        return;
    }
    if (!px->branches->nelts) {
        px->final_sent = 1;
        sip_txn_refuse(px->st, 480, "Temporarily Unavailable", NULL, "no target to proxy to");
        px_destroy_if_idle(px);
        return;
    }
    if (px->invite)     /* §16.7: we will take a while; stop retransmissions */
        sip_txn_reply(px->st, 100, "Trying", NULL);
    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        start_branch(px, b);
        if (px->sequential && !b->done)
            break;
    }
    px_maybe_finish(px, 1);
}

sip_proxy_branch_t *sip_proxy_fork(sip_proxy_t *px, const char *uri, const sip_msg_t *block)
{
    return sip_proxy_fork_reach(px, uri, block, NULL);
}

sip_proxy_branch_t *sip_proxy_fork_flow(sip_proxy_t *px, const char *uri, const sip_msg_t *block,
                                        apr_uint64_t flow)
{
    sip_proxy_reach_t r;

    if (!flow)
        return sip_proxy_fork_reach(px, uri, block, NULL);
    memset(&r, 0, sizeof(r));
    r.flow = flow;
    return sip_proxy_fork_reach(px, uri, block, &r);
}

sip_proxy_branch_t *sip_proxy_fork_reach(sip_proxy_t *px, const char *uri,
                                         const sip_msg_t *block, const sip_proxy_reach_t *r)
{
    branch_t *b;

    if (!px->forked && !px_checks(px))
        return NULL;
    if (px->invite && !px->forked && !sip_txn_final_sent(px->st))
        sip_txn_reply(px->st, 100, "Trying", NULL);
    px->forked = 1;
    b = new_branch(px, uri, 1.0);
    b->block = block;
    b->token = block ? sip_msg_header(block, "CGI-Request-Token") : NULL;
    set_reach(b, 0, r);
    *(branch_t **)apr_array_push(px->branches) = b;
    start_branch(px, b);
    return b;
}

void sip_proxy_fork_unreachable(sip_proxy_t *px, const char *uri, const sip_msg_t *block,
                                int status, const char *reason)
{
    branch_t *b = new_branch(px, uri, 1.0);

    b->block = block;
    b->token = block ? sip_msg_header(block, "CGI-Request-Token") : NULL;
    b->started = 1;
    *(branch_t **)apr_array_push(px->branches) = b;
    local_final(b, status, reason);
}

/* 'text' (a request without Via) with our Via on top, for the transport
 * of the next hop. */
static const char *with_via(apr_pool_t *p, const char *text, apr_size_t len, sip_tp_kind_t kind,
                            const char *me, const char *branch, apr_size_t *out_len)
{
    const char *nl = memchr(text, '\n', len);
    apr_size_t head = nl ? (apr_size_t)(nl - text) + 1 : len;
    const char *via = apr_psprintf(p, "%sVia: SIP/2.0/%s %s;branch=%s;rport\r\n",
                                   nl ? "" : "\r\n", sip_tp_via_name(kind), me,
                                   branch);
    apr_size_t vlen = strlen(via);
    char *out = apr_palloc(p, len + vlen + 1);

    memcpy(out, text, head);
    memcpy(out + head, via, vlen);
    memcpy(out + head + vlen, text + head, len - head);
    out[len + vlen] = '\0';
    *out_len = len + vlen;
    return out;
}

/* 'text' (a request without Via) checked: it parses as a request once
 * our Via is on top.  Its method and next hop (its first Route, else
 * its Request-URI: RFC 3261 §8.1.2) in *method and *next; NULL with
 * *why when it is not valid SIP. */
static sip_msg_t *own_parse(apr_pool_t *p, server_rec *s, const char *text, apr_size_t len,
                            const char **next, const char **why)
{
    apr_size_t olen = 0;
    const char *out = with_via(p, text, len, SIP_TP_UDP, local_hostport(p, s), "z9hG4bKmN",
                               &olen);
    sip_msg_t *m = NULL;
    sip_msg_error_t err = {0, "unparsable"};

    if (sip_msg_parse(p, out, olen, NULL, 0, &m, &err) != APR_SUCCESS || !sip_msg_method(m)) {
        *why = apr_pstrcat(p, "not valid SIP: ", err.reason, NULL);
        return NULL;
    }
    *next = sip_msg_route_count(m) ? sip_msg_route_uri(p, m, 0) : sip_msg_request_uri(m);
    return m;
}

/* A request of the server's own (sip_proxy_send_new) on its way: its
 * text without Via, the targets of its next hop, the transaction in
 * flight.  Freed once its caller heard the outcome. */
typedef struct own_req {
    apr_pool_t *pool;
    server_rec *s;
    const char *text;
    apr_size_t len;
    sip_msg_t *req;             /* parsed, for a response made up here */
    sip_uri_info_t hop;
    int ack;
    sip_dns_query_t *q;
    apr_array_header_t *targets;
    int ti;
    int status;                 /* a lookup that failed at once, told from 'later' */
    sip_timer_t later;
    sip_ctxn_cb cb;
    void *baton;
} own_req_t;

static int own_try(own_req_t *o);
static const char *new_branch_id(apr_pool_t *p);

/* Tell the caller and forget the request. */
static void own_done(own_req_t *o, sip_ctxn_t *c, sip_msg_t *resp, int from_network)
{
    sip_ctxn_cb cb = o->cb;
    void *baton = o->baton;

    if (c)
        sip_ctxn_abandon(c);
    if (cb && !o->ack)
        cb(baton, c, resp, from_network);
    apr_pool_destroy(o->pool);
}

static void own_local(own_req_t *o, int status, const char *reason)
{
    sip_msg_t *resp = sip_msg_make_response(o->pool, o->req, status, reason, NULL);

    own_done(o, NULL, resp, 0);
}

static void own_response(void *baton, sip_ctxn_t *c, sip_msg_t *resp, int from_network)
{
    own_req_t *o = baton;
    int status = resp ? sip_msg_status(resp) : 0;

    if (from_network < 0) {
        own_done(o, NULL, NULL, -1);
        return;
    }
    if (status < 200) {
        if (o->cb)
            o->cb(o->baton, c, resp, from_network);
        return;
    }
    /* RFC 3263 §4.3: a transport error, a timeout or a 503: the next target */
    if ((status == 503 || (status == 408 && !from_network)) && o->ti + 1 < o->targets->nelts) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, o->s, "sip: request of ours to %s: %d; trying "
                     "the next target", o->hop.host, status);
        sip_ctxn_abandon(c);
        o->ti++;
        if (!own_try(o))
            own_local(o, 503, "Service Unavailable");
        return;
    }
    own_done(o, c, resp, from_network);
}

/* Send to the target in use (a new branch id each time), skipping the
 * ones we cannot open: 1 when sent (an ACK: sent and forgotten), 0 (logged)
 * when no target took it. */
static int own_try(own_req_t *o)
{
    for (; o->ti < o->targets->nelts; o->ti++) {
        const sip_dns_target_t *t = &APR_ARRAY_IDX(o->targets, o->ti, sip_dns_target_t);
        apr_pool_t *p;
        const char *out;
        apr_size_t olen = 0;
        sip_ctxn_t *c;

        if (t->kind > SIP_TP_TLS)
            continue;
        apr_pool_create(&p, o->pool);
        out = with_via(p, o->text, o->len, t->kind,
                       hostport_on(p, o->s, local_hostport(p, o->s), t->kind),
                       new_branch_id(p), &olen);
        if (o->ack) {       /* §17.1.1.3: no transaction, sent once */
            send_hop(t->kind, o->s, &o->hop, &t->addr, out, olen);
            apr_pool_destroy(p);
            own_done(o, NULL, NULL, 0);
            return 1;
        }
        c = sip_ctxn_send_text(out, olen, t->kind, o->s, &t->addr, own_response, o);
        apr_pool_destroy(p);
        if (c)
            return 1;
    }
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, o->s, "sip: request of ours to %s not sent: "
                 "transport refused it", o->hop.host);
    return 0;
}

static void own_resolved(void *baton, int status, apr_array_header_t *targets, const char *why)
{
    own_req_t *o = baton;
    const char *reason, *what;
    int code;

    o->q = NULL;
    if (status == SIP_DNS_DONE && targets && targets->nelts) {
        o->targets = targets;
        if (!own_try(o))
            own_local(o, 503, "Service Unavailable");
        return;
    }
    code = unresolved_status(status, 0, &reason, &what);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, o->s, "sip: request of ours not sent: cannot "
                 "resolve %s (%s%s%s): %d %s", o->hop.host, what, why ? ": " : "",
                 why ? why : "", code, reason);
    own_local(o, code, reason);
}

/* A branch id no other request of ours shares: the magic cookie,
 * random bits for across processes and restarts, a counter within. */
static const char *new_branch_id(apr_pool_t *p)
{
    static apr_uint32_t counter;
    apr_uint32_t rnd[2] = {0, 0};

    if (apr_generate_random_bytes((unsigned char *)rnd, sizeof(rnd)) != APR_SUCCESS)
        rnd[0] = rnd[1] = 0;    /* the pid and counter still differ */
    return apr_psprintf(p, "%sN%08x%08x.%" APR_PID_T_FMT ".%u", branch_prefix(p), rnd[0], rnd[1],
                        getpid(), apr_atomic_inc32(&counter));
}

/* A lookup that failed at once (the cache) is told like a later one. */
static void own_failed_later(void *baton)
{
    own_req_t *o = baton;

    own_resolved(o, o->status, NULL, NULL);
}

int sip_proxy_send_new(server_rec *s, const char *text, apr_size_t len, sip_ctxn_cb cb,
                       void *baton)
{
    apr_pool_t *p;
    own_req_t *o;
    const char *next = NULL, *why = NULL;
    int rc;

    apr_pool_create(&p, px_root);
    o = apr_pcalloc(p, sizeof(*o));
    o->pool = p;
    o->s = s;
    o->cb = cb;
    o->baton = baton;
    o->text = apr_pstrmemdup(p, text, len);
    o->len = len;
    if (!(o->req = own_parse(p, s, text, len, &next, &why))
        || !next || !sip_uri_info(p, next, &o->hop) || !o->hop.host) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "sip: request of ours not sent: %s",
                     why ? why : apr_pstrcat(p, "no next hop in ", next ? next : "(none)",
                                             NULL));
        apr_pool_destroy(p);
        return 0;
    }
    o->ack = strcmp(sip_msg_method(o->req), "ACK") == 0;
    rc = sip_dns_resolve_uri(p, &o->hop, -1, &o->targets, &o->q, own_resolved, o);
    if (rc == SIP_DNS_PENDING)
        return 1;
    if (rc == SIP_DNS_DONE && o->targets->nelts) {
        if (own_try(o))
            return 1;
        apr_pool_destroy(p);
        return 0;
    }
    o->status = rc == SIP_DNS_DONE ? SIP_DNS_NOTFOUND : rc;
    sip_timer_set(sip_txn_loop(), &o->later, 0, own_failed_later, o);
    return 1;
}

#define MF_BLOCK "X\r\nMax-Forwards: 70\r\n\r\n"

sip_proxy_branch_t *sip_proxy_originate(sip_proxy_t *px, const sip_msg_t *block)
{
    apr_pool_t *p;
    branch_t *b = new_branch(px, NULL, 1.0);
    const char *line = sip_msg_start_line(block), *sp1, *text, *merged, *why = NULL, *next = NULL;
    sip_msg_t *m = NULL;
    apr_size_t mlen = 0;
    int rc;

    b->block = block;
    b->originated = 1;
    b->started = 1;
    b->token = sip_msg_header(block, "CGI-Request-Token");
    *(branch_t **)apr_array_push(px->branches) = b;
    apr_pool_create(&p, px->pool);
    /* The script writes the request; the server adds Via, Max-Forwards
     * and Content-Length, and strips CGI headers. */
    sp1 = strchr(line, ' ');
    b->uri = sp1 ? apr_pstrndup(px->pool, sp1 + 1, strcspn(sp1 + 1, " ")) : NULL;
    text = apr_pstrcat(p, line, "\r\n\r\n", NULL);
    merged = sip_msg_merge_text(p, text, strlen(text), block, &mlen);
    if (merged && !sip_msg_has_header(block, "Max-Forwards"))
        merged = sip_msg_merge_text(p, merged, mlen,
                                    sip_msg_parse_block(p, MF_BLOCK, sizeof(MF_BLOCK) - 1),
                                    &mlen);
    if (!merged)
        why = "not valid SIP: unparsable";
    else
        m = own_parse(p, px->s, merged, mlen, &next, &why);
    if (!m) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, px->s,
                     "sip-cgi: new request from script is not valid SIP: %s", why + 15);
        apr_pool_destroy(p);
        b->done = 1;
        return NULL;
    }
    b->own_text = apr_pstrmemdup(px->pool, merged, mlen);
    b->own_len = mlen;
    b->own_next = next ? apr_pstrdup(px->pool, next) : NULL;
    b->own_ack = strcmp(sip_msg_method(m), "ACK") == 0;
    apr_pool_destroy(p);
    rc = branch_lookup(b, b->own_next, 0);
    if (rc == SIP_DNS_DONE || rc == SIP_DNS_PENDING)
        return b;
    if (rc != NO_LOOKUP) {
        /* known at once (the cache): the script hears it as it would later */
        branch_unresolved(b, rc, NULL);
        return b;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: cannot reach %s", b->own_next);
    b->done = 1;
    return NULL;
}

const char *sip_proxy_branch_token(const sip_proxy_branch_t *b)
{
    return b->token;
}

const char *sip_proxy_branch_peer(apr_pool_t *p, const sip_proxy_branch_t *b)
{
    return sip_sockaddr_ip(p, &b->dest);
}

int sip_proxy_branch_originated(const sip_proxy_branch_t *b)
{
    return b->originated;
}

void sip_proxy_forward_request(sip_txn_t *txn, server_rec *s)
{
    sip_proxy_t *px = sip_proxy_new(txn, s);

    /* §16.5: the Request-URI is the target (a Route left takes it there) */
    sip_proxy_add_target(px, sip_msg_request_uri(sip_txn_request(txn)), 1.0);
    sip_proxy_start(px);
}

/* ---- stateless response forwarding (§16.11, §18.2.2) ---- */

/* Is 'branch' (our Via in a response) one sip_proxy_forward_stateless
 * made for a request whose sender's Via is the response's second one? */
static int stateless_branch_ours(apr_pool_t *p, const sip_msg_t *resp, const char *branch)
{
    const char *mark;

    if (!branch || strncmp(branch, "z9hG4bKmS", 9) != 0 || !(mark = strstr(branch, SL_MARK)))
        return 0;
    return sip_route_mac_ok(p, next_via_key(p, resp, 1), mark + strlen(SL_MARK));
}

/* A response on its way by Via while the sent-by resolves (the
 * response itself is gone by then). */
typedef struct {
    apr_pool_t *pool;
    server_rec *s;
    const char *text;
    apr_size_t len;
    const char *host;
} via_fwd_t;

static void via_send(via_fwd_t *f, apr_array_header_t *targets)
{
    const sip_dns_target_t *t = &APR_ARRAY_IDX(targets, 0, sip_dns_target_t);

    /* §18.2.2: a reliable transport opens a connection when the one the
     * request came on is gone; the TLS certificate names the sent-by */
    if (t->kind == SIP_TP_TLS)
        sip_transport_send_tls(f->s, &t->addr, f->host, f->text, f->len, NULL);
    else if (t->kind <= SIP_TP_TLS)
        sip_transport_send_to(t->kind, f->s, &t->addr, f->text, f->len, NULL);
}

static void via_resolved(void *baton, int status, apr_array_header_t *targets, const char *why)
{
    via_fwd_t *f = baton;

    if (status == SIP_DNS_DONE && targets && targets->nelts)
        via_send(f, targets);
    else
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, f->s, "sip proxy: response not forwarded: "
                     "cannot resolve the Via sent-by %s (%s)", f->host, why ? why : "no target");
    apr_pool_destroy(f->pool);
}

static void forward_by_via(sip_msg_t *resp, server_rec *s, apr_pool_t *p)
{
    const char *host, *received, *branch, *buf;
    int port, rport, tcp, rc;
    apr_size_t len = 0;
    apr_pool_t *fp;
    via_fwd_t *f;
    apr_array_header_t *targets = NULL;
    sip_dns_query_t *q = NULL;
    sip_tp_kind_t kind;

    /* §18.2.2, RFC 3581 §4: to the next Via's received and rport, else
     * its sent-by resolved by RFC 3263 §5 (SRV for its transport when it
     * has no port) */
    if (!sip_msg_via_info(p, resp, 1, &host, &port, &received, &rport, &tcp, &branch))
        return;     /* it was for us alone */
    if (!(buf = sip_msg_relay_text(p, resp, &len)))
        return;
    kind = tcp ? SIP_TP_TCP : SIP_TP_UDP;
    apr_pool_create(&fp, px_root);
    f = apr_pcalloc(fp, sizeof(*f));
    f->pool = fp;
    f->s = s;
    f->text = apr_pstrmemdup(fp, buf, len);
    f->len = len;
    f->host = apr_pstrdup(fp, received ? received : host);
    rc = sip_dns_resolve_via(fp, f->host, rport ? rport : port, kind, &targets, &q, via_resolved,
                             f);
    if (rc == SIP_DNS_PENDING)
        return;
    if (rc == SIP_DNS_DONE && targets->nelts)
        via_send(f, targets);
    else
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip proxy: response not forwarded: cannot "
                     "resolve the Via sent-by %s", f->host);
    apr_pool_destroy(fp);
}

void sip_proxy_forward_response(sip_msg_t *resp, server_rec *s, apr_pool_t *p)
{
    const char *host, *received, *branch;
    int port, rport, tcp;

    if (!sip_msg_via_info(p, resp, 0, &host, &port, &received, &rport, &tcp, &branch)
        || !sip_transport_is_local(host, port ? port : 5060)) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip: response %d not for us; dropped",
                     sip_msg_status(resp));
        return;
    }
    /* §16.7 step 1 would forward any response matching no transaction by
     * its next Via: anyone could then make us deliver any payload to any
     * host, port and transport by writing our Via above the victim's.
     * Only responses to what we forwarded statelessly go on (a stateful
     * branch keeps its transaction, and a 2xx its Accepted state, RFC
     * 6026, for as long as answers may come). */
    if (!stateless_branch_ours(p, resp, branch)) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip: response %d matches no transaction "
                     "of ours; dropped", sip_msg_status(resp));
        return;
    }
    forward_by_via(resp, s, p);
}
