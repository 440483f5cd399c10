/* mod_sip: Apache httpd as a programmable SIP server (RFC 3261, RFC 3050).
 *
 * Glue only: module record, directives and hooks.  The SIP work happens in
 * the engine process (sip_engine.c) and the layers below it. */
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_ssl.h"
#include "ap_mpm.h"
#include "ap_listen.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_atomic.h"
#include "apr_portable.h"
#include "apr_optional.h"
#include "apr_dbd.h"
#include "mod_dbd.h"
#include "ap_provider.h"
#include "mod_auth.h"
#include "mod_status.h"

#include "sip_auth.h"
#include "sip_conf.h"
#include "sip_consent.h"
#include "sip_namemap.h"
#include "sip_nonce.h"
#include "sip_engine.h"
#include "sip_forward.h"
#include "sip_transport.h"
#include "sip_cgi.h"
#include "sip_lists.h"
#include "sip_location.h"
#include "sip_location_dbd.h"
#include "sip_registrar.h"
#include "sip_request.h"
#include "sip_stats.h"
#include "sip_route.h"
#include "sip_tls.h"
#include "sip_rules.h"
#include "sip_script_store.h"
#include "sip_upload.h"
#include "sip_ws_upgrade.h"
#include "unixd.h"
#include "sip_fcgi.h"
#include "sip_dns.h"
#include <unistd.h>

module AP_MODULE_DECLARE_DATA sip_module;

sip_server_conf *sip_get_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &sip_module);
}

void sip_get_limits(server_rec *s, sip_limits_t *lim)
{
    lim->line = s->limit_req_line;
    lim->fieldsize = s->limit_req_fieldsize;
    lim->fields = s->limit_req_fields;
    lim->body = sip_get_conf(s)->max_body;
}

/* ---- configuration ---- */

static void *create_server_conf(apr_pool_t *p, server_rec *s)
{
    sip_server_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->enabled = -1;
    c->script_timeout = -1;
    c->max_output = -1;
    c->max_body = -1;
    c->tcp_idle = -1;
    c->record_route = -1;
    c->proxy_outside = -1;
    c->timer_c = -1;
    c->max_scripts = -1;
    c->min_expires = -1;
    c->max_expires = -1;
    c->default_expires = -1;
    c->nonce_lifetime = -1;
    c->auth_qop = -1;
    c->max_contacts = -1;
    c->max_branches = -1;
    c->tcp_msg_timeout = -1;
    c->tcp_max_conns = -1;
    c->tcp_max_per_ip = -1;
    c->log_rate_burst = -1;
    c->log_rate_interval = -1;
    c->upload_max_size = -1;
    c->upload_max_total = -1;
    c->upload_integrity = -1;
    c->explode_max_targets = -1;
    c->explode_rate = -1;
    c->explode_response = -1;
    c->explode_consent_local = -1;
    c->namemap_multiple = -1;
    c->namemap_ttl = -1;
    c->list_mode = -1;
    c->list_max_members = -1;
    c->forward_min_uid = -1;
    c->nat_routing = -1;
    c->flow_timer = -1;
    c->path_unsupported = -1;
    c->dns_timeout = -1;
    c->dns_tries = -1;
    c->dns_cache_size = -1;
    c->timer_t1 = -1;
    c->engines = -1;
    c->nonce_counts = -1;
    c->loc_cache_ttl_ms = -1;
    return c;
}

static void *merge_server_conf(apr_pool_t *p, void *basev, void *addv)
{
    sip_server_conf *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));

    /* ProtocolSip is never inherited: only vhosts that say On speak SIP. */
    c->enabled = add->enabled;
    c->directory = add->directory ? add->directory : base->directory;
    c->default_script = add->default_script ? add->default_script : base->default_script;
    c->cpl_default_script = add->cpl_default_script ? add->cpl_default_script
                                                    : base->cpl_default_script;
    c->cpl_mail = add->cpl_mail ? add->cpl_mail : base->cpl_mail;
    c->script_timeout = add->script_timeout >= 0 ? add->script_timeout : base->script_timeout;
    c->max_output = add->max_output >= 0 ? add->max_output : base->max_output;
    c->max_body = add->max_body >= 0 ? add->max_body : base->max_body;
    c->tcp_idle = add->tcp_idle >= 0 ? add->tcp_idle : base->tcp_idle;
    c->record_route = add->record_route >= 0 ? add->record_route : base->record_route;
    c->proxy_outside = add->proxy_outside >= 0 ? add->proxy_outside : base->proxy_outside;
    c->timer_c = add->timer_c >= 0 ? add->timer_c : base->timer_c;
    c->max_scripts = add->max_scripts >= 0 ? add->max_scripts : base->max_scripts;
    c->min_expires = add->min_expires >= 0 ? add->min_expires : base->min_expires;
    c->max_expires = add->max_expires >= 0 ? add->max_expires : base->max_expires;
    c->default_expires = add->default_expires >= 0 ? add->default_expires : base->default_expires;
    c->nonce_lifetime = add->nonce_lifetime >= 0 ? add->nonce_lifetime : base->nonce_lifetime;
    c->proxy_methods = add->proxy_methods ? add->proxy_methods : base->proxy_methods;
    c->auth_qop = add->auth_qop >= 0 ? add->auth_qop : base->auth_qop;
    c->max_contacts = add->max_contacts >= 0 ? add->max_contacts : base->max_contacts;
    c->max_branches = add->max_branches >= 0 ? add->max_branches : base->max_branches;
    c->tcp_msg_timeout = add->tcp_msg_timeout >= 0 ? add->tcp_msg_timeout : base->tcp_msg_timeout;
    c->tcp_max_conns = add->tcp_max_conns >= 0 ? add->tcp_max_conns : base->tcp_max_conns;
    c->tcp_max_per_ip = add->tcp_max_per_ip >= 0 ? add->tcp_max_per_ip : base->tcp_max_per_ip;
    c->log_rate_burst = add->log_rate_burst >= 0 ? add->log_rate_burst : base->log_rate_burst;
    c->log_rate_interval = add->log_rate_interval >= 0 ? add->log_rate_interval
                                                       : base->log_rate_interval;
    c->upload_max_size = add->upload_max_size >= 0 ? add->upload_max_size : base->upload_max_size;
    c->upload_max_total = add->upload_max_total >= 0 ? add->upload_max_total
                                                     : base->upload_max_total;
    c->upload_integrity = add->upload_integrity >= 0 ? add->upload_integrity
                                                     : base->upload_integrity;
    c->explode_max_targets = add->explode_max_targets >= 0 ? add->explode_max_targets
                                                           : base->explode_max_targets;
    c->explode_rate = add->explode_rate >= 0 ? add->explode_rate : base->explode_rate;
    c->explode_methods = add->explode_methods ? add->explode_methods : base->explode_methods;
    c->explode_response = add->explode_response >= 0 ? add->explode_response
                                                     : base->explode_response;
    if (add->explode_consent_file) {
        c->explode_consent_file = add->explode_consent_file;
        c->explode_consent = add->explode_consent;
    }
    else {
        c->explode_consent_file = base->explode_consent_file;
        c->explode_consent = base->explode_consent;
    }
    c->explode_consent_local = add->explode_consent_local >= 0 ? add->explode_consent_local
                                                               : base->explode_consent_local;
    c->namemap = add->namemap ? add->namemap : base->namemap;
    c->namemap_multiple = add->namemap_multiple >= 0 ? add->namemap_multiple
                                                     : base->namemap_multiple;
    c->namemap_ttl = add->namemap_ttl >= 0 ? add->namemap_ttl : base->namemap_ttl;
    c->lists = sip_lists_merge(p, base->lists, add->lists);
    c->list_mode = add->list_mode >= 0 ? add->list_mode : base->list_mode;
    c->list_max_members = add->list_max_members >= 0 ? add->list_max_members
                                                     : base->list_max_members;
    c->forward_file = add->forward_file ? add->forward_file : base->forward_file;
    c->forward_min_uid = add->forward_min_uid > 0 ? add->forward_min_uid : base->forward_min_uid;
    c->fcgi = add->fcgi ? add->fcgi : base->fcgi;
    c->nat_routing = add->nat_routing >= 0 ? add->nat_routing : base->nat_routing;
    c->flow_timer = add->flow_timer >= 0 ? add->flow_timer : base->flow_timer;
    c->path_unsupported = add->path_unsupported >= 0 ? add->path_unsupported
                                                     : base->path_unsupported;
    c->dns_servers = add->dns_servers ? add->dns_servers : base->dns_servers;
    c->dns_timeout = add->dns_timeout >= 0 ? add->dns_timeout : base->dns_timeout;
    c->dns_tries = add->dns_tries >= 0 ? add->dns_tries : base->dns_tries;
    c->dns_cache_size = add->dns_cache_size >= 0 ? add->dns_cache_size : base->dns_cache_size;
    c->timer_t1 = add->timer_t1 >= 0 ? add->timer_t1 : base->timer_t1;
    c->engines = add->engines >= 0 ? add->engines : base->engines;
    c->nonce_counts = add->nonce_counts >= 0 ? add->nonce_counts : base->nonce_counts;
    c->loc_batch = add->loc_batch > 0 ? add->loc_batch : base->loc_batch;
    c->loc_notify = add->loc_notify ? add->loc_notify : base->loc_notify;
    c->loc_cache_ttl_ms = add->loc_cache_ttl_ms >= 0 ? add->loc_cache_ttl_ms
                                                     : base->loc_cache_ttl_ms;
    return c;
}

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    sip_dir_conf *d = apr_pcalloc(p, sizeof(*d));
    (void)dir;
    d->mode = -1;
    d->auth = -1;
    d->script_upload = -1;
    d->explode = -1;
    d->websocket = -1;
    return d;
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    sip_dir_conf *base = basev, *add = addv, *d = apr_pcalloc(p, sizeof(*d));
    d->mode = add->mode >= 0 ? add->mode : base->mode;
    d->auth = add->auth >= 0 ? add->auth : base->auth;
    d->script_upload = add->script_upload >= 0 ? add->script_upload : base->script_upload;
    d->explode = add->explode >= 0 ? add->explode : base->explode;
    d->websocket = add->websocket >= 0 ? add->websocket : base->websocket;
    d->providers = add->providers ? add->providers : base->providers;
    /* rules run in config order: the enclosing section's first */
    d->rules = !add->rules ? base->rules : !base->rules ? add->rules
             : apr_array_append(p, base->rules, add->rules);
    d->error_docs = !add->error_docs ? base->error_docs
                  : !base->error_docs ? add->error_docs
                  : apr_hash_overlay(p, add->error_docs, base->error_docs);
    return d;
}

