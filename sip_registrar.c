#include "sip_registrar.h"
#include "sip_auth.h"
#include "sip_conf.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_proxy.h"
#include "sip_options.h"
#include "sip_register_payload.h"
#include "sip_request.h"
#include "sip_script_store.h"
#include "sip_stats.h"

#include <stdlib.h>
#include <string.h>

#include "apr_strings.h"
#include "apr_lib.h"
#include "util_time.h"

/* Value of header parameter 'name' in ";a=1;b=2" (NULL if absent); the
 * rest, without it, goes to *rest when not NULL. */
static const char *param(apr_pool_t *p, const char *params, const char *name, const char **rest)
{
    const char *found = NULL;
    char *copy = apr_pstrdup(p, params), *s = copy, *keep = apr_pstrdup(p, "");

    while (s && *s) {
        char *next, *eq;
        s += strspn(s, " \t;");
        if (!*s)
            break;
        next = strchr(s, ';');
        if (next)
            *next++ = '\0';
        eq = strchr(s, '=');
        if ((eq ? (apr_size_t)(eq - s) : strlen(s)) == strlen(name)
            && strncasecmp(s, name, strlen(name)) == 0)
            found = eq ? apr_pstrdup(p, eq + 1 + strspn(eq + 1, " \t\"")) : "";
        else
            keep = apr_pstrcat(p, keep, ";", s, NULL);
        s = next;
    }
    if (found) {
        char *f = apr_pstrdup(p, found);
        apr_size_t n = strlen(f);
        while (n && (f[n - 1] == '"' || f[n - 1] == ' '))
            f[--n] = '\0';
        found = f;
    }
    if (rest)
        *rest = keep;
    return found;
}

/* The display-name before the '<' of a Contact, as written ("\"Bob\"",
 * Bob Smith), or NULL. */
static const char *display_name(apr_pool_t *p, const char *v)
{
    const char *lt = strchr(v, '<');
    apr_size_t n;

    if (!lt)
        return NULL;
    v += strspn(v, " \t");
    n = (apr_size_t)(lt - v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n ? apr_pstrmemdup(p, v, n) : NULL;
}

/* Does a header 'name' (Supported, Require) of 'req' list option tag 'tag'? */
static int lists_tag(apr_pool_t *p, const sip_msg_t *req, const char *name, const char *tag)
{
    const apr_array_header_t *hdrs = sip_msg_headers(req);
    int i, j;

    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        apr_array_header_t *tags;
        if (strcasecmp(h->name, name))
            continue;
        tags = apr_array_make(p, 4, sizeof(const char *));
        sip_header_split_list(p, h->value, tags);
        for (j = 0; j < tags->nelts; j++)
            if (!strcasecmp(APR_ARRAY_IDX(tags, j, const char *), tag))
                return 1;
    }
    return 0;
}

/* Every Path value of 'req' in order, comma separated (RFC 3327 §4: one
 * header per proxy or a list), or NULL. */
static const char *path_values(apr_pool_t *p, const sip_msg_t *req)
{
    const apr_array_header_t *hdrs = sip_msg_headers(req);
    const char *out = NULL;
    int i;

    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        if (!strcasecmp(h->name, "Path") && h->value && *h->value)
            out = out ? apr_pstrcat(p, out, ", ", h->value, NULL) : apr_pstrdup(p, h->value);
    }
    return out;
}

/* "ip:port" ("[ip]:port" for IPv6) of where 'src' came from. */
static const char *source_text(apr_pool_t *p, const sip_source_t *src)
{
    const char *ip = sip_sockaddr_ip(p, &src->peer);

    if (!ip)
        return NULL;
    return apr_psprintf(p, strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip,
                        sip_sockaddr_port(&src->peer));
}

static const char *format_binding(apr_pool_t *p, const sip_binding_t *b, apr_time_t now)
{
    apr_time_t left = (b->expires - now) / APR_USEC_PER_SEC;
    const char *q = apr_psprintf(p, "%d.%03d", b->q1000 / 1000, b->q1000 % 1000);

    /* trim "1.000" to "1", "0.500" to "0.5" */
    {
        char *c = apr_pstrdup(p, q), *e = c + strlen(c) - 1;
        while (*e == '0')
            *e-- = '\0';
        if (*e == '.')
            *e = '\0';
        q = c;
    }
    /* RFC 3050 §5.5.1.6: Contact syntax, display-name included */
    return apr_psprintf(p, "%s%s<%s>%s;expires=%" APR_TIME_T_FMT ";q=%s",
                        b->display ? b->display : "", b->display ? " " : "", b->contact,
                        b->params ? b->params : "", left > 0 ? left : 0, q);
}

/* Linux refuses to exec with any one environment string over 128 KB
 * (MAX_ARG_STRLEN): an address-of-record with thousands of bindings (from
 * before SipMaxContacts was lowered) must not stop its scripts from running. */
#define SIP_REGISTRATIONS_MAX 65536

