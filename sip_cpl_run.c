/* The CPL interpreter (RFC 3880): walks a compiled script (sip_cpl_tree.h)
 * for one request.  Switches and location modifiers are done here; the
 * host (sip_cpl_run.h) does lookups, proxying, answers, log and mail.
 * The walk is a loop over nodes, never a recursion: a switch picks one
 * output, a modifier or non-signalling action goes on to its child, and a
 * <sub> jumps into its subaction (nothing returns from one, §8). */
#include "sip_cpl_run.h"

#include <stdlib.h>
#include <string.h>

#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "sip_cpl_tree.h"

typedef enum {
    CPL_RUNNING = 0,
    CPL_WAIT_LOOKUP,
    CPL_WAIT_PROXY,
    CPL_DONE,
    CPL_ABORTED
} cpl_state_t;

/* A member of the location set; 'key' says when two are the same
 * location (RFC 3261 §19.1.4 for SIP URIs, the lower-cased text for
 * others), 'seq' keeps the order they came in among equal priorities. */
typedef struct {
    const char *uri;
    int q1000;
    const char *key;
    int seq;
} cpl_loc_t;

struct sip_cpl_run {
    apr_pool_t *p;
    const sip_cpl_script_t *sc;
    sip_cpl_dir_t dir;
    const sip_msg_t *req;
    const char *owner;
    apr_time_t now;
    const sip_cpl_host_t *host;
    void *baton;

    apr_array_header_t *locs;       /* cpl_loc_t */
    apr_hash_t *loc_index;          /* key -> index + 1 in locs */
    int loc_seq;

    cpl_state_t state;
    const cpl_node_t *waiting;      /* the lookup or proxy the host works on */
    int in_host;                    /* inside host->lookup or host->proxy */
    int resume_ready;               /* the host answered before returning: */
    const cpl_node_t *resume;       /* go on here, */
    sip_cpl_end_t resume_end;       /* or end so (0: go on) */
    int visited, subs;
    int proxied;                    /* a <proxy> ran (a signalling action, §10) */
};

int sip_cpl_script_has(const sip_cpl_script_t *sc, sip_cpl_dir_t dir)
{
    return sc && (dir == SIP_CPL_INCOMING || dir == SIP_CPL_OUTGOING) && sc->has[dir];
}

const char *sip_cpl_run_script_name(const sip_cpl_run_t *run)
{
    return run->sc->name;
}

/* ---- the location set (RFC 3880 §5) ---- */

static const char *cr_loc_key(apr_pool_t *p, const char *uri)
{
    if (!strncasecmp(uri, "sip:", 4) || !strncasecmp(uri, "sips:", 5)) {
        const char *k = sip_uri_key(p, uri);
        if (k)
            return k;
    }
    return sip_str_lower(p, uri);
}

static void cr_loc_clear(sip_cpl_run_t *r)
{
    apr_array_clear(r->locs);
    r->loc_index = apr_hash_make(r->p);
}

/* A location already in the set is not added twice (it is a set, §5); it
 * keeps the higher of the two priorities. */
static void cr_loc_add(sip_cpl_run_t *r, const char *uri, int q1000)
{
    const char *key;
    apr_uintptr_t at;
    cpl_loc_t *l;

    if (!uri || !*uri)
        return;
    q1000 = q1000 < 0 ? 0 : q1000 > 1000 ? 1000 : q1000;
    key = cr_loc_key(r->p, uri);
    at = (apr_uintptr_t)apr_hash_get(r->loc_index, key, APR_HASH_KEY_STRING);
    if (at) {
        l = &APR_ARRAY_IDX(r->locs, at - 1, cpl_loc_t);
        if (q1000 > l->q1000)
            l->q1000 = q1000;
        return;
    }
    l = apr_array_push(r->locs);
    l->uri = apr_pstrdup(r->p, uri);
    l->q1000 = q1000;
    l->key = key;
    l->seq = r->loc_seq++;
    apr_hash_set(r->loc_index, key, APR_HASH_KEY_STRING, (void *)(apr_uintptr_t)r->locs->nelts);
}

