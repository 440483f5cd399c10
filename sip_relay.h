/* Who may have a request forwarded to another hop: the one place that
 * decides between relaying, challenging and refusing for requests that
 * leave this server (a Route left after ours, or a Request-URI that is not
 * one of our domains).  In-dialog requests along a route set this server
 * recorded are part of a call that was already let through. */
#ifndef SIP_RELAY_H
#define SIP_RELAY_H

#include "httpd.h"
#include "sip_conf.h"
#include "sip_proxy.h"
#include "sip_transaction.h"

/* Does 'req' go on to another hop (a Route left after ours, or a
 * Request-URI that is not one of our domains)? */
int sip_relay_leaves(const sip_msg_t *req, server_rec *s, apr_pool_t *p);

/* Is 'method' one the server forwards or routes to registered users: the
 * methods of RFC 3261 and its registered extensions, plus SipProxyMethods? */
int sip_relay_method_known(const sip_server_conf *c, const char *method);

/* May 'txn' (arrived as 'routed' said) be forwarded onward?  1 yes; 0
 * when an answer was sent (a challenge, 403, 404 or 501). */
int sip_relay_permit(sip_txn_t *txn, server_rec *s, sip_route_kind_t routed);

/* What the server does with a request for one of our domains that no
 * script decided on (RFC 3050 §5.6.1.6): a method it does not know gets
 * 501; REGISTER goes to the registrar, a user of ours to the location
 * service; OPTIONS gets the server's own 200, anything else 404. */
void sip_relay_default_request(sip_txn_t *txn, server_rec *s);

/* Part of a dialog on a route set we recorded: goes on unchallenged. */
int sip_relay_in_recorded_dialog(const sip_msg_t *req, sip_route_kind_t routed);

/* May a 2xx's ACK (which has no transaction to check) pass through? */
int sip_relay_ack_permitted(const sip_msg_t *ack, server_rec *s, sip_route_kind_t routed,
                            apr_pool_t *p);

/* May a CANCEL that matches no transaction be forwarded statelessly
 * (RFC 3261 §16.10)?  Only where anyone may relay unchecked. */
int sip_relay_cancel_permitted(const sip_msg_t *cancel, server_rec *s, apr_pool_t *p);

#endif
