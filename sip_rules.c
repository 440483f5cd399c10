/* Call handling rules (sip_rules.h; seed 002 §6; docs/routing.md): the
 * parser of both forms and the engine.  An action is one row of the
 * action table below: its name, a check of its arguments at configuration
 * time, and what it does to a transaction. */
#include "sip_rules.h"
#include <string.h>
#include <unistd.h>

#include "sip_auth.h"
#include "sip_cgi.h"
#include "sip_conf.h"
#include "sip_proxy.h"
#include "sip_registrar.h"
#include "sip_request.h"

#include "http_log.h"
#include "apr_file_io.h"
#include "apr_fnmatch.h"
#include "apr_lib.h"
#include "apr_strings.h"

/* What an action tells the engine. */
typedef enum {
    RULE_GO_ON,     /* the next rule */
    RULE_STOP,      /* no more rules: the normal steps go on */
    RULE_DONE,      /* the transaction is answered, proxied or handed over */
    RULE_WAIT       /* a script runs: the rules after it go on if it leaves
                     * the request to the server */
} rule_result_t;

typedef struct rule_ctx {
    sip_txn_t *txn;
    server_rec *s;
    apr_pool_t *p;
    const sip_msg_t *req;
    apr_array_header_t *rules;
    int next;                   /* the rule after the running one */
    sip_step_resume_fn resume;
    void *baton;
} rule_ctx_t;

static sip_step_t rules_from(rule_ctx_t *c);

typedef struct rule_action {
    const char *name;
    /* the arguments (r->argc, r->argv) at configuration time: NULL, or why
     * the rule is refused; may fill the rule's fields below */
    const char *(*check)(apr_pool_t *p, sip_rule_t *r, int in_file);
    rule_result_t (*run)(rule_ctx_t *c, const sip_rule_t *r);
} rule_action_t;

struct sip_rule {
    const char *header;         /* SipRuleFile: the header whose address is matched;
                                 * NULL for SipRule (its section is the condition) */
    const char *method;         /* "*": any */
    const char *glob;
    const rule_action_t *action;
    int argc;
    const char **argv;          /* the action's arguments */
    int status;                 /* respond */
    int sequential;             /* proxy: 1 one by one, 0 at once, -1 by q (bindings) */
    const char *where;          /* "SipRule" or "file:line", for the error log */
};

/* ---- helpers ---- */

static int rules_is_status(const char *s)
{
    return apr_isdigit(s[0]) && apr_isdigit(s[1]) && apr_isdigit(s[2]) && !s[3];
}

/* A host, IPv4 or [IPv6], with an optional :port: a "domain" target. */
static int rules_is_domain(const char *s)
{
    const char *e;

    if (*s == '[') {
        if (!(e = strchr(s, ']')) || e == s + 1 || strspn(s + 1, "0123456789abcdefABCDEF:.")
                                                     != (apr_size_t)(e - s - 1))
            return 0;
        s = e + 1;
    }
    else {
        apr_size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "0123456789.-");
        if (!n || s[0] == '.' || s[0] == '-')
            return 0;
        s += n;
    }
    if (*s == ':')
        return s[1] && strspn(s + 1, "0123456789") == strlen(s + 1) && strlen(s + 1) <= 5;
    return !*s;
}

static int rules_is_sip_uri(apr_pool_t *p, const char *uri)
{
    sip_uri_info_t ui;

    return (!strncasecmp(uri, "sip:", 4) || !strncasecmp(uri, "sips:", 5))
           && sip_uri_info(p, uri, &ui);
}

/* The seed writes "sip://vp@example.com": the "//" is not SIP's. */
static const char *rules_seed_uri(apr_pool_t *p, const char *uri)
{
    if (!strncasecmp(uri, "sip://", 6))
        return apr_pstrcat(p, "sip:", uri + 6, NULL);
    if (!strncasecmp(uri, "sips://", 7))
        return apr_pstrcat(p, "sips:", uri + 7, NULL);
    return uri;
}