/* <remove-location location="..."> (§5.3): every member equal to it. */
static void cr_loc_remove(sip_cpl_run_t *r, const char *uri)
{
    const char *key = cr_loc_key(r->p, uri);
    apr_array_header_t *old = r->locs;
    int i;

    r->locs = apr_array_make(r->p, old->nelts ? old->nelts : 4, sizeof(cpl_loc_t));
    r->loc_index = apr_hash_make(r->p);
    for (i = 0; i < old->nelts; i++) {
        cpl_loc_t *l = &APR_ARRAY_IDX(old, i, cpl_loc_t);
        if (strcmp(l->key, key)) {
            *(cpl_loc_t *)apr_array_push(r->locs) = *l;
            apr_hash_set(r->loc_index, l->key, APR_HASH_KEY_STRING,
                         (void *)(apr_uintptr_t)r->locs->nelts);
        }
    }
}

static int cr_loc_cmp(const void *a, const void *b)
{
    const cpl_loc_t *x = a, *y = b;

    if (x->q1000 != y->q1000)
        return y->q1000 - x->q1000;
    return x->seq - y->seq;
}

/* The set as the host sees it: best priority first, then in the order
 * the locations were added. */
static const apr_array_header_t *cr_loc_list(sip_cpl_run_t *r)
{
    apr_array_header_t *out = apr_array_make(r->p, r->locs->nelts ? r->locs->nelts : 1,
                                             sizeof(sip_cpl_location_t));
    cpl_loc_t *sorted = NULL;
    int i;

    if (r->locs->nelts) {
        sorted = apr_pmemdup(r->p, r->locs->elts, r->locs->nelts * sizeof(cpl_loc_t));
        qsort(sorted, r->locs->nelts, sizeof(cpl_loc_t), cr_loc_cmp);
    }
    for (i = 0; i < r->locs->nelts; i++) {
        sip_cpl_location_t *l = apr_array_push(out);
        l->uri = sorted[i].uri;
        l->q1000 = sorted[i].q1000;
    }
    return out;
}

/* ---- what the switches look at ---- */

static const char *cr_trim(apr_pool_t *p, const char *s)
{
    apr_size_t n;

    if (!s)
        return NULL;
    s += strspn(s, " \t");
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return apr_pstrmemdup(p, s, n);
}

static int cr_contains_nocase(const char *hay, const char *needle)
{
    apr_size_t n = strlen(needle);

    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n))
            return 1;
    return n == 0;
}

/* A telephone number without visual separators (§4.1 compares numbers,
 * not their spelling): "+1 (212) 555-1234" is "+12125551234". */
static const char *cr_tel_digits(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, strlen(s) + 1), *w = out;

    for (; *s && *s != ';'; s++)
        if (!strchr("-.() ", *s))
            *w++ = *s;
    *w = '\0';
    return out;
}

static int cr_is_ip_literal(const char *h)
{
    if (*h == '[' || strchr(h, ':'))
        return 1;
    for (; *h; h++)
        if (!apr_isdigit(*h) && *h != '.')
            return 0;
    return 1;
}

/* subdomain-of for hosts (§4.1): the domain itself or a name below it,
 * compared by whole labels without case; an IP address only matches
 * itself. */
static int cr_host_subdomain_of(const char *host, const char *domain)
{
    apr_size_t h = strlen(host), d = strlen(domain);

    if (h && host[h - 1] == '.')        /* a fully qualified "example.com." */
        h--;
    if (d && domain[d - 1] == '.')
        d--;
    if (!d || h < d)
        return 0;
    if (cr_is_ip_literal(domain) || cr_is_ip_literal(host))
        return h == d && !strncasecmp(host, domain, d);
    return !strncasecmp(host + h - d, domain, d) && (h == d || host[h - d - 1] == '.');
}

/* The address a field names (§4.1.1 for SIP): origin is From,
 * destination the Request-URI, original-destination To.  'hdr' is the
 * header value (for the display name), NULL for the Request-URI. */
static const char *cr_field_address(sip_cpl_run_t *r, int field, const char **hdr)
{
    const char *v;

    *hdr = NULL;
    if (field == CPL_F_DESTINATION)
        return sip_msg_request_uri(r->req);
    v = sip_msg_header(r->req, field == CPL_F_ORIGIN ? "From" : "To");
    if (!v)
        return NULL;
    *hdr = v;
    return sip_header_uri(r->p, v, NULL);
}

/* The value of the switch's subfield; NULL when the call has none
 * (the <not-present> output). */