const char *sip_registrar_format(apr_pool_t *p, const apr_array_header_t *bs)
{
    apr_array_header_t *parts;
    apr_time_t now = apr_time_now();
    apr_size_t total = 0;
    int i;

    if (!bs || !bs->nelts)
        return NULL;
    parts = apr_array_make(p, bs->nelts, sizeof(const char *));
    for (i = 0; i < bs->nelts; i++) {
        const char *f = format_binding(p, APR_ARRAY_IDX(bs, i, sip_binding_t *), now);
        total += strlen(f) + 1;
        if (total > SIP_REGISTRATIONS_MAX && i)
            break;      /* the best ones, as many as fit */
        *(const char **)apr_array_push(parts) = f;
    }
    return apr_array_pstrcat(p, parts, ',');
}

static void reply_body(sip_txn_t *txn, int status, const char *reason, const char *const *hdrs,
                       const char *ctype, const char *body, apr_size_t len)
{
    if (status >= 400)
        sip_txn_refuse_body(txn, status, reason, hdrs, ctype, body, len, "registrar");
    else
        sip_txn_reply_body(txn, status, reason, hdrs, ctype, body, len);
}

static void reply(sip_txn_t *txn, int status, const char *reason, const char *const *hdrs)
{
    reply_body(txn, status, reason, hdrs, NULL, NULL, 0);
}

/* The store may answer later (database): the transaction is kept until it
 * does; a CANCEL meanwhile is answered 487 by the engine. */
static int held_cancel(void *tu)
{
    (void)tu;
    return 0;
}

static const sip_txn_tu_ops_t held_ops = {held_cancel, NULL, NULL};

static void hold(sip_txn_t *txn)
{
    sip_txn_attach(txn, &held_ops, txn);
}

/* RFC 3261 §18.1.1: a message over 1300 bytes must not go by UDP, but a
 * response cannot switch transport.  Over UDP the Contact list of a 200 or
 * 302 is cut to fit this (or the size of the request, if that was larger
 * and so evidently got through); a Warning says the list is incomplete. */
#define SIP_UDP_RESPONSE_MAX 1300
#define CUT_WARNING "399 mod_sip \"Contact list cut to fit a UDP datagram; use TCP for all\""

/* Answer with one Contact per binding of 'bs' (in that order, at most
 * 'max' of them), plus 'extra' (name, value, ..., NULL) and a body. */
static void reply_contacts(sip_txn_t *txn, int status, const char *reason,
                           const apr_array_header_t *bs, int max, const char *const *extra,
                           const char *ctype, const char *body, apr_size_t blen)
{
    apr_pool_t *p = sip_txn_pool(txn);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_array_header_t *h = apr_array_make(p, 8, sizeof(const char *));
    apr_array_header_t *vals = apr_array_make(p, 8, sizeof(const char *));
    apr_time_t now = apr_time_now();
    apr_size_t total = 0, budget = 0;
    int i, n = 0, cut = 0;

    for (i = 0; bs && i < bs->nelts && i < max; i++)
        *(const char **)apr_array_push(vals) =
            format_binding(p, APR_ARRAY_IDX(bs, i, sip_binding_t *), now);
    if (sip_txn_source(txn)->kind == SIP_TP_UDP) {
        /* the size without any Contact, counting a Warning in case */
        apr_array_header_t *hw = apr_array_make(p, 8, sizeof(const char *));
        apr_size_t base = 0;
        for (i = 0; extra && extra[i]; i++)
            *(const char **)apr_array_push(hw) = extra[i];
        *(const char **)apr_array_push(hw) = "Warning";
        *(const char **)apr_array_push(hw) = CUT_WARNING;
        *(const char **)apr_array_push(hw) = NULL;
        sip_msg_response_text(p, req, status, reason, sip_txn_to_tag(txn),
                              (const char *const *)hw->elts, ctype, body, blen, &base);
        budget = sip_msg_length(req) > SIP_UDP_RESPONSE_MAX ? sip_msg_length(req)
                 : SIP_UDP_RESPONSE_MAX;
        total = base;
    }
    for (i = 0; i < vals->nelts; i++) {
        const char *v = APR_ARRAY_IDX(vals, i, const char *);
        total += strlen(v) + sizeof("Contact: \r\n") - 1;
        if (budget && total > budget) {
            cut = 1;
            break;
        }
        *(const char **)apr_array_push(h) = "Contact";
        *(const char **)apr_array_push(h) = v;
        n++;
    }
    if (cut || (bs && bs->nelts > max)) {
        *(const char **)apr_array_push(h) = "Warning";
        *(const char **)apr_array_push(h) = cut ? CUT_WARNING
            : "399 mod_sip \"Only the best registered contacts are listed\"";
        server_rec *s = sip_txn_source(txn)->vhost;
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s ? s : ap_server_conf,
                     "sip registrar: %d %s for %s lists %d of %d contacts (%s)", status, reason,
                     sip_msg_aor(p, req), n, bs->nelts,
                     cut ? "UDP response size" : "SipMaxBranches");
    }
    for (; extra && extra[0]; extra += 2) {
        *(const char **)apr_array_push(h) = extra[0];
        *(const char **)apr_array_push(h) = extra[1];
    }
    *(const char **)apr_array_push(h) = NULL;
    reply_body(txn, status, reason, (const char *const *)h->elts, ctype, body, blen);
}

