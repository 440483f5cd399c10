#include "sip_request.h"
#include "sip_conf.h"
#include "sip_log.h"
#include "sip_registrar.h"
#include "sip_message.h"
#include "sip_transaction.h"

#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "ap_provider.h"
#include "mod_auth.h"

extern module AP_MODULE_DECLARE_DATA sip_module;

/* A connection for request_recs that did not come over an httpd
 * connection (they came over the engine's UDP or TCP).  One per vhost for
 * the life of the engine; each request_rec gets its own subpool of it. */
static apr_pool_t *conn_pool;
static apr_hash_t *conns;

static conn_rec *engine_conn(server_rec *s)
{
    conn_rec *c;
    apr_pool_t *p;

    if (!conn_pool) {
        apr_pool_create(&conn_pool, NULL);
        conns = apr_hash_make(conn_pool);
    }
    c = apr_hash_get(conns, &s, sizeof(s));
    if (c)
        return c;
    apr_pool_create(&p, conn_pool);
    c = apr_pcalloc(p, sizeof(*c));
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
    {
        /* mod_logio keeps byte counters per connection, set up in its
         * pre_connection hook, which never runs for these connections;
         * its log_transaction hook resets them: give it zeroed ones. */
        module *logio = ap_find_linked_module("mod_logio.c");
        if (logio)
            ap_set_module_config(c->conn_config, logio, apr_pcalloc(p, 64));
    }
    apr_hash_set(conns, apr_pmemdup(p, &s, sizeof(s)), sizeof(s), c);
    return c;
}

/* The caller destroys r->pool when done with it. */
static request_rec *make_request(server_rec *s, const char *method, const char *aor, int walk)
{
    request_rec *r = ap_create_request(engine_conn(s));
    const char *colon = aor ? strchr(aor, ':') : NULL;

    r->server = s;
    r->method = method;
    r->method_number = ap_method_number_of(method);
    /* a path <Location> can match (anchors.md: core rejects other URIs) */
    r->uri = apr_pstrcat(r->pool, "/", colon ? colon + 1 : "", NULL);
    r->unparsed_uri = aor ? apr_pstrdup(r->pool, aor) : r->uri;
    r->parsed_uri.path = (char *)r->uri;
    r->per_dir_config = s->lookup_defaults;
    if (walk)
        ap_location_walk(r);
    return r;
}

int sip_request_mode(apr_pool_t *p, server_rec *s, const char *aor)
{
    request_rec *r = make_request(s, "INVITE", aor, 1);
    sip_dir_conf *d = ap_get_module_config(r->per_dir_config, &sip_module);
    int mode = d && d->mode >= 0 ? d->mode : SIP_MODE_PROXY;

    (void)p;
    apr_pool_destroy(r->pool);
    return mode;
}

void sip_request_log(sip_txn_t *t, int status, apr_size_t bytes)
{
    const sip_msg_t *req = sip_txn_request(t);
    const sip_source_t *src = sip_txn_source(t);
    server_rec *s = src->vhost;
    const apr_array_header_t *hdrs = sip_msg_headers(req);
    apr_pool_t *p;
    request_rec *r;
    const char *aor;
    char *ip;
    int i;

    if (!s)
        return;
    /* mod_log_config needs no per-directory walk: keep this cheap, it runs
     * for every transaction */
    r = make_request(s, sip_msg_method(req), sip_msg_request_uri(req), 0);
    p = r->pool;
    aor = NULL;
    (void)aor;
    r->the_request = apr_pstrcat(r->pool, sip_msg_method(req), " ", sip_msg_request_uri(req), " ",
                                 sip_msg_version(req), NULL);
    r->unparsed_uri = apr_pstrdup(r->pool, sip_msg_request_uri(req));
    r->protocol = apr_pstrdup(r->pool, sip_msg_version(req));
    r->proto_num = HTTP_VERSION(2, 0);
    r->hostname = sip_msg_uri_host(req) ? apr_pstrdup(r->pool, sip_msg_uri_host(req)) : NULL;
    r->status = status;
    r->bytes_sent = (apr_off_t)bytes;
    r->request_time = sip_txn_start(t);
    if (sip_txn_user(t)) {
        r->user = apr_pstrdup(r->pool, sip_txn_user(t));
        r->ap_auth_type = "Digest";
    }
    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        apr_table_add(r->headers_in, h->name, h->value);
    }
    /* the peer, as %h and %a show it */
    ip = (char *)sip_sockaddr_ip(r->pool, &src->peer);
    apr_sockaddr_info_get(&r->useragent_addr, ip, APR_UNSPEC,
                          (apr_port_t)sip_sockaddr_port(&src->peer), 0, r->pool);
    r->connection->client_ip = ip;      /* %h; reset by the next request */
    r->connection->client_addr = r->useragent_addr;
    r->useragent_ip = ip;
    apr_table_setn(r->subprocess_env, "SIP_TRANSPORT", src->kind == SIP_TP_UDP ? "UDP" : "TCP");
    ap_run_log_transaction(r);
    r->connection->client_ip = "127.0.0.1";
    r->connection->client_addr = NULL;
    apr_pool_destroy(p);
}

int sip_request_auth_required(apr_pool_t *p, server_rec *s, const char *method, const char *aor,
                              const char **realm)
{
    request_rec *r = make_request(s, method, aor, 1);
    sip_dir_conf *d = ap_get_module_config(r->per_dir_config, &sip_module);
    const char *name = ap_auth_name(r);
    int on = d && d->auth == 1;

    *realm = apr_pstrdup(p, name ? name : s->server_hostname);
    apr_pool_destroy(r->pool);
    return on;
}

const char *sip_request_realm_hash(apr_pool_t *p, server_rec *s, const char *aor,
                                   const char *user, const char *realm, int *failed)
{
    request_rec *r = make_request(s, "REGISTER", aor, 1);
    sip_dir_conf *d = ap_get_module_config(r->per_dir_config, &sip_module);
    int i, n = d && d->providers ? d->providers->nelts : 1;
    const char *found = NULL;

    *failed = 0;
    r->user = apr_pstrdup(r->pool, user);
    for (i = 0; i < n; i++) {
        const char *name = d && d->providers ? APR_ARRAY_IDX(d->providers, i, const char *)
                                             : AUTHN_DEFAULT_PROVIDER;
        const authn_provider *prov = ap_lookup_provider(AUTHN_PROVIDER_GROUP, name,
                                                        AUTHN_PROVIDER_VERSION);
        char *hash = NULL;
        authn_status st;

        /* SipAuthProvider checks its names; this is the default one */
        if (!prov || !prov->get_realm_hash) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                         "sip auth: authn provider '%s' is not loaded (LoadModule mod_authn_%s "
                         "or set SipAuthProvider); answering 500", name, name);
            *failed = 1;
            break;
        }
        /* the provider name note, as mod_auth_digest sets it */
        apr_table_setn(r->notes, AUTHN_PROVIDER_NAME_NOTE, name);
        st = prov->get_realm_hash(r, user, realm, &hash);
        /* as mod_auth_digest: the first provider that knows the user decides */
        if (st == AUTH_USER_NOT_FOUND)
            continue;
        if (st == AUTH_USER_FOUND && hash)
            found = apr_pstrdup(p, hash);
        else if (st != AUTH_DENIED) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                         "sip auth: authn provider '%s' failed (status %d) looking up %s in realm %s; "
                         "answering 500", name, (int)st, user, realm);
            *failed = 1;
        }
        break;
    }
    apr_pool_destroy(r->pool);
    return found;
}
