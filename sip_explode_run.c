#include "sip_explode_run.h"
#include "sip_auth.h"
#include "sip_conf.h"
#include "sip_consent.h"
#include "sip_explode.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_options.h"
#include "sip_proxy.h"
#include "sip_request.h"
#include "sip_stats.h"
#include "sip_uri_list.h"

#include <string.h>

#include "apr_hash.h"
#include "apr_strings.h"

/* Jobs outlive the server transaction that started them: each has a pool
 * of its own under this one, freed when its last request is final. */
static apr_pool_t *jobs_root;

/* SipExplodeRate: explosions per user in the current minute.  Pruned of
 * old windows when it grows, so that user names cannot grow it without
 * bound (only authenticated users reach it anyway). */
#define RATE_WINDOW      apr_time_from_sec(60)
#define RATE_PRUNE_AT    10000
static apr_pool_t *rate_pool;
static apr_hash_t *rates;

typedef struct rate_slot {
    apr_time_t start;
    int count;
} rate_slot_t;

#define LOG_LINE_MAX     4000   /* of the per-explosion line's target list */

/* Lines an invoker can cause (dropped entries). */
static sip_log_rate_t rl_explode = SIP_LOG_RATE_INIT("URI-list notices");

void sip_explode_init(apr_pool_t *p)
{
    apr_pool_create(&jobs_root, p);
    apr_pool_tag(jobs_root, "sip_explode_jobs");
    apr_pool_create(&rate_pool, p);
    rates = apr_hash_make(rate_pool);
}

/* The address the service is asked at: the Request-URI's AoR, or for a
 * URI without a user part (RFC 5365's sip:list-service.example.org) its
 * host, so that a <Location "/host"> can hold SipExplode. */
static const char *service_aor(apr_pool_t *p, const sip_msg_t *req)
{
    const char *ruri = sip_msg_request_uri(req), *aor = sip_uri_aor(p, ruri);
    const char *user = NULL, *host = NULL;

    if (aor || !sip_uri_user_host(p, ruri, &user, &host) || !host)
        return aor;
    return apr_pstrcat(p, strncasecmp(ruri, "sips:", 5) ? "sip:" : "sips:",
                       sip_str_lower(p, host), NULL);
}

int sip_explode_needs_user(apr_pool_t *p, server_rec *s, const sip_msg_t *req)
{
    return sip_explode_used() && sip_explode_kind(p, req) != SIP_EXPLODE_NONE
           && sip_request_explode(p, s, service_aor(p, req));
}

/* ---- the rate limit ---- */

static void rate_prune(apr_time_t now)
{
    apr_pool_t *np;
    apr_hash_t *nh;
    apr_hash_index_t *hi;

    apr_pool_create(&np, apr_pool_parent_get(rate_pool));
    nh = apr_hash_make(np);
    for (hi = apr_hash_first(NULL, rates); hi; hi = apr_hash_next(hi)) {
        const char *user = apr_hash_this_key(hi);
        const rate_slot_t *r = apr_hash_this_val(hi);
        if (now - r->start < RATE_WINDOW)
            apr_hash_set(nh, apr_pstrdup(np, user), APR_HASH_KEY_STRING,
                         apr_pmemdup(np, r, sizeof(*r)));
    }
    apr_pool_destroy(rate_pool);
    rate_pool = np;
    rates = nh;
}

/* The current minute's slot of 'user' (NULL when it has none yet and
 * 'create' is 0). */
static rate_slot_t *rate_slot(const char *user, int create)
{
    apr_time_t now = apr_time_now();
    rate_slot_t *r = apr_hash_get(rates, user, APR_HASH_KEY_STRING);

    if (!r && !create)
        return NULL;
    if (!r) {
        if (apr_hash_count(rates) >= RATE_PRUNE_AT)
            rate_prune(now);
        r = apr_pcalloc(rate_pool, sizeof(*r));
        apr_hash_set(rates, apr_pstrdup(rate_pool, user), APR_HASH_KEY_STRING, r);
    }
    if (now - r->start >= RATE_WINDOW) {
        r->start = now;
        r->count = 0;
    }
    return r;
}

/* Has 'user' started 'limit' explosions this minute already? */
static int rate_exceeded(const char *user, int limit)
{
    rate_slot_t *r = limit > 0 ? rate_slot(user, 0) : NULL;

    return r && r->count >= limit;
}