typedef struct reg_job {
    sip_txn_t *txn;
    const sip_reg_change_t *chg;
    int max_contacts;
    sip_regpl_t *pl;            /* the REGISTER's scripts (sip_register_payload.h) */
    const char *require;        /* "outbound" for the 2xx (RFC 5626 §6), or NULL */
    long flow_timer;            /* Flow-Timer with it (§4.4.1), 0 none */
    const char *path;           /* Path echoed in the 2xx (RFC 3327 §5.3), or NULL */
} reg_job_t;

/* The scripts for the 200 (§4.2), unless over UDP they would not fit in
 * the datagram with every Contact: then none, a Warning and a log line
 * (a response cannot move to TCP; the client can ask again over it). */
#define SCRIPTS_CUT_WARNING "399 mod_sip \"Scripts left out to fit a UDP datagram; " \
                            "REGISTER over TCP to fetch them\""

static void scripts_body(reg_job_t *rj, apr_array_header_t *scripts,
                         const apr_array_header_t *bs, apr_array_header_t *extra,
                         const char **ctype, const char **body, apr_size_t *blen)
{
    sip_txn_t *txn = rj->txn;
    apr_pool_t *p = sip_txn_pool(txn);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_array_header_t *h = apr_array_copy(p, extra);
    apr_time_t now = apr_time_now();
    apr_size_t len = 0, budget;
    int n, i;

    n = sip_regpl_body(p, rj->pl, scripts, h, ctype, body, blen);
    if (!n)
        return;
    if (sip_txn_source(txn)->kind == SIP_TP_UDP) {
        apr_array_header_t *all = apr_array_copy(p, h);
        for (i = 0; bs && i < bs->nelts; i++) {
            *(const char **)apr_array_push(all) = "Contact";
            *(const char **)apr_array_push(all) =
                format_binding(p, APR_ARRAY_IDX(bs, i, sip_binding_t *), now);
        }
        *(const char **)apr_array_push(all) = NULL;
        sip_msg_response_text(p, req, 200, "OK", sip_txn_to_tag(txn),
                              (const char *const *)all->elts, *ctype, *body, *blen, &len);
        budget = sip_msg_length(req) > SIP_UDP_RESPONSE_MAX ? sip_msg_length(req)
                 : SIP_UDP_RESPONSE_MAX;
        if (len > budget) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, sip_txn_source(txn)->vhost,
                         "sip registrar: 200 for %s over UDP would be %" APR_SIZE_T_FMT
                         " bytes with its %d script(s): sent without them", rj->chg->aor, len, n);
            *ctype = *body = NULL;
            *blen = 0;
            *(const char **)apr_array_push(extra) = "Warning";
            *(const char **)apr_array_push(extra) = SCRIPTS_CUT_WARNING;
            return;
        }
    }
    /* the body's own headers (Content-Disposition...) go in too */
    for (i = extra->nelts; i < h->nelts; i++)
        *(const char **)apr_array_push(extra) = APR_ARRAY_IDX(h, i, const char *);
}

/* A refusal of the REGISTER, with Accept/Accept-Disposition (RP-29). */
static void reg_refuse(sip_txn_t *txn, const sip_regpl_t *pl, int status, const char *reason,
                       const char *const *hdrs, const char *why)
{
    apr_pool_t *p = sip_txn_pool(txn);

    sip_txn_refuse(txn, status, reason, sip_regpl_headers(p, pl, status, hdrs), why);
}

