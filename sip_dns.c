/* Asynchronous DNS (sip_dns.h).  Until the c-ares resolver lands
 * (issue 17) only literal addresses are answered. */
#include <string.h>
#include "apr_strings.h"
#include "sip_dns.h"

apr_status_t sip_dns_init(sip_loop_t *loop, apr_pool_t *p, const char *servers,
                          apr_interval_time_t timeout, int tries, apr_size_t cache_max)
{
    (void)loop; (void)p; (void)servers; (void)timeout; (void)tries; (void)cache_max;
    return APR_SUCCESS;
}

void sip_dns_shutdown(void)
{
}

static int literal(apr_pool_t *p, const char *host, int port, sip_tp_kind_t kind,
                   apr_array_header_t **out)
{
    sip_dns_target_t *t;
    char *h = apr_pstrdup(p, host);

    if (h[0] == '[') {
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    *out = apr_array_make(p, 1, sizeof(sip_dns_target_t));
    t = apr_array_push(*out);
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->host = host;
    if (sip_sockaddr_set(&t->addr, h, port ? port : kind == SIP_TP_TLS ? 5061 : 5060)
        != APR_SUCCESS)
        return SIP_DNS_FAILED;
    return SIP_DNS_DONE;
}

int sip_dns_resolve_uri(apr_pool_t *p, const sip_uri_info_t *uri, int hint,
                        apr_array_header_t **out, sip_dns_query_t **q, sip_dns_cb cb,
                        void *baton)
{
    int k = sip_tp_from_name(uri->transport);

    (void)cb; (void)baton;
    *q = NULL;
    if (uri->secure)
        k = SIP_TP_TLS;
    else if (k < 0)
        k = hint >= 0 ? hint : SIP_TP_UDP;
    return literal(p, uri->maddr ? uri->maddr : uri->host, uri->port, (sip_tp_kind_t)k, out);
}

int sip_dns_resolve_via(apr_pool_t *p, const char *host, int port, sip_tp_kind_t kind,
                        apr_array_header_t **out, sip_dns_query_t **q, sip_dns_cb cb,
                        void *baton)
{
    (void)cb; (void)baton;
    *q = NULL;
    return literal(p, host, port, kind, out);
}

void sip_dns_cancel(sip_dns_query_t *q)
{
    (void)q;
}

int sip_dns_reverse(apr_pool_t *p, const sip_sockaddr_t *peer, int dbl, const char **host,
                    int *verified, sip_dns_query_t **q, sip_dns_name_cb cb, void *baton)
{
    (void)p; (void)peer; (void)dbl; (void)cb; (void)baton;
    *q = NULL;
    *host = NULL;
    *verified = 0;
    return SIP_DNS_NOTFOUND;
}
