/* Stateful proxy core (RFC 3261 §16): forwards a request received on a
 * server transaction to one or more targets through client transactions,
 * in parallel or in sequence, relays provisional responses, picks the
 * best final response, and propagates CANCEL.  Also the stateless paths:
 * responses with no transaction (§16.11, §18.2.2) and ACKs for 2xx. */
#ifndef SIP_PROXY_H
#define SIP_PROXY_H

#include "httpd.h"
#include "sip_message.h"
#include "sip_transaction.h"

typedef struct sip_proxy sip_proxy_t;

void sip_proxy_init(apr_pool_t *p);

/* A proxy context for the server transaction 't' (it becomes its user). */
sip_proxy_t *sip_proxy_new(sip_txn_t *t, server_rec *s);
void sip_proxy_add_target(sip_proxy_t *px, const char *uri, double q);
/* A target reached over the connection 'flow' (sip_transport_flow_source;
 * RFC 5626 §5.3, RFC 7118 §5) rather than at its address; a local 480
 * when that connection has closed by then.  0 is sip_proxy_add_target. */
void sip_proxy_add_target_flow(sip_proxy_t *px, const char *uri, double q, apr_uint64_t flow);
/* How a registered binding is reached beyond its Contact URI (issue 17):
 * the registrar fills it, the proxy obeys it. */
typedef struct sip_proxy_reach {
    apr_uint64_t flow;          /* its connection (as sip_proxy_add_target_flow), 0 none */
    const char *received;       /* "ip:port" the REGISTER came from: send there over
                                 * 'kind' instead of resolving the URI (a Contact behind
                                 * NAT, RFC 3581 / RFC 5626 §5.3); NULL: resolve the URI */
    int kind;                   /* sip_tp_kind_t for 'received' */
    const char *path;           /* RFC 3327 §5.4: the stored Path value(s), comma
                                 * separated: the request's Route set; NULL none */
    const apr_array_header_t *alt_flows;
                                /* RFC 5626 §5.3: other flows (apr_uint64_t) of the same
                                 * instance, in order, to try when 'flow' fails (closed or a
                                 * transport error) before answering 430/480; NULL none */
} sip_proxy_reach_t;

/* A target with everything the registrar knows about reaching it;
 * NULL 'r' is sip_proxy_add_target. */
void sip_proxy_add_target_reach(sip_proxy_t *px, const char *uri, double q,
                                const sip_proxy_reach_t *r);
/* Fork in q order, one at a time (§16.6 sequential search). */
void sip_proxy_set_sequential(sip_proxy_t *px, int on);
/* §16.3 checks, then forward to every target; answers errors itself. */
void sip_proxy_start(sip_proxy_t *px);

/* What route preprocessing found on a request (§16.4). */
typedef enum {
    SIP_ROUTE_NONE = 0,     /* no Route entry of ours */
    SIP_ROUTE_OURS = 1,     /* our entry removed, but not one we recorded
                             * for this dialog (preloaded or forged) */
    SIP_ROUTE_RECORDED = 2  /* our entries removed, one of them a Record-Route
                             * value this server signed for this dialog */
} sip_route_kind_t;

/* §16.4: strip our own Route entry (or undo a strict router's rewrite). */
sip_route_kind_t sip_proxy_route_preprocess(sip_msg_t *req, server_rec *s);
/* Is this Request-URI for a domain/address this vhost is responsible for? */
int sip_proxy_uri_is_local(const char *uri, server_rec *s, apr_pool_t *p);
/* The same for a request's Request-URI, from its parse (no second one). */
int sip_proxy_request_is_local(const sip_msg_t *req, server_rec *s, apr_pool_t *p);

/* 1 when 'host' is the ServerName or a ServerAlias (wildcards too) of 's'. */
int sip_proxy_vhost_has_name(server_rec *s, const char *host);

/* ---- driven by a transaction user (the SIP-CGI engine) ---- */

typedef struct branch sip_proxy_branch_t;

typedef struct sip_proxy_owner {
    /* A response (or a local 408/503) on branch 'b'.  Return 1 to handle it
     * later (sip_proxy_default_response / sip_proxy_forward_upstream), 0
     * to let the proxy apply its default now.  'resp' lives only during
     * the call. */
    int (*response)(void *baton, sip_proxy_branch_t *b, sip_msg_t *resp, int local);
    /* No branch is left: the owner may release the proxy. */
    void (*idle)(void *baton);
} sip_proxy_owner_t;