static void register_done(void *baton, int status, apr_array_header_t *current,
                          apr_array_header_t *scripts)
{
    reg_job_t *rj = baton;
    sip_txn_t *txn = rj->txn;
    apr_pool_t *p = sip_txn_pool(txn);
    char date[APR_RFC822_DATE_LEN];
    apr_array_header_t *ordered, *extra;
    const char *ctype = NULL, *body = NULL;
    apr_size_t blen = 0;
    apr_hash_t *named;
    int i;

    sip_txn_detach_keep(txn);
    if (status == 412 || status == 413) {
        /* draft §3.3, §4.1: nothing changed, bindings included (RP-14) */
        static const char *const w412[] = {"Warning", "399 mod_sip \"A script was changed "
                                           "since If-Unmodified-Since\"", NULL};
        static const char *const w413[] = {"Warning", "399 mod_sip \"The user's scripts would "
                                           "exceed SipScriptUploadMaxTotal\"", NULL};
        reg_refuse(txn, rj->pl, status, status == 412 ? "Precondition Failed"
                   : "Request Entity Too Large", status == 412 ? w412 : w413,
                   apr_psprintf(p, "registrar: scripts of %s %s; nothing stored", rj->chg->aor,
                                status == 412 ? "changed since If-Unmodified-Since"
                                : "over SipScriptUploadMaxTotal"));
        sip_txn_release(txn);
        return;
    }
    if (status == 403) {
        const char *h[] = {"Warning", apr_psprintf(p, "399 mod_sip \"Too many contacts: at most "
                                                   "%d per address-of-record\"", rj->max_contacts),
                           NULL};
        reg_refuse(txn, rj->pl, 403, "Too Many Contacts", h,
                       apr_psprintf(p, "registrar: %s would have more than SipMaxContacts %d "
                                    "bindings; nothing stored", rj->chg->aor, rj->max_contacts));
        sip_txn_release(txn);
        return;
    }
    if (status == 503) {
        static const char *const h[] = {"Retry-After", "300", NULL};
        reg_refuse(txn, rj->pl, 503, "Service Unavailable", h,
                       "registrar: the location store holds SipMaxBindings bindings; nothing stored");
        sip_txn_release(txn);
        return;
    }
    if (status) {
        reg_refuse(txn, rj->pl, 500, "Out Of Order Request", NULL,
                   rj->chg->script_ops ? "registrar: the script store failed; nothing stored"
                                       : "registrar: the location store failed");
        sip_txn_release(txn);
        return;
    }
    /* §10.3 step 8: 200 with every current binding, and Date; the ones this
     * REGISTER named first, so that a cut list (UDP) still has them */
    named = apr_hash_make(p);
    for (i = 0; !rj->chg->star && i < rj->chg->bindings->nelts; i++) {
        const sip_binding_t *b = &APR_ARRAY_IDX(rj->chg->bindings, i, sip_binding_t);
        const char *k = sip_binding_identity(p, b);
        if (k)
            apr_hash_set(named, k, APR_HASH_KEY_STRING, b);
    }
    ordered = apr_array_make(p, current && current->nelts ? current->nelts : 1,
                             sizeof(sip_binding_t *));
    for (int pass = 0; pass < 2; pass++)
        for (i = 0; current && i < current->nelts; i++) {
            sip_binding_t *b = APR_ARRAY_IDX(current, i, sip_binding_t *);
            const char *k = sip_binding_identity(p, b);
            int is_named = k && apr_hash_get(named, k, APR_HASH_KEY_STRING);
            if (is_named == (pass == 0))
                *(sip_binding_t **)apr_array_push(ordered) = b;
        }
    apr_rfc822_date(date, apr_time_now());
    extra = apr_array_make(p, 8, sizeof(const char *));
    *(const char **)apr_array_push(extra) = "Date";
    *(const char **)apr_array_push(extra) = apr_pstrdup(p, date);
    for (const char *const *a = sip_regpl_headers(p, rj->pl, 200, NULL); a && a[0]; a += 2) {
        *(const char **)apr_array_push(extra) = a[0];
        *(const char **)apr_array_push(extra) = a[1];
    }
    if (rj->require) {
        *(const char **)apr_array_push(extra) = "Require";
        *(const char **)apr_array_push(extra) = rj->require;
        if (rj->flow_timer > 0) {
            *(const char **)apr_array_push(extra) = "Flow-Timer";
            *(const char **)apr_array_push(extra) = apr_ltoa(p, rj->flow_timer);
        }
    }
    if (rj->path) {
        *(const char **)apr_array_push(extra) = "Path";
        *(const char **)apr_array_push(extra) = rj->path;
    }
    /* §4.2: the stored scripts the request allows */
    scripts_body(rj, scripts, ordered, extra, &ctype, &body, &blen);
    *(const char **)apr_array_push(extra) = NULL;
    sip_stats->registers_ok++;
    reply_contacts(txn, 200, "OK", ordered, ordered->nelts, (const char *const *)extra->elts,
                   ctype, body, blen);
    sip_txn_release(txn);
}

/* RFC 5626 §4.4.1: a UA keeps its flow alive every 80-100 % of
 * Flow-Timer.  Unset: 120 s over a connection (the RFC's own interval for
 * connection-oriented flows), less when SipTcpIdleTimeout would close an
 * idle connection sooner; 25 s over UDP, under the 30 s many NATs keep an
 * idle UDP mapping. */
static long flow_timer(const sip_server_conf *conf, int kind)
{
    long idle = conf->tcp_idle > 0 ? (long)apr_time_sec(conf->tcp_idle) : 0, n;

    if (conf->flow_timer >= 0)
        return conf->flow_timer;
    if (kind == SIP_TP_UDP)
        return 25;
    n = 120;
    if (idle && idle <= n + 10)
        n = idle > 20 ? idle - 10 : (idle + 1) / 2;
    return n;
}

const char *sip_registrar_cmd_nat(cmd_parms *cmd, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);

    if (!strcasecmp(arg, "auto"))
        c->nat_routing = SIP_NAT_AUTO;
    else if (!strcasecmp(arg, "always"))
        c->nat_routing = SIP_NAT_ALWAYS;
    else if (!strcasecmp(arg, "off"))
        c->nat_routing = SIP_NAT_OFF;
    else
        return "SipNatRouting takes auto, always or off";
    return NULL;
}

const char *sip_registrar_cmd_flow_timer(cmd_parms *cmd, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);
    char *end;
    long v;

    if (!strcasecmp(arg, "off")) {
        c->flow_timer = 0;
        return NULL;
    }
    v = strtol(arg, &end, 10);
    if (!apr_isdigit(*arg) || *end || v < 1 || v > 86400)
        return "SipFlowTimer takes seconds (1-86400) or Off";
    c->flow_timer = v;
    return NULL;
}

const char *sip_registrar_cmd_path(cmd_parms *cmd, const char *arg)
{
    sip_server_conf *c = sip_get_conf(cmd->server);

    if (!strcasecmp(arg, "refuse"))
        c->path_unsupported = 0;
    else if (!strcasecmp(arg, "accept"))
        c->path_unsupported = 1;
    else
        return "SipPathUnsupported takes refuse or accept";
    return NULL;
}

