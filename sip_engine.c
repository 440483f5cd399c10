#include "sip_engine.h"
#include "sip_cgi.h"
#include "sip_conf.h"
#include "sip_cpl_exec.h"
#include "sip_dispatch.h"
#include "sip_event.h"
#include "sip_explode_run.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_namemap.h"
#include "sip_options.h"
#include "sip_proxy.h"
#include "sip_relay.h"
#include "sip_location.h"
#include "sip_script_store.h"
#include "sip_request.h"
#include "sip_auth.h"
#include "sip_stats.h"
#include "sip_tls.h"
#include "sip_transaction.h"
#include "sip_transport.h"
#include "sip_upload.h"
#include "sip_ws_upgrade.h"
#include "sip_dns.h"
#include "sip_handover.h"
#include "sip_replica.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "apr_strings.h"
#include "apr_signal.h"
#include "ap_listen.h"
#include "ap_mpm.h"
#include "http_config.h"
#include "mpm_common.h"

typedef struct {
    apr_socket_t *socks[SIP_ENGINES_MAX];  /* one per engine, a SO_REUSEPORT group */
    server_rec *vhost;
} udp_entry_t;

typedef struct {
    server_rec *primary;
    server_rec *named;
} named_vhost_t;

/* One engine process, as the parent supervises it. */
typedef struct engine_slot {
    int index;
    int handoff[2];         /* [0] engine end, [1] children's end */
    apr_proc_t *proc;       /* NULL until forked */
} engine_slot_t;

/* Per generation (pconf) state of the parent, inherited by the engines. */
static apr_array_header_t *udp_socks;
static apr_array_header_t *named_vhosts;    /* named_vhost_t */
static engine_slot_t slots[SIP_ENGINES_MAX];
static int slot_count;
static apr_pool_t *engine_pconf;
static server_rec *engine_main_server;
static pid_t parent_pid;
static int journal_fd = -1;

static server_rec *dbd_server;

void sip_engine_set_journal(int fd)
{
    journal_fd = fd;
    dbd_server = NULL;
}

void sip_engine_set_dbd(server_rec *s)
{
    dbd_server = s;
    journal_fd = -1;
}

static apr_pool_t *engine_pool;
static volatile sig_atomic_t engine_stop;

/* Every transaction, request and message has a pool of its own.  The
 * engine inherits httpd's parent's allocator, whose free list is unbounded:
 * it kept every node ever freed, so the RSS followed the highest load seen,
 * never the current one, and climbed with each burst (issue 19: RSS flat
 * under steady load).  Bound it as httpd bounds its worker threads'
 * allocators, by MaxMemFree (2 MB unless configured); beyond it nodes go
 * back to the system (Debian's APR maps them with mmap). */
static void engine_bound_free_memory(void)
{
    apr_allocator_t *a = apr_pool_allocator_get(engine_pconf);

    if (a && ap_max_mem_free != APR_ALLOCATOR_MAX_FREE_UNLIMITED)
        apr_allocator_max_free_set(a, ap_max_mem_free);
}

void sip_engine_add_udp(apr_pool_t *pconf, apr_socket_t *const *socks, server_rec *vhost)
{
    udp_entry_t *e;

    if (!udp_socks)
        udp_socks = apr_array_make(pconf, 4, sizeof(udp_entry_t));
    e = apr_array_push(udp_socks);
    memset(e, 0, sizeof(*e));
    memcpy(e->socks, socks, sizeof(e->socks));
    e->vhost = vhost;
}

int sip_engine_default_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > SIP_ENGINES_MAX ? SIP_ENGINES_MAX : (int)n;
}

const char *sip_engine_parse_count(const char *arg, int *out)
{
    char *end;
    long n = strtol(arg, &end, 10);

    if (end == arg || *end || n < 1 || n > SIP_ENGINES_MAX)
        return "SipEngines takes a number of engine processes from 1 to "
               APR_STRINGIFY(SIP_ENGINES_MAX);
    *out = (int)n;
    return NULL;
}

void sip_engine_add_named(apr_pool_t *pconf, server_rec *primary, server_rec *named)
{
    named_vhost_t *n;

    if (!named_vhosts)
        named_vhosts = apr_array_make(pconf, 4, sizeof(named_vhost_t));
    n = apr_array_push(named_vhosts);
    n->primary = primary;
    n->named = named;
}

/* The vhost for a request that arrived on the address of 'primary' (the
 * first vhost defined there: UDP is served for it, and httpd hands TCP
 * connections to it, as to any default vhost). */
static server_rec *vhost_by_name(server_rec *primary, const char *host)
{
    int i;

    if (!host || sip_proxy_vhost_has_name(primary, host))
        return primary;
    for (i = 0; i < named_vhosts->nelts; i++) {
        named_vhost_t *n = &APR_ARRAY_IDX(named_vhosts, i, named_vhost_t);
        if (n->primary == primary && sip_proxy_vhost_has_name(n->named, host))
            return n->named;
    }
    return primary;
}

