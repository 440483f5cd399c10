/* Lists (sip_lists.h; docs/routing.md "Lists"). */
#include "sip_lists.h"
#include "sip_conf.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_proxy.h"

#include <string.h>

#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "http_log.h"

/* A list file bigger than this is surely a mistake (100 lists of 100
 * members of 100 bytes). */
#define SIP_LIST_FILE_MAX (1024 * 1024)

typedef struct sip_list {
    const char *name;                   /* as written */
    const char *where;                  /* file:line */
    apr_array_header_t *members;        /* const char *, as parsed */
} sip_list_t;

struct sip_lists {
    apr_hash_t *by_key;                 /* lists_key() -> sip_list_t * */
    apr_array_header_t *order;          /* sip_list_t *, as defined */
};

/* ---- names and members ---- */

/* RFC 3261 §25.1 user: unreserved / escaped / user-unreserved */
static int lists_user_ok(const char *u, apr_size_t n)
{
    apr_size_t i;

    if (!n)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (!apr_isalnum(c) && !strchr("-_.!~*'()%&=+$,;?/", c))
            return 0;
    }
    return 1;
}

/* The key a user (%-escaped) and host (or NULL) are looked up by: the
 * user %-decoded and both in lower case; NULL when the user does not
 * decode (%00, %2F). */
static const char *lists_key(apr_pool_t *p, const char *user, apr_size_t ulen, const char *host)
{
    char *u = apr_pstrmemdup(p, user, ulen), *c;

    if (ap_unescape_url(u) != OK)
        return NULL;
    for (c = u; *c; c++)
        *c = (char)apr_tolower(*c);
    return host ? apr_pstrcat(p, u, "@", sip_str_lower(p, host), NULL) : u;
}

const char *sip_lists_member_parse(apr_pool_t *p, const char *member, const char **why)
{
    sip_uri_parts_t parts;
    const char *uri = member;

    if (!strncasecmp(member, "sip:", 4) || !strncasecmp(member, "sips:", 5))
        ;
    else if (strchr(member, ':')) {
        *why = apr_psprintf(p, "%s is not a SIP URI", member);
        return NULL;
    }
    else if (strchr(member, '@'))
        uri = apr_pstrcat(p, "sip:", member, NULL);
    else if (lists_user_ok(member, strlen(member)))
        return member;                  /* a bare user: completed per request */
    else {
        *why = apr_psprintf(p, "%s is not a user name", member);
        return NULL;
    }
    if (!sip_uri_parts(p, uri, &parts) || !parts.host || !*parts.host
        || !sip_uri_request_form(p, uri)) {
        *why = apr_psprintf(p, "%s is not a SIP URI", member);
        return NULL;
    }
    return uri;
}

const char *sip_lists_member_uri(apr_pool_t *p, const char *member, const char *request_uri)
{
    sip_uri_parts_t parts;

    if (strchr(member, ':'))
        return member;
    if (!sip_uri_parts(p, request_uri, &parts) || !parts.host)
        return NULL;
    if (strchr(parts.host, ':') && parts.host[0] != '[')     /* an IPv6 reference */
        parts.host = apr_pstrcat(p, "[", parts.host, "]", NULL);
    return apr_pstrcat(p, parts.scheme, ":", member, "@", parts.host,
                       parts.port ? ":" : "", parts.port ? parts.port : "", NULL);
}

int sip_lists_disposition_all(const char *value)
{
    const char *v = value;

    /* Call-Disposition = 1#token (seed 002 §3; parameters ignored) */
    while (v && *v) {
        apr_size_t n;
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        n = strcspn(v, " \t,;");
        if (n == 3 && !strncasecmp(v, "all", 3))
            return 1;
        v += n;
        v += strcspn(v, ",");
    }
    return 0;
}

/* ---- configuration ---- */

const char *sip_lists_add(apr_pool_t *p, sip_lists_t **lists, const char *name, int n,
                          const char *const *members, const char *where)
{
    const char *at = strchr(name, '@'), *key, *why = NULL;
    sip_lists_t *l = *lists;
    sip_list_t *list, *old;
    int i;

    if (!lists_user_ok(name, at ? (apr_size_t)(at - name) : strlen(name))
        || (at && (!at[1] || strpbrk(at + 1, "@:;?/ \t")))
        || !(key = lists_key(p, name, at ? (apr_size_t)(at - name) : strlen(name),
                             at ? at + 1 : NULL)))
        return apr_psprintf(p, "list name %s is not user or user@host", name);
    if (n < 1)
        return apr_psprintf(p, "list %s has no members", name);
    if (!l) {
        l = *lists = apr_pcalloc(p, sizeof(*l));
        l->by_key = apr_hash_make(p);
        l->order = apr_array_make(p, 4, sizeof(sip_list_t *));
    }
    if ((old = apr_hash_get(l->by_key, key, APR_HASH_KEY_STRING)))
        return apr_psprintf(p, "list %s is defined twice (first at %s)", name, old->where);
    list = apr_pcalloc(p, sizeof(*list));
    list->name = apr_pstrdup(p, name);
    list->where = apr_pstrdup(p, where ? where : "?");
    list->members = apr_array_make(p, n, sizeof(const char *));
    for (i = 0; i < n; i++) {
        const char *m = sip_lists_member_parse(p, members[i], &why);
        if (!m)
            return apr_psprintf(p, "list %s: %s", name, why);
        *(const char **)apr_array_push(list->members) = apr_pstrdup(p, m);
    }
    apr_hash_set(l->by_key, key, APR_HASH_KEY_STRING, list);
    *(sip_list_t **)apr_array_push(l->order) = list;
    return NULL;
}