/* Defaults are applied after merging, so that a main-server value still
 * reaches vhosts that do not set one. */
static void apply_defaults(sip_server_conf *c)
{
    if (!c->default_script)
        c->default_script = SIP_DEFAULT_SCRIPT;
    if (!c->cpl_default_script)
        c->cpl_default_script = SIP_DEFAULT_CPL_SCRIPT;
    if (!c->cpl_mail)
        c->cpl_mail = "";
    if (c->script_timeout < 0)
        c->script_timeout = SIP_DEFAULT_SCRIPT_TIMEOUT;
    if (c->max_output < 0)
        c->max_output = SIP_DEFAULT_MAX_OUTPUT;
    if (c->max_body < 0)
        c->max_body = SIP_DEFAULT_MAX_BODY;
    if (c->tcp_idle < 0)
        c->tcp_idle = SIP_DEFAULT_TCP_IDLE;
    if (c->record_route < 0)
        c->record_route = 1;
    if (c->proxy_outside < 0)
        c->proxy_outside = SIP_RELAY_AUTHENTICATED;
    if (c->auth_qop < 0)
        c->auth_qop = 1;
    if (c->timer_c < 0)
        c->timer_c = SIP_DEFAULT_TIMER_C;
    if (c->max_scripts < 0)
        c->max_scripts = SIP_DEFAULT_MAX_SCRIPTS;
    if (c->min_expires < 0)
        c->min_expires = SIP_DEFAULT_MIN_EXPIRES;
    if (c->max_expires < 0)
        c->max_expires = SIP_DEFAULT_MAX_EXPIRES;
    if (c->default_expires < 0)
        c->default_expires = SIP_DEFAULT_EXPIRES;
    if (c->nonce_lifetime < 0)
        c->nonce_lifetime = SIP_DEFAULT_NONCE_LIFETIME;
    if (c->max_expires < c->min_expires)
        c->max_expires = c->min_expires;
    if (c->max_contacts < 0)
        c->max_contacts = SIP_DEFAULT_MAX_CONTACTS;
    if (c->max_branches < 0)
        c->max_branches = SIP_DEFAULT_MAX_BRANCHES;
    if (c->tcp_msg_timeout < 0)
        c->tcp_msg_timeout = SIP_DEFAULT_TCP_MSG_TIMEOUT;
    if (c->tcp_max_conns < 0)
        c->tcp_max_conns = 0;
    if (c->tcp_max_per_ip < 0)
        c->tcp_max_per_ip = SIP_DEFAULT_TCP_PER_IP;
    if (c->log_rate_burst < 0)
        c->log_rate_burst = SIP_DEFAULT_LOG_RATE_BURST;
    if (c->log_rate_interval < 0)
        c->log_rate_interval = SIP_DEFAULT_LOG_RATE_INTERVAL;
    if (c->upload_max_size < 0)
        c->upload_max_size = SIP_DEFAULT_UPLOAD_MAX_SIZE;
    if (c->upload_max_total < 0)
        c->upload_max_total = SIP_DEFAULT_UPLOAD_MAX_TOTAL;
    if (c->upload_integrity < 0)
        c->upload_integrity = 0;
    if (c->explode_max_targets < 0)
        c->explode_max_targets = SIP_DEFAULT_EXPLODE_MAX_TARGETS;
    if (c->explode_rate < 0)
        c->explode_rate = SIP_DEFAULT_EXPLODE_RATE;
    if (c->explode_response < 0)
        c->explode_response = 200;
    if (c->explode_consent_local < 0)
        c->explode_consent_local = 0;
    if (c->namemap_multiple < 0)
        c->namemap_multiple = 300;
    if (c->namemap_ttl < 0)
        c->namemap_ttl = SIP_DEFAULT_NAMEMAP_TTL;
    if (c->dns_timeout < 0)
        c->dns_timeout = SIP_DNS_DEFAULT_TIMEOUT;
    if (c->dns_tries < 0)
        c->dns_tries = SIP_DNS_DEFAULT_TRIES;
    if (c->dns_cache_size < 0)
        c->dns_cache_size = SIP_DNS_DEFAULT_CACHE;
    if (c->timer_t1 < 0)
        c->timer_t1 = SIP_T1;
    if (c->engines < 0)
        c->engines = sip_engine_default_count();
    if (c->nonce_counts < 0)
        c->nonce_counts = SIP_NONCE_DEFAULT_SLOTS;
}

static const char *set_protocol(cmd_parms *cmd, void *d, int on)
{
    (void)d;
    sip_get_conf(cmd->server)->enabled = on;
    return NULL;
}

static const char *set_directory(cmd_parms *cmd, void *d, const char *arg)
{
    const char *path = ap_server_root_relative(cmd->pool, arg);
    apr_finfo_t fi;

    (void)d;
    if (!path)
        return apr_pstrcat(cmd->pool, "SipDirectory: invalid path ", arg, NULL);
    if (apr_stat(&fi, path, APR_FINFO_TYPE, cmd->pool) != APR_SUCCESS || fi.filetype != APR_DIR)
        return apr_pstrcat(cmd->pool, "SipDirectory: ", path, " is not a directory", NULL);
    sip_get_conf(cmd->server)->directory = path;
    return NULL;
}

static const char *set_default_script(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (!sip_cgi_name_ok(arg))
        return "SipDefaultScript must be a plain file name inside SipDirectory";
    sip_get_conf(cmd->server)->default_script = arg;
    return NULL;
}

/* SipCplDefaultScript name | none */
static const char *set_cpl_default_script(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (!strcasecmp(arg, "none")) {
        sip_get_conf(cmd->server)->cpl_default_script = "";
        return NULL;
    }
    if (!sip_cgi_name_ok(arg))
        return "SipCplDefaultScript must be a plain file name inside SipDirectory, or none";
    sip_get_conf(cmd->server)->cpl_default_script = arg;
    return NULL;
}

/* SipCplMail Off | "command line": the program is named by an absolute
 * path and must be executable (the engine runs it without a shell). */
static const char *set_cpl_mail(cmd_parms *cmd, void *d, const char *arg)
{
    const char *prog;
    apr_finfo_t fi;

    (void)d;
    if (!strcasecmp(arg, "off")) {
        sip_get_conf(cmd->server)->cpl_mail = "";
        return NULL;
    }
    if (strpbrk(arg, "\r\n"))
        return "SipCplMail: the command line must be one line";
    prog = apr_pstrndup(cmd->pool, arg + strspn(arg, " \t"), strcspn(arg + strspn(arg, " \t"),
                                                                      " \t"));
    if (prog[0] != '/')
        return "SipCplMail needs Off or a command line starting with an absolute path "
               "(e.g. \"/usr/sbin/sendmail -t -i\")";
    if (apr_stat(&fi, prog, APR_FINFO_TYPE | APR_FINFO_PROT, cmd->pool) != APR_SUCCESS
        || fi.filetype != APR_REG || !(fi.protection & (APR_UEXECUTE | APR_GEXECUTE
                                                        | APR_WEXECUTE)))
        return apr_pstrcat(cmd->pool, "SipCplMail: ", prog, " is not an executable file", NULL);
    sip_get_conf(cmd->server)->cpl_mail = arg;
    return NULL;
}

static const char *set_seconds(cmd_parms *cmd, apr_interval_time_t *dst, const char *arg)
{
    apr_interval_time_t t;

    if (ap_timeout_parameter_parse(arg, &t, "s") != APR_SUCCESS || t <= 0)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, " needs a positive time", NULL);
    *dst = t;
    return NULL;
}

static const char *set_bytes(cmd_parms *cmd, apr_off_t *dst, const char *arg)
{
    char *end;
    apr_off_t v;

    if (apr_strtoff(&v, arg, &end, 10) != APR_SUCCESS || *end || v <= 0)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, " needs a positive number of bytes", NULL);
    *dst = v;
    return NULL;
}

static const char *set_script_timeout(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_seconds(cmd, &sip_get_conf(cmd->server)->script_timeout, arg);
}

static const char *set_tcp_idle(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_seconds(cmd, &sip_get_conf(cmd->server)->tcp_idle, arg);
}

static const char *set_max_output(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_bytes(cmd, &sip_get_conf(cmd->server)->max_output, arg);
}

static const char *set_max_body(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_bytes(cmd, &sip_get_conf(cmd->server)->max_body, arg);
}

static const char *set_record_route(cmd_parms *cmd, void *d, int on)
{
    (void)d;
    sip_get_conf(cmd->server)->record_route = on;
    return NULL;
}

/* ---- SipRouteSecret: the key of our signed Record-Route values ---- */

static const char *route_secret;    /* NULL: a random one kept by the parent */

static const char *set_route_secret(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (cmd->server->is_virtual)
        return "SipRouteSecret: one secret for the whole server (not inside <VirtualHost>)";
    if (strlen(arg) < 16)
        return "SipRouteSecret: use at least 16 characters";
    route_secret = arg;
    return NULL;
}

/* 'len' random bytes made once and kept in the process pool under 'key':
 * the same for every engine forked, and across restarts of httpd's
 * configuration. */
static apr_status_t process_random(server_rec *s, const char *key, apr_size_t len,
                                   unsigned char **out)
{
    apr_pool_t *pp = s->process->pool;
    unsigned char *bytes = NULL;
    apr_status_t rv;

    apr_pool_userdata_get((void **)&bytes, key, pp);
    if (!bytes) {
        bytes = apr_palloc(pp, len);
        if ((rv = apr_generate_random_bytes(bytes, len)) != APR_SUCCESS)
            return rv;
        apr_pool_userdata_set(bytes, key, apr_pool_cleanup_null, pp);
    }
    *out = bytes;
    return APR_SUCCESS;
}