/* ---- engine: message dispatch (the core of this slice) ---- */

static int vhost_limits(void *vhost, sip_tp_limits_t *lim)
{
    server_rec *s;
    sip_limits_t l;

    /* Any vhost of this configuration: a WebSocket upgrade on an HTTP vhost
     * makes it the SIP vhost of its messages, with its own LimitRequest*
     * and the SIP settings it inherits from the main server. */
    for (s = engine_main_server; s; s = s->next) {
        if ((void *)s == vhost) {
            sip_get_limits(s, &l);
            lim->max_header = (apr_size_t)l.line + 2
                              + (apr_size_t)l.fields * ((apr_size_t)l.fieldsize + 2) + 2;
            lim->max_body = (apr_size_t)l.body;
            lim->max_line = (apr_size_t)l.line;
            lim->max_field = (apr_size_t)l.fieldsize;
            lim->idle = sip_get_conf(s)->tcp_idle;
            lim->msg = sip_get_conf(s)->tcp_msg_timeout;
            lim->ws_upgrade = sip_ws_upgrade_vhost_on(s);
            return 1;
        }
    }
    return 0;
}

static void handle_cancel(sip_txn_t *txn)
{
    /* RFC 3261 §9.2: answer the CANCEL, then end the INVITE with 487. */
    sip_txn_t *inv = sip_txn_find_invite(sip_txn_pool(txn), sip_txn_request(txn));

    if (!inv) {
        const sip_msg_t *req = sip_txn_request(txn);
        /* §16.10: with no response context, a CANCEL for someone else is
         * forwarded statelessly, but only where its INVITE would have
         * passed unchecked; its 200 comes back by Via. */
        if (sip_relay_cancel_permitted(req, sip_txn_source(txn)->vhost, sip_txn_pool(txn))) {
            sip_proxy_forward_stateless((sip_msg_t *)req, sip_txn_source(txn)->vhost,
                                        sip_txn_pool(txn));
            sip_txn_drop(txn);
            return;
        }
        sip_txn_refuse(txn, 481, "Call/Transaction Does Not Exist", NULL,
                       "CANCEL matches no transaction");
        return;
    }
    sip_txn_reply(txn, 200, "OK", NULL);
    if (!sip_txn_final_sent(inv) && !sip_txn_cancel(inv))
        sip_txn_reply(inv, 487, "Request Terminated", NULL);
}

/* Every Require header's value, joined (NULL when none). */
static const char *require_values(apr_pool_t *p, const sip_msg_t *req)
{
    const apr_array_header_t *hs = sip_msg_headers(req);
    const char *all = NULL;
    int i;

    for (i = 0; i < hs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hs, i, sip_header_t);
        if (!strcasecmp(h->name, "Require"))
            all = all ? apr_pstrcat(p, all, ", ", h->value, NULL) : h->value;
    }
    return all;
}

static void handle_request_named(sip_txn_t *txn, server_rec *s, sip_route_kind_t routed);

/* The peer's name is being looked up (HostnameLookups, Require host):
 * the request waits for it, the engine does not. */
typedef struct name_wait {
    sip_txn_t *txn;
    server_rec *s;
    sip_route_kind_t routed;
    sip_dns_query_t *q;
} name_wait_t;

static apr_status_t name_wait_gone(void *data)
{
    sip_dns_cancel(((name_wait_t *)data)->q);
    return APR_SUCCESS;
}

static void name_ready(void *baton, const char *host, int verified)
{
    name_wait_t *w = baton;

    (void)host;
    (void)verified;
    apr_pool_cleanup_kill(sip_txn_pool(w->txn), w, name_wait_gone);
    if (!sip_txn_final_sent(w->txn))    /* not CANCELled meanwhile */
        handle_request_named(w->txn, w->s, w->routed);
}

static void handle_request(sip_txn_t *txn, server_rec *s, sip_route_kind_t routed)
{
    const sip_msg_t *req = sip_txn_request(txn);
    const char *host;
    name_wait_t *w;
    int dbl, verified;

    if (strcmp(sip_msg_method(req), "CANCEL") == 0) {
        handle_cancel(txn);
        return;
    }
    if (sip_request_wants_name(s, &dbl)) {
        w = apr_pcalloc(sip_txn_pool(txn), sizeof(*w));
        w->txn = txn;
        w->s = s;
        w->routed = routed;
        if (sip_dns_reverse(sip_txn_pool(txn), &sip_txn_source(txn)->peer, dbl, &host,
                            &verified, &w->q, name_ready, w) == SIP_DNS_PENDING) {
            apr_pool_cleanup_register(sip_txn_pool(txn), w, name_wait_gone,
                                      apr_pool_cleanup_null);
            return;
        }
    }
    handle_request_named(txn, s, routed);
}