void sip_registrar_register(sip_txn_t *txn, server_rec *s)
{
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    sip_server_conf *conf = sip_get_conf(s);
    const apr_array_header_t *hdrs = sip_msg_headers(req);
    apr_array_header_t *contacts = apr_array_make(p, 4, sizeof(const char *));
    const char *to = sip_msg_header(req, "To"), *aor, *expires_hdr, *call_id;
    sip_reg_change_t *chg;
    reg_job_t *rj;
    sip_regpl_t *pl = apr_pcalloc(p, sizeof(*pl));
    apr_uint32_t cseq = (apr_uint32_t)strtoul(sip_msg_cseq_number(req), NULL, 10);
    apr_time_t now = apr_time_now();
    int i, star = 0, outbound_ok, sup_outbound, outbound_used = 0;
    long default_expires;
    const char *path = path_values(p, req);
    const char *received = source_text(p, sip_txn_source(txn));

    /* §10.3 step 5: the address-of-record, which must be ours */
    aor = sip_uri_aor(p, to);
    if (!aor || !sip_proxy_uri_is_local(sip_header_uri(p, to, NULL), s, p)) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip registrar: 404 for To %s: not a user of "
                     "this domain", to ? to : "(none)");
        reply(txn, 404, "Not Found", NULL);
        return;
    }
    sip_regpl_init(p, s, aor, pl);
    expires_hdr = sip_msg_header(req, "Expires");
    default_expires = expires_hdr ? atol(expires_hdr) : conf->default_expires;
    if (expires_hdr && (!apr_isdigit(*expires_hdr) || default_expires < 0)) {
        reply(txn, 400, "Bad Expires", sip_regpl_headers(p, pl, 400, NULL));
        return;
    }
    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        if (strcasecmp(h->name, "Contact") == 0)
            sip_header_split_list(p, h->value, contacts);
    }
    call_id = sip_msg_call_id(req);

    /* §10.3 step 6: "*" only alone and with Expires: 0 */
    for (i = 0; i < contacts->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(contacts, i, const char *), "*") == 0)
            star = 1;
    if (star && (contacts->nelts != 1 || !expires_hdr || default_expires != 0)) {
        reply(txn, 400, "Invalid Wildcard Contact", sip_regpl_headers(p, pl, 400, NULL));
        return;
    }
    /* RFC 3327 §5.3: a Path from a UA that did not say it supports the
     * extension is refused (420), unless SipPathUnsupported accept */
    if (path && !lists_tag(p, req, "Supported", "path") && conf->path_unsupported != 1) {
        const char *h[] = {"Unsupported", "path", "Warning", "399 mod_sip \"Path without "
                           "Supported: path (RFC 3327 section 5.3)\"", NULL};
        reg_refuse(txn, pl, 420, "Bad Extension", h, apr_pstrcat(p, "registrar: Path for ", aor,
                                                                 " from a UA without Supported: "
                                                                 "path", NULL));
        return;
    }
    /* RFC 5626 §6: outbound applies at the first hop (one Via), or behind
     * an edge proxy whose Path value (the first) has ;ob */
    sup_outbound = lists_tag(p, req, "Supported", "outbound");
    outbound_ok = sip_msg_via_count(req) <= 1;
    if (!outbound_ok && path) {
        apr_array_header_t *pv = apr_array_make(p, 2, sizeof(const char *));
        sip_header_split_list(p, path, pv);
        outbound_ok = pv->nelts
                      && sip_uri_param(p, sip_header_uri(p, APR_ARRAY_IDX(pv, 0, const char *),
                                                         NULL), "ob") != NULL;
    }
    chg = apr_pcalloc(p, sizeof(*chg));
    chg->aor = aor;
    chg->call_id = call_id;
    chg->cseq = cseq;
    chg->star = star;
    chg->bindings = apr_array_make(p, contacts->nelts ? contacts->nelts : 1, sizeof(sip_binding_t));
    for (i = 0; !star && i < contacts->nelts; i++) {
        const char *v = APR_ARRAY_IDX(contacts, i, const char *), *params, *rest, *e, *q;
        const char *inst, *rid;
        sip_binding_t *b = apr_array_push(chg->bindings);
        sip_uri_info_t ui;
        long exp;

        memset(b, 0, sizeof(*b));
        b->contact = sip_header_uri(p, v, &params);
        if (!sip_uri_info(p, b->contact, &ui)) {
            reply(txn, 400, "Bad Contact", sip_regpl_headers(p, pl, 400, NULL));
            return;
        }
        /* once: the store's checks and the 200 ask for it several times */
        b->key = sip_uri_key(p, b->contact);
        e = param(p, params, "expires", &rest);
        q = param(p, rest, "q", &rest);
        b->q1000 = q ? sip_qvalue_parse(q) : 1000;
        if (b->q1000 < 0) {
            reply(txn, 400, "Bad Contact q", sip_regpl_headers(p, pl, 400, NULL));
            return;
        }
        b->params = rest;
        b->display = display_name(p, v);
        /* RFC 5626 §6: +sip.instance (kept in params too, for the 2xx) and
         * reg-id; a reg-id without an instance, or where outbound does not
         * apply, is ignored, or 439 when the UA asked for outbound */
        inst = param(p, rest, "+sip.instance", NULL);
        if (inst && *inst == '<' && inst[strlen(inst) - 1] == '>')
            inst = apr_pstrmemdup(p, inst + 1, strlen(inst) - 2);
        b->instance = inst && *inst ? inst : NULL;
        rid = param(p, rest, "reg-id", NULL);
        if (rid) {
            long r = apr_isdigit(*rid) && !rid[strspn(rid, "0123456789")]
                     && strlen(rid) <= 10 ? atol(rid) : 0;
            if (r < 1 || r > 0x7fffffffL) {
                reply(txn, 400, "Bad reg-id", sip_regpl_headers(p, pl, 400, NULL));
                return;
            }
            if (!b->instance)
                ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip registrar: reg-id of %s "
                             "ignored: no +sip.instance (RFC 5626 section 6)", b->contact);
            else if (!outbound_ok && sup_outbound) {
                reg_refuse(txn, pl, 439, "First Hop Lacks Outbound Support", NULL,
                           apr_pstrcat(p, "registrar: outbound REGISTER for ", aor, " through "
                                       "a proxy without Path ;ob", NULL));
                return;
            }
            else if (outbound_ok) {
                b->reg_id = (int)r;
                outbound_used = 1;
            }
        }
        b->received = received;
        if (e && (!apr_isdigit(*e) || e[strspn(e, "0123456789")])) {
            reply(txn, 400, "Bad Contact Expires", sip_regpl_headers(p, pl, 400, NULL));
            return;
        }
        exp = e ? atol(e) : default_expires;
        /* §10.3 step 7: too brief is refused, too long is shortened */
        if (exp > 0 && exp < conf->min_expires) {
            const char *hm[] = {"Min-Expires", apr_itoa(p, (int)conf->min_expires), NULL};
            reply(txn, 423, "Interval Too Brief", sip_regpl_headers(p, pl, 423, hm));
            return;
        }
        if (exp > conf->max_expires)
            exp = conf->max_expires;
        b->aor = aor;
        b->call_id = call_id;
        b->cseq = cseq;
        b->expires = exp ? now + apr_time_from_sec(exp) : 0;
        b->path = path;
        /* a binding made over a connection is a flow (RFC 5626 §5.3, RFC
         * 7118 §5): requests for it go back on that connection */
        b->transport = sip_txn_source(txn)->kind;
        b->flow = sip_source_flow_id(sip_txn_source(txn));
        if ((b->transport == SIP_TP_WS || b->transport == SIP_TP_WSS)
            && (!ui.transport || (strcasecmp(ui.transport, "ws")
                                  && strcasecmp(ui.transport, "wss"))))
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip registrar: Contact %s registered "
                         "over %s without ;transport=ws; kept (reached over its connection)",
                         b->contact, sip_tp_via_name(b->transport));
    }
    chg->max_contacts = conf->max_contacts;
    /* draft-lennox-sip-reg-payload: the scripts in the body, checked
     * before anything changes (RP-14) */
    if (sip_regpl_request(p, s, req, aor, sip_txn_user(txn), sip_txn_auth_int(txn), pl)) {
        const char *text = sip_regpl_explanation(p, pl);
        if (pl->status == 401) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip registrar: %s", pl->why);
            sip_auth_challenge_integrity(txn, s);
            return;
        }
        sip_txn_refuse_body(txn, pl->status, pl->reason,
                            sip_regpl_headers(p, pl, pl->status, NULL), "text/plain", text,
                            text ? strlen(text) : 0, apr_pstrcat(p, "registrar: ", pl->why,
                                                                 NULL));
        return;
    }
    chg->script_ops = pl->ops;
    chg->if_unmodified_since = pl->if_unmodified_since;
    chg->max_script_total = conf->upload_max_total > 0 ? (apr_size_t)conf->upload_max_total : 0;
    chg->want_scripts = pl->download;
    rj = apr_pcalloc(p, sizeof(*rj));
    rj->pl = pl;
    rj->txn = txn;
    rj->chg = chg;
    rj->max_contacts = conf->max_contacts;
    /* RFC 5626 §6: Require: outbound (and Flow-Timer, §4.4.1) only when
     * outbound was applied and the UA said it supports it */
    if (outbound_used && sup_outbound) {
        rj->require = "outbound";
        rj->flow_timer = flow_timer(conf, sip_txn_source(txn)->kind);
    }
    /* RFC 3327 §5.3: the Path values back to a UA that supports them */
    if (path && lists_tag(p, req, "Supported", "path"))
        rj->path = path;
    hold(txn);
    sip_location_register(p, chg, register_done, rj);
}