/* The route secret the engine signs with.  Without SipRouteSecret, random
 * bytes made once in the process pool, so that graceful restarts and new
 * engines (forked from this parent) keep verifying dialogs in progress. */
static apr_status_t init_route_secret(server_rec *s)
{
    unsigned char *secret;
    apr_status_t rv;

    if (route_secret) {
        sip_route_set_secret(route_secret, strlen(route_secret));
        sip_txn_set_tag_secret(route_secret, strlen(route_secret));
        return APR_SUCCESS;
    }
    if ((rv = process_random(s, "mod_sip_route_secret", 32, &secret)) != APR_SUCCESS)
        return rv;
    sip_route_set_secret(secret, 32);
    sip_txn_set_tag_secret(secret, 32);
    return APR_SUCCESS;
}

/* The digest nonce key: random bytes made once in the process pool, like
 * the route secret, so every engine (and one restarted after a crash, or
 * after a graceful restart) accepts the nonces any engine made. */
static apr_status_t init_nonce_secret(server_rec *s)
{
    unsigned char *secret;
    apr_status_t rv;

    if ((rv = process_random(s, "mod_sip_nonce_secret", 16, &secret)) != APR_SUCCESS)
        return rv;
    sip_auth_set_secret(secret, 16);
    /* and the nonce-counts every engine checks and records (RFC 2617
     * §3.2.2.1), kept like the key across engine and graceful restarts */
    if (sip_nonce_attach(s->process->pool, s->process->pconf,
                          (apr_size_t)sip_get_conf(s)->nonce_counts)
        != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "mod_sip: no shared memory for the digest nonce-counts; each engine "
                     "keeps its own");
    return APR_SUCCESS;
}

/* SipNonceCounts (sip_nonce.c) */
static const char *set_nonce_counts(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    return err ? err : sip_nonce_parse_slots(arg, &sip_get_conf(cmd->server)->nonce_counts);
}

static const char *set_proxy_outside(cmd_parms *cmd, void *d, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);

    (void)d;
    if (!strcasecmp(arg, "On"))
        c->proxy_outside = SIP_RELAY_ON;
    else if (!strcasecmp(arg, "Off"))
        c->proxy_outside = SIP_RELAY_OFF;
    else if (!strcasecmp(arg, "Authenticated"))
        c->proxy_outside = SIP_RELAY_AUTHENTICATED;
    else
        return "SipProxyOutside must be On, Off or Authenticated";
    return NULL;
}

static const char *add_proxy_method(cmd_parms *cmd, void *d, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);
    const char *t;

    (void)d;
    /* RFC 3261 §25.1: Method = token */
    for (t = arg; *t; t++)
        if (!apr_isalnum(*t) && !strchr("-.!%*_+`'~", *t))
            return apr_pstrcat(cmd->pool, "SipProxyMethods: '", arg, "' is not a SIP method", NULL);
    if (!c->proxy_methods)
        c->proxy_methods = apr_array_make(cmd->pool, 2, sizeof(const char *));
    *(const char **)apr_array_push(c->proxy_methods) = arg;
    return NULL;
}

static const char *set_auth_qop(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (!strcasecmp(arg, "required"))
        sip_get_conf(cmd->server)->auth_qop = 1;
    else if (!strcasecmp(arg, "optional"))
        sip_get_conf(cmd->server)->auth_qop = 0;
    else
        return "SipAuthQop must be required or optional";
    return NULL;
}

static const char *set_timer_c(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_seconds(cmd, &sip_get_conf(cmd->server)->timer_c, arg);
}

static const char *set_max_scripts(cmd_parms *cmd, void *d, const char *arg)
{
    char *end;
    long n = strtol(arg, &end, 10);

    (void)d;
    if (*end || n <= 0 || n > 100000)
        return "SipMaxScripts needs a positive number";
    sip_get_conf(cmd->server)->max_scripts = n;
    return NULL;
}

/* Per directory, so that <Location "/user@domain"> can differ. */
static const char *set_mode(cmd_parms *cmd, void *dv, const char *arg)
{
    sip_dir_conf *d = dv;

    (void)cmd;
    if (!strcasecmp(arg, "proxy"))
        d->mode = SIP_MODE_PROXY;
    else if (!strcasecmp(arg, "redirect"))
        d->mode = SIP_MODE_REDIRECT;
    else
        return "SipMode must be proxy or redirect";
    return NULL;
}

static const char *set_expires(cmd_parms *cmd, void *d, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);
    const void *which = cmd->info;
    char *end;
    long v = strtol(arg, &end, 10);

    (void)d;
    if (*end || v <= 0)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, " needs a positive number of seconds", NULL);
    if (which == (void *)1)
        c->min_expires = v;
    else if (which == (void *)2)
        c->max_expires = v;
    else
        c->default_expires = v;
    return NULL;
}

static const char *location_file;   /* SipLocationFile (server-wide) */
static int location_dbd;            /* SipLocation dbd */

static const char *set_location(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    if (err)
        return err;
    if (!strcasecmp(arg, "dbd"))
        location_dbd = 1;
    else if (!strcasecmp(arg, "memory"))
        location_dbd = 0;
    else
        return "SipLocation must be memory or dbd";
    return NULL;
}

static const char *set_location_file(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    if (err)
        return err;
    location_file = strcasecmp(arg, "none") == 0 ? "" : ap_server_root_relative(cmd->pool, arg);
    return NULL;
}

static const char *set_location_compact(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    return err ? err : sip_location_set_compact(arg);
}

static const char *set_nonce_lifetime(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_seconds(cmd, &sip_get_conf(cmd->server)->nonce_lifetime, arg);
}

/* ---- registrar limits (docs/security.md) ---- */

static long max_bindings = -1;      /* SipMaxBindings (server-wide: one store) */

static const char *set_count(cmd_parms *cmd, int *dst, const char *arg, long lo, long hi)
{
    char *end;
    long n = strtol(arg, &end, 10);

    if (!*arg || *end || n < lo || n > hi)
        return apr_psprintf(cmd->pool, "%s needs a number from %ld to %ld", cmd->cmd->name, lo, hi);
    *dst = (int)n;
    return NULL;
}

static const char *set_max_contacts(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_count(cmd, &sip_get_conf(cmd->server)->max_contacts, arg, 0, 100000);
}

static const char *set_max_branches(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_count(cmd, &sip_get_conf(cmd->server)->max_branches, arg, 1, 1000);
}

static const char *set_max_bindings(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    int n;

    (void)d;
    if (err)
        return err;
    if ((err = set_count(cmd, &n, arg, 0, 100000000)))
        return err;
    max_bindings = n;
    return NULL;
}

/* The longest SipMaxExpires of any vhost: the journal's longest lifetime. */
static void configure_location(server_rec *main_server)
{
    server_rec *s;
    long longest = 0;

    for (s = main_server; s; s = s->next)
        if (sip_get_conf(s)->max_expires > longest)
            longest = sip_get_conf(s)->max_expires;
    sip_location_configure(max_bindings >= 0 ? (apr_size_t)max_bindings
                           : SIP_DEFAULT_MAX_BINDINGS, longest);
}

/* ---- transport limits (SipTcpMessageTimeout, SipTcpMaxConnections,
 * SipTcpMaxConnectionsPerIP, SipLogRateLimit) ---- */

static const char *set_tcp_msg_timeout(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return set_seconds(cmd, &sip_get_conf(cmd->server)->tcp_msg_timeout, arg);
}

/* A count for the whole engine: server config only. */
static const char *set_conn_count(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    sip_server_conf *c = sip_get_conf(cmd->server);
    char *end;
    long n;

    (void)d;
    if (err)
        return err;
    n = strtol(arg, &end, 10);
    if (cmd->info == (void *)1 && !strcasecmp(arg, "auto"))
        n = 0, end = "";
    if (*end || n < 0 || n > 10000000)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, cmd->info == (void *)1
                           ? " needs a number of connections, or auto"
                           : " needs a number of connections (0: no limit)", NULL);
    if (cmd->info == (void *)1)
        c->tcp_max_conns = (int)n;
    else
        c->tcp_max_per_ip = (int)n;
    return NULL;
}

static const char *set_log_rate(cmd_parms *cmd, void *d, const char *lines, const char *secs)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    sip_server_conf *c = sip_get_conf(cmd->server);
    char *end;
    long n;

    (void)d;
    if (err)
        return err;
    n = strtol(lines, &end, 10);
    if (!strcasecmp(lines, "off"))
        n = 0, end = "";
    if (*end || n < 0 || n > 1000000)
        return "SipLogRateLimit needs a number of lines (0 or off: no limit) and optional seconds";
    c->log_rate_burst = (int)n;
    if (secs)
        return set_seconds(cmd, &c->log_rate_interval, secs);
    return NULL;
}

/* ---- uploaded scripts (draft-lennox-sip-reg-payload, issue 12) ---- */

static sip_upload_conf_t upload_conf;

const sip_upload_conf_t *sip_upload_conf(void)
{
    return &upload_conf;
}

static void upload_conf_reset(void)
{
    memset(&upload_conf, 0, sizeof(upload_conf));
    upload_conf.sandbox = 1;
}

static const char *set_script_upload(cmd_parms *cmd, void *dv, int on)
{
    (void)cmd;
    ((sip_dir_conf *)dv)->script_upload = on;
    upload_conf.used |= on;
    return NULL;
}

static const char *set_upload_bytes(cmd_parms *cmd, void *d, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);

    (void)d;
    return set_bytes(cmd, cmd->info ? &c->upload_max_total : &c->upload_max_size, arg);
}

static const char *set_upload_integrity(cmd_parms *cmd, void *d, int on)
{
    (void)d;
    sip_get_conf(cmd->server)->upload_integrity = on;
    return NULL;
}