static void handle_request_named(sip_txn_t *txn, server_rec *s, sip_route_kind_t routed)
{
    const sip_msg_t *req = sip_txn_request(txn);
    const char *need;
    int onward;

    /* the request goes on (a Route, or a domain not ours) or is for us */
    onward = sip_relay_leaves(req, s, sip_txn_pool(txn));
    /* RFC 3261 §16.3 step 5: as a proxy we support no extension a client
     * could require */
    if (onward && (need = sip_msg_header(req, "Proxy-Require"))) {
        const char *hdrs[] = {"Unsupported", need, NULL};
        sip_txn_refuse(txn, 420, "Bad Extension", hdrs,
                       apr_pstrcat(sip_txn_pool(txn), "unsupported extension ", need, NULL));
        return;
    }
    /* §8.2.2.3 (as UAS): only what sip_options.c says we support here
     * (recipient-list-message where SipExplode is On, RFC 5365 §6) */
    if (!onward && (need = require_values(sip_txn_pool(txn), req))
        && (need = sip_options_unsupported(sip_txn_pool(txn), s, req, need))) {
        const char *hdrs[] = {"Unsupported", need, NULL};
        sip_txn_refuse(txn, 420, "Bad Extension", hdrs,
                       apr_pstrcat(sip_txn_pool(txn), "unsupported extension ", need, NULL));
        return;
    }
    /* The caller's <outgoing> CPL script runs before the call leaves or
     * reaches our callee (sip_dispatch.h). */
    if (onward) {
        if (sip_relay_permit(txn, s, routed))
            sip_dispatch_outgoing(txn, s, sip_proxy_forward_request);
        return;
    }
    /* RFC 3261 §22: challenged as registrar/UAS (401).  A route set we
     * recorded exempts only requests that leave along it: it names a
     * call, not its target, so it must not open our users' devices. */
    if (sip_explode_needs_user(sip_txn_pool(txn), s, req) ? !sip_auth_check_user(txn, s)
                                                           : !sip_auth_check(txn, s, 0))
        return;
    /* the routing steps for our users: sip_dispatch.h */
    sip_dispatch_outgoing(txn, s, sip_dispatch_request);
}

/* A sender of garbage must not be able to fill the error log. */
static sip_log_rate_t rl_bad_msgs = SIP_LOG_RATE_INIT("bad messages");

static void answer_bad_message(apr_pool_t *p, const sip_msg_t *msg, const sip_msg_error_t *err,
                               const sip_source_t *src)
{
    const char *ip = sip_sockaddr_ip(p, &src->peer);
    const char *text = NULL;
    apr_size_t len = 0;

    if (err->status)
        text = sip_msg_raw_error_response(p, msg, err->status, err->reason, "e0",
                                          sip_tp_reliable(src->kind), &len);
    if (!text) {
        sip_log_limited(&rl_bad_msgs, ip, 0, APLOG_INFO, src->vhost,
                        "sip: dropped unanswerable %s message from %s:%d: %s",
                        sip_tp_via_name(src->kind), ip,
                        sip_sockaddr_port(&src->peer), err->reason);
        return;
    }
    sip_log_limited(&rl_bad_msgs, ip, err->status, APLOG_INFO, src->vhost,
                    "sip: %d %s for message from %s:%d", err->status, err->reason, ip,
                    sip_sockaddr_port(&src->peer));
    /* The request could not be stamped, so answer the source itself. */
    sip_transport_send(src, NULL, text, len);
}

/* ---- several engines: messages that landed on the wrong engine ---- */

/* engine_deliver's own flag: handed over by another engine (or let go by
 * every other one), so processed here whatever its branch or match, and
 * counted already where it arrived. */
#define DELIVER_LOCAL 0x100
/* handed over unparsed (SIP_HO_UNCHECKED): answered if malformed, and
 * handed on if its parsed AoR is homed elsewhere */
#define DELIVER_UNCHECKED 0x200
/* How long a CANCEL or ACK that matches nothing here waits for the other
 * engines' answers before it is treated as matching nothing anywhere. */
#define QUERY_TIMEOUT apr_time_from_msec(200)

static void engine_deliver(const char *buf, apr_size_t len, int flags,
                           const sip_source_t *src);

typedef struct ho_query {
    apr_pool_t *pool;
    apr_uint32_t cookie;
    int waiting;            /* engines yet to answer MISS */
    sip_timer_t timer;
    char *buf;
    apr_size_t len;
    sip_source_t src;       /* a stream's connection is held until the end */
} ho_query_t;

static sip_loop_t *engine_loop;
static apr_hash_t *queries;         /* cookie -> ho_query_t */
static apr_uint32_t query_next;

/* A vhost named by another engine is a pointer into the configuration we
 * share; take it only when it is one of ours. */
static int our_vhost(const void *v)
{
    server_rec *s;

    for (s = engine_main_server; s; s = s->next)
        if ((const void *)s == v)
            return 1;
    return 0;
}

static void query_end(ho_query_t *q, int hit)
{
    apr_hash_set(queries, &q->cookie, sizeof(q->cookie), NULL);
    sip_timer_cancel(engine_loop, &q->timer);
    /* No other engine has its transaction: process it as the only one. */
    if (!hit)
        engine_deliver(q->buf, q->len, DELIVER_LOCAL, &q->src);
    sip_source_release(&q->src);
    apr_pool_destroy(q->pool);
}

