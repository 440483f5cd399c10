/* httpd glue for SIP over WebSocket (RFC 7118) on HTTP and HTTPS vhosts:
 * `SipWebSocket On` in a <Location>; the handler answers the RFC 6455
 * upgrade with 101 and gives the connection to the engine (plain), or
 * relays mod_ssl's decrypted bytes to it through a socketpair (TLS).
 * See docs/websocket.md. */
#ifndef SIP_WS_UPGRADE_H
#define SIP_WS_UPGRADE_H

#include "httpd.h"
#include "apr_pools.h"

/* register_hooks: the handler. */
void sip_ws_upgrade_register_hooks(apr_pool_t *p);

/* SipWebSocket On at the level of the vhost itself (outside any
 * <Location>): the engine answers upgrades on its SIP port. */
int sip_ws_upgrade_vhost_on(server_rec *s);

#endif
