#include "sip_proxy.h"
#include "sip_conf.h"
#include "sip_log.h"
#include "sip_route.h"
#include "sip_auth.h"

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

/* Resolve a next hop.  Literal addresses need no lookup; names go to the
 * resolver (a blocking call: DNS is on the list for an asynchronous rework). */
static int resolve(apr_pool_t *p, const char *host, int port, sip_sockaddr_t *out)
{
    apr_sockaddr_t *sa = NULL;
    char *h = apr_pstrdup(p, host);

    if (port <= 0)
        port = 5060;
    if (h[0] == '[') {
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    if (sip_sockaddr_set(out, h, port) == APR_SUCCESS)
        return 1;
    if (apr_sockaddr_info_get(&sa, h, APR_UNSPEC, (apr_port_t)port, 0, p) != APR_SUCCESS || !sa)
        return 0;
    memcpy(&out->ss, &sa->sa, sa->salen);
    out->len = sa->salen;
    return 1;
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

/* Resolve a next hop for 'kind': TLS defaults to port 5061 (§19.1.2). */
static int resolve_hop(apr_pool_t *p, const sip_uri_info_t *hop, sip_tp_kind_t kind,
                       sip_sockaddr_t *dest)
{
    int port = hop->port ? hop->port : kind == SIP_TP_TLS ? 5061 : 0;
    return resolve(p, hop->maddr ? hop->maddr : hop->host, port, dest);
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
    if (sip_proxy_uri_is_local(sip_msg_request_uri(req), s, p)) {
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

static int looped(apr_pool_t *p, const sip_msg_t *req, const char *hash)
{
    const char *prefix = apr_pstrcat(p, "z9hG4bKmS", hash, ".", NULL);
    int i, n = sip_msg_via_count(req);

    for (i = 0; i < n; i++) {
        const char *host, *received, *branch;
        int port, rport, tcp;
        if (sip_msg_via_info(p, req, i, &host, &port, &received, &rport, &tcp, &branch)
            && branch && strncmp(branch, prefix, strlen(prefix)) == 0
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

/* The text of the request for 'target' (RFC 3261 §16.6) and where it
 * goes: the received text with only what §16.6 asks changed.  'in_kind'
 * is the transport it came on (-1: not known, no Record-Route then), and
 * 'in_flow' its connection when requests in the dialog must come back on
 * it.  When it goes over a flow ('out_flow', or one recorded in the
 * dialog) 'on' gets that connection, held; *gone is set when that flow
 * is closed (NULL is returned then). */
static const char *prepare_request(apr_pool_t *p, const sip_msg_t *orig, const char *target,
                                   server_rec *s, int record_route, int in_kind,
                                   apr_uint64_t in_flow, apr_uint64_t out_flow,
                                   const char *branch, sip_tp_kind_t *kind, sip_sockaddr_t *dest,
                                   apr_size_t *len, sip_source_t *on, int *gone)
{
    sip_wire_edit_t e;
    sip_uri_info_t hop;
    const char *next, *hint, *me = local_hostport(p, s);
    const char *ruri = target ? target : sip_msg_request_uri(orig);

    memset(&e, 0, sizeof(e));
    e.request_uri = ruri;       /* step 2 */
    e.max_forwards = 1;         /* step 3 */
    /* step 6: a strict next hop gets the Request-URI appended */
    next = sip_msg_route_count(orig) ? sip_msg_route_uri(p, orig, 0) : NULL;
    if (next && sip_uri_info(p, next, &hop) && !hop.lr) {
        e.route_append = apr_pstrcat(p, "<", ruri, ">", NULL);
        e.request_uri = next;
        e.route_drop = 1;
    }
    else if (!next)
        next = ruri;
    /* step 7: the next hop: a flow, else as the URI says, else as our
     * recorded route says, else UDP */
    memset(on, 0, sizeof(*on));
    *gone = 0;
    switch (flow_hop(p, orig, e.route_drop ? 0 : out_flow, on)) {
    case 1:
        *kind = on->kind;
        *dest = on->peer;
        break;
    case -1:
        *gone = 1;
        return NULL;
    default:
        out_flow = 0;
        if (!sip_uri_info(p, next, &hop))
            return NULL;
        hint = hop.transport ? NULL : recorded_transport(p, orig);
        *kind = hop_kind(&hop, hint);
        /* RFC 7118 §5: we never open a WebSocket connection; without a
         * flow there is nothing to look up (the host is made up) */
        if (*kind == SIP_TP_WS || *kind == SIP_TP_WSS || !resolve_hop(p, &hop, *kind, dest))
            return NULL;
    }
    /* step 4: for requests that may create a dialog; inside one the
     * route set is fixed already (§12.2.1.2) */
    if (record_route && in_kind >= 0 && strcmp(sip_msg_method(orig), "REGISTER") != 0
        && !sip_msg_to_tag(orig))
        e.record_route = record_route_values(p, orig, s, me, in_kind, in_flow, *kind,
                                             out_flow);
    /* RFC 3261 §22.3: credentials for our own realm were for us */
    if (sip_msg_header(orig, "Authorization") || sip_msg_header(orig, "Proxy-Authorization"))
        e.realm = sip_auth_realm(s, p, orig);
    /* step 8 */
    e.via = apr_psprintf(p, "SIP/2.0/%s %s;branch=%s;rport", sip_tp_via_name(*kind),
                         hostport_on(p, s, me, *kind), branch);
    return sip_msg_wire_text(p, orig, &e, len);
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

void sip_proxy_forward_stateless(sip_msg_t *req, server_rec *s, apr_pool_t *p)
{
    sip_tp_kind_t kind;
    sip_sockaddr_t dest;
    sip_uri_info_t hop;
    /* signed: only the responses to this request are forwarded back by
     * Via (sip_proxy_forward_response), to where its sender asked */
    const char *branch = apr_pstrcat(p, "z9hG4bKmS", loop_hash(p, req), SL_MARK,
                                     sip_route_mac(p, next_via_key(p, req, 0)), NULL);
    const char *buf;
    apr_size_t len = 0;
    sip_source_t on;
    int gone = 0;

    memset(&on, 0, sizeof(on));     /* released on every path */
    if (sip_msg_max_forwards(req) == 0)
        return;
    buf = prepare_request(p, req, NULL, s, 0, -1, 0, 0, branch, &kind, &dest, &len, &on, &gone);
    if (!buf) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip proxy: cannot forward %s %s%s",
                     sip_msg_method(req), sip_msg_request_uri(req),
                     gone ? ": the connection (flow) it must go on is closed" : "");
        sip_source_release(&on);
        return;
    }
    if (on.tcp) {
        sip_transport_send(&on, NULL, buf, len);
        sip_source_release(&on);
        return;
    }
    memset(&hop, 0, sizeof(hop));
    if (kind == SIP_TP_TLS)
        sip_uri_info(p, sip_msg_route_count(req) ? sip_msg_route_uri(p, req, 0)
                                                 : sip_msg_request_uri(req), &hop);
    send_hop(kind, s, &hop, &dest, buf, len);
}

/* ---- responses ---- */

static void px_maybe_finish(sip_proxy_t *px, int may_answer);
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

/* A received response as it goes upstream: our Via removed (§16.7
 * step 3), every other byte as it came. */
static const char *relay_text(apr_pool_t *p, const sip_msg_t *resp, apr_size_t *len)
{
    sip_wire_edit_t e;

    memset(&e, 0, sizeof(e));
    e.pop_via = 1;
    return sip_msg_wire_text(p, resp, &e, len);
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

static void cancel_pending(sip_proxy_t *px)
{
    int i;
    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        if (b->started && !b->done && b->ctxn && !b->originated)
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
        text = relay_text(px->pool, resp, &len);
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
        if (!final_sent(px) && !local && (copy = own_copy(px, resp, 0)))
            send_upstream(px, copy, NULL);
        return;
    }
    if (status < 300) {
        /* §16.7 step 5: every 2xx goes up at once, then the rest is cancelled */
        if (px->invite && sip_txn_final_sent(px->st) && sip_txn_last_status(px->st) >= 300) {
            /* a 2xx racing our own non-2xx final: it still goes to the caller */
            if (!local)
                forward_by_via(resp, px->s, px->pool);
        }
        else if ((copy = own_copy(px, resp, local))) {
            if (!sip_txn_final_sent(px->st) || px->invite)
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
    text = relay_text(p, resp, &len);
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

static void branch_response(void *baton, sip_ctxn_t *c, sip_msg_t *resp, int from_network)
{
    branch_t *b = baton;
    sip_proxy_t *px = b->px;
    int status;

    (void)c;
    if (from_network < 0) {         /* the client transaction is gone */
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

static void px_destroy_if_idle(sip_proxy_t *px)
{
    int i;

    for (i = 0; i < px->branches->nelts; i++) {
        branch_t *b = APR_ARRAY_IDX(px->branches, i, branch_t *);
        if (b->ctxn || sip_timer_armed(&b->timer_c) || sip_timer_armed(&b->expires))
            return;
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

/* Where a finished request goes: its first Route, else its Request-URI. */
static int next_hop_of_text(apr_pool_t *p, const char *text, apr_size_t len, sip_tp_kind_t *kind,
                            sip_sockaddr_t *dest)
{
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    sip_uri_info_t hop;
    const char *next;

    if (sip_msg_parse(p, text, len, NULL, 0, &m, &err) != APR_SUCCESS)
        return 0;
    next = sip_msg_route_count(m) ? sip_msg_route_uri(p, m, 0) : sip_msg_request_uri(m);
    if (!next || !sip_uri_info(p, next, &hop))
        return 0;
    *kind = hop_kind(&hop, NULL);
    return resolve_hop(p, &hop, *kind, dest);
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

static void start_branch(sip_proxy_t *px, branch_t *b)
{
    apr_pool_t *p;
    sip_tp_kind_t kind;
    const char *text;
    apr_size_t len = 0;
    const char *branch = apr_psprintf(px->pool, "z9hG4bKmS%s.%u", px->loop_hash, ++px->counter);
    const sip_msg_t *req = sip_txn_request(px->st);
    sip_source_t on;
    int gone = 0;

    memset(&on, 0, sizeof(on));     /* released on every path */
    b->started = 1;
    apr_pool_create(&p, px->pool);
    text = prepare_request(p, req, b->uri, px->s,
                           px->conf->record_route && !script_gives(b->block, "Record-Route"),
                           (int)sip_txn_source(px->st)->kind,
                           incoming_flow(p, sip_txn_source(px->st), req), b->flow, branch, &kind,
                           &b->dest, &len, &on, &gone);
    if (text && b->block) {
        apr_size_t mlen = 0;
        const char *merged = sip_msg_merge_text(p, text, len, b->block, &mlen);
        if (merged && sip_msg_has_header(b->block, "Route")) {
            /* the script's route wins over the flow */
            sip_source_release(&on);
            if (!next_hop_of_text(p, merged, mlen, &kind, &b->dest))
                merged = NULL;
        }
        text = merged;
        len = mlen;
    }
    if (text && on.tcp)
        b->ctxn = sip_ctxn_send_text_on(text, len, &on, px->s, branch_response, b);
    else if (text)
        b->ctxn = sip_ctxn_send_text(text, len, kind, px->s, &b->dest, branch_response, b);
    sip_source_release(&on);
    apr_pool_destroy(p);
    if (!b->ctxn && gone) {
        /* RFC 5626 §5.3: 430 for a flow named in the dialog's route; a
         * binding's flow closed since the lookup: as if it had none */
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: the connection (flow) to "
                     "%s is closed", b->uri);
        if (b->flow)
            local_final(b, 480, "Temporarily Unavailable");
        else
            local_final(b, 430, "Flow Failed");
        return;
    }
    if (!b->ctxn) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, px->s, "sip proxy: cannot reach %s", b->uri);
        local_final(b, 503, "Service Unavailable");
        return;
    }
    if (px->invite && !b->originated)
        sip_timer_set(sip_txn_loop(), &b->timer_c, px->conf->timer_c, timer_c_fired, b);
    if (b->block && sip_msg_header(b->block, "Expires")) {
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

void sip_proxy_add_target(sip_proxy_t *px, const char *uri, double q)
{
    sip_proxy_add_target_flow(px, uri, q, 0);
}

void sip_proxy_add_target_flow(sip_proxy_t *px, const char *uri, double q, apr_uint64_t flow)
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
    b->flow = flow;
}

/* Only the flow is used until the proxy learns the rest (issue 17). */
void sip_proxy_add_target_reach(sip_proxy_t *px, const char *uri, double q,
                                const sip_proxy_reach_t *r)
{
    sip_proxy_add_target_flow(px, uri, q, r ? r->flow : 0);
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
    return sip_proxy_fork_flow(px, uri, block, 0);
}

sip_proxy_branch_t *sip_proxy_fork_flow(sip_proxy_t *px, const char *uri, const sip_msg_t *block,
                                        apr_uint64_t flow)
{
    branch_t *b;

    if (!px->counter && !px_checks(px))
        return NULL;
    if (px->invite && !px->counter && !sip_txn_final_sent(px->st))
        sip_txn_reply(px->st, 100, "Trying", NULL);
    b = new_branch(px, uri, 1.0);
    b->block = block;
    b->token = block ? sip_msg_header(block, "CGI-Request-Token") : NULL;
    b->flow = flow;
    *(branch_t **)apr_array_push(px->branches) = b;
    start_branch(px, b);
    return b;
}

sip_proxy_branch_t *sip_proxy_fork_reach(sip_proxy_t *px, const char *uri,
                                         const sip_msg_t *block, const sip_proxy_reach_t *r)
{
    return sip_proxy_fork_flow(px, uri, block, r ? r->flow : 0);
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

/* Send a request of the server's own (RFC 3261 §8.1.2): 'text' (no Via)
 * goes to its first Route, else its Request-URI, with our Via and
 * 'branch' on top naming the transport used.  An ACK has no transaction
 * (§17.1.1.3): it is sent once and *ack set.  NULL with *why when it
 * cannot be sent. */
static sip_ctxn_t *send_own(apr_pool_t *p, server_rec *s, const char *text, apr_size_t len,
                            const char *branch, sip_ctxn_cb cb, void *baton,
                            sip_sockaddr_t *dest, int *ack, const char **why)
{
    const char *me = local_hostport(p, s), *next, *out;
    apr_size_t olen = 0;
    sip_msg_t *m = NULL;
    sip_msg_error_t err = {0, "unparsable"};
    sip_uri_info_t hop;
    sip_tp_kind_t kind = SIP_TP_UDP;

    *ack = 0;
    out = with_via(p, text, len, kind, me, branch, &olen);
    if (sip_msg_parse(p, out, olen, NULL, 0, &m, &err) != APR_SUCCESS || !sip_msg_method(m)) {
        *why = apr_pstrcat(p, "not valid SIP: ", err.reason, NULL);
        return NULL;
    }
    next = sip_msg_route_count(m) ? sip_msg_route_uri(p, m, 0) : sip_msg_request_uri(m);
    if (next && sip_uri_info(p, next, &hop))
        kind = hop_kind(&hop, NULL);
    if (!next || !hop.host || !resolve_hop(p, &hop, kind, dest)) {
        *why = apr_pstrcat(p, "cannot resolve the next hop ", next ? next : "(none)", NULL);
        return NULL;
    }
    if (kind != SIP_TP_UDP)     /* the Via names the transport actually used */
        out = with_via(p, text, len, kind, hostport_on(p, s, me, kind), branch, &olen);
    if (strcmp(sip_msg_method(m), "ACK") == 0) {
        send_hop(kind, s, &hop, dest, out, olen);
        *ack = 1;
        return NULL;
    }
    *why = "transport refused it";
    return sip_ctxn_send_text(out, olen, kind, s, dest, cb, baton);
}

/* A branch parameter no other request of ours shares: the magic cookie,
 * random bits for across processes and restarts, a counter within. */
static const char *new_branch_id(apr_pool_t *p)
{
    static apr_uint32_t counter;
    apr_uint32_t rnd[2] = {0, 0};

    if (apr_generate_random_bytes((unsigned char *)rnd, sizeof(rnd)) != APR_SUCCESS)
        rnd[0] = rnd[1] = 0;    /* the pid and counter still differ */
    return apr_psprintf(p, "z9hG4bKmN%08x%08x.%" APR_PID_T_FMT ".%u", rnd[0], rnd[1], getpid(),
                        apr_atomic_inc32(&counter));
}

sip_ctxn_t *sip_proxy_send_new(server_rec *s, const char *text, apr_size_t len, sip_ctxn_cb cb,
                               void *baton)
{
    apr_pool_t *p;
    sip_sockaddr_t dest;
    sip_ctxn_t *c;
    const char *why = NULL;
    int ack = 0;

    apr_pool_create(&p, px_root);
    c = send_own(p, s, text, len, new_branch_id(p), cb, baton, &dest, &ack, &why);
    if (!c && !ack)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "sip: request of ours not sent: %s", why);
    apr_pool_destroy(p);
    return c;
}

#define MF_BLOCK "X\r\nMax-Forwards: 70\r\n\r\n"

sip_proxy_branch_t *sip_proxy_originate(sip_proxy_t *px, const sip_msg_t *block)
{
    apr_pool_t *p;
    branch_t *b = new_branch(px, NULL, 1.0);
    const char *line = sip_msg_start_line(block), *sp1, *text, *merged, *why = NULL;
    apr_size_t mlen = 0;
    const char *branch;
    int ack = 0;

    b->block = block;
    b->originated = 1;
    b->started = 1;
    b->token = sip_msg_header(block, "CGI-Request-Token");
    *(branch_t **)apr_array_push(px->branches) = b;
    branch = apr_psprintf(px->pool, "z9hG4bKmS%s.%u", px->loop_hash, ++px->counter);
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
    if (merged)
        b->ctxn = send_own(p, px->s, merged, mlen, branch, branch_response, b, &b->dest, &ack,
                           &why);
    else
        why = "not valid SIP: unparsable";
    if (!b->ctxn && !ack && !strncmp(why, "not valid SIP: ", 15))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, px->s,
                     "sip-cgi: new request from script is not valid SIP: %s", why + 15);
    apr_pool_destroy(p);
    if (!b->ctxn) {
        b->done = 1;
        return ack ? b : NULL;
    }
    return b;
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

static void forward_by_via(sip_msg_t *resp, server_rec *s, apr_pool_t *p)
{
    const char *host, *received, *branch, *buf;
    int port, rport, tcp;
    sip_sockaddr_t dest;
    apr_size_t len = 0;

    /* §18.2.2: to the next Via's received/rport, else its sent-by */
    if (!sip_msg_via_info(p, resp, 1, &host, &port, &received, &rport, &tcp, &branch))
        return;     /* it was for us alone */
    if (!resolve(p, received ? received : host, rport ? rport : port, &dest))
        return;
    if ((buf = relay_text(p, resp, &len)))
        sip_transport_send_to(tcp ? SIP_TP_TCP : SIP_TP_UDP, s, &dest, buf, len, NULL);
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