static void query_timeout(void *baton)
{
    query_end(baton, 0);
}

/* A CANCEL or non-2xx ACK that matches no INVITE here: ask the engine its
 * To tag names, or every other one.  1 when asked (it is answered later),
 * 0 when there is no one to ask. */
static int query_others(const char *buf, apr_size_t len, const sip_source_t *src, int only)
{
    apr_pool_t *qp;
    ho_query_t *q;
    sip_ho_origin_t o;
    int i;

    apr_pool_create(&qp, engine_pool);
    q = apr_pcalloc(qp, sizeof(*q));
    q->pool = qp;
    q->cookie = ++query_next;
    q->buf = apr_pstrmemdup(qp, buf, len);
    q->len = len;
    q->src = *src;
    sip_handover_origin(src, &o);
    o.cookie = q->cookie;
    for (i = 0; i < sip_engine_count(); i++)
        if (i != sip_engine_self() && (only < 0 || i == only)
            && sip_handover_send(i, SIP_HO_QUERY, &o, buf, len) == APR_SUCCESS)
            q->waiting++;
    if (!q->waiting) {
        apr_pool_destroy(qp);
        return 0;
    }
    /* a stream: its 481 (a miss) goes back on this connection */
    sip_source_hold(&q->src);
    apr_hash_set(queries, &q->cookie, sizeof(q->cookie), q);
    sip_timer_set(engine_loop, &q->timer, QUERY_TIMEOUT, query_timeout, q);
    return 1;
}

/* The source a handed-over message is answered by: UDP by our socket of
 * the same address; a stream held by another engine by a stand-in whose
 * sends go to that engine; a stream whose flow closed meanwhile cannot be
 * answered here, which only a response (never answered) may need. */
static int ho_source(const sip_ho_origin_t *from, sip_source_t *src)
{
    if (!our_vhost(from->vhost))
        return 0;
    if (sip_handover_source(from, src))
        return 1;
    if (from->kind == SIP_TP_UDP)
        return 0;
    memset(src, 0, sizeof(*src));
    src->kind = from->kind;
    src->peer = from->peer;
    src->local = from->local;
    src->vhost = from->vhost;
    return 2;
}

static void on_deliver(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                       apr_size_t len)
{
    sip_source_t src;
    int how = ho_source(from, &src);

    (void)kind;
    if (!how)
        return;
    engine_deliver(text, len,
                   DELIVER_LOCAL | (from->cookie == SIP_HO_UNCHECKED ? DELIVER_UNCHECKED : 0),
                   &src);
    if (how == 1)
        sip_source_release(&src);
}

static void on_query(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                     apr_size_t len)
{
    sip_ho_origin_t me;
    sip_source_t src;
    sip_limits_t lim;
    sip_msg_t *msg = NULL;
    sip_msg_error_t err;
    apr_pool_t *p;
    int hit = 0, how;

    (void)kind;
    if (!(how = ho_source(from, &src)))
        return;
    apr_pool_create(&p, engine_pool);
    sip_get_limits(src.vhost, &lim);
    /* Its INVITE is here; or it is an ACK for a 2xx we answered (our To
     * tag), which ends that answer's retransmissions here. */
    if (sip_msg_parse(p, text, len, &lim, 1, &msg, &err) == APR_SUCCESS
        && sip_msg_is_request(msg)
        && (sip_txn_find_invite(p, msg)
            || (!strcmp(sip_msg_method(msg), "ACK")
                && sip_engine_of_tag(sip_msg_to_tag(msg)) == sip_engine_self())))
        hit = 1;
    apr_pool_destroy(p);
    memset(&me, 0, sizeof(me));
    me.kind = SIP_TP_UDP;
    me.vhost = from->vhost;
    me.cookie = from->cookie;
    sip_handover_send(from->engine, hit ? SIP_HO_HIT : SIP_HO_MISS, &me, NULL, 0);
    if (hit)
        engine_deliver(text, len, DELIVER_LOCAL, &src);
    if (how == 1)
        sip_source_release(&src);
}

static void on_answer(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                      apr_size_t len)
{
    ho_query_t *q = apr_hash_get(queries, &from->cookie, sizeof(from->cookie));

    (void)text;
    (void)len;
    if (!q)
        return;     /* answered after the timeout */
    if (kind == SIP_HO_HIT)
        query_end(q, 1);
    else if (--q->waiting <= 0)
        query_end(q, 0);
}

static void handover_init(sip_loop_t *loop, apr_pool_t *p)
{
    sip_limits_t l;

    engine_loop = loop;
    queries = apr_hash_make(p);
    sip_get_limits(engine_main_server, &l);
    /* The largest message our limits let in, as vhost_limits frames it. */
    sip_handover_set_max((apr_size_t)l.line + 2 + (apr_size_t)l.fields * ((apr_size_t)l.fieldsize
                         + 2) + 2 + (l.body > 0 ? (apr_size_t)l.body : 0));
    sip_handover_on(SIP_HO_DELIVER, on_deliver);
    sip_handover_on(SIP_HO_QUERY, on_query);
    sip_handover_on(SIP_HO_MISS, on_answer);
    sip_handover_on(SIP_HO_HIT, on_answer);
}