const char *sip_lists_parse(apr_pool_t *p, sip_lists_t **lists, const char *name,
                            const char *text)
{
    char *copy = apr_pstrdup(p, text), *line, *next;
    int lineno = 0;

    for (line = copy; line; line = next) {
        apr_array_header_t *words = apr_array_make(p, 8, sizeof(const char *));
        char *w, *last = NULL;
        const char *why;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        if (strchr(line, '#'))          /* a comment runs to the end of the line */
            *strchr(line, '#') = '\0';
        for (w = apr_strtok(line, " \t\r", &last); w; w = apr_strtok(NULL, " \t\r", &last))
            *(const char **)apr_array_push(words) = w;
        if (!words->nelts)
            continue;
        if (words->nelts < 2)
            return apr_psprintf(p, "%s:%d: list %s has no members", name, lineno,
                                APR_ARRAY_IDX(words, 0, const char *));
        why = sip_lists_add(p, lists, APR_ARRAY_IDX(words, 0, const char *), words->nelts - 1,
                            (const char *const *)words->elts + 1,
                            apr_psprintf(p, "%s:%d", name, lineno));
        if (why)
            return apr_psprintf(p, "%s:%d: %s", name, lineno, why);
    }
    return NULL;
}

const char *sip_lists_load(apr_pool_t *p, sip_lists_t **lists, const char *path)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t got = 0;
    apr_status_t rv;
    char *buf, err[128];

    if ((rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p)) != APR_SUCCESS)
        return apr_psprintf(p, "%s: %s", path, apr_strerror(rv, err, sizeof(err)));
    if ((rv = apr_file_info_get(&fi, APR_FINFO_SIZE | APR_FINFO_TYPE, f)) != APR_SUCCESS
        || fi.filetype != APR_REG || fi.size > SIP_LIST_FILE_MAX) {
        apr_file_close(f);
        return apr_psprintf(p, "%s: not a regular file of at most %d bytes", path,
                            SIP_LIST_FILE_MAX);
    }
    buf = apr_palloc(p, (apr_size_t)fi.size + 1);
    rv = apr_file_read_full(f, buf, (apr_size_t)fi.size, &got);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF)
        return apr_psprintf(p, "%s: %s", path, apr_strerror(rv, err, sizeof(err)));
    buf[got] = '\0';
    if (strlen(buf) != got)
        return apr_psprintf(p, "%s: holds a NUL byte", path);
    return sip_lists_parse(p, lists, path, buf);
}

sip_lists_t *sip_lists_merge(apr_pool_t *p, const sip_lists_t *base, const sip_lists_t *add)
{
    sip_lists_t *l;
    int i;

    if (!base || !add)
        return (sip_lists_t *)(add ? add : base);
    l = apr_pcalloc(p, sizeof(*l));
    l->by_key = apr_hash_overlay(p, add->by_key, base->by_key);
    l->order = apr_array_make(p, base->order->nelts + add->order->nelts, sizeof(sip_list_t *));
    for (i = 0; i < base->order->nelts; i++) {
        sip_list_t *b = APR_ARRAY_IDX(base->order, i, sip_list_t *);
        const char *at = strchr(b->name, '@');
        const char *key = lists_key(p, b->name, at ? (apr_size_t)(at - b->name)
                                                   : strlen(b->name), at ? at + 1 : NULL);
        if (apr_hash_get(l->by_key, key, APR_HASH_KEY_STRING) == b)
            *(sip_list_t **)apr_array_push(l->order) = b;
    }
    apr_array_cat(l->order, add->order);
    return l;
}

const char *sip_lists_check(apr_pool_t *p, const sip_lists_t *lists, int max)
{
    int i;

    for (i = 0; lists && i < lists->order->nelts; i++) {
        const sip_list_t *l = APR_ARRAY_IDX(lists->order, i, const sip_list_t *);
        if (l->members->nelts > max)
            return apr_psprintf(p, "%s: list %s has %d members, more than SipListMaxMembers %d",
                                l->where, l->name, l->members->nelts, max);
    }
    return NULL;
}