/* SipScriptStore, SipUploadUser, SipUploadWorkDir, SipUploadSuexec */
static const char *set_upload_string(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *which = cmd->info;

    (void)d;
    if (err)
        return err;
    if (!strcmp(which, "user")) {
        upload_conf.user = arg;
        return NULL;
    }
    arg = ap_server_root_relative(cmd->pool, arg);
    if (!arg)
        return apr_pstrcat(cmd->pool, cmd->cmd->name, ": bad path", NULL);
    if (!strcmp(which, "store"))
        upload_conf.store = arg;
    else if (!strcmp(which, "workdir"))
        upload_conf.workdir = arg;
    else
        upload_conf.suexec = arg;
    return NULL;
}

static const char *add_upload_interpreter(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    if (err)
        return err;
    if (arg[0] != '/')
        return "SipUploadInterpreters takes absolute paths of programs";
    if (!upload_conf.interpreters)
        upload_conf.interpreters = apr_array_make(cmd->pool, 4, sizeof(const char *));
    *(const char **)apr_array_push(upload_conf.interpreters) = arg;
    return NULL;
}

static const char *set_upload_sandbox(cmd_parms *cmd, void *d, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    if (err)
        return err;
    upload_conf.sandbox = on;
    return NULL;
}

/* SipUploadTmpSize (issue 12 item 6) */
static const char *set_upload_tmp_size(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    if (err)
        return err;
    return set_bytes(cmd, &upload_conf.tmp_size, arg);
}

/* Parent, as root: the file store belongs to the user the engine runs as
 * (uploaded scripts themselves never run as that user). */
static void upload_prepare(apr_pool_t *p, server_rec *s)
{
    apr_status_t rv;
    long uid = geteuid() == 0 ? (long)ap_unixd_config.user_id : -1;

    upload_conf.store_ok = 0;
    upload_conf.runnable = 0;
    if (!upload_conf.used)
        return;
    /* issue 12 item 6: can uploaded sip-cgi run here (logs why not) */
    upload_conf.runnable = sip_upload_check_runnable(p, s, &upload_conf,
                                                     (long)ap_unixd_config.user_id,
                                                     (long)ap_unixd_config.group_id);
    rv = sip_script_store_prepare(p, upload_conf.store, uid, (long)ap_unixd_config.group_id);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "mod_sip: SipScriptStore %s is not usable; "
                     "script uploads will get 500", upload_conf.store);
        return;
    }
    upload_conf.store_ok = 1;
}

/* Defaults of what the configuration did not say (post_config). */
static void upload_conf_defaults(apr_pool_t *p)
{
    if (!upload_conf.store)
        upload_conf.store = SIP_STATE_DIR "/scripts";
    if (!upload_conf.workdir)
        upload_conf.workdir = SIP_STATE_DIR "/work";
    if (!upload_conf.suexec)
        upload_conf.suexec = SIP_SUEXEC_PATH;
    if (!upload_conf.tmp_size)
        upload_conf.tmp_size = SIP_DEFAULT_UPLOAD_TMP_SIZE;
    if (!upload_conf.interpreters) {
        static const char *const dflt[] = {"/usr/bin/perl", "/usr/bin/python3", "/bin/sh",
                                           "/usr/bin/sh", NULL};
        int i;
        upload_conf.interpreters = apr_array_make(p, 4, sizeof(const char *));
        for (i = 0; dflt[i]; i++)
            *(const char **)apr_array_push(upload_conf.interpreters) = dflt[i];
    }
}

/* ---- URI-list services (EXPLODE, RFC 5365; docs/explode.md) ---- */

static int explode_used;    /* some SipExplode On in this configuration */

int sip_explode_used(void)
{
    return explode_used;
}

static const char *set_explode(cmd_parms *cmd, void *dv, int on)
{
    (void)cmd;
    ((sip_dir_conf *)dv)->explode = on;
    explode_used |= on;
    return NULL;
}

static const char *set_explode_count(cmd_parms *cmd, void *d, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);

    (void)d;
    if (cmd->info)
        return set_count(cmd, &c->explode_rate, arg, 0, 1000000);
    return set_count(cmd, &c->explode_max_targets, arg, 1, 100000);
}

/* Template methods that need no dialog of the exploder's own: an INVITE
 * or SUBSCRIBE template would make it a B2BUA or conference focus
 * (RFC 5366), which it is not; EXPLODE would recurse. */
static const char *add_explode_method(cmd_parms *cmd, void *d, const char *arg)
{
    static const char *const refused[] = {"INVITE", "ACK", "CANCEL", "BYE", "REGISTER",
                                          "PRACK", "UPDATE", "INFO", "SUBSCRIBE", "NOTIFY",
                                          "REFER", "EXPLODE", NULL};
    sip_server_conf *c = sip_get_conf(cmd->server);
    const char *ch;
    int i;

    (void)d;
    for (ch = arg; *ch; ch++)
        if (!apr_isupper(*ch) && !apr_isdigit(*ch) && !strchr("-.!%*_+`'~", *ch))
            return apr_pstrcat(cmd->pool, "SipExplodeMethods: ", arg,
                               " is not an upper-case SIP method token", NULL);
    for (i = 0; refused[i]; i++)
        if (!strcmp(arg, refused[i]))
            return apr_pstrcat(cmd->pool, "SipExplodeMethods: ", arg, " cannot be exploded "
                               "(it needs a dialog, or would recurse)", NULL);
    if (!c->explode_methods)
        c->explode_methods = apr_array_make(cmd->pool, 2, sizeof(const char *));
    *(const char **)apr_array_push(c->explode_methods) = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

static const char *set_explode_response(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (strcmp(arg, "200") && strcmp(arg, "202"))
        return "SipExplodeResponse needs 200 (the EXPLODE draft) or 202 (RFC 5365 style)";
    sip_get_conf(cmd->server)->explode_response = atoi(arg);
    return NULL;
}

static const char *set_explode_consent_local(cmd_parms *cmd, void *d, int on)
{
    (void)d;
    sip_get_conf(cmd->server)->explode_consent_local = on;
    return NULL;
}

/* Read at configuration time, so that apache2 -t names a bad line
 * (file:line) and a graceful restart reads it again. */
static const char *set_explode_consent_file(cmd_parms *cmd, void *d, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);
    const char *path = ap_server_root_relative(cmd->pool, arg), *why = NULL;
    sip_consent_t *consent;

    (void)d;
    if (!path)
        return apr_pstrcat(cmd->pool, "SipExplodeConsentFile: invalid path ", arg, NULL);
    consent = sip_consent_load(cmd->pool, path, &why);
    if (!consent)
        return apr_pstrcat(cmd->pool, "SipExplodeConsentFile: ", why ? why : path, NULL);
    c->explode_consent_file = path;
    c->explode_consent = consent;
    return NULL;
}

/* ---- call handling rules (issue 15; sip_rules.h, docs/routing.md) ---- */

static int rules_used;      /* some SipRule or SipRuleFile in this configuration */

int sip_rules_used(void)
{
    return rules_used;
}

/* the section's own list, in the configuration pool, in the order written */
static apr_array_header_t *dir_rules(cmd_parms *cmd, sip_dir_conf *d)
{
    if (!d->rules)
        d->rules = apr_array_make(cmd->pool, 4, sizeof(const sip_rule_t *));
    rules_used = 1;
    return d->rules;
}

/* httpd adds the file and line of the directive (apachectl -t) */
static const char *set_rule(cmd_parms *cmd, void *dv, const char *args)
{
    const char *err;
    const sip_rule_t *r = sip_rule_parse_at(cmd->pool, args,
                                            apr_psprintf(cmd->pool, "%s:%d",
                                                         cmd->directive->filename,
                                                         cmd->directive->line_num), &err);

    if (!r)
        return apr_pstrcat(cmd->pool, "SipRule: ", err, NULL);
    *(const sip_rule_t **)apr_array_push(dir_rules(cmd, dv)) = r;
    return NULL;
}

/* read now: a bad line is refused with its file and line, and a graceful
 * restart reads the file again */
static const char *set_rule_file(cmd_parms *cmd, void *dv, const char *arg)
{
    const char *path = ap_server_root_relative(cmd->pool, arg), *err;

    if (!path)
        return apr_pstrcat(cmd->pool, "SipRuleFile: invalid path ", arg, NULL);
    if (sip_rule_file_read(cmd->pool, path, dir_rules(cmd, dv), &err))
        return apr_pstrcat(cmd->pool, "SipRuleFile: ", err, NULL);
    return NULL;
}

/* SipNameMap, SipNameMapMultiple, SipNameMapCacheTTL (sip_namemap.c reads
 * them; a SipNameMap file is read now: apachectl -t names a bad line) */
static const char *set_namemap(cmd_parms *cmd, void *d, const char *a1, const char *a2)
{
    (void)d;
    return sip_namemap_directive(cmd->pool, cmd->server, sip_get_conf(cmd->server),
                                 cmd->cmd->name, a1, a2, ap_server_root);
}

static const char *set_namemap1(cmd_parms *cmd, void *d, const char *arg)
{
    return set_namemap(cmd, d, arg, NULL);
}

/* ---- lists and forwarding files (sip_lists.h, sip_forward.h) ---- */

static const char *conf_where(cmd_parms *cmd)
{
    return apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename, cmd->directive->line_num);
}

static const char *add_list(cmd_parms *cmd, void *d, int argc, char *const argv[])
{
    const char *why;

    (void)d;
    if (argc < 2)
        return "SipList needs a name and at least one member";
    why = sip_lists_add(cmd->pool, &sip_get_conf(cmd->server)->lists, argv[0], argc - 1,
                        (const char *const *)argv + 1, conf_where(cmd));
    return why ? apr_pstrcat(cmd->pool, "SipList: ", why, NULL) : NULL;
}

static const char *set_list_file(cmd_parms *cmd, void *d, const char *arg)
{
    const char *path = ap_server_root_relative(cmd->pool, arg), *why;

    (void)d;
    if (!path)
        return apr_pstrcat(cmd->pool, "SipListFile: invalid path ", arg, NULL);
    why = sip_lists_load(cmd->pool, &sip_get_conf(cmd->server)->lists, path);
    return why ? apr_pstrcat(cmd->pool, "SipListFile: ", why, NULL) : NULL;
}