/* An ACK routed by a Record-Route we signed belongs to a dialog: it
 * acknowledges a 2xx and goes end to end, matching no transaction anywhere
 * (RFC 3261 §17.2.3, §16.6), so no other engine needs to see it first.
 * Checked on a copy: route preprocessing removes our entries, and the
 * message itself is preprocessed later. */
static int ack_in_dialog(const char *buf, apr_size_t len, const sip_msg_t *msg,
                         const sip_source_t *src)
{
    apr_pool_t *p;
    sip_msg_t *copy = NULL;
    sip_msg_error_t err;
    sip_limits_t lim;
    int yes = 0;

    if (strcmp(sip_msg_method(msg), "ACK") || !sip_msg_route_count(msg))
        return 0;
    apr_pool_create(&p, engine_pool);
    sip_get_limits(src->vhost, &lim);
    if (sip_msg_parse(p, buf, len, &lim, 1, &copy, &err) == APR_SUCCESS)
        yes = sip_proxy_route_preprocess(copy, src->vhost) == SIP_ROUTE_RECORDED;
    apr_pool_destroy(p);
    return yes;
}

/* Several engines: is this message another engine's to process?  A
 * response goes to the engine its branch names; a CANCEL or ACK matching
 * no INVITE here is offered to the others first: over UDP a client that
 * changed port, over a stream one whose INVITE came by another connection
 * (or by UDP).  The engine that has the INVITE answers a stream CANCEL
 * through this engine's connection (a stand-in, SIP_HO_SEND_FLOW).  1 when
 * it was handed on (the caller is done with it). */
static int hand_on(const char *buf, apr_size_t len, const sip_msg_t *msg,
                   const sip_source_t *src, apr_pool_t *p)
{
    const char *method;
    int owner;

    if (!sip_msg_is_request(msg)) {
        sip_ho_origin_t o;

        owner = sip_engine_of_branch(sip_msg_branch(msg));
        if (owner < 0 || owner == sip_engine_self())
            return 0;
        sip_handover_origin(src, &o);
        /* dropped when the channel is full: like a lost datagram */
        sip_handover_send(owner, SIP_HO_DELIVER, &o, buf, len);
        return 1;
    }
    method = sip_msg_method(msg);
    if ((strcmp(method, "CANCEL") && strcmp(method, "ACK"))
        || sip_txn_find_invite(p, msg) || ack_in_dialog(buf, len, msg, src))
        return 0;
    owner = sip_engine_of_tag(sip_msg_to_tag(msg));
    if (owner == sip_engine_self())
        return 0;
    return query_others(buf, len, src, owner);
}

static void engine_deliver(const char *buf, apr_size_t len, int flags,
                           const sip_source_t *src)
{
    server_rec *s = src->vhost;
    apr_pool_t *p;
    sip_msg_t *msg = NULL;
    sip_msg_error_t err;
    sip_limits_t lim;
    sip_sockaddr_t dest;
    sip_source_t named_src;
    sip_txn_t *txn = NULL;
    apr_status_t rv;
    sip_route_kind_t routed;

    /* RFC 5626 keep-alives and stray CRLFs over UDP carry no message. */
    if (src->kind == SIP_TP_UDP && strspn(buf, "\r\n") == len)
        return;
    if (!(flags & DELIVER_LOCAL))
        sip_stats->msgs_in[src->kind]++;
    apr_pool_create(&p, engine_pool);
    /* several engines: a REGISTER plainly for another engine's AoR goes
     * there before it costs a parse here (it is parsed there) */
    if (sip_engine_count() > 1 && !(flags & DELIVER_LOCAL)
        && sip_registrar_handover_raw(p, buf, len, src)) {
        apr_pool_destroy(p);
        return;
    }
    sip_get_limits(s, &lim);
    /* RFC 7118 §5: a WebSocket message frames its SIP message, as a
     * datagram does: no Content-Length is needed */
    rv = sip_msg_parse(p, buf, len, &lim, src->kind == SIP_TP_UDP || src->kind == SIP_TP_WS
                       || src->kind == SIP_TP_WSS, &msg, &err);
    if (rv == APR_SUCCESS && (flags & SIP_TP_FRAMING_LOST)) {
        err.status = 400;
        err.reason = "Bad Request";
        rv = APR_EGENERAL;
    }
    if (rv != APR_SUCCESS) {
        sip_stats->bad_msgs++;
        if (!(flags & DELIVER_LOCAL) || (flags & DELIVER_UNCHECKED))
            answer_bad_message(p, msg, &err, src);
        apr_pool_destroy(p);
        return;
    }
    if (sip_engine_count() > 1 && !(flags & DELIVER_LOCAL) && hand_on(buf, len, msg, src, p)) {
        apr_pool_destroy(p);
        return;
    }
    if (!sip_msg_is_request(msg)) {
        sip_msg_set_peer(msg, sip_sockaddr_ip(p, &src->peer));    /* REMOTE_ADDR of its run */
        if (!sip_ctxn_receive(msg, p))
            sip_proxy_forward_response(msg, s, p);
        apr_pool_destroy(p);
        return;
    }
    /* several engines: a REGISTER goes to its AoR's home (sip_replica.h) */
    if ((!(flags & DELIVER_LOCAL) || (flags & DELIVER_UNCHECKED))
        && sip_registrar_handover(p, msg, buf, len, src)) {
        apr_pool_destroy(p);
        return;
    }
    if (named_vhosts) {
        server_rec *named = vhost_by_name(s, sip_msg_uri_host(msg));
        if (named != s) {
            named_src = *src;
            named_src.vhost = s = named;
            src = &named_src;
        }
    }
    sip_handover_catch_up();    /* the replicas sent before it arrived */
    sip_msg_stamp_via(msg, src, &dest);
    routed = sip_proxy_route_preprocess(msg, s);
    switch (sip_txn_receive(msg, src, &dest, p, &txn)) {
    case SIP_TXN_NEW:
        handle_request(txn, s, routed);
        return;     /* the transaction owns p now */
    case SIP_TXN_STRAY_ACK:
        /* An ACK for a 2xx on its way to the UAS goes end to end. */
        if (sip_relay_ack_permitted(msg, s, routed, p))
            sip_proxy_forward_stateless(msg, s, p);
        else
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                         "sip: ACK matching no transaction absorbed (%s)",
                         routed == SIP_ROUTE_OURS ? "a route we did not record" : "not routed on");
        break;
    default:
        break;
    }
    apr_pool_destroy(p);
}