/* A domain target: the Request-URI's user at that host. */
static const char *rules_domain_target(rule_ctx_t *c, const char *domain)
{
    const char *user = sip_msg_uri_user(c->req);

    return apr_pstrcat(c->p, "sip:", user ? user : "", user ? "@" : "", domain, NULL);
}

static void rule_log(rule_ctx_t *c, const sip_rule_t *r, int level, const char *what)
{
    ap_log_error(APLOG_MARK, level, 0, c->s, "sip rules: %s %.256s (rule %s \"%s\"): %s",
                 sip_msg_method(c->req), sip_msg_request_uri(c->req), r->where, r->action->name,
                 what);
}

/* The rule is broken in a way configuration time could not see (the
 * script went away): the administrator must hear of it, the caller gets 500. */
static rule_result_t rule_fail(rule_ctx_t *c, const sip_rule_t *r, const char *why)
{
    rule_log(c, r, APLOG_ERR, why);
    sip_txn_reply(c->txn, 500, "Server Internal Error", NULL);
    return RULE_DONE;
}

/* ---- the actions ---- */

/* log [envvar]: CustomLog ... env=sip-rule-log writes this transaction's line */
static const char *rules_check_log(apr_pool_t *p, sip_rule_t *r, int in_file)
{
    (void)in_file;
    if (r->argc > 1 || (r->argc == 1 && (r->argv[0][0] == '|' || strchr(r->argv[0], '/'))))
        return "log takes no log file: write the lines with CustomLog <file> <format> "
               "env=" SIP_RULE_LOG_ENV " (or \"log <envvar>\" with env=<envvar>)";
    if (r->argc == 1 && strspn(r->argv[0], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789_.-") != strlen(r->argv[0]))
        return apr_pstrcat(p, "log: '", r->argv[0], "' is not an environment variable name",
                           NULL);
    return NULL;
}

static rule_result_t rules_run_log(rule_ctx_t *c, const sip_rule_t *r)
{
    sip_txn_set_env(c->txn, r->argc ? r->argv[0] : SIP_RULE_LOG_ENV, "1");
    return RULE_GO_ON;
}

/* respond <status> [uri ...] */
static const char *rules_check_respond(apr_pool_t *p, sip_rule_t *r, int in_file)
{
    int i;

    if (!r->argc || !rules_is_status(r->argv[0]) || (r->status = atoi(r->argv[0])) < 200)
        return "respond needs a status from 200 to 699";
    if (r->argc > 1 && (r->status < 300 || r->status >= 400))
        return "respond: only a 3xx status takes URIs (its Contact targets)";
    for (i = 1; i < r->argc; i++) {
        const char *u = in_file ? rules_seed_uri(p, r->argv[i]) : r->argv[i];
        sip_uri_parts_t parts;
        if (!sip_uri_parts(p, u, &parts) || strpbrk(u, "<>,\" \t"))
            return apr_pstrcat(p, "respond: '", r->argv[i], "' is not a URI", NULL);
        r->argv[i] = u;
    }
    return NULL;
}

static rule_result_t rules_run_respond(rule_ctx_t *c, const sip_rule_t *r)
{
    int i;

    if (r->status < 300)
        return RULE_STOP;   /* allowed: the normal steps answer */
    if (r->status >= 400) {
        sip_txn_refuse(c->txn, r->status, sip_status_reason(r->status), NULL,
                       apr_pstrcat(c->p, "rule ", r->where, NULL));
        return RULE_DONE;
    }
    if (r->argc > 1) {
        const char **h = apr_pcalloc(c->p, sizeof(*h) * (2 * (apr_size_t)r->argc + 1));
        for (i = 1; i < r->argc; i++) {
            h[2 * (i - 1)] = "Contact";
            h[2 * (i - 1) + 1] = apr_pstrcat(c->p, "<", r->argv[i], ">", NULL);
        }
        sip_txn_reply(c->txn, r->status, sip_status_reason(r->status), h);
        return RULE_DONE;
    }
    /* the registrar's bindings (seed §6: "the server tries to locate the user") */
    if (!sip_registrar_route_as(c->txn, c->s, r->status, -1))
        sip_txn_refuse(c->txn, 480, "Temporarily Unavailable", NULL,
                       "a redirect rule for a Request-URI with no user");
    return RULE_DONE;
}

/* proxy [parallel|sequential] [target ...] */
static const char *rules_check_proxy(apr_pool_t *p, sip_rule_t *r, int in_file)
{
    int i;

    r->sequential = -1;
    if (r->argc && (!strcasecmp(r->argv[0], "parallel") || !strcasecmp(r->argv[0], "sequential"))) {
        r->sequential = !strcasecmp(r->argv[0], "sequential");
        r->argv++;
        r->argc--;
    }
    for (i = 0; i < r->argc; i++) {
        const char *u = in_file ? rules_seed_uri(p, r->argv[i]) : r->argv[i];
        if (!rules_is_sip_uri(p, u) && !rules_is_domain(u))
            return apr_pstrcat(p, r->action->name, ": '", r->argv[i],
                               "' is neither a SIP URI nor a domain", NULL);
        r->argv[i] = u;
    }
    return NULL;
}

static rule_result_t rules_run_proxy(rule_ctx_t *c, const sip_rule_t *r)
{
    sip_proxy_t *px;
    int i;

    if (!r->argc) {
        if (!sip_registrar_route_as(c->txn, c->s, 0, r->sequential))
            sip_txn_refuse(c->txn, 404, "Not Found", NULL,
                           "a proxy rule with no target for a Request-URI with no user");
        return RULE_DONE;
    }
    px = sip_proxy_new(c->txn, c->s);
    /* equal q: the list's order is the order of a sequential search */
    for (i = 0; i < r->argc; i++)
        sip_proxy_add_target(px, strchr(r->argv[i], ':') && !rules_is_domain(r->argv[i])
                                 ? r->argv[i] : rules_domain_target(c, r->argv[i]), 1.0);
    sip_proxy_set_sequential(px, r->sequential > 0);
    sip_proxy_start(px);
    return RULE_DONE;
}

/* record <host>: voice mail by indirection */
static const char *rules_check_record(apr_pool_t *p, sip_rule_t *r, int in_file)
{
    (void)p; (void)in_file;
    if (r->argc != 1 || !rules_is_domain(r->argv[0]))
        return "record needs one host (the voice-mail server)";
    r->sequential = 0;
    return NULL;
}

/* authenticate [digest] */
static const char *rules_check_authenticate(apr_pool_t *p, sip_rule_t *r, int in_file)
{
    (void)in_file;
    if (r->argc > 1 || (r->argc == 1 && strcasecmp(r->argv[0], "digest")))
        return apr_pstrcat(p, "authenticate: only digest authentication is supported",
                           r->argc ? apr_pstrcat(p, " (not '", r->argv[0], "')", NULL) : "",
                           NULL);
    return NULL;
}

static rule_result_t rules_run_authenticate(rule_ctx_t *c, const sip_rule_t *r)
{
    (void)r;
    if (sip_txn_user(c->txn))
        return RULE_GO_ON;      /* authenticated already */
    /* challenges (401) and answers when the caller is not, or not allowed */
    return sip_auth_check_user(c->txn, c->s) ? RULE_GO_ON : RULE_DONE;
}

/* script [name]: SipDirectory's script; a SipRuleFile may name a path */
static const char *rules_check_script(apr_pool_t *p, sip_rule_t *r, int in_file)
{
    const char *n = r->argc ? r->argv[0] : NULL;
    apr_finfo_t fi;

    if (r->argc > 1)
        return "script takes at most one name";
    if (!n)
        return NULL;
    if (n[0] == '/') {
        /* the administrator's own program, as the seed's table writes it */
        if (!in_file)
            return "script: SipRule names a script in SipDirectory (a path only in a SipRuleFile)";
        if (apr_stat(&fi, n, APR_FINFO_TYPE, p) != APR_SUCCESS || fi.filetype != APR_REG)
            return apr_pstrcat(p, "script: ", n, " is not a file", NULL);
        if (access(n, X_OK) != 0)
            return apr_pstrcat(p, "script: ", n, " is not executable", NULL);
        return NULL;
    }
    if (!sip_cgi_name_ok(n))
        return apr_pstrcat(p, "script: '", n, "' is not a script name in SipDirectory", NULL);
    return NULL;
}

/* Seed 002 §6: "if the script returns a final response, processing of
 * the rule file is terminated" -- otherwise it goes on. */
static void rules_after_script(void *baton)
{
    rule_ctx_t *c = baton;

    if (rules_from(c) == SIP_STEP_NEXT)
        c->resume(c->baton);
}

static rule_result_t rules_run_script(rule_ctx_t *c, const sip_rule_t *r)
{
    const char *dir = sip_get_conf(c->s)->directory, *path = NULL, *why = NULL;
    int st;

    if (!r->argc)
        return RULE_STOP;   /* the user's own scripts: the normal steps */
    if (r->argv[0][0] == '/')
        path = r->argv[0];
    else if (!dir)
        return rule_fail(c, r, "no SipDirectory to find the script in");
    else if ((st = sip_cgi_locate_file(c->p, dir, r->argv[0], 1, &path, &why)) != 0)
        return rule_fail(c, r, st == 404 ? "the script is not in SipDirectory" : why);
    sip_cgi_run_then(c->txn, path, c->s, rules_after_script, c);
    return RULE_WAIT;
}

static rule_result_t rules_run_record(rule_ctx_t *c, const sip_rule_t *r)
{
    return rules_run_proxy(c, r);
}

static const rule_action_t rules_actions[] = {
    {"log", rules_check_log, rules_run_log},
    {"respond", rules_check_respond, rules_run_respond},
    {"proxy", rules_check_proxy, rules_run_proxy},
    {"authenticate", rules_check_authenticate, rules_run_authenticate},
    {"script", rules_check_script, rules_run_script},
    {"record", rules_check_record, rules_run_record},
    {NULL, NULL, NULL}
};

static const rule_action_t *rules_find_action(const char *name)
{
    int i;

    for (i = 0; rules_actions[i].name; i++)
        if (!strcasecmp(rules_actions[i].name, name))
            return &rules_actions[i];
    return NULL;
}

/* Does 'tok' begin an action (SipRuleFile: "404", "/path", a name)? */
static int rules_is_action(const char *tok)
{
    return rules_is_status(tok) || tok[0] == '/' || rules_find_action(tok);
}

/* The action part of a rule: argv[0] and its arguments; a bare status is
 * "respond", a path "script" (both SipRuleFile forms). */
static const char *rules_parse_action(apr_pool_t *p, sip_rule_t *r, int argc, const char **argv,
                                int in_file)
{
    const char *name = argv[0];

    if (rules_is_status(name)) {
        r->action = rules_find_action("respond");
        r->argc = argc;
        r->argv = argv;
    }
    else if (name[0] == '/' && in_file) {
        r->action = rules_find_action("script");
        r->argc = argc;
        r->argv = argv;
    }
    else if (!(r->action = rules_find_action(name)))
        return apr_pstrcat(p, "unknown action '", name, "' (log, respond, proxy, authenticate, "
                           "script, record)", NULL);
    else {
        r->argc = argc - 1;
        r->argv = argv + 1;
    }
    return r->action->check(p, r, in_file);
}

static const char **rules_tokens(apr_pool_t *p, const char *line, int *n)
{
    char **argv = NULL;

    if (apr_tokenize_to_argv(line, &argv, p) != APR_SUCCESS || !argv)
        return NULL;
    for (*n = 0; argv[*n]; (*n)++)
        ;
    return (const char **)argv;
}

const sip_rule_t *sip_rule_parse(apr_pool_t *p, const char *args, const char **err)
{
    return sip_rule_parse_at(p, args, "SipRule", err);
}

const sip_rule_t *sip_rule_parse_at(apr_pool_t *p, const char *args, const char *where,
                                    const char **err)
{
    sip_rule_t *r = apr_pcalloc(p, sizeof(*r));
    const char **argv;
    int n = 0;

    *err = NULL;
    argv = rules_tokens(p, args ? args : "", &n);
    if (!argv || !n) {
        *err = "SipRule needs an action: log, respond, proxy, authenticate, script or record";
        return NULL;
    }
    r->method = "*";
    r->sequential = -1;
    r->where = where;
    if ((*err = rules_parse_action(p, r, n, argv, 0)) != NULL)
        return NULL;
    return r;
}

/* [A-Z]+: a method name (SIP methods are rules_tokens; the seed's are upper case) */
static int rules_is_method(const char *s)
{
    return *s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(s);
}

/* One line of the seed's table: Header Method glob action [args], with
 * what the seed itself writes: Method left out ("*"), or after the glob. */
static const char *rules_parse_line(apr_pool_t *p, sip_rule_t *r, const char *line)
{
    const char **t;
    int n = 0, k;

    if (!(t = rules_tokens(p, line, &n)))
        return "cannot be split into words";
    if (n < 3)
        return "expected: Header Method glob action [arguments]";
    if (strspn(t[0], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
        != strlen(t[0]))
        return apr_pstrcat(p, "'", t[0], "' is not a header name", NULL);
    r->header = t[0];
    if (rules_is_method(t[1])) {
        r->method = t[1];
        r->glob = t[2];
        k = 3;
    }
    else if (rules_is_method(t[2])) {         /* "From * INVITE log" */
        r->glob = t[1];
        r->method = t[2];
        k = 3;
    }
    else if (!strcmp(t[1], "*") && !rules_is_action(t[2])) {
        r->method = t[1];
        r->glob = t[2];
        k = 3;
    }
    else if (rules_is_action(t[2])) {         /* "To *-voicemail record host" */
        r->method = "*";
        r->glob = t[1];
        k = 2;
    }
    else
        return apr_pstrcat(p, "'", t[1], "' is not a method (upper case, or *)", NULL);
    if (k >= n)
        return "no action after the glob";
    return rules_parse_action(p, r, n - k, t + k, 1);
}

int sip_rule_file_read(apr_pool_t *p, const char *path, apr_array_header_t *rules,
                       const char **err)
{
    apr_file_t *f;
    apr_status_t rv;
    char buf[4096], ebuf[120];
    int line = 0;

    *err = NULL;
    if ((rv = apr_file_open(&f, path, APR_READ | APR_BUFFERED, 0, p)) != APR_SUCCESS) {
        *err = apr_psprintf(p, "%s: %s", path, apr_strerror(rv, ebuf, sizeof(ebuf)));
        return -1;
    }
    while ((rv = apr_file_gets(buf, sizeof(buf), f)) == APR_SUCCESS) {
        apr_size_t len = strlen(buf);
        const char *why, *s = buf;
        sip_rule_t *r;

        line++;
        if (len == sizeof(buf) - 1 && buf[len - 1] != '\n') {
            *err = apr_psprintf(p, "%s:%d: line longer than %d bytes", path, line,
                                (int)sizeof(buf) - 2);
            break;
        }
        while (len && apr_isspace(buf[len - 1]))
            buf[--len] = 0;
        while (apr_isspace(*s))
            s++;
        if (!*s || *s == '#')
            continue;
        r = apr_pcalloc(p, sizeof(*r));
        r->sequential = -1;
        if ((why = rules_parse_line(p, r, s)) != NULL) {
            *err = apr_psprintf(p, "%s:%d: %s", path, line, why);
            break;
        }
        r->where = apr_psprintf(p, "%s:%d", path, line);
        *(const sip_rule_t **)apr_array_push(rules) = r;
    }
    apr_file_close(f);
    if (!*err && rv != APR_EOF)
        *err = apr_psprintf(p, "%s:%d: %s", path, line + 1, apr_strerror(rv, ebuf, sizeof(ebuf)));
    return *err ? -1 : 0;
}

/* ---- matching ---- */

/* 'glob' matched case-insensitively against the end of 's' on a
 * boundary: the whole of 's', or what follows a '.' or '@' of it (seed
 * §6: "columbia.edu" matches erlang.cs.columbia.edu, not xcolumbia.edu).
 * A glob starting with '.' or '@' carries its own boundary.  Only the
 * glob is a pattern: '*' or '[' in the address is a character like any. */
static int rules_glob_from_end(const char *glob, const char *s)
{
    apr_size_t i, n = strlen(s);
    int own = glob[0] == '.' || glob[0] == '@';

    for (i = 0; i <= n; i++)
        if ((i == 0 || own || s[i - 1] == '.' || s[i - 1] == '@')
            && apr_fnmatch(glob, s + i, APR_FNM_CASE_BLIND) == APR_SUCCESS)
            return 1;
    return 0;
}

/* %-decoded (RFC 3261 §19.1.2): "%61ol.com" must not slip past "aol.com" */
static const char *rules_unescape(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, strlen(s) + 1), *o = out;

    for (; *s; s++) {
        if (s[0] == '%' && apr_isxdigit(s[1]) && apr_isxdigit(s[2])) {
            char hex[3] = {s[1], s[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            s += 2;
        }
        else
            *o++ = *s;
    }
    *o = 0;
    return out;
}

int sip_rule_matches(apr_pool_t *p, const sip_rule_t *rule, const sip_msg_t *req)
{
    const char *value, *uri, *user = NULL, *host = NULL, *addr;
    sip_uri_parts_t parts;

    if (!rule->header)
        return 1;
    if (strcmp(rule->method, "*") && strcmp(rule->method, sip_msg_method(req)))
        return 0;
    value = !strcasecmp(rule->header, "Request-URI") ? sip_msg_request_uri(req)
          : sip_msg_header(req, rule->header);
    if (!value)
        return !strcmp(rule->glob, "*");
    uri = sip_header_uri(p, value, NULL);
    if (!uri || !sip_uri_parts(p, uri, &parts))
        return !strcmp(rule->glob, "*");
    if (parts.host) {
        user = parts.user ? rules_unescape(p, parts.user) : NULL;
        host = parts.host;
    }
    else
        host = rules_unescape(p, parts.opaque ? parts.opaque : "");   /* tel: and others */
    addr = user ? apr_pstrcat(p, user, "@", host, NULL) : host;
    if (rules_glob_from_end(rule->glob, addr))
        return 1;
    /* a glob with no '@' may name users too ("To *-voicemail record ...") */
    return user && !strchr(rule->glob, '@') && rules_glob_from_end(rule->glob, user);
}

/* ---- the step ---- */

/* The rules from c->next on. */
static sip_step_t rules_from(rule_ctx_t *c)
{
    while (c->next < c->rules->nelts) {
        const sip_rule_t *r = APR_ARRAY_IDX(c->rules, c->next, const sip_rule_t *);
        c->next++;
        if (!sip_rule_matches(c->p, r, c->req))
            continue;
        switch (r->action->run(c, r)) {
        case RULE_GO_ON:
            break;
        case RULE_STOP:
            return SIP_STEP_NEXT;
        case RULE_DONE:
            return SIP_STEP_DONE;
        case RULE_WAIT:
            return SIP_STEP_WAIT;
        }
    }
    return SIP_STEP_NEXT;
}

sip_step_t sip_rules_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume, void *baton)
{
    apr_pool_t *p = sip_txn_pool(txn);
    rule_ctx_t *c = apr_pcalloc(p, sizeof(*c));

    c->txn = txn;
    c->s = s;
    c->p = p;
    c->req = sip_txn_request(txn);
    c->resume = resume;
    c->baton = baton;
    c->rules = sip_request_rules(p, s, c->req, &sip_txn_source(txn)->peer);
    if (!c->rules) {
        /* which rules apply is unknown: one of them might have refused */
        sip_txn_reply(txn, 500, "Server Internal Error", NULL);
        return SIP_STEP_DONE;
    }
    return rules_from(c);
}
