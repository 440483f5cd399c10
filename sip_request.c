#include "sip_request.h"
#include "sip_conf.h"
#include "sip_registrar.h"

#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

extern module AP_MODULE_DECLARE_DATA sip_module;

/* A connection for request_recs that did not come over an httpd
 * connection (they came over the engine's UDP or TCP). */
static conn_rec *engine_conn(apr_pool_t *p, server_rec *s)
{
    conn_rec *c = apr_pcalloc(p, sizeof(*c));

    c->pool = p;
    c->base_server = s;
    c->conn_config = ap_create_conn_config(p);
    c->notes = apr_table_make(p, 1);
    c->bucket_alloc = apr_bucket_alloc_create(p);
    apr_sockaddr_info_get(&c->local_addr, "127.0.0.1", APR_INET, 0, 0, p);
    apr_sockaddr_info_get(&c->client_addr, "127.0.0.1", APR_INET, 0, 0, p);
    c->local_ip = "127.0.0.1";
    c->client_ip = "127.0.0.1";
    c->local_host = s->server_hostname;
    return c;
}

request_rec *sip_request_for(apr_pool_t *p, server_rec *s, const char *method, const char *aor)
{
    apr_pool_t *rp;
    request_rec *r;
    const char *colon = aor ? strchr(aor, ':') : NULL;

    apr_pool_create(&rp, p);
    r = ap_create_request(engine_conn(rp, s));
    r->server = s;
    r->method = method;
    r->method_number = ap_method_number_of(method);
    /* a path <Location> can match (anchors.md: core rejects other URIs) */
    r->uri = apr_pstrcat(rp, "/", colon ? colon + 1 : "", NULL);
    r->unparsed_uri = aor ? apr_pstrdup(rp, aor) : r->uri;
    r->parsed_uri.path = (char *)r->uri;
    r->per_dir_config = s->lookup_defaults;
    ap_location_walk(r);
    return r;
}

int sip_request_mode(apr_pool_t *p, server_rec *s, const char *aor)
{
    request_rec *r = sip_request_for(p, s, "INVITE", aor);
    sip_dir_conf *d = ap_get_module_config(r->per_dir_config, &sip_module);

    return d && d->mode >= 0 ? d->mode : SIP_MODE_PROXY;
}