static const char *cr_address_value(sip_cpl_run_t *r, const cpl_node_t *n)
{
    const char *hdr, *uri = cr_field_address(r, n->field, &hdr);
    sip_uri_parts_t u;
    int sip;

    if (n->subfield == CPL_SF_DISPLAY)
        return hdr ? sip_header_display(r->p, hdr) : NULL;
    if (!uri || !*uri)
        return NULL;
    if (n->subfield == CPL_SF_ADDRESS)
        return uri;
    if (!sip_uri_parts(r->p, uri, &u))
        return NULL;
    sip = !u.opaque;
    switch (n->subfield) {
    case CPL_SF_ADDRESS_TYPE:
        return u.scheme;
    case CPL_SF_USER:
        return sip ? u.user : NULL;
    case CPL_SF_HOST:
        return sip ? u.host : NULL;
    case CPL_SF_PORT:
        /* an absent port is the scheme's default (RFC 3261 §19.1.2) */
        if (!sip)
            return NULL;
        return u.port ? u.port : !strcmp(u.scheme, "sips") ? "5061" : "5060";
    case CPL_SF_TEL:
        if (!strcmp(u.scheme, "tel"))
            return cr_tel_digits(r->p, u.opaque);
        if (sip && u.user_phone && u.user)
            return cr_tel_digits(r->p, u.user);
        return NULL;
    case CPL_SF_PASSWORD:
        return sip ? u.password : NULL;
    default:                /* alias-type is H.323's: never in SIP */
        return NULL;
    }
}

static int cr_address_match(sip_cpl_run_t *r, const cpl_node_t *n, const cpl_case_t *c,
                         const char *v)
{
    switch (c->op) {
    case CPL_OP_CONTAINS:
        return cr_contains_nocase(v, c->value);
    case CPL_OP_SUBDOMAIN_OF:
        if (n->subfield == CPL_SF_TEL) {
            const char *prefix = cr_tel_digits(r->p, c->value);
            return !strncasecmp(v, prefix, strlen(prefix));
        }
        return cr_host_subdomain_of(v, c->value);
    default:
        break;
    }
    switch (n->subfield) {
    case CPL_SF_ADDRESS: {
        sip_uri_parts_t a, b;
        if (!sip_uri_parts(r->p, v, &a) || !sip_uri_parts(r->p, c->value, &b))
            return !strcasecmp(v, c->value);
        if (!a.opaque && !b.opaque)
            return sip_uri_equal(v, c->value);
        if (!strcmp(a.scheme, "tel") && !strcmp(b.scheme, "tel"))
            return !strcasecmp(cr_tel_digits(r->p, a.opaque), cr_tel_digits(r->p, b.opaque));
        return !strcasecmp(v, c->value);
    }
    case CPL_SF_ADDRESS_TYPE:
    case CPL_SF_HOST:
    case CPL_SF_DISPLAY:
        return !strcasecmp(v, c->value);
    case CPL_SF_PORT:
        return atoi(v) == atoi(c->value);
    case CPL_SF_TEL:
        return !strcasecmp(v, cr_tel_digits(r->p, c->value));
    default:                /* user, password: case-sensitive (RFC 3261 §19.1.4) */
        return !strcmp(v, c->value);
    }
}

static const char *cr_string_value(sip_cpl_run_t *r, int field)
{
    switch (field) {
    case CPL_S_SUBJECT:
        return cr_trim(r->p, sip_msg_header(r->req, "Subject"));
    case CPL_S_ORGANIZATION:
        return cr_trim(r->p, sip_msg_header(r->req, "Organization"));
    case CPL_S_USER_AGENT:
        return cr_trim(r->p, sip_msg_header(r->req, "User-Agent"));
    default:
        /* "display" (§4.2) is free text for the callee that SIP has no
         * header for: never present in a SIP call */
        return NULL;
    }
}

/* The caller's language ranges (Accept-Language, RFC 3261 §20.3 with RFC
 * 2616 §14.4 syntax), those with q=0 left out; NULL when the request has
 * no Accept-Language at all. */
static apr_array_header_t *cr_language_ranges(sip_cpl_run_t *r)
{
    const apr_array_header_t *hdrs = sip_msg_headers(r->req);
    apr_array_header_t *out = NULL;
    int i;

    for (i = 0; hdrs && i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        char *list, *item, *last;

        if (strcasecmp(h->name, "Accept-Language"))
            continue;
        if (!out)
            out = apr_array_make(r->p, 4, sizeof(const char *));
        list = apr_pstrdup(r->p, h->value);
        for (item = apr_strtok(list, ",", &last); item; item = apr_strtok(NULL, ",", &last)) {
            char *semi = strchr(item, ';');
            const char *range;
            if (semi) {
                const char *q = strstr(semi, "q=");
                *semi = '\0';
                if (q && strtod(q + 2, NULL) <= 0.0)
                    continue;
            }
            range = cr_trim(r->p, item);
            if (*range)
                APR_ARRAY_PUSH(out, const char *) = range;
        }
    }
    return out;
}