static void rate_count(const char *user, int limit)
{
    if (limit > 0)
        rate_slot(user, 1)->count++;
}

/* ---- small helpers ---- */

/* A list entry's URI without its ?headers (what the target is). */
static const char *entry_target(apr_pool_t *p, const sip_uri_list_entry_t *e)
{
    const char *q = strchr(e->uri, '?');

    return q ? apr_pstrmemdup(p, e->uri, (apr_size_t)(q - e->uri)) : e->uri;
}

/* 's' as a URI fit for a header value or a log line: the list is the
 * invoker's XML, where &#10; is a newline.  Anything but visible ASCII,
 * and the delimiters of name-addr and header lists, is %-escaped. */
static const char *xp_uri_text(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    apr_size_t n = 0;
    const unsigned char *c;
    char *out, *o;

    for (c = (const unsigned char *)s; *c; c++)
        n += (*c <= 0x20 || *c >= 0x7f || strchr("<>\",", *c)) ? 3 : 1;
    o = out = apr_palloc(p, n + 1);
    for (c = (const unsigned char *)s; *c; c++) {
        if (*c <= 0x20 || *c >= 0x7f || strchr("<>\",", *c)) {
            *o++ = '%';
            *o++ = hex[*c >> 4];
            *o++ = hex[*c & 15];
        }
        else
            *o++ = (char)*c;
    }
    *o = '\0';
    return out;
}

