#include "sip_request.h"
#include <netinet/in.h>
#include <string.h>
#include "sip_conf.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_transaction.h"
#include "sip_dns.h"

#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "ap_provider.h"
#include "mod_auth.h"
#include "mod_core.h"

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
        /* an allocator of its own, that keeps what request_recs free: each
         * one takes a dozen kB, and given back to malloc, which returned it
         * to the system, every request_rec paid page faults for it */
        apr_allocator_t *al;
        if (apr_allocator_create(&al) != APR_SUCCESS)
            apr_pool_create(&conn_pool, NULL);
        else {
            apr_pool_create_ex(&conn_pool, NULL, NULL, al);
            apr_allocator_owner_set(al, conn_pool);
        }
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
    apr_table_setn(c->notes, "sip-engine", "1");   /* sip_request_default_port */
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

/* An apr_sockaddr_t for a peer we already have in binary form: going
 * through apr_sockaddr_info_get() would run getaddrinfo() (with its
 * netlink round trips) for every logged transaction. */
static apr_sockaddr_t *apr_addr_of(apr_pool_t *p, const sip_sockaddr_t *a)
{
    apr_sockaddr_t *sa = apr_pcalloc(p, sizeof(*sa));

    sa->pool = p;
    sa->family = a->ss.ss_family;
    if (sa->family == AF_INET6) {
        memcpy(&sa->sa.sin6, &a->ss, sizeof(sa->sa.sin6));
        sa->salen = sizeof(sa->sa.sin6);
        sa->ipaddr_len = sizeof(sa->sa.sin6.sin6_addr);
        sa->ipaddr_ptr = &sa->sa.sin6.sin6_addr;
        sa->addr_str_len = INET6_ADDRSTRLEN;
    }
    else {
        memcpy(&sa->sa.sin, &a->ss, sizeof(sa->sa.sin));
        sa->salen = sizeof(sa->sa.sin);
        sa->ipaddr_len = sizeof(sa->sa.sin.sin_addr);
        sa->ipaddr_ptr = &sa->sa.sin.sin_addr;
        sa->addr_str_len = INET_ADDRSTRLEN;
    }
    sa->port = (apr_port_t)sip_sockaddr_port(a);
    return sa;
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

int sip_request_script_upload(apr_pool_t *p, server_rec *s, const char *aor)
{
    request_rec *r = make_request(s, "REGISTER", aor, 1);
    sip_dir_conf *d = ap_get_module_config(r->per_dir_config, &sip_module);
    int on = d && d->script_upload > 0;

    (void)p;
    apr_pool_destroy(r->pool);
    return on;
}

int sip_request_explode(apr_pool_t *p, server_rec *s, const char *aor)
{
    request_rec *r;
    sip_dir_conf *d;
    int on;

    (void)p;
    if (!sip_explode_used())
        return 0;
    r = make_request(s, "EXPLODE", aor, 1);
    d = ap_get_module_config(r->per_dir_config, &sip_module);
    on = d && d->explode > 0;
    apr_pool_destroy(r->pool);
    return on;
}

static void add_headers(apr_table_t *t, const apr_array_header_t *hdrs)
{
    int i;

    for (i = 0; hdrs && i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        apr_table_addn(t, h->name, h->value);
    }
}

/* The rules of a path whose <Location>s hold no <If> depend on the vhost
 * and the path alone: they are kept, and such a request builds no
 * request_rec (it was a third of a rule 302's cost).  The engine's
 * configuration never changes (a restart re-forks it). */
#define RULES_CACHE_MAX 1024

static apr_pool_t *rules_pool;
static apr_hash_t *rules_cache;

static void rules_keep(const char *key, const apr_array_header_t *rules)
{
    if (!rules_pool) {
        apr_pool_create(&rules_pool, NULL);
        rules_cache = apr_hash_make(rules_pool);
    }
    else if (apr_hash_count(rules_cache) >= RULES_CACHE_MAX) {
        apr_pool_clear(rules_pool);
        rules_cache = apr_hash_make(rules_pool);
    }
    apr_hash_set(rules_cache, apr_pstrdup(rules_pool, key), APR_HASH_KEY_STRING,
                 apr_array_copy(rules_pool, rules));
}

apr_array_header_t *sip_request_rules(apr_pool_t *p, server_rec *s, const sip_msg_t *req,
                                      const sip_sockaddr_t *peer)
{
    request_rec *r;
    sip_dir_conf *d;
    core_dir_config *cd;
    apr_array_header_t *rules, *kept;
    const char *aor, *key;
    int no_if;

    /* no rule anywhere: no request_rec, no walk */
    if (!sip_rules_used())
        return apr_array_make(p, 1, sizeof(const void *));
    aor = sip_msg_aor(p, req);
    key = apr_psprintf(p, "%pp %s", (void *)s, aor ? aor : "");
    if (rules_cache && (kept = apr_hash_get(rules_cache, key, APR_HASH_KEY_STRING)))
        return apr_array_copy(p, kept);
    r = make_request(s, sip_msg_method(req), aor, 0);
    /* what <If> looks at: %{HTTP:From}, %{REQUEST_METHOD}, %{REMOTE_ADDR} */
    add_headers(r->headers_in, sip_msg_headers(req));
    r->useragent_addr = apr_addr_of(r->pool, peer);
    r->useragent_ip = (char *)sip_sockaddr_ip(r->pool, peer);
    r->hostname = sip_msg_uri_host(req) ? apr_pstrdup(r->pool, sip_msg_uri_host(req)) : NULL;
    /* a failed walk could hide an "authenticate": no rules at all then,
     * the step fails closed.  (httpd 2.4 itself takes an <If> it cannot
     * evaluate as false, logging AH00039, as it does for HTTP.) */
    if (ap_location_walk(r) != OK) {
        apr_pool_destroy(r->pool);
        return NULL;
    }
    cd = ap_get_core_module_config(r->per_dir_config);
    no_if = !cd || !cd->sec_if || cd->sec_if->nelts == 0;
    if (ap_if_walk(r) != OK) {
        apr_pool_destroy(r->pool);
        return NULL;
    }
    d = ap_get_module_config(r->per_dir_config, &sip_module);
    /* the merged array lives in r->pool; the rules themselves in the config's */
    rules = d && d->rules ? apr_array_copy(p, d->rules)
                          : apr_array_make(p, 1, sizeof(const void *));
    apr_pool_destroy(r->pool);
    if (no_if)
        rules_keep(key, rules);
    return rules;
}

void sip_request_log(sip_txn_t *t, int status, apr_size_t bytes)
{
    static int wanted = -1;

    apr_sockaddr_t *engine_local;
    const sip_msg_t *req = sip_txn_request(t);
    const sip_source_t *src = sip_txn_source(t);
    server_rec *s = src->vhost;
    apr_pool_t *p;
    request_rec *r;
    char *ip;
    const char *rtext;
    const sip_msg_t *resp;
    apr_size_t rlen = 0;

    if (wanted < 0)
        wanted = sip_log_access_wanted(ap_hook_get_log_transaction(), ap_conftree);
    /* a request_rec per message was a third of a rule 302's cost */
    if (!s || !wanted)
        return;
    /* mod_log_config needs no per-directory walk: keep this cheap, it runs
     * for every transaction */
    r = make_request(s, sip_msg_method(req), sip_msg_request_uri(req), 0);
    p = r->pool;
    engine_local = r->connection->local_addr;
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
    /* %{Name}i and %{Name}o: the request's headers and the final response's */
    add_headers(r->headers_in, sip_msg_headers(req));
    rtext = sip_txn_last_response(t, &rlen);
    resp = rtext ? sip_msg_parse_block(r->pool, rtext, rlen) : NULL;
    add_headers(r->headers_out, resp ? sip_msg_headers(resp) : NULL);
    /* the peer, as %h and %a show it */
    ip = (char *)sip_sockaddr_ip(r->pool, &src->peer);
    r->useragent_addr = apr_addr_of(r->pool, &src->peer);
    r->connection->client_ip = ip;      /* %h; reset by the next request */
    r->connection->client_addr = r->useragent_addr;
    r->useragent_ip = ip;
    /* %A and %{local}p: the address the message came in on */
    if (src->local.len) {
        r->connection->local_addr = apr_addr_of(r->pool, &src->local);
        r->connection->local_ip = (char *)sip_sockaddr_ip(r->pool, &src->local);
    }
    apr_table_setn(r->subprocess_env, "SIP_TRANSPORT", sip_tp_via_name(src->kind));
    sip_source_tls_env(r->pool, src, r->subprocess_env);    /* %{SSL_PROTOCOL}e and friends */
    /* %{cpl-log}n and friends: what the transaction's handlers noted */
    if (sip_txn_notes(t))
        apr_table_overlap(r->notes, sip_txn_notes(t), APR_OVERLAP_TABLES_SET);
    /* CustomLog ... env=sip-rule-log: what the rules' "log" action set */
    if (sip_txn_env(t))
        apr_table_overlap(r->subprocess_env, sip_txn_env(t), APR_OVERLAP_TABLES_SET);
    ap_run_log_transaction(r);
    r->connection->client_ip = "127.0.0.1";
    r->connection->client_addr = NULL;
    r->connection->local_ip = "127.0.0.1";
    r->connection->local_addr = engine_local;
    apr_pool_destroy(p);
}

apr_port_t sip_request_default_port(const request_rec *r)
{
    /* %p of a SIP vhost without a port in ServerName: the port the
     * message came in on, not http's 80 */
    if (r->connection && apr_table_get(r->connection->notes, "sip-engine")
        && r->connection->local_addr)
        return r->connection->local_addr->port;
    return 0;
}

struct sip_access {
    request_rec *r;
    sip_dir_conf *d;
};

/* ---- names of peers (HostnameLookups, Require host) ---- */

static int require_host_used;

static void scan_names(const ap_directive_t *d)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "Require") && d->args) {
            const char *a = d->args;
            char *w = ap_getword_white_nc(ap_pglobal, (char **)&a);
            if (!strcasecmp(w, "not"))
                w = ap_getword_white_nc(ap_pglobal, (char **)&a);
            if (!strcasecmp(w, "host") || !strcasecmp(w, "forward-dns"))
                require_host_used = 1;
        }
        scan_names(d->first_child);
    }
}

