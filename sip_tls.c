/* Placeholder until the TLS layer lands: no vhost has a context, so TLS
 * connections are refused with a log line. */
#include "sip_tls.h"

void sip_tls_register_hooks(apr_pool_t *p)
{
    (void)p;
}

apr_status_t sip_tls_engine_init(apr_pool_t *p, server_rec *main_server)
{
    (void)p;
    (void)main_server;
    return APR_SUCCESS;
}

int sip_tls_vhost_enabled(void *vhost)
{
    (void)vhost;
    return 0;
}

sip_tls_conn_t *sip_tls_accept(int fd, void *vhost)
{
    (void)fd;
    (void)vhost;
    return NULL;
}

sip_tls_conn_t *sip_tls_connect(int fd, void *vhost, const char *host)
{
    (void)fd;
    (void)vhost;
    (void)host;
    return NULL;
}

ssize_t sip_tls_read(sip_tls_conn_t *t, char *buf, apr_size_t len)
{
    (void)t;
    (void)buf;
    (void)len;
    return SIP_TLS_ERROR;
}

ssize_t sip_tls_write(sip_tls_conn_t *t, const char *buf, apr_size_t len)
{
    (void)t;
    (void)buf;
    (void)len;
    return SIP_TLS_ERROR;
}

int sip_tls_wants_write(const sip_tls_conn_t *t)
{
    (void)t;
    return 0;
}

void sip_tls_free(sip_tls_conn_t *t)
{
    (void)t;
}

const char *sip_tls_peer_subject(apr_pool_t *p, const sip_tls_conn_t *t)
{
    (void)p;
    (void)t;
    return NULL;
}

void sip_tls_env(apr_pool_t *p, const sip_tls_conn_t *t, apr_table_t *env)
{
    (void)p;
    (void)t;
    (void)env;
}