static const char *set_list_mode(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (!strcasecmp(arg, "redirect"))
        sip_get_conf(cmd->server)->list_mode = SIP_LIST_MODE_REDIRECT;
    else if (!strcasecmp(arg, "proxy"))
        sip_get_conf(cmd->server)->list_mode = SIP_LIST_MODE_PROXY;
    else
        return "SipListMode must be redirect or proxy";
    return NULL;
}

static const char *set_list_max_members(cmd_parms *cmd, void *d, const char *arg)
{
    char *end;
    long n = strtol(arg, &end, 10);

    (void)d;
    if (!apr_isdigit(*arg) || *end || n < 1 || n > 100000)
        return "SipListMaxMembers needs a number from 1 to 100000";
    sip_get_conf(cmd->server)->list_max_members = (int)n;
    return NULL;
}

static const char *set_forward_file(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    if (strncmp(arg, "~/", 2) && arg[0] != '/')
        return "SipForwardFile needs ~/name or an absolute path (with %u for the user)";
    if (arg[0] == '/' && !strstr(arg, "%u"))
        return "SipForwardFile: an absolute path needs %u (one file per user)";
    if (!strncmp(arg, "~/", 2)
        && (!arg[2] || arg[strlen(arg) - 1] == '/' || strstr(arg, "/..") || strstr(arg, "%u")))
        return "SipForwardFile: ~/ names a file in the user's home directory";
    sip_get_conf(cmd->server)->forward_file = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

/* SipForwardMinUid (sip_forward.c parses it) */
/* FastCGI workers (issue 18): parsing in sip_fcgi_pool.c */
static const char *set_fcgi_connect(cmd_parms *cmd, void *d, int argc, char *const argv[])
{
    return sip_fcgi_cmd_connect(cmd, argc, argv);
}

static const char *set_fcgi_pool(cmd_parms *cmd, void *d, int argc, char *const argv[])
{
    return sip_fcgi_cmd_pool(cmd, argc, argv);
}

static const char *set_fcgi_max_requests(cmd_parms *cmd, void *d, const char *arg)
{
    return sip_fcgi_cmd_max_requests(cmd, arg);
}

static const char *set_fcgi_idle(cmd_parms *cmd, void *d, const char *arg)
{
    return sip_fcgi_cmd_idle(cmd, arg);
}

static const char *set_fcgi_queue(cmd_parms *cmd, void *d, const char *arg)
{
    return sip_fcgi_cmd_queue(cmd, arg);
}

static const char *set_nat_routing(cmd_parms *cmd, void *d, const char *arg)
{
    return sip_registrar_cmd_nat(cmd, arg);
}

static const char *set_flow_timer(cmd_parms *cmd, void *d, const char *arg)
{
    return sip_registrar_cmd_flow_timer(cmd, arg);
}

static const char *set_path_unsupported(cmd_parms *cmd, void *d, const char *arg)
{
    return sip_registrar_cmd_path(cmd, arg);
}

/* SipDNSServer, SipDNSTimeout, SipDNSTries, SipDNSCacheSize (sip_dns.c) */
static const char *set_dns(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    sip_server_conf *c = sip_get_conf(cmd->server);

    (void)d;
    if (err)
        return err;
    return sip_dns_directive(cmd->pool, cmd->cmd->name, arg, &c->dns_servers, &c->dns_timeout,
                             &c->dns_tries, &c->dns_cache_size);
}

/* SipLocationBatch, SipLocationNotify, SipLocationCacheTTL (sip_location_dbd.c) */
static const char *set_location_dbd(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    sip_server_conf *c = sip_get_conf(cmd->server);

    (void)d;
    return err ? err : sip_location_dbd_directive(cmd->cmd->name, arg, &c->loc_batch,
                                                  &c->loc_notify, &c->loc_cache_ttl_ms);
}

/* SipTimerT1 (sip_transaction.c) */
static const char *set_timer_t1(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    return err ? err : sip_txn_parse_t1(arg, &sip_get_conf(cmd->server)->timer_t1);
}

/* SipEngines (sip_engine.c) */
static const char *set_engines(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)d;
    return err ? err : sip_engine_parse_count(arg, &sip_get_conf(cmd->server)->engines);
}

static const char *set_forward_min_uid(cmd_parms *cmd, void *d, const char *arg)
{
    (void)d;
    return sip_forward_min_uid_parse(arg, &sip_get_conf(cmd->server)->forward_min_uid);
}

/* SipListMaxMembers may come after the lists it bounds: checked once the
 * whole configuration is read and merged (apachectl -t runs this too). */