/* ---- whether a <Location> can refuse a request ----
 * A <Location> that holds only routing (SipRule, SipRuleFile, in <If>s or
 * not), SipErrorDocument or SipWebSocket refuses nobody: the access check
 * then needs no request_rec and no walk (a third of a rule 302's cost).
 * Anything else in one (Require, Auth*, a third-party module's directive)
 * keeps the check. */
static int location_access_used = 1;

static int routing_only(const ap_directive_t *d)
{
    for (; d; d = d->next) {
        const char *n = d->directive;
        if (!strcasecmp(n, "SipRule") || !strcasecmp(n, "SipRuleFile")
            || !strcasecmp(n, "SipErrorDocument") || !strcasecmp(n, "SipWebSocket"))
            continue;
        if ((!strcasecmp(n, "<If") || !strcasecmp(n, "<ElseIf") || !strcasecmp(n, "<Else"))
            && routing_only(d->first_child))
            continue;
        return 0;
    }
    return 1;
}

static int access_in(const ap_directive_t *d)
{
    for (; d; d = d->next) {
        if (!strcasecmp(d->directive, "<Location") || !strcasecmp(d->directive, "<LocationMatch")) {
            if (!routing_only(d->first_child))
                return 1;
        }
        else if (access_in(d->first_child))
            return 1;
    }
    return 0;
}