/* A range matches a tag when it is the tag or a prefix of it ending at a
 * '-' (RFC 2616 §14.4: "en" matches "en-GB"); "*" matches nothing here,
 * as in §4.3 it only says other languages are acceptable. */
static int cr_language_match(const apr_array_header_t *ranges, const char *tag)
{
    int i;

    for (i = 0; i < ranges->nelts; i++) {
        const char *range = APR_ARRAY_IDX(ranges, i, const char *);
        apr_size_t n = strlen(range);
        if (!strcmp(range, "*"))
            continue;
        if (!strncasecmp(range, tag, n) && (tag[n] == '\0' || tag[n] == '-'))
            return 1;
    }
    return 0;
}

/* §4.5: the Priority header; none is "normal".  Less and greater compare
 * in the order non-urgent < normal < urgent < emergency, and a value
 * none of these counts as normal for them; equal compares the token
 * without case, so equal="x-custom" can still catch it. */
static int cr_priority_match(const cpl_case_t *c, const char *v)
{
    int have = cpl_priority_value(v);

    if (c->op == CPL_OP_EQUAL)
        return !strcasecmp(v, c->value);
    if (have == CPL_PRIO_OTHER)
        have = CPL_PRIO_NORMAL;
    return c->op == CPL_OP_LESS ? have < c->prio : have > c->prio;
}

/* The output a switch takes: the first whose test matches, in document
 * order, else <otherwise>; when the call lacks what the switch looks at,
 * <not-present>, else <otherwise>.  NULL (the script ends there) when
 * none applies. */
static const cpl_node_t *cr_run_switch(sip_cpl_run_t *r, const cpl_node_t *n)
{
    const char *v = NULL;
    apr_array_header_t *ranges = NULL;
    int present = 1, i;

    switch (n->kind) {
    case CPL_ADDRESS_SWITCH:
        v = cr_address_value(r, n);
        present = v != NULL;
        break;
    case CPL_STRING_SWITCH:
        v = cr_string_value(r, n->field);
        present = v != NULL;
        break;
    case CPL_LANGUAGE_SWITCH:
        ranges = cr_language_ranges(r);
        present = ranges != NULL;
        break;
    case CPL_PRIORITY_SWITCH:
        v = cr_trim(r->p, sip_msg_header(r->req, "Priority"));
        if (!v || !*v)
            v = "normal";
        break;
    default:                /* time: the time of a call is always known */
        break;
    }
    if (!present) {
        for (i = 0; i < n->ncases; i++)
            if (n->cases[i].kind == CPL_CASE_NOT_PRESENT)
                return n->cases[i].next;
    }
    for (i = 0; i < n->ncases; i++) {
        const cpl_case_t *c = &n->cases[i];
        int hit = 0;

        if (c->kind == CPL_CASE_OTHERWISE)
            return c->next;
        if (c->kind != CPL_CASE_TEST || !present)
            continue;
        switch (n->kind) {
        case CPL_ADDRESS_SWITCH:
            hit = cr_address_match(r, n, c, v);
            break;
        case CPL_STRING_SWITCH:
            hit = c->op == CPL_OP_IS ? !strcasecmp(v, c->value) : cr_contains_nocase(v, c->value);
            break;
        case CPL_LANGUAGE_SWITCH:
            hit = cr_language_match(ranges, c->value);
            break;
        case CPL_TIME_SWITCH:
            hit = sip_cpl_time_match(c->time, r->now);
            break;
        case CPL_PRIORITY_SWITCH:
            hit = cr_priority_match(c, v);
            break;
        default:
            break;
        }
        if (hit)
            return c->next;
    }
    return NULL;
}

/* ---- the walk ---- */

static void cr_run_end(sip_cpl_run_t *r, sip_cpl_end_t how, const char *node, const char *why)
{
    r->state = CPL_DONE;
    r->host->end(r->baton, how, cr_loc_list(r), node, why);
}

static void cr_run_fail(sip_cpl_run_t *r, const cpl_node_t *n, const char *why)
{
    cr_run_end(r, SIP_CPL_END_FAILED, n ? n->elem : "cpl", why);
}

/* RFC 3880 §10: a script that ends without a signalling action leaves
 * the call to the default handling (proxy to the location set, if any);
 * one that ends after a proxy that got no 2xx returns its best response. */
