/* The URI-list service in the engine (docs/explode.md): for a URI-list
 * request (sip_explode.h) that no script decided on, the policy of
 * RFC 5363 §5 (SipExplode, an authenticated invoker, SipExplodeRate,
 * SipExplodeMaxTargets, consent: all or nothing, 470), the answer (200 or
 * 202 at once: it does not wait for the fan-out), then one client
 * transaction per target (a user of ours: per registered contact), and a
 * log line per explosion with each target's final status. */
#ifndef SIP_EXPLODE_RUN_H
#define SIP_EXPLODE_RUN_H

#include "httpd.h"
#include "sip_transaction.h"

/* Engine start (the per-user rate table lives in 'p'). */
void sip_explode_init(apr_pool_t *p);

/* Does 'req' (for one of our domains) need a digest-authenticated user
 * before anything else happens to it: a URI-list request with SipExplode
 * On for its Request-URI (RFC 5363 §5.2: nothing is fanned out for an
 * invoker not authenticated)? */
int sip_explode_needs_user(apr_pool_t *p, server_rec *s, const sip_msg_t *req);

/* Default handling of a URI-list request for one of our addresses
 * (sip_relay_default_request): 405 when SipExplode is Off for it (EX-15),
 * else the policy, the answer and the fan-out above.  (Not named
 * sip_explode_request: sip_explode.h's request builder is.) */
void sip_explode_handle(sip_txn_t *txn, server_rec *s);

#endif
