/* TLS for SIP streams (RFC 3261 §26.3.1, RFC 5630), terminated in the
 * engine with the contexts mod_ssl builds from the vhost's own SSL*
 * directives (see docs/architecture.md, "TLS").  Transport layer: bytes
 * only, no SIP. */
#ifndef SIP_TLS_H
#define SIP_TLS_H

#include <sys/types.h>
#include "apr_pools.h"
#include "apr_tables.h"
#include "httpd.h"

typedef struct sip_tls_conn sip_tls_conn_t;

/* Results of the non-blocking calls besides a byte count. */
#define SIP_TLS_CLOSED      0       /* close_notify or EOF */
#define SIP_TLS_ERROR      (-1)     /* fatal: close the connection */
#define SIP_TLS_WANT_READ  (-2)     /* retry when readable */
#define SIP_TLS_WANT_WRITE (-3)     /* retry when writable */

/* httpd side (register_hooks): capture mod_ssl's per-vhost SSL_CTX as it
 * builds them (its optional init_server hook), in the parent. */
void sip_tls_register_hooks(apr_pool_t *p);

/* Engine, once after fork: make the inherited contexts usable without a
 * conn_rec (mod_ssl's callbacks expect one), build the client context. */
apr_status_t sip_tls_engine_init(apr_pool_t *p, server_rec *main_server);

/* 1 when 'vhost' has a server context (SSLEngine on). */
int sip_tls_vhost_enabled(void *vhost);
/* The port SIP over TLS is served on for 'vhost': its own when it has a
 * server context, else that of a TLS vhost, preferring the same ServerName
 * and then one that does not require client certificates; 0 when none. */
int sip_tls_port(void *vhost);

/* Server side on an accepted descriptor / client side on a connecting one
 * ('host' for SNI and certificate name checks, may be NULL).  NULL when
 * the vhost has no context; the descriptor stays the caller's. */
sip_tls_conn_t *sip_tls_accept(int fd, void *vhost);
sip_tls_conn_t *sip_tls_connect(int fd, void *vhost, const char *host);

/* Non-blocking; the handshake runs inside the first calls.  Return bytes
 * moved or one of the SIP_TLS_* codes above. */
ssize_t sip_tls_read(sip_tls_conn_t *t, char *buf, apr_size_t len);
ssize_t sip_tls_write(sip_tls_conn_t *t, const char *buf, apr_size_t len);
/* 1 while the last call wants the descriptor writable to progress. */
int sip_tls_wants_write(const sip_tls_conn_t *t);
/* 1 once the handshake is done. */
int sip_tls_established(const sip_tls_conn_t *t);
/* 1 when decrypted bytes wait in the TLS layer: read again without
 * waiting for the descriptor (it may never become readable for them). */
int sip_tls_pending(const sip_tls_conn_t *t);

/* Best-effort close_notify, then free (the descriptor is not closed). */
void sip_tls_free(sip_tls_conn_t *t);

/* Peer certificate subject (RFC 2253, like SSL_CLIENT_S_DN), or NULL. */
const char *sip_tls_peer_subject(apr_pool_t *p, const sip_tls_conn_t *t);
/* mod_ssl-named variables for scripts (SSL_PROTOCOL, SSL_CIPHER,
 * SSL_CLIENT_S_DN, SSL_CLIENT_VERIFY, ...). */
void sip_tls_env(apr_pool_t *p, const sip_tls_conn_t *t, apr_table_t *env);

#endif