const apr_array_header_t *sip_lists_find(apr_pool_t *p, const sip_lists_t *lists,
                                         const char *user, const char *host)
{
    const char *key;
    const sip_list_t *l;

    if (!lists || !user || !*user)
        return NULL;
    if (host && (key = lists_key(p, user, strlen(user), host))
        && (l = apr_hash_get(lists->by_key, key, APR_HASH_KEY_STRING)))
        return l->members;
    if ((key = lists_key(p, user, strlen(user), NULL))
        && (l = apr_hash_get(lists->by_key, key, APR_HASH_KEY_STRING)))
        return l->members;
    return NULL;
}

/* ---- proxying to several addresses (lists, forwarding files) ---- */

typedef struct lists_fan {
    sip_txn_t *txn;
    server_rec *s;
    apr_pool_t *p;
    const char *what;
    apr_array_header_t *targets;        /* const char *, in order */
    apr_hash_t *seen;                   /* sip_uri_key -> "" */
    int max;                            /* SipListMaxMembers: branches in all */
    int dropped;                        /* targets left out for it */
    int pending;                        /* location lookups out, +1 while starting */
} lists_fan_t;

typedef struct lists_lookup {
    lists_fan_t *fan;
    const char *uri;
} lists_lookup_t;

static int lists_held_cancel(void *tu)
{
    (void)tu;
    return 0;                           /* the engine answers 487 */
}

static const sip_txn_tu_ops_t lists_held_ops = {lists_held_cancel, NULL, NULL};

static void lists_fan_target(lists_fan_t *f, const char *uri)
{
    const char *key = sip_uri_key(f->p, uri);

    if (!key || apr_hash_get(f->seen, key, APR_HASH_KEY_STRING))
        return;
    if (f->targets->nelts >= f->max) {
        f->dropped++;
        return;
    }
    apr_hash_set(f->seen, key, APR_HASH_KEY_STRING, "");
    *(const char **)apr_array_push(f->targets) = uri;
}

static void lists_fan_go(lists_fan_t *f)
{
    sip_proxy_t *px;
    int i;

    if (--f->pending)
        return;
    sip_txn_detach_keep(f->txn);
    if (!sip_txn_final_sent(f->txn)) {     /* not cancelled meanwhile */
        if (f->dropped)
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, f->s, "sip: %s: %d target(s) left out "
                         "(SipListMaxMembers %d)", f->what, f->dropped, f->max);
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, f->s, "sip: %s %s (%s) proxied to %d target(s)",
                     sip_msg_method(sip_txn_request(f->txn)),
                     sip_msg_request_uri(sip_txn_request(f->txn)), f->what, f->targets->nelts);
        px = sip_proxy_new(f->txn, f->s);
        for (i = 0; i < f->targets->nelts; i++)
            sip_proxy_add_target(px, APR_ARRAY_IDX(f->targets, i, const char *), 1.0);
        sip_proxy_start(px);            /* parallel; none: 480 */
    }
    sip_txn_release(f->txn);
}

static void lists_fan_found(void *baton, int status, apr_array_header_t *bindings)
{
    lists_lookup_t *lk = baton;
    lists_fan_t *f = lk->fan;
    int i, max = sip_get_conf(f->s)->max_branches;

    if (status || !bindings || !bindings->nelts)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, f->s, "sip: %s: %s left out (%s)", f->what,
                     lk->uri, status ? "location store failure"
                     : !bindings ? "not registered; members are not expanded again"
                     : "no binding now");
    for (i = 0; !status && bindings && i < bindings->nelts && i < max; i++)
        lists_fan_target(f, APR_ARRAY_IDX(bindings, i, sip_binding_t *)->contact);
    lists_fan_go(f);
}

void sip_lists_fork(sip_txn_t *txn, server_rec *s, const apr_array_header_t *uris,
                    const char *what)
{
    apr_pool_t *p = sip_txn_pool(txn);
    lists_fan_t *f = apr_pcalloc(p, sizeof(*f));
    int i;

    f->txn = txn;
    f->s = s;
    f->p = p;
    f->what = apr_pstrdup(p, what);
    f->targets = apr_array_make(p, uris->nelts, sizeof(const char *));
    f->seen = apr_hash_make(p);
    f->max = sip_get_conf(s)->list_max_members > 0 ? sip_get_conf(s)->list_max_members
                                                    : SIP_DEFAULT_LIST_MAX_MEMBERS;
    f->pending = 1;
    /* kept (and a CANCEL answered 487) while the store may answer later */
    sip_txn_attach(txn, &lists_held_ops, f);
    for (i = 0; i < uris->nelts; i++) {
        const char *uri = APR_ARRAY_IDX(uris, i, const char *);
        const char *aor = sip_uri_aor(p, uri);
        if (aor && sip_proxy_uri_is_local(uri, s, p)) {
            lists_lookup_t *lk = apr_pcalloc(p, sizeof(*lk));
            lk->fan = f;
            lk->uri = uri;
            f->pending++;
            sip_location_fetch(p, aor, lists_fan_found, lk);
        }
        else
            lists_fan_target(f, uri);
    }
    lists_fan_go(f);
}

