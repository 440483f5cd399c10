/* httpd glue for SIP over WebSocket (RFC 7118) on HTTP and HTTPS vhosts:
 * `SipWebSocket On` in a <Location>; the handler answers the RFC 6455
 * upgrade with 101 and gives the connection to the engine (plain), or
 * relays mod_ssl's decrypted bytes to it through a socketpair (TLS).
 * See docs/websocket.md. */
#ifndef SIP_WS_UPGRADE_H
#define SIP_WS_UPGRADE_H

#include "apr_pools.h"

/* register_hooks: the handler. */
void sip_ws_upgrade_register_hooks(apr_pool_t *p);

#endif