/* ---- engine process ---- */

static void engine_signal_stop(int sig)
{
    (void)sig;
    engine_stop = 1;
}

/* Returns the descriptor limit the engine ends up with. */
static rlim_t raise_fd_limit(void)
{
    struct rlimit rl;

    /* Idle SIP TCP connections are cheap here; let the kernel limit be it. */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/* SipTcpMaxConnections and friends.  The descriptors not given to TCP are
 * kept for everything else the engine opens: 64 for UDP sockets, logs, the
 * journal, database connections and the hand-off channel, and 4 per script
 * that may run (stdin, stdout and stderr pipes, and a spare). */
static void setup_transport_limits(rlim_t nofile)
{
    sip_server_conf *main_conf = sip_get_conf(engine_main_server);
    apr_size_t reserve = 64, fit, max;
    server_rec *s;

    for (s = engine_main_server; s; s = s->next)
        if (sip_get_conf(s)->enabled == 1)
            reserve += 4 * (apr_size_t)sip_get_conf(s)->max_scripts;
    fit = nofile > (rlim_t)reserve + 16 ? (apr_size_t)(nofile - reserve) : 16;
    max = main_conf->tcp_max_conns > 0 ? (apr_size_t)main_conf->tcp_max_conns
          : SIP_DEFAULT_TCP_MAX_CAP;
    /* The server-wide limit is shared by the engines (each peer's
     * connections all go to one engine, so the per-address limit is not). */
    max = (max + (apr_size_t)sip_engine_count() - 1) / (apr_size_t)sip_engine_count();
    if (main_conf->tcp_max_conns <= 0 && max > fit)
        max = fit;
    if (max > fit) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, engine_main_server,
                     "sip engine: SipTcpMaxConnections %" APR_SIZE_T_FMT " does not fit the "
                     "descriptor limit (%lu, %" APR_SIZE_T_FMT " kept for other uses); using %"
                     APR_SIZE_T_FMT, max, (unsigned long)nofile, reserve, fit);
        max = fit;
    }
    sip_transport_set_conn_limits(max, (apr_size_t)main_conf->tcp_max_per_ip);
    sip_log_rate_setup(main_conf->log_rate_burst, main_conf->log_rate_interval);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, engine_main_server,
                 "sip engine: at most %" APR_SIZE_T_FMT " TCP connections (descriptor limit "
                 "%lu), %d per address", max, (unsigned long)nofile, main_conf->tcp_max_per_ip);
}

static void engine_main(engine_slot_t *self)
{
    sigset_t none;
    sip_loop_t *loop;
    rlim_t nofile;
    int i;

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent_pid)
        _exit(0);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    apr_signal(SIGTERM, engine_signal_stop);
    apr_signal(SIGINT, engine_signal_stop);
    apr_signal(SIGHUP, SIG_IGN);        /* httpd signals its process group */
    apr_signal(SIGUSR1, SIG_IGN);
    apr_signal(SIGWINCH, SIG_IGN);
    apr_signal(SIGPIPE, SIG_IGN);
    apr_signal(SIGCHLD, SIG_DFL);

    engine_bound_free_memory();
    apr_pool_create(&engine_pool, engine_pconf);
    apr_pool_tag(engine_pool, "sip_engine");
    ap_close_listeners();
    sip_engine_identity_set(self->index, slot_count);
    /* Only our own hand-off channel: the others' are their engines'. */
    for (i = 0; i < slot_count; i++) {
        if (slots[i].handoff[1] >= 0)
            close(slots[i].handoff[1]);
        if (i != self->index && slots[i].handoff[0] >= 0)
            close(slots[i].handoff[0]);
    }
    nofile = raise_fd_limit();
