/* This server's Record-Route values (RFC 3261 §16.6 step 4, RFC 5658
 * double Record-Route) and their check when they come back as Route
 * entries (§16.4): each value carries the From tag of the request that
 * created the dialog (ftag) and a keyed hash (rs) over Call-ID, ftag,
 * host:port and transport, so that a Route entry naming this server can
 * be told apart from one a client made up.  Pure logic (no I/O). */
#ifndef SIP_ROUTE_H
#define SIP_ROUTE_H

#include "apr_pools.h"

/* The per-server secret of the hash (SipRouteSecret, or random bytes the
 * httpd parent keeps across restarts).  Copied; at most 64 bytes used. */
void sip_route_set_secret(const void *key, apr_size_t len);

/* "sip:HOSTPORT[;transport=T];lr;ftag=TAG;rs=HASH" ('transport' NULL for
 * UDP, 'ftag' NULL when the From has no tag). */
const char *sip_route_uri(apr_pool_t *p, const char *hostport, const char *transport,
                          const char *call_id, const char *ftag);

/* The same naming a flow of ours too (RFC 5626 §5.3: the connection a
 * request coming back on this entry goes out on), as ";flow=" and 16 hex
 * digits covered by rs; 'flow' 0 is sip_route_uri. */
const char *sip_route_uri_flow(apr_pool_t *p, const char *hostport, const char *transport,
                               const char *call_id, const char *ftag, apr_uint64_t flow);
/* The flow of a route value, or 0; trust it only after sip_route_verify. */
apr_uint64_t sip_route_flow(apr_pool_t *p, const char *value);

/* 1 when 'value' (a Route or Record-Route value, "<uri>;params" or a bare
 * URI) carries a hash this server made for 'call_id' with an ftag equal
 * to 'from_tag' or 'to_tag' (in-dialog requests go both ways). */
int sip_route_verify(apr_pool_t *p, const char *value, const char *call_id,
                     const char *from_tag, const char *to_tag);

/* The transport parameter of a route value ("tcp", ...), or NULL. */
const char *sip_route_transport(apr_pool_t *p, const char *value);

/* 16 hex digits of HMAC over 'data' under the route secret: for values
 * this server hands out and must recognise later (stateless branches). */
const char *sip_route_mac(apr_pool_t *p, const char *data);
/* 1 when 'mac' is exactly sip_route_mac(data) (compared in constant time). */
int sip_route_mac_ok(apr_pool_t *p, const char *data, const char *mac);

#endif
