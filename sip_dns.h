/* Asynchronous DNS for the engine (issue 17): c-ares driven by the
 * engine's event loop, so a slow or silent DNS server never stalls other
 * calls.  RFC 3263 client side (NAPTR -> SRV -> A/AAAA with transport
 * selection, SRV priority/weight, a TTL-bounded cache) and the reverse
 * lookups behind HostnameLookups / Require host.
 *
 * Contract for every query function here: it never calls 'cb' from inside
 * itself.  It returns SIP_DNS_DONE when the answer is known at once (a
 * literal address, a fresh cache entry) and has filled the out-parameter;
 * SIP_DNS_PENDING when 'cb' will be called exactly once, later, from the
 * event loop (unless sip_dns_cancel came first); or a failure code. */
#ifndef SIP_DNS_H
#define SIP_DNS_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "sip_event.h"
#include "sip_message.h"
#include "sip_transport.h"

typedef enum {
    SIP_DNS_DONE = 0,
    SIP_DNS_PENDING = 1,
    SIP_DNS_NOTFOUND = -1,  /* NXDOMAIN, or the name has no usable record (RFC 3263 §4) */
    SIP_DNS_TIMEOUT = -2,   /* no DNS server answered in SipDNSTimeout */
    SIP_DNS_FAILED = -3,    /* SERVFAIL, refused, malformed, not initialised */
    SIP_DNS_NOTRANSPORT = -4 /* records exist, but none for a transport we can use */
} sip_dns_status_t;

/* One place to send a request to (RFC 3263 §4): tried in array order. */
typedef struct sip_dns_target {
    sip_tp_kind_t kind;
    sip_sockaddr_t addr;
    const char *host;       /* the name a TLS certificate must match (RFC 5922 §4:
                             * the URI's domain, not the SRV target) */
} sip_dns_target_t;

typedef struct sip_dns_query sip_dns_query_t;

/* 'targets' (sip_dns_target_t) is allocated in the pool the query was
 * started with, non-empty when status is SIP_DNS_DONE; 'why' is a short
 * text for the log when it is not. */
typedef void (*sip_dns_cb)(void *baton, int status, apr_array_header_t *targets,
                           const char *why);

/* SipDNSTimeout, SipDNSTries, SipDNSCacheSize defaults */
#define SIP_DNS_DEFAULT_TIMEOUT apr_time_from_sec(2)
#define SIP_DNS_DEFAULT_TRIES   2
#define SIP_DNS_DEFAULT_CACHE   4096

/* SipDNSServer's argument "ip[:port][,ip[:port]...]" (IPv6 as [ip]:port)
 * checked and made into c-ares's list in '*csv'; an error text, or NULL. */
const char *sip_dns_parse_servers(apr_pool_t *p, const char *arg, const char **csv);

/* The directives (mod_sip.c's handler passes its name): an error text, or
 * NULL with the value stored. */
const char *sip_dns_directive(apr_pool_t *p, const char *name, const char *arg,
                              const char **servers, apr_interval_time_t *timeout, int *tries,
                              long *cache_size);

/* Engine start: c-ares channel on 'loop'.  Servers from SipDNSServer (a
 * list "ip[:port],..."; NULL = /etc/resolv.conf), timeout per try,
 * attempts, and the cache's size bound. */
apr_status_t sip_dns_init(sip_loop_t *loop, apr_pool_t *p, const char *servers,
                          apr_interval_time_t timeout, int tries, apr_size_t cache_max);
/* Engine exit: cancels every query (their callbacks are not called). */
void sip_dns_shutdown(void);

/* RFC 3263 §4 for a next hop 'uri' (already parsed): maddr, else host;
 * a literal address or an explicit port skips NAPTR/SRV (§4.2);
 * uri->transport / uri->secure restrict the transports; 'hint' (a
 * sip_tp_kind_t, or -1) is the transport to prefer when the URI names
 * none (a recorded route's).  WS/WSS are never resolved (RFC 7118 §5).
 * '*out' (DONE) or the callback's array: every target in the order to
 * try them, each address of each SRV target.  'p' must outlive the query
 * (or cancel it first). */
int sip_dns_resolve_uri(apr_pool_t *p, const sip_uri_info_t *uri, int hint,
                        apr_array_header_t **out, sip_dns_query_t **q, sip_dns_cb cb,
                        void *baton);

/* RFC 3263 §5 for a response: the sent-by of a Via without received
 * (host, port 0 = none, transport) -> targets as above. */
int sip_dns_resolve_via(apr_pool_t *p, const char *host, int port, sip_tp_kind_t kind,
                        apr_array_header_t **out, sip_dns_query_t **q, sip_dns_cb cb,
                        void *baton);

/* Stop a pending query: its callback will never be called.  A query
 * handle is void once its callback has been called (do not cancel it
 * then). */
void sip_dns_cancel(sip_dns_query_t *q);

/* ---- reverse lookups (HostnameLookups On|Double, Require host) ---- */

/* The name of 'peer': PTR, then (double) the forward lookup of that name
 * must give 'peer' back (httpd's double-reverse rule).  '*host' is the
 * name, or NULL when there is none or it did not verify; '*verified' 1
 * when the forward check passed.  Cached by TTL like everything else. */
typedef void (*sip_dns_name_cb)(void *baton, const char *host, int verified);
int sip_dns_reverse(apr_pool_t *p, const sip_sockaddr_t *peer, int dbl, const char **host,
                    int *verified, sip_dns_query_t **q, sip_dns_name_cb cb, void *baton);

/* The name of 'peer' as far as the cache knows it now (never waits; a
 * lookup not cached yet is started, for next time): NULL when unknown,
 * or (dbl) not verified. */
const char *sip_dns_cached_name(apr_pool_t *p, const sip_sockaddr_t *peer, int dbl);

#endif