/* A proxy context that does not take over the server transaction. */
sip_proxy_t *sip_proxy_new_owned(sip_txn_t *t, server_rec *s, const sip_proxy_owner_t *owner,
                                 void *baton);
/* Forward the transaction's request to 'uri' now, with the script's
 * headers/body merged in (block may be NULL) and its CGI-Request-Token;
 * an Expires header in the block arms a local 408 (RFC 3050 §5.7). */
sip_proxy_branch_t *sip_proxy_fork(sip_proxy_t *px, const char *uri, const sip_msg_t *block);
/* The same over a registered flow (as sip_proxy_add_target_flow). */
sip_proxy_branch_t *sip_proxy_fork_flow(sip_proxy_t *px, const char *uri, const sip_msg_t *block,
                                        apr_uint64_t flow);
/* The same with everything the registrar knows (sip_proxy_reach_t). */
sip_proxy_branch_t *sip_proxy_fork_reach(sip_proxy_t *px, const char *uri,
                                         const sip_msg_t *block, const sip_proxy_reach_t *r);
/* A branch to 'uri' that ends at once with a response made up here (a
 * user of ours with no device registered): the owner hears it like any
 * other branch's response. */
void sip_proxy_fork_unreachable(sip_proxy_t *px, const char *uri, const sip_msg_t *block,
                                int status, const char *reason);
/* Send a new request written by the script (RFC 3050 §3.1). */
sip_proxy_branch_t *sip_proxy_originate(sip_proxy_t *px, const sip_msg_t *block);
const char *sip_proxy_branch_token(const sip_proxy_branch_t *b);
const char *sip_proxy_branch_peer(apr_pool_t *p, const sip_proxy_branch_t *b);
int sip_proxy_branch_originated(const sip_proxy_branch_t *b);
/* The proxy's own handling of a response the owner took (§16.7). */
void sip_proxy_default_response(sip_proxy_t *px, sip_proxy_branch_t *b, sip_msg_t *resp,
                                int local);
/* Send a received response upstream (Via popped, block merged). */
apr_status_t sip_proxy_forward_upstream(sip_proxy_t *px, const sip_msg_t *resp,
                                        const sip_msg_t *block);
/* The owner has dealt with the final response of 'b' it took (its
 * script ran for it): the proxy may answer once no branch is pending. */
void sip_proxy_branch_settled(sip_proxy_t *px, sip_proxy_branch_t *b);
/* The owner ends the search now (a CPL script gives up on its branches):
 * the best final response received so far goes upstream (§16.7 step 6,
 * with the challenges of step 7; 408 when there is none), unless a final
 * response went already, and the pending branches are cancelled. */
void sip_proxy_send_best(sip_proxy_t *px);
/* CANCEL every pending branch (after a final response went upstream). */
void sip_proxy_cancel(sip_proxy_t *px);
/* The owner is done with it: freed once no branch is left. */
void sip_proxy_release(sip_proxy_t *px);

/* ---- requests of the server's own (a URI-list service as UAC, RFC 5365 §7.2) ---- */

/* Send 'text' (a whole request without Via, Content-Length right) to its
 * first Route, else its Request-URI (RFC 3261 §8.1.2), resolved by RFC
 * 3263 without blocking: a Via of ours with a new branch and the
 * transport of that hop goes on top, and on a transport error, a
 * timeout or a 503 the next target gets it (§4.3).  'cb' hears the
 * provisional responses and then one final one (a response, the local
 * 408/503, or a 404/408/503 made up when the hop does not resolve, with
 * c NULL), and nothing after it; never from inside this call.  0 (logged)
 * when the text does not parse as a request, names no next hop, or no
 * transport takes it at once: 'cb' is never called then. */
int sip_proxy_send_new(server_rec *s, const char *text, apr_size_t len, sip_ctxn_cb cb,
                       void *baton);

/* Proxy the request of 'txn' statefully to its Request-URI (§16.5); the
 * caller has decided that it may leave (sip_relay_permit). */
void sip_proxy_forward_request(sip_txn_t *txn, server_rec *s);

/* Forward a request statelessly (ACK for a 2xx passing through). */
void sip_proxy_forward_stateless(sip_msg_t *req, server_rec *s, apr_pool_t *p);
/* Forward a response that matched no client transaction by its Via. */
void sip_proxy_forward_response(sip_msg_t *resp, server_rec *s, apr_pool_t *p);

#endif