/* ---- the step ---- */

/* RFC 3261 §18.1.1: over UDP the 300 is cut to 1300 bytes (or the
 * request's size), as the registrar's Contact lists are. */
#define SIP_LISTS_UDP_MAX 1300
#define SIP_LISTS_CUT_WARNING "399 mod_sip \"List cut to fit a UDP datagram; use TCP for all\""

static void lists_redirect(sip_txn_t *txn, server_rec *s, const apr_array_header_t *uris,
                           const char *why)
{
    apr_pool_t *p = sip_txn_pool(txn);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_array_header_t *h = apr_array_make(p, 2 * uris->nelts + 3, sizeof(const char *));
    apr_size_t total = 0, budget = 0;
    int i, cut = 0;

    if (sip_txn_source(txn)->kind == SIP_TP_UDP) {
        const char *hw[] = {"Warning", SIP_LISTS_CUT_WARNING, NULL};
        sip_msg_response_text(p, req, 300, "Multiple Choices", sip_txn_to_tag(txn), hw, NULL,
                              NULL, 0, &total);
        budget = sip_msg_length(req) > SIP_LISTS_UDP_MAX ? sip_msg_length(req)
                                                         : SIP_LISTS_UDP_MAX;
    }
    for (i = 0; i < uris->nelts; i++) {
        const char *v = apr_pstrcat(p, "<", APR_ARRAY_IDX(uris, i, const char *), ">", NULL);
        total += strlen(v) + sizeof("Contact: \r\n") - 1;
        if (budget && total > budget) {
            cut = 1;
            break;
        }
        *(const char **)apr_array_push(h) = "Contact";
        *(const char **)apr_array_push(h) = v;
    }
    if (cut) {
        *(const char **)apr_array_push(h) = "Warning";
        *(const char **)apr_array_push(h) = SIP_LISTS_CUT_WARNING;
    }
    *(const char **)apr_array_push(h) = NULL;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip: %s %s is a list: 300 with %d of %d members "
                 "(%s)", sip_msg_method(req), sip_msg_request_uri(req), cut ? i : uris->nelts,
                 uris->nelts, why);
    sip_txn_reply(txn, 300, "Multiple Choices", (const char *const *)h->elts);
}

static int lists_wants_all(const sip_msg_t *req)
{
    const apr_array_header_t *hs = sip_msg_headers(req);
    int i;

    for (i = 0; hs && i < hs->nelts; i++) {
        const sip_header_t *hd = &APR_ARRAY_IDX(hs, i, sip_header_t);
        if (!strcasecmp(hd->name, "Call-Disposition") && sip_lists_disposition_all(hd->value))
            return 1;
    }
    return 0;
}

sip_step_t sip_lists_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume, void *baton)
{
    const sip_server_conf *conf = sip_get_conf(s);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *method = sip_msg_method(req), *ruri = sip_msg_request_uri(req);
    const apr_array_header_t *members;
    apr_array_header_t *uris;
    int i;

    (void)resume;
    (void)baton;
    if (!conf->lists || sip_msg_to_tag(req)
        || (strcmp(method, "INVITE") && strcmp(method, "OPTIONS") && strcmp(method, "MESSAGE")))
        return SIP_STEP_NEXT;
    members = sip_lists_find(p, conf->lists, sip_msg_uri_user(req), sip_msg_uri_host(req));
    if (!members)
        return SIP_STEP_NEXT;
    uris = apr_array_make(p, members->nelts, sizeof(const char *));
    for (i = 0; i < members->nelts; i++) {
        const char *u = sip_lists_member_uri(p, APR_ARRAY_IDX(members, i, const char *), ruri);
        if (u)
            *(const char **)apr_array_push(uris) = u;
    }
    if (lists_wants_all(req))
        lists_redirect(txn, s, uris, "Call-Disposition: all");
    else if (conf->list_mode != SIP_LIST_MODE_PROXY)
        lists_redirect(txn, s, uris, "SipListMode redirect");
    else
        sip_lists_fork(txn, s, uris, apr_pstrcat(p, "list ", sip_msg_uri_user(req), NULL));
    return SIP_STEP_DONE;
}
