/* Registrar and redirect/proxy routing to registered users (RFC 3261
 * §10.3, §16.5), on the location store (sip_location.h). */
#ifndef SIP_REGISTRAR_H
#define SIP_REGISTRAR_H

#include "httpd.h"
#include "sip_transaction.h"

/* A REGISTER for one of this vhost's domains. */
void sip_registrar_register(sip_txn_t *txn, server_rec *s);

/* A request for a local user: 302 to its bindings (redirect mode) or
 * proxy to them by q (proxy mode); 480 when it has none now, 404 when it
 * never registered (OPTIONS: the server's own 200).  Returns 0 (and does
 * nothing) for a Request-URI without a user part. */
int sip_registrar_route(sip_txn_t *txn, server_rec *s);

/* REGISTRATIONS for a script (RFC 3050 §5.5.1.6): bindings in Contact
 * syntax, best first, at most 64 KB of them; NULL when there are none. */
const char *sip_registrar_format(apr_pool_t *p, const apr_array_header_t *bindings);

#endif