static int check_lists(apr_pool_t *p, server_rec *main_s)
{
    server_rec *s;

    for (s = main_s; s; s = s->next) {
        const sip_server_conf *c = sip_get_conf(s);
        const char *why = sip_lists_check(p, c->lists, c->list_max_members >= 0
                                                       ? c->list_max_members
                                                       : SIP_DEFAULT_LIST_MAX_MEMBERS);
        if (why) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_sip: %s", why);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

static int auth_used;    /* some SipAuth On in this configuration */
static int dbd_provider_used;   /* some SipAuthProvider dbd */

int sip_auth_enabled(void)
{
    return auth_used;
}

static const char *set_auth(cmd_parms *cmd, void *dv, int on)
{
    (void)cmd;
    ((sip_dir_conf *)dv)->auth = on;
    auth_used |= on;
    return NULL;
}

/* Checked here, as AuthDigestProvider does: providers register when their
 * module is loaded, so LoadModule has to come first. */
static const char *add_auth_provider(cmd_parms *cmd, void *dv, const char *name)
{
    sip_dir_conf *d = dv;
    const authn_provider *prov = ap_lookup_provider(AUTHN_PROVIDER_GROUP, name,
                                                    AUTHN_PROVIDER_VERSION);

    if (!prov)
        return apr_psprintf(cmd->pool, "SipAuthProvider: authn provider '%s' is not loaded "
                            "(LoadModule its module, e.g. mod_authn_%s, before this line)",
                            name, name);
    if (!prov->get_realm_hash)
        return apr_psprintf(cmd->pool, "SipAuthProvider: authn provider '%s' has no realm "
                            "hashes, so it cannot serve digest authentication", name);
    if (!strcmp(name, "dbd"))
        dbd_provider_used = 1;
    if (!d->providers)
        d->providers = apr_array_make(cmd->pool, 2, sizeof(const char *));
    *(const char **)apr_array_push(d->providers) = name;
    return NULL;
}

/* Bodies are read when the configuration is, so an error answer costs no
 * file I/O; they go out over UDP too, so they must stay small. */
#define SIP_ERROR_DOC_MAX 8192

static const char *set_error_document(cmd_parms *cmd, void *dv, const char *code,
                                      const char *what)
{
    sip_dir_conf *d = dv;
    sip_error_doc *doc = apr_pcalloc(cmd->pool, sizeof(*doc));
    char *end;
    long status = strtol(code, &end, 10);
    int *key;

    if (*end || status < 400 || status > 699)
        return "SipErrorDocument: the status must be a SIP error code, 400 to 699";
    if (strcasecmp(what, "default") == 0)
        ;   /* no body, overriding an inherited one */
    else if (what[0] == '/' && !ap_strchr_c(what, ' ')) {
        const char *path = ap_server_root_relative(cmd->pool, what);
        apr_finfo_t fi;
        apr_file_t *f;
        char *buf;
        const char *ext = strrchr(path, '.');

        if (apr_stat(&fi, path, APR_FINFO_SIZE | APR_FINFO_TYPE, cmd->temp_pool) != APR_SUCCESS
            || fi.filetype != APR_REG)
            return apr_pstrcat(cmd->pool, "SipErrorDocument: cannot read ", path, NULL);
        if (fi.size > SIP_ERROR_DOC_MAX)
            return apr_psprintf(cmd->pool, "SipErrorDocument: %s is larger than %d bytes",
                                path, SIP_ERROR_DOC_MAX);
        buf = apr_palloc(cmd->pool, (apr_size_t)fi.size + 1);
        if (apr_file_open(&f, path, APR_FOPEN_READ, 0, cmd->temp_pool) != APR_SUCCESS
            || apr_file_read_full(f, buf, (apr_size_t)fi.size, &doc->len) != APR_SUCCESS)
            return apr_pstrcat(cmd->pool, "SipErrorDocument: cannot read ", path, NULL);
        apr_file_close(f);
        buf[doc->len] = '\0';
        doc->body = buf;
        doc->content_type = ext && (!strcasecmp(ext, ".html") || !strcasecmp(ext, ".htm"))
                            ? "text/html" : "text/plain";
    }
    else {
        doc->body = what;
        doc->len = strlen(what);
        doc->content_type = "text/plain";
        if (doc->len > SIP_ERROR_DOC_MAX)
            return "SipErrorDocument: message too long";
    }
    if (!d->error_docs)
        d->error_docs = apr_hash_make(cmd->pool);
    key = apr_palloc(cmd->pool, sizeof(*key));
    *key = (int)status;
    apr_hash_set(d->error_docs, key, sizeof(*key), doc);
    return NULL;
}

static const char *set_websocket(cmd_parms *cmd, void *dconf, int on)
{
    (void)cmd;
    ((sip_dir_conf *)dconf)->websocket = on;
    return NULL;
}

static const command_rec sip_cmds[] = {
    AP_INIT_FLAG("ProtocolSip", set_protocol, NULL, RSRC_CONF,
                 "Whether this virtual host speaks SIP (UDP and TCP)"),
    AP_INIT_TAKE1("SipDirectory", set_directory, NULL, RSRC_CONF,
                  "Directory holding the SIP-CGI scripts"),
    AP_INIT_TAKE1("SipDefaultScript", set_default_script, NULL, RSRC_CONF,
                  "Script run when no user@host script exists (default default.cgi)"),
    AP_INIT_TAKE1("SipCplDefaultScript", set_cpl_default_script, NULL, RSRC_CONF,
                  "CPL script in SipDirectory run for users without a script of their own "
                  "(default default.cpl; none = off)"),
    AP_INIT_TAKE1("SipCplMail", set_cpl_mail, NULL, RSRC_CONF,
                  "Off (default), or the command line (sendmail-style, absolute path) that "
                  "sends the mail of CPL <mail> actions"),
    AP_INIT_TAKE1("SipScriptTimeout", set_script_timeout, NULL, RSRC_CONF,
                  "Seconds a script may run before it is killed (default 30)"),
    AP_INIT_TAKE1("SipScriptMaxOutput", set_max_output, NULL, RSRC_CONF,
                  "Bytes a script may write before it is killed (default 1048576)"),
    AP_INIT_TAKE1("SipLimitRequestBody", set_max_body, NULL, RSRC_CONF,
                  "Largest SIP message body accepted (default 65536)"),
    AP_INIT_TAKE1("SipTcpIdleTimeout", set_tcp_idle, NULL, RSRC_CONF,
                  "Seconds an idle SIP TCP connection stays open (default 600)"),
    AP_INIT_TAKE1("SipMaxScripts", set_max_scripts, NULL, RSRC_CONF,
                  "Scripts that may run at once before requests get 503 (default 64)"),
    AP_INIT_TAKE1("SipMode", set_mode, NULL, RSRC_CONF | ACCESS_CONF,
                  "How requests for registered users are routed: proxy (default) or redirect"),
    AP_INIT_TAKE1("SipMinExpires", set_expires, (void *)1, RSRC_CONF,
                  "Shortest registration accepted, in seconds (default 60; shorter gets 423)"),
    AP_INIT_TAKE1("SipMaxExpires", set_expires, (void *)2, RSRC_CONF,
                  "Longest registration granted, in seconds (default 86400)"),
    AP_INIT_TAKE1("SipDefaultExpires", set_expires, (void *)3, RSRC_CONF,
                  "Registration time when the REGISTER names none (default 3600)"),
    AP_INIT_TAKE1("SipLocationFile", set_location_file, NULL, RSRC_CONF,
                  "Journal keeping registrations across restarts (default: in the runtime "
                  "directory; none = memory only)"),
    AP_INIT_TAKE1("SipLocation", set_location, NULL, RSRC_CONF,
                  "Where registrations live: memory (with SipLocationFile, default) or dbd "
                  "(the mod_dbd database of the main server, shareable by several servers)"),
    AP_INIT_FLAG("SipAuth", set_auth, NULL, RSRC_CONF | ACCESS_CONF,
                 "SIP digest authentication for requests to this vhost or <Location>"),
    AP_INIT_ITERATE("SipAuthProvider", add_auth_provider, NULL, RSRC_CONF | ACCESS_CONF,
                    "authn providers giving password hashes (default: file)"),
    AP_INIT_TAKE2("SipErrorDocument", set_error_document, NULL, RSRC_CONF | ACCESS_CONF,
                  "Body of the server's own error answers with this status: \"text\", "
                  "a file (.html: text/html, else text/plain) or default"),
    AP_INIT_TAKE1("SipNonceLifetime", set_nonce_lifetime, NULL, RSRC_CONF,
                  "Seconds a digest nonce stays valid before stale=true (default 300)"),
    AP_INIT_TAKE1("SipNonceCounts", set_nonce_counts, NULL, RSRC_CONF,
                  "Nonces whose highest nonce-count all engines remember at once "
                  "(default 262144, 16 to 16777216)"),
    /* registrar limits (docs/security.md) */
    AP_INIT_TAKE1("SipMaxContacts", set_max_contacts, NULL, RSRC_CONF,
                  "Bindings one address-of-record may have; a REGISTER adding more gets 403 "
                  "(default 10, 0 = no limit)"),
    AP_INIT_TAKE1("SipMaxBindings", set_max_bindings, NULL, RSRC_CONF,
                  "Bindings the memory store keeps in all; beyond, REGISTER gets 503 "
                  "(default 100000, 0 = no limit)"),
    AP_INIT_TAKE1("SipMaxBranches", set_max_branches, NULL, RSRC_CONF,
                  "Registered contacts a request is forked to, best q first (default 16)"),
    AP_INIT_FLAG("SipRecordRoute", set_record_route, NULL, RSRC_CONF,
                 "Whether proxied requests get a Record-Route (default On)"),
    AP_INIT_TAKE1("SipRouteSecret", set_route_secret, NULL, RSRC_CONF,
                  "Key of the hash in this server's Record-Route values (default: random, "
                  "kept across graceful restarts); the same on servers that share dialogs"),
    AP_INIT_TAKE1("SipProxyOutside", set_proxy_outside, NULL, RSRC_CONF,
                  "Who may have requests forwarded to other domains: On (anyone), Off "
                  "(nobody) or Authenticated (digest users; default)"),
    AP_INIT_ITERATE("SipProxyMethods", add_proxy_method, NULL, RSRC_CONF,
                    "Methods forwarded besides those registered for SIP (default none)"),
    AP_INIT_TAKE1("SipAuthQop", set_auth_qop, NULL, RSRC_CONF,
                  "Whether digest credentials must use qop=auth: required (default) or "
                  "optional (RFC 2069 clients)"),
    AP_INIT_TAKE1("SipProxyTimerC", set_timer_c, NULL, RSRC_CONF,
                  "Seconds an INVITE branch may ring before it is cancelled (default 181)"),
    AP_INIT_TAKE1("SipTcpMessageTimeout", set_tcp_msg_timeout, NULL, RSRC_CONF,
                  "Seconds a SIP message begun on a TCP connection has to arrive whole "
                  "(default 10)"),
    AP_INIT_TAKE1("SipTcpMaxConnections", set_conn_count, (void *)1, RSRC_CONF,
                  "SIP TCP connections the engine keeps; beyond, the longest idle one is "
                  "closed (default auto: from the descriptor limit)"),
    AP_INIT_TAKE1("SipTcpMaxConnectionsPerIP", set_conn_count, (void *)2, RSRC_CONF,
                  "SIP TCP connections accepted from one address (IPv6: one /64) "
                  "(default 256; 0: no limit)"),
    AP_INIT_TAKE12("SipLogRateLimit", set_log_rate, NULL, RSRC_CONF,
                   "Log lines a remote sender can cause, per source and kind: lines "
                   "[seconds] (default 10 60; 0: no limit)"),
    /* uploaded scripts (draft-lennox-sip-reg-payload; docs/register-payload.md) */
    AP_INIT_FLAG("SipScriptUpload", set_script_upload, NULL, RSRC_CONF | ACCESS_CONF,
                 "Whether authenticated users may upload, fetch and remove their scripts in "
                 "REGISTER bodies (default Off)"),
    AP_INIT_TAKE1("SipScriptUploadMaxSize", set_upload_bytes, NULL, RSRC_CONF,
                  "Largest uploaded script in bytes; beyond, 413 (default 65536)"),
    AP_INIT_TAKE1("SipScriptUploadMaxTotal", set_upload_bytes, (void *)1, RSRC_CONF,
                  "Bytes of all of one user's scripts; beyond, 413 (default 262144)"),
    AP_INIT_FLAG("SipScriptUploadIntegrity", set_upload_integrity, NULL, RSRC_CONF,
                 "Whether uploads need integrity protection: digest qop=auth-int, or TLS "
                 "(default Off)"),
    AP_INIT_TAKE1("SipScriptStore", set_upload_string, (void *)"store", RSRC_CONF,
                  "Directory of uploaded scripts with the memory location store (default "
                  SIP_STATE_DIR "/scripts)"),
    AP_INIT_TAKE1("SipUploadUser", set_upload_string, (void *)"user", RSRC_CONF,
                  "Unprivileged user uploaded SIP-CGI scripts run as (default none: no "
                  "SIP-CGI upload)"),
    AP_INIT_TAKE1("SipUploadWorkDir", set_upload_string, (void *)"workdir", RSRC_CONF,
                  "Directory holding a working directory per user for uploaded scripts "
                  "(default " SIP_STATE_DIR "/work)"),
    AP_INIT_TAKE1("SipUploadSuexec", set_upload_string, (void *)"suexec", RSRC_CONF,
                  "The setuid helper that starts uploaded scripts as SipUploadUser (default "
                  SIP_SUEXEC_PATH ")"),
    AP_INIT_ITERATE("SipUploadInterpreters", add_upload_interpreter, NULL, RSRC_CONF,
                    "Programs an uploaded script's #! line may name (default /usr/bin/perl "
                    "/usr/bin/python3 /bin/sh /usr/bin/sh)"),
    AP_INIT_FLAG("SipUploadSandbox", set_upload_sandbox, NULL, RSRC_CONF,
                 "Whether uploaded scripts run in a bubblewrap sandbox (default On)"),
    /* running uploaded scripts (issue 12 item 6) */
    AP_INIT_TAKE1("SipUploadTmpSize", set_upload_tmp_size, NULL, RSRC_CONF,
                  "Bytes an uploaded script may store in its sandbox's /tmp (default 16777216)"),
    /* URI-list services (EXPLODE, RFC 5365; docs/explode.md) */
    AP_INIT_FLAG("SipExplode", set_explode, NULL, RSRC_CONF | ACCESS_CONF,
                 "Whether authenticated users may have EXPLODE and recipient-list MESSAGE "
                 "requests for these addresses fanned out to a list (default Off)"),
    AP_INIT_TAKE1("SipExplodeMaxTargets", set_explode_count, NULL, RSRC_CONF,
                  "Entries a URI list may have; beyond, 403 and nothing is sent (default 100)"),
    AP_INIT_TAKE1("SipExplodeRate", set_explode_count, (void *)1, RSRC_CONF,
                  "Explosions one user may start per minute; beyond, 403 (default 10, "
                  "0 = no limit)"),
    AP_INIT_ITERATE("SipExplodeMethods", add_explode_method, NULL, RSRC_CONF,
                    "Methods an EXPLODE template may have (default MESSAGE)"),
    AP_INIT_TAKE1("SipExplodeResponse", set_explode_response, NULL, RSRC_CONF,
                  "Status of an accepted EXPLODE: 200 (default) or 202"),
    AP_INIT_FLAG("SipExplodeConsentLocal", set_explode_consent_local, NULL, RSRC_CONF,
                 "Whether users of this server's own domains accept fanned-out requests from "
                 "its authenticated users without a consent rule (default Off)"),
    AP_INIT_TAKE1("SipExplodeConsentFile", set_explode_consent_file, NULL, RSRC_CONF,
                  "File of consent rules: which targets accept fanned-out requests from "
                  "whom (RFC 5360; default: none, so nobody does)"),
    /* call handling rules (issue 15, sip_rules.h) */
    AP_INIT_RAW_ARGS("SipRule", set_rule, NULL, RSRC_CONF | ACCESS_CONF,
                     "A call handling rule: log, respond, proxy, authenticate, script or record "
                     "(in the vhost, <Location \"/user@host\">, <If>)"),
    AP_INIT_TAKE1("SipRuleFile", set_rule_file, NULL, RSRC_CONF | ACCESS_CONF,
                  "A table of rules, one 'Header Method glob action [args]' a line"),
    /* name mapping (issue 15 item 2; sip_namemap.h) */
    AP_INIT_TAKE2("SipNameMap", set_namemap, NULL, RSRC_CONF,
                  "Map dialled names to users: file <path>, dbm [type:]<path>, "
                  "dbd <SQL with one %s> or program <command line>"),
    AP_INIT_TAKE1("SipNameMapMultiple", set_namemap1, NULL, RSRC_CONF,
                  "Several users answer to a dialled name: 300 (a Contact each; default) "
                  "or 404"),
    AP_INIT_TAKE1("SipNameMapCacheTTL", set_namemap1, NULL, RSRC_CONF,
                  "Seconds a SipNameMap program's answer is kept (default 300, 0: not kept)"),
    /* lists and per-user forwarding files (issue 15 items 3, 4) */
    AP_INIT_TAKE_ARGV("SipList", add_list, NULL, RSRC_CONF,
                      "A list: its name (user or user@host) and its members (SIP URIs or users)"),
    AP_INIT_TAKE1("SipListFile", set_list_file, NULL, RSRC_CONF,
                  "File of lists, one \"name member ...\" per line"),
    AP_INIT_TAKE1("SipListMode", set_list_mode, NULL, RSRC_CONF,
                  "What a request to a list gets: redirect (300, default) or proxy (to all)"),
    AP_INIT_TAKE1("SipListMaxMembers", set_list_max_members, NULL, RSRC_CONF,
                  "Most members a list may have (default 100)"),
    AP_INIT_TAKE1("SipForwardFile", set_forward_file, NULL, RSRC_CONF,
                  "Per-user forwarding file: ~/.sipforward or a path with %u"),
    /* forwarding files' |program run as the file's owner (issue 15 item 4) */
    AP_INIT_TAKE1("SipForwardMinUid", set_forward_min_uid, NULL, RSRC_CONF,
                  "Lowest uid a forwarding file's |program runs as (default 1000; never 0)"),
    /* SIP over WebSocket (RFC 7118; sip_ws_upgrade.c, docs/websocket.md) */
    AP_INIT_FLAG("SipWebSocket", set_websocket, NULL, RSRC_CONF | ACCESS_CONF,
                 "On: WebSocket upgrades with the \"sip\" subprotocol here carry SIP"),
    /* FastCGI workers for SIP-CGI scripts (issue 18; sip_fcgi.h) */
    AP_INIT_TAKE_ARGV("SipFastCGIConnect", set_fcgi_connect, NULL, RSRC_CONF,
                      "[script-name-pattern] unix:/path|tcp:host:port [connections]: run the "
                      "matching SIP-CGI scripts on this FastCGI server"),
    AP_INIT_TAKE_ARGV("SipFastCGI", set_fcgi_pool, NULL, RSRC_CONF,
                      "/path/to/script [min [max]]: run this SIP-CGI script as resident "
                      "FastCGI workers the engine starts"),
    AP_INIT_TAKE1("SipFastCGIMaxRequests", set_fcgi_max_requests, NULL, RSRC_CONF,
                  "Requests a SipFastCGI worker serves before it is replaced (0: no limit)"),
    AP_INIT_TAKE1("SipFastCGIIdleTimeout", set_fcgi_idle, NULL, RSRC_CONF,
                  "Seconds an idle SipFastCGI worker above min lives (0: forever)"),
    AP_INIT_TAKE1("SipFastCGIQueue", set_fcgi_queue, NULL, RSRC_CONF,
                  "Requests that may wait for a busy pool before 503 (default 32)"),
    /* NAT, RFC 5626 outbound, Path (issue 17; sip_registrar.c) */
    AP_INIT_TAKE1("SipNatRouting", set_nat_routing, NULL, RSRC_CONF,
                  "Registrations behind NAT reached at their source: auto (default), always, off"),
    AP_INIT_TAKE1("SipFlowTimer", set_flow_timer, NULL, RSRC_CONF,
                  "Flow-Timer seconds in a 2xx to an outbound REGISTER, or Off (default auto)"),
    AP_INIT_TAKE1("SipPathUnsupported", set_path_unsupported, NULL, RSRC_CONF,
                  "A REGISTER with Path from a UA without Supported: path: refuse (default) "
                  "or accept"),
    /* DNS: the engine's asynchronous resolver (issue 17; sip_dns.c, docs/dns.md) */
    AP_INIT_TAKE1("SipDNSServer", set_dns, NULL, RSRC_CONF,
                  "DNS servers the engine asks: ip[:port][,ip[:port]...] (default: "
                  "/etc/resolv.conf)"),
    AP_INIT_TAKE1("SipDNSTimeout", set_dns, NULL, RSRC_CONF,
                  "Seconds (or NNNms) to wait for a DNS server on each try (default 2)"),
    AP_INIT_TAKE1("SipDNSTries", set_dns, NULL, RSRC_CONF,
                  "Times each DNS server is tried for one query (default 2)"),
    AP_INIT_TAKE1("SipDNSCacheSize", set_dns, NULL, RSRC_CONF,
                  "Most DNS answers kept (by TTL) in the engine's cache (default 4096, 0: none)"),
    /* proxy DNS failover (issue 17; sip_proxy.c, sip_transaction.c) */
    AP_INIT_TAKE1("SipTimerT1", set_timer_t1, NULL, RSRC_CONF,
                  "RFC 3261 T1 in milliseconds (default 500); timers B and F are 64*T1"),
    /* several engines (issue 19; sip_engine.c, docs/architecture.md) */
    AP_INIT_TAKE1("SipEngines", set_engines, NULL, RSRC_CONF,
                  "SIP engine processes (default: the number of online cores; 1 to 32)"),
    /* the mod_dbd location store (issue 19; sip_location_dbd.c, docs/directives.md) */
    AP_INIT_TAKE1("SipLocationBatch", set_location_dbd, NULL, RSRC_CONF,
                  "SipLocation dbd: most changes committed in one transaction (default 256)"),
    AP_INIT_TAKE1("SipLocationNotify", set_location_dbd, NULL, RSRC_CONF,
                  "SipLocation dbd on PostgreSQL: the LISTEN/NOTIFY channel of the site's "
                  "changes (default sip_location), or off"),
    AP_INIT_TAKE1("SipLocationCacheTTL", set_location_dbd, NULL, RSRC_CONF,
                  "SipLocation dbd without notes (SQLite, SipLocationNotify off): seconds (or "
                  "NNNms) a cached AoR is trusted (default 0: no cache)"),
    /* journal compaction (sip_location.c, docs/directives.md) */
    AP_INIT_TAKE1("SipLocationCompact", set_location_compact, NULL, RSRC_CONF,
                  "Journal lines (and four times the bindings) past which the location "
                  "journal is rewritten (default 10000)"),
    {NULL}
};

/* ---- hooks ---- */

/* UDP sockets live in the process pool: opened once, as root, and kept
 * across graceful restarts so that no datagram is refused meanwhile.  One
 * per engine (SipEngines), in a SO_REUSEPORT group when several; a
 * changed SipEngines opens a new group (a socket no engine reads would
 * keep its share of the datagrams). */
typedef struct udp_group {
    int n;
    apr_socket_t *socks[SIP_ENGINES_MAX];
} udp_group_t;

static apr_socket_t *const *udp_sockets_for(server_rec *s, apr_sockaddr_t *sa, int n,
                                            apr_pool_t *ptemp)
{
    apr_pool_t *pp = s->process->pool;
    char *ip = NULL;
    const char *key;
    udp_group_t *g = NULL;
    apr_status_t rv;
    int i;

    apr_sockaddr_ip_get(&ip, sa);
    key = apr_psprintf(ptemp, "mod_sip_udp:%s:%d", ip, sa->port);
    apr_pool_userdata_get((void **)&g, key, pp);
    if (g && g->n == n)
        return g->socks;
    if (g) {
        for (i = 0; i < g->n; i++)
            apr_socket_close(g->socks[i]);
    }
    else {
        g = apr_pcalloc(pp, sizeof(*g));
        apr_pool_userdata_set(g, apr_pstrdup(pp, key), apr_pool_cleanup_null, pp);
    }
    g->n = 0;
    for (i = 0; i < n; i++) {
        rv = sip_udp_open_shared(&g->socks[i], sa, pp, n > 1);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "mod_sip: cannot bind UDP %s:%d", ip,
                         sa->port);
            return NULL;
        }
        g->n = i + 1;
    }
    return g->socks;
}