/* A binding to send to and how (sip_proxy_reach_t). */
typedef struct target {
    const sip_binding_t *b;
    sip_proxy_reach_t r;
} target_t;

/* Later-refreshed first: a REGISTER sets expires to now + its interval, so
 * with the intervals a UA uses for all its flows the latest expiry is the
 * latest refresh (RFC 5626 §5.3). */
static int by_refresh(const void *x, const void *y)
{
    const target_t *a = x, *b = y;
    return a->b->expires < b->b->expires ? 1 : a->b->expires > b->b->expires ? -1 : 0;
}

/* The targets for the bindings 'bs' (best q first), in that order (RFC
 * 5626 §5.3, RFC 7118 §5, RFC 3581, RFC 3327): a binding that nothing
 * reaches now (its flow closed, SipNatRouting) is left out and logged;
 * the flows of one outbound instance (+sip.instance with reg-ids) make ONE
 * target, at the place of its best binding: the most recently refreshed
 * flow, with the instance's other open flows as alternatives (§7: never
 * several flows of one instance at once). */
static apr_array_header_t *reachable(apr_pool_t *p, server_rec *s, const apr_array_header_t *bs)
{
    sip_server_conf *conf = sip_get_conf(s);
    int nat = conf->nat_routing < 0 ? SIP_NAT_AUTO : conf->nat_routing;
    apr_array_header_t *out = apr_array_make(p, bs->nelts ? bs->nelts : 1, sizeof(target_t));
    apr_hash_t *groups = apr_hash_make(p);     /* instance -> apr_array_header_t of target_t */
    int i, j;

    for (i = 0; i < bs->nelts; i++) {
        sip_binding_t *b = APR_ARRAY_IDX(bs, i, sip_binding_t *);
        sip_source_t src;
        int open = b->flow && sip_transport_flow_source(b->flow, &src);
        sip_reach_t r;
        target_t t;

        if (open)
            sip_source_release(&src);
        r = sip_binding_reach_mode(p, b, open, nat);
        if (r == SIP_REACH_NONE) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip registrar: %s at %s not used: its "
                         "%s connection is closed%s", b->aor, b->contact,
                         sip_tp_via_name(b->transport),
                         b->flow ? "" : " (registered before a restart)");
            continue;
        }
        if (r == SIP_REACH_SOURCE)
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip registrar: %s at %s reached at its "
                         "source %s (behind NAT)", b->aor, b->contact, b->received);
        memset(&t, 0, sizeof(t));
        t.b = b;
        t.r.flow = r == SIP_REACH_FLOW ? b->flow : 0;
        t.r.received = r == SIP_REACH_SOURCE ? b->received : NULL;
        t.r.kind = b->transport;
        t.r.path = b->path;
        if (b->instance && b->reg_id) {
            apr_array_header_t *g = apr_hash_get(groups, b->instance, APR_HASH_KEY_STRING);
            if (!g) {
                g = apr_array_make(p, 2, sizeof(target_t));
                apr_hash_set(groups, b->instance, APR_HASH_KEY_STRING, g);
                *(target_t *)apr_array_push(out) = t;   /* its place; filled below */
            }
            *(target_t *)apr_array_push(g) = t;
            continue;
        }
        *(target_t *)apr_array_push(out) = t;
    }
    for (i = 0; i < out->nelts; i++) {
        target_t *t = &APR_ARRAY_IDX(out, i, target_t);
        apr_array_header_t *g, *alt;
        if (!t->b->instance || !t->b->reg_id)
            continue;
        g = apr_hash_get(groups, t->b->instance, APR_HASH_KEY_STRING);
        qsort(g->elts, (size_t)g->nelts, sizeof(target_t), by_refresh);
        *t = APR_ARRAY_IDX(g, 0, target_t);
        alt = apr_array_make(p, g->nelts, sizeof(apr_uint64_t));
        for (j = 1; j < g->nelts; j++)
            if (APR_ARRAY_IDX(g, j, target_t).r.flow)
                *(apr_uint64_t *)apr_array_push(alt) = APR_ARRAY_IDX(g, j, target_t).r.flow;
        t->r.alt_flows = alt->nelts ? alt : NULL;
        if (g->nelts > 1)
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip registrar: %s instance %s: %d "
                         "flows, the latest (reg-id %d) first", t->b->aor, t->b->instance,
                         g->nelts, t->b->reg_id);
    }
    return out;
}

