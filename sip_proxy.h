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
/* Fork in q order, one at a time (§16.6 sequential search). */
void sip_proxy_set_sequential(sip_proxy_t *px, int on);
/* §16.3 checks, then forward to every target; answers errors itself. */
void sip_proxy_start(sip_proxy_t *px);

/* §16.4: strip our own Route entry (or undo a strict router's rewrite).
 * Returns 1 when the request was routed to us by a Route header. */
int sip_proxy_route_preprocess(sip_msg_t *req, server_rec *s);
/* Is this Request-URI for a domain/address this vhost is responsible for? */
int sip_proxy_uri_is_local(const char *uri, server_rec *s, apr_pool_t *p);

/* Forward a request statelessly (ACK for a 2xx passing through). */
void sip_proxy_forward_stateless(sip_msg_t *req, server_rec *s, apr_pool_t *p);
/* Forward a response that matched no client transaction by its Via. */
void sip_proxy_forward_response(sip_msg_t *resp, server_rec *s, apr_pool_t *p);

#endif