/* httpd's default AcceptFilter (TCP_DEFER_ACCEPT) keeps a SIP connection
 * that has not spoken yet out of our sight, and so out of our idle timer. */
static void disable_accept_filters(server_rec *main_server)
{
    ap_listen_rec *lr;

    for (lr = ap_listeners; lr; lr = lr->next) {
        server_rec *s;
        for (s = main_server; s; s = s->next) {
            server_addr_rec *a;
            if (sip_get_conf(s)->enabled != 1)
                continue;
            for (a = s->addrs; a; a = a->next) {
                apr_os_sock_t fd;
                int off = 0;
                if (a->host_port != lr->bind_addr->port
                    || apr_os_sock_get(&fd, lr->sd) != APR_SUCCESS)
                    continue;
                setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &off, sizeof(off));
            }
        }
    }
}

/* The journal is opened here, as root, and inherited by the engine, which
 * no longer could open it after giving up privileges. */
static apr_status_t open_location_journal(apr_pool_t *pconf, server_rec *s)
{
    const char *path = location_file ? location_file
                       : ap_runtime_dir_relative(pconf, "sip-location.journal");
    apr_file_t *f;
    apr_os_file_t fd;
    apr_status_t rv;

    if (!path || !*path) {
        sip_engine_set_journal(-1);
        return APR_SUCCESS;
    }
    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_WRITE | APR_FOPEN_CREATE
                       | APR_FOPEN_APPEND, APR_FPROT_UREAD | APR_FPROT_UWRITE, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "mod_sip: cannot open SipLocationFile %s", path);
        return rv;
    }
    apr_os_file_get(&fd, f);
    sip_engine_set_journal(fd);
    return APR_SUCCESS;
}