typedef struct route_job {
    sip_txn_t *txn;
    server_rec *s;
    int redirect;       /* 3xx: redirect with it; 0: proxy; -1: as SipMode says */
    int sequential;     /* 0 parallel, 1 one by one; -1: by q */
    const char *aor;    /* of the Request-URI */
} route_job_t;

static void route_done(void *baton, int status, apr_array_header_t *bs)
{
    route_job_t *rj = baton;
    sip_txn_t *txn = rj->txn;
    server_rec *s = rj->s;
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    int i, max = sip_get_conf(s)->max_branches, redirect = rj->redirect;

    apr_array_header_t *ts = NULL;
    int all_dead = 0;

    sip_txn_detach_keep(txn);
    if (sip_txn_final_sent(txn))
        goto out;           /* cancelled meanwhile */
    if (!status && bs && bs->nelts) {
        ts = reachable(p, s, bs);
        all_dead = !ts->nelts;
    }
    if (status || !bs || !bs->nelts || all_dead) {
        if (strcmp(sip_msg_method(req), "OPTIONS") == 0)    /* the server answers for itself */
            reply(txn, 200, "OK", sip_options_headers(p, s, rj->aor));
        else if (status)
            reply(txn, 500, "Server Internal Error", NULL);
        else if (!bs)
            reply(txn, 404, "Not Found", NULL);
        else if (all_dead) {
            /* every device's connection is gone: say so now, not after a
             * timeout (issue 16) */
            sip_stats->flows_dead++;
            sip_txn_refuse(txn, 480, "Temporarily Unavailable", NULL,
                           "registrar: every binding's connection (flow) is closed");
        }
        else
            reply(txn, 480, "Temporarily Unavailable", NULL);
        goto out;
    }
    /* SipMode of the vhost, or of a <Location "/user@domain"> */
    if (redirect < 0)
        redirect = sip_request_mode(p, s, rj->aor) == SIP_MODE_REDIRECT ? 302 : 0;
    if (redirect) {
        /* the bindings themselves: a redirect names Contacts, not flows */
        apr_array_header_t *rb = apr_array_make(p, ts->nelts, sizeof(sip_binding_t *));
        for (i = 0; i < ts->nelts; i++)
            *(const sip_binding_t **)apr_array_push(rb) = APR_ARRAY_IDX(ts, i, target_t).b;
        reply_contacts(txn, redirect, sip_status_reason(redirect), rb, max, NULL, NULL, NULL, 0);
        goto out;
    }
    {
        /* §16.6: higher q first; equal q in parallel, otherwise one by one.
         * At most SipMaxBranches of them (the best): one request must not
         * turn into as many as an AoR has bindings. */
        sip_proxy_t *px = sip_proxy_new(txn, s);
        int distinct = 0;
        if (ts->nelts > max)
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip registrar: %s %s forked to the best "
                         "%d of %d contacts (SipMaxBranches)", sip_msg_method(req),
                         sip_msg_request_uri(req), max, ts->nelts);
        for (i = 0; i < ts->nelts && i < max; i++) {
            target_t *t = &APR_ARRAY_IDX(ts, i, target_t);
            if (i && t->b->q1000 != APR_ARRAY_IDX(ts, 0, target_t).b->q1000)
                distinct = 1;
            sip_proxy_add_target_reach(px, t->b->contact, t->b->q1000 / 1000.0, &t->r);
        }
        sip_proxy_set_sequential(px, rj->sequential >= 0 ? rj->sequential : distinct);
        sip_proxy_start(px);
    }