void sip_request_scan_names(const ap_directive_t *tree)
{
    require_host_used = 0;
    scan_names(tree);
    location_access_used = access_in(tree);
}

int sip_request_wants_name(server_rec *s, int *dbl)
{
    core_dir_config *d = ap_get_core_module_config(s->lookup_defaults);
    int hl = d ? d->hostname_lookups : HOSTNAME_LOOKUP_OFF;

    *dbl = hl == HOSTNAME_LOOKUP_DOUBLE;
    if (require_host_used && sip_access_configured(s)) {
        *dbl = 1;       /* mod_authz_host's host check is double-reverse */
        return 1;
    }
    return hl == HOSTNAME_LOOKUP_ON || hl == HOSTNAME_LOOKUP_DOUBLE;
}

int sip_access_configured(server_rec *s)
{
    core_server_config *core = ap_get_core_module_config(s->module_config);

    /* Require cannot appear outside a section, and only <Location>s are
     * walked for SIP: without one, only a vhost-wide SipAuth can apply. */
    return sip_auth_enabled()
           || (location_access_used && core->sec_url && core->sec_url->nelts > 0);
}

sip_access_t *sip_access_begin(server_rec *s, const char *method, const char *aor,
                               const sip_sockaddr_t *peer)
{
    request_rec *r = make_request(s, method, aor, 1);
    sip_access_t *a = apr_pcalloc(r->pool, sizeof(*a));
    char *ip = (char *)sip_sockaddr_ip(r->pool, peer);

    /* Require ip/host look at the peer; a sockaddr of the request's own
     * (not the shared connection's) keeps ap_get_useragent_host per request */
    r->useragent_addr = apr_addr_of(r->pool, peer);
    r->useragent_ip = ip;
    /* the name the engine resolved before this check (sip_request_wants_name):
     * set here, so that httpd (ap_get_useragent_host) never resolves it
     * itself, blocking the engine; "" and -1 when it is unknown */
    {
        int dbl;
        if (sip_request_wants_name(s, &dbl)) {
            const char *name = sip_dns_cached_name(r->pool, peer, 0);
            const char *checked = dbl ? sip_dns_cached_name(r->pool, peer, 1) : NULL;
            r->useragent_host = (char *)(dbl ? (checked ? checked : "") : name ? name : "");
            r->double_reverse = checked ? 1 : -1;
        }
        else {
            r->useragent_host = "";     /* HostnameLookups Off: no name, never a lookup */
            r->double_reverse = -1;
        }
    }
    a->r = r;
    a->d = ap_get_module_config(r->per_dir_config, &sip_module);
    return a;
}