static int stats_shown;    /* some vhost speaks SIP, and the counters are shared */

static int sip_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                           server_rec *main_server)
{
    server_rec *s;
    apr_hash_t *seen = apr_hash_make(ptemp);
    apr_array_header_t *in_order = apr_array_make(ptemp, 8, sizeof(server_rec *));
    int any = 0, i;

    (void)plog;
    for (s = main_server; s; s = s->next)
        apply_defaults(sip_get_conf(s));
    upload_conf_defaults(pconf);
    /* The first pass at startup only checks the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    upload_prepare(ptemp, main_server);

    /* httpd links vhosts in reverse order of definition; the first one
     * defined on an address is its default, as for HTTP. */
    for (s = main_server; s; s = s->next)
        *(server_rec **)apr_array_push(in_order) = s;
    for (i = in_order->nelts - 1; i >= 0; i--) {
        server_addr_rec *a;

        s = APR_ARRAY_IDX(in_order, i, server_rec *);
        if (sip_get_conf(s)->enabled != 1)
            continue;
        any = 1;
        for (a = s->addrs; a; a = a->next) {
            apr_sockaddr_t *sa;
            for (sa = a->host_addr; sa; sa = sa->next) {
                char *ip = NULL;
                const char *key;
                apr_sockaddr_t *bind_sa;
                apr_socket_t *const *socks;
                apr_port_t port = a->host_port ? a->host_port : sa->port;

                if (!port) {
                    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                                 "mod_sip: virtual host without a port gets no UDP socket");
                    continue;
                }
                apr_sockaddr_ip_get(&ip, sa);
                key = apr_psprintf(ptemp, "%s:%d", ip, port);
                if (apr_hash_get(seen, key, APR_HASH_KEY_STRING)) {
                    /* the first vhost on an address serves it; the others
                     * are chosen by Request-URI host (name-based) */
                    sip_engine_add_named(pconf, apr_hash_get(seen, key, APR_HASH_KEY_STRING), s);
                    continue;
                }
                apr_hash_set(seen, key, APR_HASH_KEY_STRING, s);
                if (apr_sockaddr_info_get(&bind_sa, ip, sa->family, port, 0, ptemp) != APR_SUCCESS)
                    continue;
                socks = udp_sockets_for(s, bind_sa, sip_get_conf(main_server)->engines,
                                        ptemp);
                if (!socks)
                    return HTTP_INTERNAL_SERVER_ERROR;
                sip_engine_add_udp(pconf, socks, s);
            }
        }
    }
    if (!any)
        return OK;
    if (init_route_secret(main_server) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, main_server,
                     "mod_sip: no random bytes for the Record-Route secret");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (init_nonce_secret(main_server) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, main_server,
                     "mod_sip: no random bytes for the digest nonce secret");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* In the process pool, like the UDP sockets: totals outlive graceful
     * restarts, and the engine and MPM children inherit the mapping. */
    if (sip_stats_attach(main_server->process->pool) == APR_SUCCESS)
        stats_shown = 1;
    else
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, main_server,
                     "mod_sip: no shared memory for the server-status counters");
    disable_accept_filters(main_server);
    if (location_dbd) {
        if (!APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open)) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, main_server,
                         "mod_sip: SipLocation dbd needs mod_dbd (LoadModule dbd_module)");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        sip_engine_set_dbd(main_server);
    }
    else if (open_location_journal(pconf, main_server) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;
    configure_location(main_server);
    if (sip_engine_start(pconf, main_server) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, main_server, "mod_sip: cannot start the SIP engine");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

/* TCP on a ProtocolSip vhost: pass the socket to the engine, so an idle
 * SIP connection holds no worker thread (cf. mod_echo for the hook). */
static int sip_process_connection(conn_rec *c)
{
    sip_server_conf *conf = sip_get_conf(c->base_server);
    apr_socket_t *csd;
    apr_os_sock_t fd;
    apr_status_t rv;
    sip_handoff_t h;

    if (conf->enabled != 1)
        return DECLINED;
    csd = ap_get_conn_socket(c);
    if (!csd || apr_os_sock_get(&fd, csd) != APR_SUCCESS)
        return DECLINED;
    memset(&h, 0, sizeof(h));
    h.vhost = c->base_server;
    /* TLS: mod_ssl has set up its filters but read nothing, so the
     * engine does the handshake with the vhost's own context. */
    h.kind = ap_ssl_conn_is_ssl(c) ? SIP_TP_TLS : SIP_TP_TCP;
    rv = sip_engine_handoff(fd, &h);
    if (rv != APR_SUCCESS) {
        /* A connection flood can make this fail for every connection: one
         * line per 10 s and process, with the count (threads may race on
         * the time check; at worst two lines). */
        static apr_uint32_t failed;
        static volatile apr_time_t last;
        apr_time_t now = apr_time_now();
        apr_uint32_t n = apr_atomic_inc32(&failed) + 1;

        if (now - last >= apr_time_from_sec(10)) {
            last = now;
            apr_atomic_set32(&failed, 0);
            ap_log_cerror(APLOG_MARK, APLOG_ERR, rv, c,
                          "mod_sip: cannot hand the SIP connection to the engine "
                          "(%u such connections closed in this process since the last "
                          "such line)", n);
        }
    }
    /* The engine has its own descriptor now: close ours without shutdown(). */
    c->aborted = 1;
    return OK;
}

static int conftree_has(const ap_directive_t *d, const char *name)
{
    for (; d; d = d->next)
        if (!strcasecmp(d->directive, name) || conftree_has(d->first_child, name))
            return 1;
    return 0;
}

/* mod_authn_dbd looks mod_dbd up only when it reads one of its queries;
 * without any, its lookup calls a NULL pointer (httpd 2.4): the engine
 * would crash on every authenticated request. */
static int error_docs_used;

int sip_error_docs_used(void)
{
    return error_docs_used;
}

static int sip_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    (void)pconf;
    (void)plog;
    (void)ptemp;
    error_docs_used = conftree_has(ap_conftree, "SipErrorDocument")
                      || conftree_has(ap_conftree, "ErrorDocument");
    sip_request_scan_names(ap_conftree);
    if (dbd_provider_used && !conftree_has(ap_conftree, "AuthDBDUserRealmQuery")) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "mod_sip: SipAuthProvider dbd needs an AuthDBDUserRealmQuery");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return check_lists(ptemp, s);
}

static int sip_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog;
    (void)ptemp;
    location_file = NULL;   /* each (re)read of the configuration starts afresh */
    sip_location_compact_reset();
    upload_conf_reset();
    location_dbd = 0;
    max_bindings = -1;
    auth_used = 0;
    dbd_provider_used = 0;
    explode_used = 0;
    rules_used = 0;
    stats_shown = 0;
    /* a method number for EXPLODE (draft-camarillo-sipping-exploders-solution
     * §3), so that <Limit EXPLODE>, <LimitExcept> and Require see it as
     * they see INVITE; the registry is rebuilt with each configuration */
    ap_method_register(pconf, "EXPLODE");
    return OK;
}

/* mod_status: a mod_sip section on /server-status, "SipName: value" lines
 * on /server-status?auto.  Read in the MPM child from the shared counters. */
static int sip_status_hook(request_rec *r, int flags)
{
    sip_stats_t *sum;
    int f = ((flags & AP_STATUS_SHORT) ? SIP_STATS_AUTO : 0)
            | ((flags & AP_STATUS_NOTABLE) ? SIP_STATS_NOTABLE : 0);

    if (!stats_shown)
        return OK;
    /* Every engine's slot added up, under the names of one engine. */
    sum = apr_palloc(r->pool, sizeof(*sum));
    sip_stats_sum(sum, sip_engine_count());
    ap_rputs(sip_stats_format(r->pool, sum, apr_time_now(), f), r);
    ap_rputs(sip_stats_format_engines(r->pool, sip_engine_count(), apr_time_now(), f), r);
    return OK;
}

static void sip_register_hooks(apr_pool_t *p)
{
    static const char *const after[] = {"mod_reqtimeout.c", NULL};
    /* Before mod_ssl's process_connection, which runs the handshake in
     * the child (blocking): the engine does it with the same context. */
    static const char *const before[] = {"mod_ssl.c", NULL};

    /* Last, because the engine runs every module's child_init, and some
     * (mod_watchdog) only become ready in their own post_config; and
     * after mod_ssl's, which offers its contexts to sip_tls.c. */
    ap_hook_post_config(sip_post_config, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_process_connection(sip_process_connection, after, before, APR_HOOK_MIDDLE);
    sip_tls_register_hooks(p);
    ap_hook_pre_config(sip_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_default_port(sip_request_default_port, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_check_config(sip_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, sip_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
    sip_ws_upgrade_register_hooks(p);
}

AP_DECLARE_MODULE(sip) = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    create_server_conf,
    merge_server_conf,
    sip_cmds,
    sip_register_hooks
};