out:
    sip_txn_release(txn);
}

int sip_registrar_route(sip_txn_t *txn, server_rec *s)
{
    return sip_registrar_route_as(txn, s, -1, -1);
}

int sip_registrar_route_as(sip_txn_t *txn, server_rec *s, int redirect, int sequential)
{
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *aor = sip_msg_uri_aor(p, req);
    route_job_t *rj;

    if (!aor)
        return 0;
    rj = apr_pcalloc(p, sizeof(*rj));
    rj->txn = txn;
    rj->s = s;
    rj->redirect = redirect;
    rj->sequential = sequential;
    rj->aor = aor;
    hold(txn);
    sip_location_fetch(p, aor, route_done, rj);
    return 1;
}

/* ---- forking to a user of ours for a proxy owner (SIP-CGI, CPL) ---- */

typedef struct {
    server_rec *s;
    const char *uri;
    const sip_msg_t *block;
    const sip_registrar_fork_ops_t *ops;
    void *baton;
} user_fork_t;

static void user_fork_targets(void *baton, int status, apr_array_header_t *bindings)
{
    user_fork_t *uf = baton;
    sip_proxy_t *px = uf->ops->proxy(uf->baton);
    apr_array_header_t *ts = NULL;
    apr_pool_t *p = NULL;
    int i, all_dead = 0;

    if (px && !status && bindings && bindings->nelts) {
        apr_pool_create(&p, NULL);
        ts = reachable(p, uf->s, bindings);
        all_dead = !ts->nelts;
        if (all_dead)
            sip_stats->flows_dead++;
    }
    if (px) {
        /* best q first; SipMaxBranches bounds the fan-out as for any
         * request routed to a registered user */
        for (i = 0; ts && i < ts->nelts && i < sip_get_conf(uf->s)->max_branches; i++) {
            target_t *t = &APR_ARRAY_IDX(ts, i, target_t);
            sip_proxy_branch_t *b = sip_proxy_fork_reach(px, t->b->contact, uf->block, &t->r);
            if (b && uf->ops->forked)
                uf->ops->forked(uf->baton, b);
        }
        if (status)
            sip_proxy_fork_unreachable(px, uf->uri, uf->block, 500, "Server Internal Error");
        else if (!bindings)
            sip_proxy_fork_unreachable(px, uf->uri, uf->block, 404, "Not Found");
        else if (!bindings->nelts || all_dead)
            sip_proxy_fork_unreachable(px, uf->uri, uf->block, 480, "Temporarily Unavailable");
    }
    if (p)
        apr_pool_destroy(p);
    uf->ops->done(uf->baton);
}

void sip_registrar_fork_user(apr_pool_t *p, server_rec *s, const char *uri,
                             const sip_msg_t *block, const sip_registrar_fork_ops_t *ops,
                             void *baton)
{
    user_fork_t *uf = apr_pcalloc(p, sizeof(*uf));

    uf->s = s;
    uf->uri = apr_pstrdup(p, uri);
    uf->block = block;
    uf->ops = ops;
    uf->baton = baton;
    sip_location_fetch(p, sip_uri_aor(p, uri), user_fork_targets, uf);
}