static int authz_loaded(void)
{
    static int loaded = -1;

    if (loaded < 0)
        loaded = ap_find_linked_module("mod_authz_core.c") != NULL;
    return loaded;
}

static sip_access_result_t access_result(int rc)
{
    if (rc == OK)
        return SIP_ACCESS_GRANTED;
    if (rc == HTTP_FORBIDDEN || rc == HTTP_UNAUTHORIZED)
        return SIP_ACCESS_DENIED;
    return SIP_ACCESS_ERROR;
}

void sip_access_realm(sip_access_t *a, const char **realm)
{
    const char *name = ap_auth_name(a->r);

    *realm = name ? name : a->r->server->server_hostname;
}

sip_access_result_t sip_access_check(sip_access_t *a, const char **realm)
{
    const char *name = ap_auth_name(a->r);
    int sip_auth = a->d && a->d->auth == 1;
    int rc;

    *realm = name ? name : a->r->server->server_hostname;
    if (!authz_loaded())
        return sip_auth ? SIP_ACCESS_NEED_USER : SIP_ACCESS_GRANTED;
    /* mod_authz_core's first pass, as in ap_process_request_internal:
     * granted, denied, or DECLINED when Require needs a user. (Only this
     * hook: mod_auth_digest must never see a SIP request.) */
    rc = ap_run_access_checker_ex(a->r);
    if (rc == DECLINED)
        return SIP_ACCESS_NEED_USER;
    if (rc == OK && sip_auth)
        return SIP_ACCESS_NEED_USER;
    return access_result(rc);
}

sip_access_result_t sip_access_authorize(sip_access_t *a, const char *user)
{
    a->r->user = apr_pstrdup(a->r->pool, user);
    if (!authz_loaded())
        return SIP_ACCESS_GRANTED;
    return access_result(ap_run_auth_checker(a->r));
}

void sip_access_end(sip_access_t *a)
{
    if (a)
        apr_pool_destroy(a->r->pool);
}

const char *sip_access_realm_hash(sip_access_t *a, apr_pool_t *p, const char *user,
                                  const char *realm, int *failed)
{
    request_rec *r = a->r;
    server_rec *s = r->server;
    sip_dir_conf *d = a->d;
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
    r->user = NULL;
    return found;
}

int sip_request_error_body(sip_txn_t *t, int status, apr_pool_t *p, const char **ctype,
                           const char **body, apr_size_t *len)
{
    const sip_msg_t *req = sip_txn_request(t);
    server_rec *s = sip_txn_source(t)->vhost;
    const sip_error_doc *doc = NULL;
    request_rec *r;
    sip_dir_conf *d;
    int idx, found = 0;

    if (!s || !sip_error_docs_used())
        return 0;
    r = make_request(s, sip_msg_method(req), sip_msg_aor(p, req), 1);
    d = ap_get_module_config(r->per_dir_config, &sip_module);
    if (d && d->error_docs)
        doc = apr_hash_get(d->error_docs, &status, sizeof(status));
    if (doc) {
        if (doc->content_type) {
            *ctype = doc->content_type;
            *body = doc->body;
            *len = doc->len;
            found = 1;
        }
    }
    else if ((idx = ap_index_of_response(status)) != ap_index_of_response(500) || status == 500) {
        /* core's ErrorDocument, for the codes httpd knows; only its text
         * form (stored with a leading quote): URLs mean nothing in SIP */
        const char *msg = ap_response_code_string(r, idx);
        if (msg && msg[0] == '"' && msg[1]) {
            *ctype = "text/plain";
            *body = apr_pstrdup(p, msg + 1);
            *len = strlen(*body);
            found = 1;
        }
    }
    apr_pool_destroy(r->pool);
    return found;
}