static void cr_run_finish(sip_cpl_run_t *r)
{
    cr_run_end(r, r->proxied ? SIP_CPL_END_PROXY_RESPONSE : SIP_CPL_END_DEFAULT, NULL, NULL);
}

static void cr_run_walk(sip_cpl_run_t *r, const cpl_node_t *n);

/* A host's answer: go on at 'n' (or end 'how'); deferred to the walk
 * when the host answers from inside its own call. */
static void cr_run_resume(sip_cpl_run_t *r, const cpl_node_t *n, sip_cpl_end_t how)
{
    r->state = CPL_RUNNING;
    r->waiting = NULL;
    if (r->in_host) {
        r->resume_ready = 1;
        r->resume = n;
        r->resume_end = how;
        return;
    }
    if (how)
        cr_run_end(r, how, NULL, NULL);
    else
        cr_run_walk(r, n);
}

static void cr_run_walk(sip_cpl_run_t *r, const cpl_node_t *n)
{
    while (r->state == CPL_RUNNING) {
        if (!n) {
            cr_run_finish(r);
            return;
        }
        if (++r->visited > CPL_RUN_MAX_NODES) {
            cr_run_fail(r, n, apr_psprintf(r->p, "more than %d nodes in one run (line %d)",
                                        CPL_RUN_MAX_NODES, n->line));
            return;
        }
        switch (n->kind) {
        case CPL_ADDRESS_SWITCH:
        case CPL_STRING_SWITCH:
        case CPL_LANGUAGE_SWITCH:
        case CPL_TIME_SWITCH:
        case CPL_PRIORITY_SWITCH:
            n = cr_run_switch(r, n);
            break;
        case CPL_LOCATION:
            if (n->clear)
                cr_loc_clear(r);
            cr_loc_add(r, n->url, n->q1000);
            n = n->next;
            break;
        case CPL_REMOVE_LOCATION:
            if (n->url)
                cr_loc_remove(r, n->url);
            else
                cr_loc_clear(r);
            n = n->next;
            break;
        case CPL_SUB:
            if (++r->subs > CPL_RUN_MAX_SUBS) {
                cr_run_fail(r, n, apr_psprintf(r->p, "more than %d <sub> in one run (line %d)",
                                            CPL_RUN_MAX_SUBS, n->line));
                return;
            }
            n = n->next;
            break;
        case CPL_LOG:
            r->host->log(r->baton, n->name, n->comment);
            n = n->next;
            break;
        case CPL_MAIL:
            r->host->mail(r->baton, n->url);
            n = n->next;
            break;
        case CPL_REJECT:
            r->host->reject(r->baton, n->status, n->reason);
            if (r->state == CPL_RUNNING)
                cr_run_end(r, SIP_CPL_END_ANSWERED, NULL, NULL);
            return;
        case CPL_REDIRECT:
            if (!r->locs->nelts) {
                cr_run_fail(r, n, apr_psprintf(r->p, "redirect with an empty location set "
                                            "(line %d)", n->line));
                return;
            }
            r->host->redirect(r->baton, cr_loc_list(r), n->permanent);
            if (r->state == CPL_RUNNING)
                cr_run_end(r, SIP_CPL_END_ANSWERED, NULL, NULL);
            return;
        case CPL_LOOKUP:
        case CPL_PROXY:
            if (n->kind == CPL_PROXY && !r->locs->nelts) {
                /* nowhere to go: the proxy fails at once (§6.1 failure) */
                if (n->has_out & ((1u << CPL_PX_FAILURE) | (1u << CPL_PX_DEFAULT))) {
                    n = n->out[n->has_out & (1u << CPL_PX_FAILURE) ? CPL_PX_FAILURE
                                                                   : CPL_PX_DEFAULT];
                    break;
                }
                cr_run_fail(r, n, apr_psprintf(r->p, "proxy with an empty location set "
                                            "(line %d)", n->line));
                return;
            }
            r->waiting = n;
            r->in_host = 1;
            r->resume_ready = 0;
            if (n->kind == CPL_LOOKUP) {
                r->state = CPL_WAIT_LOOKUP;
                r->host->lookup(r->baton, r, n->source, n->timeout);
            } else {
                sip_cpl_proxy_req_t *req = apr_pcalloc(r->p, sizeof(*req));
                req->locations = cr_loc_list(r);
                req->timeout_sec = n->timeout;
                req->recurse = n->recurse;
                req->ordering = n->ordering;
                r->state = CPL_WAIT_PROXY;
                r->proxied = 1;
                r->host->proxy(r->baton, r, req);
            }
            r->in_host = 0;
            if (r->state != CPL_RUNNING || !r->resume_ready)
                return;             /* waiting, or aborted */
            r->resume_ready = 0;
            if (r->resume_end) {
                cr_run_end(r, r->resume_end, NULL, NULL);
                return;
            }
            n = r->resume;
            break;
        }
    }
}