#ifdef M_MMAP_THRESHOLD
    /* A fixed threshold: glibc's moving one let engine 0's journal
     * compaction buffers (megabytes, once a while) land on the heap after
     * the first was freed, which kept their high-water mark for good
     * (+20 % RSS in make soak); mapped, they go back to the kernel. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
    if (ap_run_drop_privileges(engine_pool, engine_main_server) != 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, engine_main_server,
                     "sip engine: cannot drop privileges");
        _exit(1);
    }
    /* Log files, mod_dbd and friends initialise per process here. */
    ap_run_child_init(engine_pool, engine_main_server);

    /* Before the layers start counting (the location store replays its
     * journal): the previous engine's "now" values are void. */
    sip_stats_use_slot(self->index);
    sip_stats_engine_started((apr_uint64_t)getpid(), apr_time_now());
    sip_message_init();
    sip_message_use_freelists();
    sip_log_init_osip(engine_main_server);
    if (sip_loop_create(&loop, engine_pool) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, engine_main_server, "sip engine: no event loop");
        _exit(1);
    }
    sip_transport_init(loop, engine_pool, engine_deliver, vhost_limits);
    setup_transport_limits(nofile);
    if (sip_tls_engine_init(engine_pool, engine_main_server) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, engine_main_server,
                     "sip engine: no TLS client context; outgoing TLS will fail");
    sip_txn_init(loop, engine_pool);
    sip_txn_set_t1(sip_get_conf(engine_main_server)->timer_t1);
    sip_txn_on_final(sip_request_log);
    sip_txn_on_error_body(sip_request_error_body);
    sip_cgi_init(loop, engine_pool);
    sip_proxy_init(engine_pool);
    sip_auth_init(engine_pool);
    sip_explode_init(engine_pool);
    if (dbd_server)
        sip_location_use_dbd(dbd_server);
    sip_script_store_open(sip_upload_conf()->store_ok ? sip_upload_conf()->store : NULL);
    sip_location_init(loop, engine_pool, journal_fd);
    {
        const sip_server_conf *mc = sip_get_conf(engine_main_server);
        sip_dns_init(loop, engine_pool, mc->dns_servers, mc->dns_timeout, mc->dns_tries,
                     (apr_size_t)mc->dns_cache_size);
    }
    sip_cpl_exec_init(loop, engine_pool, engine_main_server);
    sip_namemap_init(loop, engine_pool, engine_main_server);
    for (i = 0; udp_socks && i < udp_socks->nelts; i++) {
        udp_entry_t *e = &APR_ARRAY_IDX(udp_socks, i, udp_entry_t);
        apr_status_t rv = sip_udp_serve(e->socks[self->index], e->vhost);
        if (rv != APR_SUCCESS)
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, e->vhost, "sip engine: cannot poll UDP socket");
    }
    for (i = 0; named_vhosts && i < named_vhosts->nelts; i++) {
        named_vhost_t *n = &APR_ARRAY_IDX(named_vhosts, i, named_vhost_t);
        sip_udp_alias(n->named, n->primary);
    }
    sip_fdpass_serve(self->handoff[0]);
    handover_init(loop, engine_pool);
    if (sip_handover_start(loop, engine_pool) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, engine_main_server,
                     "sip engine: cannot poll the hand-over channel");
    sip_replica_start(loop, engine_pool);   /* registrations and flows across engines */
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, engine_main_server,
                 "sip engine %d started (engine %d of %d, %d UDP sockets)", (int)getpid(),
                 self->index, slot_count, udp_socks ? udp_socks->nelts : 0);

    sip_loop_run(loop, &engine_stop);

    sip_cgi_shutdown();
    sip_namemap_shutdown();
    sip_dns_shutdown();
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, engine_main_server, "sip engine %d exiting",
                 (int)getpid());
    _exit(0);
}

static apr_status_t engine_fork(engine_slot_t *slot);

/* sip-engine.pid: engine 0 (as with one engine); sip-engines.pid: every
 * engine's pid, one a line, in engine order. */
static void write_pidfiles(void)
{
    const char *one = ap_runtime_dir_relative(engine_pconf, "sip-engine.pid");
    const char *all = ap_runtime_dir_relative(engine_pconf, "sip-engines.pid");
    apr_file_t *f;
    int i;

    if (one && slots[0].proc
        && apr_file_open(&f, one, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE,
                         APR_FPROT_OS_DEFAULT, engine_pconf) == APR_SUCCESS) {
        apr_file_printf(f, "%d\n", (int)slots[0].proc->pid);
        apr_file_close(f);
    }
    if (all && apr_file_open(&f, all, APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE,
                             APR_FPROT_OS_DEFAULT, engine_pconf) == APR_SUCCESS) {
        for (i = 0; i < slot_count; i++)
            apr_file_printf(f, "%d\n", slots[i].proc ? (int)slots[i].proc->pid : 0);
        apr_file_close(f);
    }
}