static const char *random_hex(apr_pool_t *p, apr_size_t bytes)
{
    unsigned char rnd[16];
    char *out = apr_palloc(p, 2 * bytes + 1);
    apr_size_t i;

    if (bytes > sizeof(rnd))
        bytes = sizeof(rnd);
    if (apr_generate_random_bytes(rnd, bytes) != APR_SUCCESS) {
        /* never expected: fall back to something unique enough for a tag */
        apr_uint64_t t = (apr_uint64_t)apr_time_now() ^ (apr_uint64_t)(apr_uintptr_t)out;
        memcpy(rnd, &t, sizeof(t) < bytes ? sizeof(t) : bytes);
    }
    for (i = 0; i < bytes; i++) {
        out[2 * i] = "0123456789abcdef"[rnd[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[rnd[i] & 15];
    }
    out[2 * bytes] = '\0';
    return out;
}

/* One target's outcome from the finals of its requests (one per
 * registered contact): a 2xx on any delivers it; else, as a proxy picks
 * (RFC 3261 §16.7), a 6xx, else the lowest status. */
static int better(int cur, int st)
{
    if (!cur || st / 100 == 2)
        return cur / 100 == 2 ? cur : st;
    if (cur / 100 == 2 || cur / 100 == 6)
        return cur;
    if (st / 100 == 6)
        return st;
    return st < cur ? st : cur;
}

/* ---- the fan-out ---- */

typedef struct xp_target {
    const sip_uri_list_entry_t *entry;
    const char *uri;            /* without ?headers, printable */
    int status;                 /* best final so far; 0 none yet */
} xp_target_t;

typedef struct xp_job {
    apr_pool_t *pool;
    server_rec *s;
    const sip_explode_job_t *ex;
    const char *user, *from_aor, *ruri, *call_id, *peer;
    xp_target_t *targets;
    int n;
    int pending;                /* location fetches and requests not final, +1 while
                                   the fan-out loop runs */
    int requests;
} xp_job_t;

typedef struct xp_req {
    xp_job_t *job;
    xp_target_t *t;
    int done;
} xp_req_t;

typedef struct xp_fetch {
    xp_job_t *job;
    xp_target_t *t;
} xp_fetch_t;

/* EX-25: one line per explosion, once every request is final. */
static void job_finish(xp_job_t *job)
{
    apr_pool_t *p = job->pool;
    char *list = apr_palloc(p, LOG_LINE_MAX + 64), *o = list;
    int i;

    *o = '\0';
    for (i = 0; i < job->n; i++) {
        const char *item = apr_psprintf(p, "%s%s=%d", i ? ", " : "", job->targets[i].uri,
                                        job->targets[i].status);
        apr_size_t len = strlen(item);
        if ((apr_size_t)(o - list) + len > LOG_LINE_MAX) {
            apr_snprintf(o, 64, "%s... (%d more)", i ? ", " : "", job->n - i);
            break;
        }
        memcpy(o, item, len + 1);
        o += len;
    }
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, job->s,
                 "sip explode: %s %s %s via %.256s [%.128s]: %d targets, %d requests: %s",
                 job->user, job->from_aor, job->ex->method, job->ruri, job->call_id, job->n,
                 job->requests, list);
    apr_pool_destroy(p);
}

static void job_unref(xp_job_t *job)
{
    if (--job->pending == 0)
        job_finish(job);
}

static void req_final(xp_req_t *r, int status)
{
    r->done = 1;
    r->t->status = better(r->t->status, status);
    job_unref(r->job);
}

static void req_response(void *baton, sip_ctxn_t *c, sip_msg_t *resp, int from_network)
{
    xp_req_t *r = baton;

    (void)from_network;
    if (r->done || (resp && sip_msg_status(resp) < 200))
        return;
    /* the first final is the outcome: hear nothing more (a retransmitted
     * final, the transaction's end) once the job may be gone */
    if (resp && c)
        sip_ctxn_abandon(c);
    req_final(r, resp ? sip_msg_status(resp) : 500);
}

/* One request to 't', to 'request_uri' (a registered contact), or to the
 * target itself when NULL. */
static void send_one(xp_job_t *job, xp_target_t *t, const char *request_uri)
{
    apr_pool_t *tp;
    xp_req_t *r = apr_pcalloc(job->pool, sizeof(*r));
    const char *text, *call_id;
    apr_size_t len = 0;
    int sent = 0;

    r->job = job;
    r->t = t;
    job->pending++;
    /* the text is copied by the transaction: keep only the outcome */
    apr_pool_create(&tp, job->pool);
    call_id = apr_pstrcat(tp, random_hex(tp, 16), "@", job->s->server_hostname, NULL);
    text = sip_explode_request(tp, job->ex, t->entry, request_uri, call_id, random_hex(tp, 8),
                               &len);
    if (text)
        sent = sip_proxy_send_new(job->s, text, len, req_response, r);
    apr_pool_destroy(tp);
    if (sent) {
        job->requests++;
        sip_stats->explode_requests++;
    }
    else if (!r->done)
        req_final(r, text ? 503 : 500);     /* not sent (sip_proxy_send_new logged why) */
}

static void xp_fetched(void *baton, int status, apr_array_header_t *bindings)
{
    xp_fetch_t *f = baton;
    xp_job_t *job = f->job;
    int i, max = sip_get_conf(job->s)->max_branches;

    if (status)
        f->t->status = better(f->t->status, 500);
    else if (!bindings)
        f->t->status = better(f->t->status, 404);      /* never registered */
    else if (!bindings->nelts)
        f->t->status = better(f->t->status, 480);      /* no device now */
    else {
        /* best q first, at most SipMaxBranches, as for any request routed
         * to a user of ours */
        for (i = 0; i < bindings->nelts && i < max; i++)
            send_one(job, f->t, APR_ARRAY_IDX(bindings, i, sip_binding_t *)->contact);
    }
    job_unref(job);
}

static void fan_out(xp_job_t *job)
{
    int i;

    job->pending = 1;   /* the loop itself: answers may come before it ends */
    for (i = 0; i < job->n; i++) {
        xp_target_t *t = &job->targets[i];
        const char *aor = sip_uri_aor(job->pool, t->entry->uri);

        if (aor && sip_proxy_uri_is_local(t->entry->uri, job->s, job->pool)) {
            xp_fetch_t *f = apr_pcalloc(job->pool, sizeof(*f));
            f->job = job;
            f->t = t;
            job->pending++;
            sip_location_fetch(job->pool, aor, xp_fetched, f);
        }
        else
            send_one(job, t, NULL);
    }
    job_unref(job);
}

/* ---- the policy and the answer ---- */

/* Refuse with the info line every refusal gets (rate-limited per source),
 * naming the invoker (EX-25). */
static void xp_refuse(sip_txn_t *txn, int status, const char *reason, const char *const *hdrs,
                   const char *user, const char *why)
{
    apr_pool_t *p = sip_txn_pool(txn);

    sip_txn_refuse(txn, status, reason, hdrs,
                   apr_psprintf(p, "URI-list request of %s: %s", user ? user : "nobody", why));
}

void sip_explode_handle(sip_txn_t *txn, server_rec *s)
{
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *tp = sip_txn_pool(txn), *jp;
    const sip_server_conf *conf = sip_get_conf(s);
    sip_explode_kind_t kind = sip_explode_kind(tp, req);
    const char *aor = service_aor(tp, req), *user = sip_txn_user(txn);
    const char *reason = NULL, *why = NULL, *accept = NULL, *from_aor;
    const char *peer = sip_sockaddr_ip(tp, &sip_txn_source(txn)->peer);
    sip_explode_limits_t lim;
    sip_explode_job_t *ex = NULL;
    apr_array_header_t *missing, *outside;
    sip_msg_t *copy;
    xp_job_t *job;
    int i, status;

    /* (a) EX-15: off for this address.  RFC 3261 §8.2.1: 405 with what
     * is allowed.  A recipient-list MESSAGE gets here only when Require
     * was let through; its method is allowed, the extension is not: 420
     * (§8.2.2.3), as sip_options_unsupported says for it. */
    if (!sip_request_explode(tp, s, aor)) {
        if (kind == SIP_EXPLODE_MESSAGE) {
            const char *hdrs[] = {"Unsupported", SIP_OPTION_LIST_MESSAGE, NULL};
            xp_refuse(txn, 420, "Bad Extension", hdrs, user, "SipExplode Off");
        }
        else {
            const char *hdrs[] = {"Allow", sip_options_allow(tp, s, aor), NULL};
            xp_refuse(txn, 405, "Method Not Allowed", hdrs, user, "SipExplode Off");
        }
        return;
    }
    /* (b) RFC 5363 §5.2: handle_request demanded a user; never without */
    if (!user) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "sip explode: %s %.256s reached the service "
                     "without an authenticated user; refused", sip_msg_method(req),
                     sip_msg_request_uri(req));
        xp_refuse(txn, 403, "Forbidden", NULL, NULL, "no authenticated user");
        return;
    }
    /* (c) SipExplodeRate; only explosions that went ahead count */
    if (rate_exceeded(user, conf->explode_rate)) {
        sip_stats->explode_refused++;
        xp_refuse(txn, 403, "Too Many Explosions", NULL, user,
               apr_psprintf(tp, "more than %d per minute (SipExplodeRate)", conf->explode_rate));
        return;
    }
    /* (d) read it, in a pool of the job's own: everything it keeps
     * (targets, template, body) must outlive the transaction */
    apr_pool_create(&jp, jobs_root);
    {
        /* parsed afresh in the job's pool: sip_msg_clone leaves the body
         * with the original */
        apr_size_t rlen = 0;
        const char *raw = sip_msg_serialize(jp, (sip_msg_t *)req, &rlen);
        sip_msg_error_t perr;
        copy = NULL;
        if (raw && sip_msg_parse(jp, raw, rlen, NULL, 0, &copy, &perr) != APR_SUCCESS)
            copy = NULL;
    }
    lim.max_targets = conf->explode_max_targets;
    lim.methods = conf->explode_methods;
    lim.realm = sip_auth_realm(s, jp, req);
    if (!lim.realm)
        lim.realm = s->server_hostname;     /* what sip_auth_check_user challenged with */
    status = copy ? sip_explode_parse(jp, copy, &lim, &ex, &reason, &why, &accept) : 500;
    if (status) {
        const char *hdrs[] = {"Accept", accept, NULL};
        sip_stats->explode_refused++;
        xp_refuse(txn, status, reason ? reason : "Server Internal Error",
               status == 415 && accept ? hdrs : NULL, user, why ? why : "cannot read it");
        apr_pool_destroy(jp);
        return;
    }
    from_aor = sip_uri_aor(jp, ex->from);
    if (!from_aor)
        from_aor = ex->from ? ex->from : "-";
    for (i = 0; ex->dropped && i < ex->dropped->nelts; i++) {
        const char *uri = APR_ARRAY_IDX(ex->dropped, i, const char *);
        sip_uri_parts_t u;
        /* no user part: the server's own host, which is no recipient */
        int host_only = sip_uri_parts(jp, sip_uri_escape_params(jp, uri), &u) && !u.user;
        sip_log_limited(&rl_explode, peer, 0, APLOG_INFO, s,
                        "sip explode: %s %s: entry %.256s dropped (%s)", user, from_aor,
                        xp_uri_text(jp, uri), host_only ? "it points at this server itself"
                                                        : "it would explode again");
    }

    job = apr_pcalloc(jp, sizeof(*job));
    job->pool = jp;
    job->s = s;
    job->ex = ex;
    job->user = apr_pstrdup(jp, user);
    job->from_aor = xp_uri_text(jp, from_aor);
    job->ruri = apr_pstrdup(jp, sip_msg_request_uri(req));
    job->call_id = apr_pstrdup(jp, sip_msg_call_id(req));
    job->peer = apr_pstrdup(jp, peer);
    job->targets = apr_pcalloc(jp, sizeof(xp_target_t) * (ex->targets->nelts + 1));
    missing = apr_array_make(tp, 4, sizeof(const char *));
    outside = apr_array_make(tp, 1, sizeof(const char *));
    for (i = 0; i < ex->targets->nelts; i++) {
        const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(ex->targets, i, sip_uri_list_entry_t);
        const char *target = entry_target(jp, e), *tuser = NULL, *thost = NULL;
        int local = sip_proxy_uri_is_local(target, s, jp);

        /* (e) EX-13: the server itself (a domain of ours, no user) is
         * no recipient: it would be the service again */
        if (local && sip_uri_user_host(jp, target, &tuser, &thost) && !(tuser && *tuser)) {
            sip_log_limited(&rl_explode, peer, 1, APLOG_INFO, s, "sip explode: %s %s: entry "
                            "%.256s dropped (a list pointing at the server itself)",
                            user, from_aor, xp_uri_text(jp, target));
            continue;
        }
        /* (f) RFC 5363 §5.2, RFC 5360: the target agreed beforehand */
        if (!sip_consent_allows(conf->explode_consent, jp, target, user, from_aor)
            && !(conf->explode_consent_local && local && sip_uri_aor(jp, target)))
            *(const char **)apr_array_push(missing) = apr_pstrcat(tp, "<", xp_uri_text(tp, target),
                                                                  ">", NULL);
        /* (g) leaving this server is what SipProxyOutside governs */
        if (!local && conf->proxy_outside == SIP_RELAY_OFF)
            *(const char **)apr_array_push(outside) = target;
        job->targets[job->n].entry = e;
        job->targets[job->n].uri = xp_uri_text(jp, target);
        job->n++;
    }
    if (!job->n) {
        sip_stats->explode_refused++;
        xp_refuse(txn, 400, "Empty List", NULL, user, "no target left in the list");
        apr_pool_destroy(jp);
        return;
    }
    /* (f) all or nothing (RFC 5360 §5.9.1): name every one missing */
    if (missing->nelts) {
        const char *hdrs[] = {"Permission-Missing", NULL, NULL};
        hdrs[1] = APR_ARRAY_IDX(missing, 0, const char *);
        for (i = 1; i < missing->nelts; i++)
            hdrs[1] = apr_pstrcat(tp, hdrs[1], ", ", APR_ARRAY_IDX(missing, i, const char *),
                                  NULL);
        sip_stats->explode_consent++;
        xp_refuse(txn, 470, "Consent Needed", hdrs, user,
               apr_psprintf(tp, "%d of %d targets have not consented", missing->nelts, job->n));
        apr_pool_destroy(jp);
        return;
    }
    if (outside->nelts) {
        sip_stats->explode_refused++;
        xp_refuse(txn, 403, "Forbidden", NULL, user,
               apr_psprintf(tp, "%d targets outside this server's domains (SipProxyOutside "
                            "Off)", outside->nelts));
        apr_pool_destroy(jp);
        return;
    }
    /* (h) EX-14: accepted, not delivered; the answer does not wait */
    rate_count(user, conf->explode_rate);
    sip_txn_add_note(txn, "explode", apr_psprintf(tp, "%d targets", job->n));
    sip_stats->explosions++;
    if (kind == SIP_EXPLODE_MESSAGE || conf->explode_response == 202)
        sip_txn_reply(txn, 202, "Accepted", NULL);
    else
        sip_txn_reply(txn, 200, "OK", NULL);
    /* (i) the transaction is not used past here: it may end first */
    fan_out(job);
}