sip_cpl_run_t *sip_cpl_run_start(apr_pool_t *p, const sip_cpl_script_t *sc, sip_cpl_dir_t dir,
                                 const sip_msg_t *req, const char *owner, apr_time_t now,
                                 const sip_cpl_host_t *host, void *baton)
{
    sip_cpl_run_t *r = apr_pcalloc(p, sizeof(*r));

    r->p = p;
    r->sc = sc;
    r->dir = dir;
    r->req = req;
    r->owner = owner;
    r->now = now;
    r->host = host;
    r->baton = baton;
    r->locs = apr_array_make(p, 4, sizeof(cpl_loc_t));
    r->loc_index = apr_hash_make(p);
    /* §5: an outgoing call starts with its destination in the location
     * set (so a script that only logs lets it through); an incoming call
     * starts empty, its locations come from <location> and <lookup>. */
    if (dir == SIP_CPL_OUTGOING && sip_msg_request_uri(req))
        cr_loc_add(r, sip_msg_request_uri(req), 1000);
    cr_run_walk(r, sip_cpl_script_has(sc, dir) ? sc->top[dir] : NULL);
    return r;
}

void sip_cpl_lookup_done(sip_cpl_run_t *run, sip_cpl_lookup_result_t result,
                         const apr_array_header_t *locations)
{
    const cpl_node_t *n = run->waiting;
    int i, out;

    if (run->state != CPL_WAIT_LOOKUP || !n)
        return;
    if (result == SIP_CPL_LOOKUP_SUCCESS && (!locations || !locations->nelts))
        result = SIP_CPL_LOOKUP_NOTFOUND;   /* found nothing after all */
    if (result == SIP_CPL_LOOKUP_SUCCESS) {
        /* §5.2: clear="yes" empties the set first, on success only */
        if (n->clear)
            cr_loc_clear(run);
        for (i = 0; i < locations->nelts; i++) {
            const sip_cpl_location_t *l = &APR_ARRAY_IDX(locations, i, sip_cpl_location_t);
            cr_loc_add(run, l->uri, l->q1000);
        }
        out = CPL_LK_SUCCESS;
    } else {
        out = result == SIP_CPL_LOOKUP_NOTFOUND ? CPL_LK_NOTFOUND : CPL_LK_FAILURE;
    }
    cr_run_resume(run, n->out[out], 0);
}

void sip_cpl_proxy_done(sip_cpl_run_t *run, int result, int status,
                        const apr_array_header_t *contacts)
{
    const cpl_node_t *n = run->waiting;
    int out, i;

    if (run->state != CPL_WAIT_PROXY || !n)
        return;
    if (result == 0) {
        cr_run_resume(run, NULL, SIP_CPL_END_ANSWERED);
        return;
    }
    /* §6.1: the locations were tried; what follows starts from an empty
     * set, or from the Contacts of the redirection */
    cr_loc_clear(run);
    switch (result) {
    case SIP_CPL_PX_BUSY:
        out = CPL_PX_BUSY;
        break;
    case SIP_CPL_PX_NOANSWER:
        out = CPL_PX_NOANSWER;
        break;
    case SIP_CPL_PX_REDIRECTION:
        out = CPL_PX_REDIRECTION;
        for (i = 0; contacts && i < contacts->nelts; i++)
            cr_loc_add(run, APR_ARRAY_IDX(contacts, i, const char *), 1000);
        break;
    default:
        out = CPL_PX_FAILURE;
        break;
    }
    if (!(n->has_out & (1u << out)))
        out = CPL_PX_DEFAULT;
    if (!(n->has_out & (1u << out))) {
        /* no output for it: the best response goes upstream (§10) */
        cr_run_resume(run, NULL, SIP_CPL_END_PROXY_RESPONSE);
        return;
    }
    cr_run_resume(run, n->out[out], 0);
}

void sip_cpl_run_abort(sip_cpl_run_t *run)
{
    if (run && run->state != CPL_DONE)
        run->state = CPL_ABORTED;
}