static void engine_maint(int reason, void *data, apr_wait_t status)
{
    engine_slot_t *slot = data;
    int mpm_state;

    (void)status;
    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(data);
        if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS
            && mpm_state != AP_MPMQ_STOPPING) {
            /* Only this engine: the others keep their calls. */
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, engine_main_server,
                         "sip engine %d (engine %d) died; restarting it",
                         (int)slot->proc->pid, slot->index);
            sip_stats_engine_died(sip_stats_slot(slot->index));
            if (engine_fork(slot) == APR_SUCCESS)
                write_pidfiles();
        }
        break;
    case APR_OC_REASON_UNREGISTER:
        /* pconf is going away (restart or stop): the engine goes with it. */
        kill(slot->proc->pid, SIGTERM);
        break;
    default:
        break;
    }
}

static apr_status_t engine_fork(engine_slot_t *slot)
{
    apr_proc_t *proc = apr_pcalloc(engine_pconf, sizeof(*proc));
    pid_t pid;

    parent_pid = getpid();
    pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0)
        engine_main(slot);      /* never returns */
    proc->pid = pid;
    slot->proc = proc;
    apr_pool_note_subprocess(engine_pconf, proc, APR_KILL_AFTER_TIMEOUT);
    apr_proc_other_child_register(proc, engine_maint, slot, NULL, engine_pconf);
    return APR_SUCCESS;
}

static apr_status_t close_handoff(void *data)
{
    int i;

    (void)data;
    for (i = 0; i < slot_count; i++) {
        if (slots[i].handoff[0] >= 0)
            close(slots[i].handoff[0]);
        if (slots[i].handoff[1] >= 0)
            close(slots[i].handoff[1]);
        slots[i].handoff[0] = slots[i].handoff[1] = -1;
        slots[i].proc = NULL;
    }
    slot_count = 0;
    udp_socks = NULL;
    named_vhosts = NULL;
    return APR_SUCCESS;
}

apr_status_t sip_engine_start(apr_pool_t *pconf, server_rec *main_server)
{
    int n = sip_get_conf(main_server)->engines, i;
    apr_status_t rv;

    engine_pconf = pconf;
    engine_main_server = main_server;
    slot_count = n < 1 ? 1 : n > SIP_ENGINES_MAX ? SIP_ENGINES_MAX : n;
    for (i = 0; i < slot_count; i++) {
        slots[i].index = i;
        slots[i].proc = NULL;
        slots[i].handoff[0] = slots[i].handoff[1] = -1;
    }
    apr_pool_cleanup_register(pconf, NULL, close_handoff, apr_pool_cleanup_null);
    for (i = 0; i < slot_count; i++) {
        rv = sip_fdpass_pair(slots[i].handoff);
        if (rv != APR_SUCCESS)
            return rv;
    }
    rv = sip_handover_prepare(pconf, slot_count);
    if (rv != APR_SUCCESS)
        return rv;
    /* The parent (and the MPM children it forks) know the count too: the
     * hand-off hash and mod_status need it. */
    sip_engine_identity_set(0, slot_count);
    for (i = 0; i < slot_count; i++) {
        rv = engine_fork(&slots[i]);
        if (rv != APR_SUCCESS)
            return rv;
    }
    write_pidfiles();
    return APR_SUCCESS;
}

/* Every connection of a peer goes to one engine: a hash of its address
 * (not its port), so its flows and registrations meet in one process. */
static int engine_for_peer(const sip_sockaddr_t *peer)
{
    const struct sockaddr *sa = (const struct sockaddr *)&peer->ss;
    const unsigned char *a;
    apr_size_t n, i;
    apr_uint32_t h = 2166136261u;

    if (slot_count <= 1)
        return 0;
    if (sa->sa_family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        n = 4;
    }
    else if (sa->sa_family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        n = 16;
    }
    else
        return 0;
    for (i = 0; i < n; i++)
        h = (h ^ a[i]) * 16777619u;
    return (int)(h % (apr_uint32_t)slot_count);
}

apr_status_t sip_engine_handoff(int fd, const sip_handoff_t *h)
{
    sip_sockaddr_t peer;
    int e = 0;

    if (slot_count > 1) {
        if (h->relayed)
            peer = h->peer;
        else {
            memset(&peer, 0, sizeof(peer));
            peer.len = sizeof(peer.ss);
            if (getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) != 0)
                peer.ss.ss_family = AF_UNSPEC;
        }
        e = engine_for_peer(&peer);
    }
    if (slot_count < 1 || slots[e].handoff[1] < 0)
        return APR_ENOTSOCK;
    return sip_fdpass_send(slots[e].handoff[1], fd, h);
}
