#include "sip_cpl_exec.h"
#include "sip_cgi.h"
#include "sip_conf.h"
#include "sip_cpl.h"
#include "sip_cpl_mail.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_proxy.h"
#include "sip_registrar.h"
#include "sip_script_store.h"
#include "sip_stats.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"

/* ---- the compile cache ----
 *
 * Compiling validates against the schema (about 10 µs for a small script,
 * ~1 ms for a large one): done once per version of a script.  Files of
 * SipDirectory are keyed by path and checked by modification time and
 * size on every call (an administrator's edit takes effect at once);
 * uploaded scripts by AoR and modification time (the store sets it on
 * every change).  Bounded: the least recently used entry goes first; an
 * entry a run still uses is freed when that run ends. */

#define CACHE_MAX 256

struct sip_cpl_entry {
    apr_pool_t *pool;
    const char *key;
    apr_time_t mtime;
    apr_off_t size;
    sip_cpl_script_t *sc;       /* NULL: not valid ('why') */
    const char *why;
    const char *name;           /* for log lines */
    int refs;                   /* runs using it */
    int cached;                 /* in the hash and the list */
    sip_cpl_entry_t *prev, *next;
};

static sip_loop_t *cpl_loop;
static apr_pool_t *cpl_pool;
static apr_hash_t *cache;
static sip_cpl_entry_t *lru_head, *lru_tail;
static unsigned cache_n;

static void lru_unlink(sip_cpl_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(sip_cpl_entry_t *e)
{
    e->next = lru_head;
    e->prev = NULL;
    if (lru_head)
        lru_head->prev = e;
    lru_head = e;
    if (!lru_tail)
        lru_tail = e;
}

static void entry_drop(sip_cpl_entry_t *e)
{
    if (e->cached) {
        apr_hash_set(cache, e->key, APR_HASH_KEY_STRING, NULL);
        lru_unlink(e);
        cache_n--;
        e->cached = 0;
    }
    if (!e->refs)
        apr_pool_destroy(e->pool);
}

static void entry_unref(sip_cpl_entry_t *e)
{
    if (--e->refs == 0 && !e->cached)
        apr_pool_destroy(e->pool);
}

static sip_cpl_entry_t *cache_get(const char *key, apr_time_t mtime, apr_off_t size)
{
    sip_cpl_entry_t *e = cache ? apr_hash_get(cache, key, APR_HASH_KEY_STRING) : NULL;

    if (!e)
        return NULL;
    if (e->mtime != mtime || e->size != size) {
        entry_drop(e);
        return NULL;
    }
    lru_unlink(e);
    lru_front(e);
    return e;
}

/* Compile 'body' into a new cache entry under 'key'. */
static sip_cpl_entry_t *cache_put(const char *key, apr_time_t mtime, apr_off_t size,
                                  const char *body, apr_size_t len, const char *name)
{
    apr_pool_t *p;
    sip_cpl_entry_t *e;
    const char *why = NULL;

    while (cache_n >= CACHE_MAX && lru_tail)
        entry_drop(lru_tail);
    apr_pool_create(&p, cpl_pool);
    e = apr_pcalloc(p, sizeof(*e));
    e->pool = p;
    e->key = apr_pstrdup(p, key);
    e->mtime = mtime;
    e->size = size;
    e->name = apr_pstrdup(p, name);
    e->sc = sip_cpl_compile(p, body, len, e->name, &why);
    if (!e->sc)
        e->why = apr_pstrdup(p, why ? why : "not a valid CPL script");
    apr_hash_set(cache, e->key, APR_HASH_KEY_STRING, e);
    lru_front(e);
    e->cached = 1;
    cache_n++;
    return e;
}

static apr_status_t read_file(apr_pool_t *p, const char *path, apr_off_t size, char **body)
{
    apr_file_t *f;
    apr_size_t got = 0;
    apr_status_t rv;

    if (size > SIP_CPL_MAX_BYTES)
        return APR_EINVAL;
    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv != APR_SUCCESS)
        return rv;
    *body = apr_palloc(p, (apr_size_t)size + 1);
    rv = apr_file_read_full(f, *body, (apr_size_t)size, &got);
    apr_file_close(f);
    if (rv != APR_SUCCESS && !(APR_STATUS_IS_EOF(rv) && got == (apr_size_t)size))
        return rv;
    (*body)[got] = '\0';
    return APR_SUCCESS;
}

sip_cpl_entry_t *sip_cpl_exec_file(apr_pool_t *p, const char *path, const char **why)
{
    struct stat st;
    sip_cpl_entry_t *e;
    char *body = NULL;
    const char *slash = strrchr(path, '/');
    apr_status_t rv;

    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "cannot be read";
        return NULL;
    }
    e = cache_get(path, apr_time_from_sec(st.st_mtime) + st.st_mtim.tv_nsec / 1000,
                  (apr_off_t)st.st_size);
    if (!e) {
        rv = read_file(p, path, (apr_off_t)st.st_size, &body);
        if (rv != APR_SUCCESS) {
            *why = rv == APR_EINVAL ? "larger than a CPL script may be" : "cannot be read";
            return NULL;
        }
        e = cache_put(path, apr_time_from_sec(st.st_mtime) + st.st_mtim.tv_nsec / 1000,
                      (apr_off_t)st.st_size, body, (apr_size_t)st.st_size,
                      slash ? slash + 1 : path);
    }
    if (!e->sc) {
        *why = e->why;
        return NULL;
    }
    return e;
}

sip_cpl_entry_t *sip_cpl_exec_uploaded(const sip_script_t *sc, const char **why)
{
    apr_pool_t *p;
    const char *key;
    sip_cpl_entry_t *e;

    apr_pool_create(&p, cpl_pool);
    key = apr_pstrcat(p, "upload\n", sc->aor, NULL);
    e = cache_get(key, sc->mtime, (apr_off_t)sc->len);
    if (!e)
        e = cache_put(key, sc->mtime, (apr_off_t)sc->len, sc->body, sc->len,
                      apr_pstrcat(p, "uploaded by ", sc->aor, NULL));
    apr_pool_destroy(p);
    if (!e->sc) {
        *why = e->why;
        return NULL;
    }
    return e;
}

int sip_cpl_entry_has(const sip_cpl_entry_t *e, sip_cpl_dir_t dir)
{
    return e && e->sc && sip_cpl_script_has(e->sc, dir);
}

const char *sip_cpl_entry_name(const sip_cpl_entry_t *e)
{
    return e->name;
}

void sip_cpl_exec_log_invalid(server_rec *s, const char *name, const char *why)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("invalid CPL scripts");

    sip_stats->cpl_failures++;
    sip_log_limited(&rl, name, 0, APLOG_ERR, s, "cpl: %s is not a usable CPL script, "
                    "skipped: %s", name, why ? why : "unknown reason");
}

/* ---- start-up: every SipDirectory's *.cpl is checked once ---- */

static void check_directory(apr_pool_t *p, server_rec *s, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned ok = 0, bad = 0;

    if (!d)
        return;
    while ((de = readdir(d))) {
        apr_size_t n = strlen(de->d_name);
        const char *path = NULL, *why = NULL;

        if (n <= 4 || strcmp(de->d_name + n - 4, ".cpl") != 0 || !sip_cgi_name_ok(de->d_name))
            continue;
        if (sip_cgi_locate_file(p, dir, de->d_name, 0, &path, &why) == 0
            && sip_cpl_exec_file(p, path, &why)) {
            ok++;
            continue;
        }
        bad++;
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "cpl: %s/%s is not a valid CPL script and "
                     "will be skipped: %s", dir, de->d_name, why ? why : "cannot be used");
    }
    closedir(d);
    if (ok || bad)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "cpl: %s: %u valid CPL script%s, %u invalid",
                     dir, ok, ok == 1 ? "" : "s", bad);
}

void sip_cpl_exec_init(sip_loop_t *loop, apr_pool_t *p, server_rec *main_server)
{
    apr_hash_t *seen;
    apr_pool_t *tmp;
    const char *why = NULL;
    server_rec *s;

    cpl_loop = loop;
    apr_pool_create(&cpl_pool, p);
    apr_pool_tag(cpl_pool, "sip_cpl");
    cache = apr_hash_make(cpl_pool);
    lru_head = lru_tail = NULL;
    cache_n = 0;
    sip_cpl_mail_init(loop, p);
    if (!sip_cpl_init(p, &why))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, main_server, "cpl: the CPL schema cannot be "
                     "used: %s", why ? why : "unknown reason");
    apr_pool_create(&tmp, p);
    seen = apr_hash_make(tmp);
    for (s = main_server; s; s = s->next) {
        const sip_server_conf *c = sip_get_conf(s);
        if (c->enabled != 1 || !c->directory
            || apr_hash_get(seen, c->directory, APR_HASH_KEY_STRING))
            continue;
        apr_hash_set(seen, c->directory, APR_HASH_KEY_STRING, "");
        check_directory(tmp, s, c->directory);
    }
    apr_pool_destroy(tmp);
}

/* ---- one run ---- */

typedef struct cpl_ctx cpl_ctx_t;

/* One <proxy> action (RFC 3880 §6.1). */
typedef struct attempt {
    apr_array_header_t *locs;       /* const char * URIs, best priority first */
    sip_cpl_ordering_t ordering;
    int recurse;
    apr_interval_time_t timeout;
    int cur;                        /* location being tried (parallel: 0 = all) */
    int cur_open;                   /* branches of 'cur' without a final response */
    int cur_lookups;                /* users of ours of 'cur' being looked up */
    int timed_out;                  /* the last location tried timed out */
    int six_xx;
    int got_2xx;
    int done;
    int best_status;
    apr_array_header_t *best_contacts;  /* of the best 3xx */
    int recursions;
    int branches;
    apr_array_header_t *rq;         /* 3xx Contacts to fork to (recursion), not yet made */
    apr_hash_t *tried;              /* URI keys: no target twice (3xx loops) */
    sip_timer_t timer;
    cpl_ctx_t *ctx;
} attempt_t;

typedef struct branch_rec {
    attempt_t *att;
    int loc;
    int final;
} branch_rec_t;

/* A final response kept back from the proxy until the script decides. */
typedef struct held {
    sip_proxy_branch_t *b;
    sip_msg_t *msg;
    int local;
    int gone;                       /* handed back or given up */
    struct held *next;
} held_t;

struct cpl_ctx {
    apr_pool_t *pool;
    sip_txn_t *txn;                 /* NULL once handed to the next step */
    server_rec *s;
    sip_cpl_entry_t *entry;         /* referenced while the run lives */
    sip_cpl_run_t *run;
    int running;                    /* the run has not ended */
    sip_cpl_dir_t dir;
    const char *owner;
    const char *script;
    sip_cpl_exec_next_fn next;
    void *next_baton;
    int txn_over;
    int freed;
    sip_proxy_t *px;
    int px_idle;
    int proxied;                    /* a proxy action went out */
    int handback;                   /* finals go to the proxy's own handling */
    int final_proxy;                /* the end's location set is being proxied */
    int busy;                       /* lookups (ours and of location-set users) out */
    attempt_t *att;                 /* current <proxy> */
    attempt_t *forking;             /* the attempt branches being made belong to */
    int forking_loc;
    apr_hash_t *branches;           /* sip_proxy_branch_t * -> branch_rec_t */
    held_t *held;
    sip_timer_t t_defer;            /* work done outside the proxy's callbacks */
    sip_timer_t t_lookup;
    unsigned lookup_gen;
};

static void ctx_maybe_free(cpl_ctx_t *ctx);
static void attempt_check(attempt_t *att);
static void start_location(attempt_t *att);

static int txn_live(const cpl_ctx_t *ctx)
{
    return ctx->txn && !ctx->txn_over;
}

static int may_answer(const cpl_ctx_t *ctx)
{
    return txn_live(ctx) && !sip_txn_final_sent(ctx->txn);
}

static void end_run_state(cpl_ctx_t *ctx)
{
    if (ctx->running) {
        ctx->running = 0;
        ctx->run = NULL;
        sip_timer_cancel(cpl_loop, &ctx->t_lookup);
        if (ctx->att)
            sip_timer_cancel(cpl_loop, &ctx->att->timer);
        entry_unref(ctx->entry);
    }
}

/* The caller went away (CANCEL, or the transaction ended): no callback of
 * the interpreter may follow. */
static void abort_run(cpl_ctx_t *ctx)
{
    if (ctx->running && ctx->run)
        sip_cpl_run_abort(ctx->run);
    end_run_state(ctx);
}

/* The best final response the proxy got goes upstream (RFC 3261 §16.7
 * steps 6 and 7: the proxy core chooses). */
static void send_best(cpl_ctx_t *ctx)
{
    held_t *h;

    ctx->handback = 1;
    if (!ctx->px) {
        /* no branch was ever made (every location unusable) */
        if (may_answer(ctx))
            sip_txn_reply(ctx->txn, 480, "Temporarily Unavailable", NULL);
        return;
    }
    for (h = ctx->held; h; h = h->next) {
        if (h->gone)
            continue;
        h->gone = 1;
        sip_proxy_default_response(ctx->px, h->b, h->msg, h->local);
    }
    if (may_answer(ctx))
        sip_proxy_send_best(ctx->px);
}

/* Give the request to the next routing step (RFC 3880 §10: as if there
 * had been no script). */
static void give_up(cpl_ctx_t *ctx)
{
    sip_txn_t *txn = ctx->txn;

    if (!txn_live(ctx) || sip_txn_final_sent(txn)) {
        ctx_maybe_free(ctx);
        return;
    }
    ctx->txn = NULL;
    sip_txn_detach_keep(txn);
    ctx->next(ctx->next_baton);
    sip_txn_release(txn);
    ctx_maybe_free(ctx);
}

/* ---- the proxy owner ---- */

static branch_rec_t *rec_of(cpl_ctx_t *ctx, sip_proxy_branch_t *b)
{
    branch_rec_t *r = apr_hash_get(ctx->branches, &b, sizeof(b));

    if (!r && ctx->forking) {
        r = apr_pcalloc(ctx->pool, sizeof(*r));
        r->att = ctx->forking;
        r->loc = ctx->forking_loc;
        r->att->branches++;
        if (r->loc == r->att->cur)
            r->att->cur_open++;
        apr_hash_set(ctx->branches, apr_pmemdup(ctx->pool, &b, sizeof(b)), sizeof(b), r);
    }
    return r;
}

static void defer(cpl_ctx_t *ctx);

/* RFC 3261 §16.7 step 6, for the script's outputs: 6xx first, else the
 * lowest class; within a class, busy (486) first, so that the busy output
 * runs when a callee said so. */
static int rank(int status)
{
    return status >= 600 ? (status == 600 ? 0 : 1) : (status / 100) * 1000
                                                      + (status == 486 ? 0 : status);
}

/* The Contact URIs of a 3xx (recursion, the redirection output). */
static void contacts_of(apr_pool_t *p, const sip_msg_t *resp, apr_array_header_t *out)
{
    const apr_array_header_t *hdrs = sip_msg_headers(resp);
    apr_array_header_t *values = apr_array_make(p, 4, sizeof(const char *));
    int i;

    for (i = 0; hdrs && i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        if (!strcasecmp(h->name, "Contact") || !strcasecmp(h->name, "m"))
            sip_header_split_list(p, h->value, values);
    }
    for (i = 0; i < values->nelts; i++) {
        const char *uri = sip_header_uri(p, APR_ARRAY_IDX(values, i, const char *), NULL);
        if (uri && *uri && strcmp(uri, "*"))
            *(const char **)apr_array_push(out) = uri;
    }
}

static int px_response(void *baton, sip_proxy_branch_t *b, sip_msg_t *resp, int local)
{
    cpl_ctx_t *ctx = baton;
    int status = sip_msg_status(resp);
    branch_rec_t *r;
    attempt_t *att;
    held_t *h;

    if (status < 200 || ctx->handback || !ctx->running)
        return 0;
    r = rec_of(ctx, b);
    if (!r || r->final)
        return 0;
    r->final = 1;
    att = r->att;
    if (r->loc == att->cur)
        att->cur_open--;
    if (status < 300) {
        /* §16.7 step 5: a 2xx goes upstream at once (the proxy core sends
         * it and cancels the rest) */
        att->got_2xx = 1;
        defer(ctx);
        return 0;
    }
    h = apr_pcalloc(ctx->pool, sizeof(*h));
    h->msg = sip_msg_dup(ctx->pool, resp);
    if (!h->msg)
        return 0;
    h->b = b;
    h->local = local;
    h->next = ctx->held;
    ctx->held = h;
    if (status >= 600)
        att->six_xx = 1;
    if (status >= 300 && status < 400 && att->recurse && !att->done
        && att->recursions < 5) {
        apr_array_header_t *contacts = apr_array_make(ctx->pool, 4, sizeof(const char *));
        int i, forked = 0;
        contacts_of(ctx->pool, resp, contacts);
        /* recursion (§16.5): the Contacts join the same location; the 3xx
         * itself is then no candidate (§16.7 step 4).  Made later, outside
         * this callback (att->rq holds the location open meanwhile). */
        for (i = 0; i < contacts->nelts
                    && att->branches + att->rq->nelts < 2 * sip_get_conf(ctx->s)->max_branches;
             i++) {
            const char *u = APR_ARRAY_IDX(contacts, i, const char *);
            const char *key = sip_uri_key(ctx->pool, u);
            if (!key || apr_hash_get(att->tried, key, APR_HASH_KEY_STRING))
                continue;
            apr_hash_set(att->tried, key, APR_HASH_KEY_STRING, u);
            forked++;
            *(const char **)apr_array_push(att->rq) = u;
        }
        if (forked && r->loc == att->cur) {
            att->recursions++;
            h->gone = 2;        /* settled in deferred(), not handed back */
            defer(ctx);
            return 1;
        }
    }
    if (!att->best_status || rank(status) < rank(att->best_status)) {
        att->best_status = status;
        att->best_contacts = NULL;
        if (status < 400) {
            att->best_contacts = apr_array_make(ctx->pool, 4, sizeof(const char *));
            contacts_of(ctx->pool, resp, att->best_contacts);
        }
    }
    defer(ctx);
    return 1;
}

static void px_idle(void *baton)
{
    cpl_ctx_t *ctx = baton;

    ctx->px_idle = 1;
    ctx_maybe_free(ctx);
}

static const sip_proxy_owner_t px_owner = {px_response, px_idle};

static sip_proxy_t *ctx_proxy(cpl_ctx_t *ctx)
{
    if (!ctx->px && may_answer(ctx))
        ctx->px = sip_proxy_new_owned(ctx->txn, ctx->s, &px_owner, ctx);
    if (ctx->px)
        ctx->px_idle = 0;
    return ctx->px;
}

/* targets that are our own users: sip_registrar_fork_user */
typedef struct user_fork {
    cpl_ctx_t *ctx;
    attempt_t *att;
    int loc;
} user_fork_t;

static sip_proxy_t *uf_proxy(void *baton)
{
    user_fork_t *uf = baton;
    cpl_ctx_t *ctx = uf->ctx;

    if (uf->att->done || ctx->handback || !ctx->running || !may_answer(ctx))
        return NULL;
    ctx->forking = uf->att;
    ctx->forking_loc = uf->loc;
    return ctx_proxy(ctx);
}

static void uf_forked(void *baton, sip_proxy_branch_t *b)
{
    user_fork_t *uf = baton;

    rec_of(uf->ctx, b);
}

static void uf_done(void *baton)
{
    user_fork_t *uf = baton;
    cpl_ctx_t *ctx = uf->ctx;

    ctx->forking = NULL;
    ctx->busy--;
    if (uf->loc == uf->att->cur)
        uf->att->cur_lookups--;
    if (!uf->att->done && ctx->running)
        attempt_check(uf->att);
    defer(ctx);     /* a 3xx recursed on may be settled now */
    ctx_maybe_free(ctx);
}

static const sip_registrar_fork_ops_t uf_ops = {uf_proxy, uf_forked, uf_done};

static void fork_one(attempt_t *att, int loc, const char *uri)
{
    cpl_ctx_t *ctx = att->ctx;
    sip_proxy_t *px;
    sip_proxy_branch_t *b;

    if (sip_uri_aor(ctx->pool, uri) && sip_proxy_uri_is_local(uri, ctx->s, ctx->pool)) {
        user_fork_t *uf = apr_pcalloc(ctx->pool, sizeof(*uf));
        uf->ctx = ctx;
        uf->att = att;
        uf->loc = loc;
        ctx->busy++;
        if (loc == att->cur)
            att->cur_lookups++;
        sip_registrar_fork_user(ctx->pool, ctx->s, uri, NULL, &uf_ops, uf);
        return;
    }
    if (!(px = ctx_proxy(ctx)))
        return;
    ctx->forking = att;
    ctx->forking_loc = loc;
    b = sip_proxy_fork(px, uri, NULL);
    if (b)
        rec_of(ctx, b);
    ctx->forking = NULL;
}

/* ---- attempts ---- */

static void attempt_timeout(void *baton)
{
    attempt_t *att = baton;

    /* RFC 3880 §6.1: no answer in time: the pending branches are cancelled */
    att->timed_out = 1;
    if (att->ctx->px)
        sip_proxy_cancel(att->ctx->px);
    attempt_check(att);
}

static void start_location(attempt_t *att)
{
    cpl_ctx_t *ctx = att->ctx;
    const char *uri = APR_ARRAY_IDX(att->locs, att->cur, const char *);
    const char *key = sip_uri_key(ctx->pool, uri);

    att->timed_out = 0;
    att->cur_open = att->cur_lookups = 0;
    if (key)
        apr_hash_set(att->tried, key, APR_HASH_KEY_STRING, uri);
    sip_timer_set(cpl_loop, &att->timer, att->timeout, attempt_timeout, att);
    fork_one(att, att->cur, uri);
}

static void attempt_finish(attempt_t *att)
{
    cpl_ctx_t *ctx = att->ctx;
    int result, status = att->best_status;

    att->done = 1;
    sip_timer_cancel(cpl_loop, &att->timer);
    if (!ctx->running)
        return;
    if (ctx->final_proxy) {
        /* the end's location set (RFC 3880 §10): a 2xx went up already */
        if (!att->got_2xx)
            send_best(ctx);
        end_run_state(ctx);
        ctx_maybe_free(ctx);
        return;
    }
    if (att->got_2xx) {
        sip_cpl_proxy_done(ctx->run, 0, 200, NULL);
        return;
    }
    if (!may_answer(ctx)) {
        /* answered meanwhile (483/482 of the proxy checks): nothing more */
        abort_run(ctx);
        ctx_maybe_free(ctx);
        return;
    }
    if (status == 486 || status == 600)
        result = SIP_CPL_PX_BUSY;
    else if (att->timed_out || !status || status == 408 || status == 480)
        result = SIP_CPL_PX_NOANSWER;
    else if (status >= 300 && status < 400)
        result = SIP_CPL_PX_REDIRECTION;
    else
        result = SIP_CPL_PX_FAILURE;
    sip_cpl_proxy_done(ctx->run, result, status ? status : 408,
                       status >= 300 && status < 400 ? att->best_contacts : NULL);
}

static void attempt_check(attempt_t *att)
{
    int over;

    if (att->done)
        return;
    if (att->got_2xx || att->six_xx) {
        /* RFC 3261 §16.7 step 6: after a 6xx nobody else is rung (the
         * proxy core cancels the rest after a 2xx itself) */
        if (att->six_xx && att->ctx->px)
            sip_proxy_cancel(att->ctx->px);
        attempt_finish(att);
        return;
    }
    over = att->timed_out || (!att->cur_open && !att->cur_lookups && !att->rq->nelts);
    if (!over)
        return;
    if (att->ordering == SIP_CPL_SEQUENTIAL && att->cur + 1 < att->locs->nelts
        && may_answer(att->ctx)) {
        att->cur++;
        start_location(att);
        if (!att->done && (att->cur_open || att->cur_lookups))
            return;
        attempt_check(att);
        return;
    }
    attempt_finish(att);
}

/* Outside the proxy's callbacks: recursion's new branches, settling the
 * 3xx they replace, and whether the attempt is over. */
static void deferred(void *baton)
{
    cpl_ctx_t *ctx = baton;
    attempt_t *att = ctx->att;
    held_t *h;

    if (att && !att->done && ctx->running) {
        /* the Contacts of a 3xx recursed on, as branches of the location */
        apr_array_header_t *rq = att->rq;
        int i;
        att->rq = apr_array_make(ctx->pool, 4, sizeof(const char *));
        for (i = 0; i < rq->nelts && !att->done; i++)
            fork_one(att, att->cur, APR_ARRAY_IDX(rq, i, const char *));
    }
    /* after the new branches exist: a settled 3xx with nothing pending
     * would let the proxy core answer on its own */
    for (h = ctx->held; h && !ctx->busy; h = h->next) {
        if (h->gone != 2)
            continue;
        h->gone = 1;
        if (ctx->px)
            sip_proxy_branch_settled(ctx->px, h->b);
    }
    if (att && !att->done && ctx->running)
        attempt_check(att);
    ctx_maybe_free(ctx);
}

static void defer(cpl_ctx_t *ctx)
{
    if (!sip_timer_armed(&ctx->t_defer))
        sip_timer_set(cpl_loop, &ctx->t_defer, 0, deferred, ctx);
}

/* ---- the host callbacks (sip_cpl_run.h) ---- */

static void start_attempt(cpl_ctx_t *ctx, const apr_array_header_t *locations,
                          sip_cpl_ordering_t ordering, int timeout_sec, int recurse)
{
    const sip_server_conf *conf = sip_get_conf(ctx->s);
    attempt_t *att = apr_pcalloc(ctx->pool, sizeof(*att));
    int i, n;

    att->ctx = ctx;
    att->ordering = ordering;
    att->recurse = recurse;
    /* never longer than timer C (RFC 3261 §16.6 step 11) */
    att->timeout = apr_time_from_sec(timeout_sec > 0 ? timeout_sec : 20);
    if (att->timeout > conf->timer_c)
        att->timeout = conf->timer_c;
    att->tried = apr_hash_make(ctx->pool);
    att->rq = apr_array_make(ctx->pool, 4, sizeof(const char *));
    att->locs = apr_array_make(ctx->pool, locations->nelts + 4, sizeof(const char *));
    n = ordering == SIP_CPL_FIRST_ONLY ? 1 : locations->nelts;
    for (i = 0; i < n && i < conf->max_branches; i++)
        *(const char **)apr_array_push(att->locs)
            = apr_pstrdup(ctx->pool, APR_ARRAY_IDX(locations, i, sip_cpl_location_t).uri);
    if (ctx->att)
        sip_timer_cancel(cpl_loop, &ctx->att->timer);
    ctx->att = att;
    ctx->proxied = 1;
    sip_stats->cpl_proxies++;
    if (!att->locs->nelts) {
        attempt_finish(att);
        return;
    }
    if (ordering == SIP_CPL_PARALLEL) {
        /* every location is "location 0" */
        sip_timer_set(cpl_loop, &att->timer, att->timeout, attempt_timeout, att);
        for (i = 0; i < att->locs->nelts && !att->done; i++) {
            const char *uri = APR_ARRAY_IDX(att->locs, i, const char *);
            const char *key = sip_uri_key(ctx->pool, uri);
            if (key)
                apr_hash_set(att->tried, key, APR_HASH_KEY_STRING, uri);
            fork_one(att, 0, uri);
        }
    }
    else
        start_location(att);
    defer(ctx);
}

static void host_proxy(void *baton, sip_cpl_run_t *run, const sip_cpl_proxy_req_t *req)
{
    cpl_ctx_t *ctx = baton;

    ctx->run = run;
    start_attempt(ctx, req->locations, req->ordering, req->timeout_sec, req->recurse);
}

typedef struct lookup {
    cpl_ctx_t *ctx;
    unsigned gen;
} lookup_t;

static void lookup_answer(cpl_ctx_t *ctx, sip_cpl_lookup_result_t res,
                          const apr_array_header_t *locs)
{
    ctx->lookup_gen++;
    sip_timer_cancel(cpl_loop, &ctx->t_lookup);
    if (ctx->running && ctx->run)
        sip_cpl_lookup_done(ctx->run, res, locs);
}

static void lookup_fetched(void *baton, int status, apr_array_header_t *bindings)
{
    lookup_t *l = baton;
    cpl_ctx_t *ctx = l->ctx;
    apr_array_header_t *locs;
    int i;

    ctx->busy--;
    if (l->gen == ctx->lookup_gen) {
        if (status)
            lookup_answer(ctx, SIP_CPL_LOOKUP_FAILURE, NULL);
        else if (!bindings || !bindings->nelts)
            lookup_answer(ctx, SIP_CPL_LOOKUP_NOTFOUND, NULL);
        else {
            locs = apr_array_make(ctx->pool, bindings->nelts, sizeof(sip_cpl_location_t));
            for (i = 0; i < bindings->nelts; i++) {
                const sip_binding_t *bd = APR_ARRAY_IDX(bindings, i, sip_binding_t *);
                sip_cpl_location_t *loc = apr_array_push(locs);
                loc->uri = apr_pstrdup(ctx->pool, bd->contact);
                loc->q1000 = bd->q1000 >= 0 ? bd->q1000 : 1000;
            }
            lookup_answer(ctx, SIP_CPL_LOOKUP_SUCCESS, locs);
        }
    }
    ctx_maybe_free(ctx);
}

static void lookup_timeout(void *baton)
{
    cpl_ctx_t *ctx = baton;

    lookup_answer(ctx, SIP_CPL_LOOKUP_FAILURE, NULL);
}

/* <lookup> (RFC 3880 §5.2): "registration" is the registrar's bindings of
 * the script's owner; no other source is known here. */
static void host_lookup(void *baton, sip_cpl_run_t *run, const char *source, int timeout_sec)
{
    cpl_ctx_t *ctx = baton;
    lookup_t *l;

    ctx->run = run;
    if (!source || strcmp(source, "registration") != 0) {
        sip_cpl_lookup_done(run, SIP_CPL_LOOKUP_FAILURE, NULL);
        return;
    }
    l = apr_pcalloc(ctx->pool, sizeof(*l));
    l->ctx = ctx;
    l->gen = ++ctx->lookup_gen;
    ctx->busy++;
    sip_timer_set(cpl_loop, &ctx->t_lookup, apr_time_from_sec(timeout_sec > 0 ? timeout_sec : 30),
                  lookup_timeout, ctx);
    sip_location_fetch(ctx->pool, ctx->owner, lookup_fetched, l);
}

static void host_redirect(void *baton, const apr_array_header_t *locations, int permanent)
{
    cpl_ctx_t *ctx = baton;
    apr_array_header_t *parts = apr_array_make(ctx->pool, 4, sizeof(const char *));
    const char *hdrs[3] = {"Contact", NULL, NULL};
    int i;

    if (!may_answer(ctx))
        return;
    for (i = 0; locations && i < locations->nelts; i++) {
        const sip_cpl_location_t *l = &APR_ARRAY_IDX(locations, i, sip_cpl_location_t);
        if (strpbrk(l->uri, "<>\r\n\" "))
            continue;
        *(const char **)apr_array_push(parts)
            = l->q1000 >= 1000 ? apr_psprintf(ctx->pool, "<%s>;q=1", l->uri)
            : apr_psprintf(ctx->pool, "<%s>;q=0.%03d", l->uri, l->q1000 < 0 ? 0 : l->q1000);
    }
    if (parts->nelts) {
        hdrs[1] = apr_array_pstrcat(ctx->pool, parts, ',');
        sip_txn_reply(ctx->txn, permanent ? 301 : 302,
                      permanent ? "Moved Permanently" : "Moved Temporarily", hdrs);
    }
    else
        sip_txn_reply(ctx->txn, 480, "Temporarily Unavailable", NULL);
    if (ctx->px)
        sip_proxy_cancel(ctx->px);
}

static const char *reason_for(int status)
{
    switch (status) {
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 480: return "Temporarily Unavailable";
    case 486: return "Busy Here";
    case 500: return "Server Internal Error";
    case 600: return "Busy Everywhere";
    case 603: return "Decline";
    case 604: return "Does Not Exist Anywhere";
    default: break;
    }
    return status < 500 ? "Request Failed" : status < 600 ? "Server Error" : "Global Failure";
}

/* printable ASCII only, and short: it goes into a status line or a log */
static const char *clean_text(apr_pool_t *p, const char *s, apr_size_t max)
{
    char *out;
    apr_size_t i, n;

    if (!s)
        return NULL;
    n = strlen(s);
    if (n > max)
        n = max;
    out = apr_pstrmemdup(p, s, n);
    for (i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
            out[i] = '?';
    return out;
}

static void host_reject(void *baton, int status, const char *reason)
{
    cpl_ctx_t *ctx = baton;

    if (!may_answer(ctx))
        return;
    if (status < 300 || status > 699)
        status = 603;
    sip_txn_reply(ctx->txn, status, reason && *reason ? clean_text(ctx->pool, reason, 128)
                                                      : reason_for(status), NULL);
    if (ctx->px)
        sip_proxy_cancel(ctx->px);
}

static void host_log(void *baton, const char *name, const char *comment)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("CPL log actions");
    cpl_ctx_t *ctx = baton;
    const char *n = clean_text(ctx->pool, name ? name : "default", 64);
    const char *c = clean_text(ctx->pool, comment ? comment : "", 256);

    sip_log_limited(&rl, ctx->owner, 0, APLOG_INFO, ctx->s, "cpl: %s (owner %s) log %s: %s",
                    ctx->script, ctx->owner, n, c);
    /* mod_log_config: %{cpl-log}n on the transaction's access log line */
    if (txn_live(ctx))
        sip_txn_add_note(ctx->txn, "cpl-log", apr_pstrcat(sip_txn_pool(ctx->txn), n, ": ", c,
                                                          NULL));
}

/* SipCplMail: a user's script must not turn the server into a mail
 * cannon: at most MAIL_PER_OWNER mails per owner and MAIL_TOTAL in all
 * per minute. */
#define MAIL_PER_OWNER 5
#define MAIL_TOTAL     60

static int mail_allowed(const char *owner)
{
    static apr_pool_t *p;
    static apr_hash_t *counts;
    static apr_time_t window;
    static unsigned total;
    apr_time_t now = apr_time_now();
    unsigned *n;

    if (!p || now - window >= apr_time_from_sec(60)) {
        if (p)
            apr_pool_destroy(p);
        apr_pool_create(&p, cpl_pool);
        counts = apr_hash_make(p);
        window = now;
        total = 0;
    }
    if (total >= MAIL_TOTAL)
        return 0;
    n = apr_hash_get(counts, owner, APR_HASH_KEY_STRING);
    if (!n) {
        n = apr_pcalloc(p, sizeof(*n));
        apr_hash_set(counts, apr_pstrdup(p, owner), APR_HASH_KEY_STRING, n);
    }
    if (*n >= MAIL_PER_OWNER)
        return 0;
    (*n)++;
    total++;
    return 1;
}

static void host_mail(void *baton, const char *url)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("CPL mail actions");
    cpl_ctx_t *ctx = baton;
    const sip_server_conf *conf = sip_get_conf(ctx->s);
    const sip_msg_t *req = ctx->txn ? sip_txn_request(ctx->txn) : NULL;
    const char *msg, *why = NULL, *info;
    char date[APR_RFC822_DATE_LEN];
    apr_status_t rv;

    if (!conf->cpl_mail || !*conf->cpl_mail) {
        sip_stats->cpl_mails_refused++;
        sip_log_limited(&rl, ctx->owner, 1, APLOG_INFO, ctx->s, "cpl: %s (owner %s): mail "
                        "not sent: SipCplMail Off", ctx->script, ctx->owner);
        return;
    }
    apr_rfc822_date(date, apr_time_now());
    info = req ? apr_psprintf(ctx->pool, "Call from %s to %s at %s",
                              clean_text(ctx->pool, sip_msg_header(req, "From"), 256),
                              clean_text(ctx->pool, sip_msg_header(req, "To"), 256), date)
               : NULL;
    msg = sip_cpl_mail_message(ctx->pool, url, apr_pstrcat(ctx->pool, "mod_sip@",
                                                           ctx->s->server_hostname
                                                           ? ctx->s->server_hostname
                                                           : "localhost", NULL),
                               info, &why);
    if (!msg) {
        sip_stats->cpl_mails_refused++;
        sip_log_limited(&rl, ctx->owner, 2, APLOG_WARNING, ctx->s, "cpl: %s (owner %s): mail "
                        "not sent: %s", ctx->script, ctx->owner, why ? why : "bad URL");
        return;
    }
    if (!mail_allowed(ctx->owner)) {
        sip_stats->cpl_mails_refused++;
        sip_log_limited(&rl, ctx->owner, 3, APLOG_WARNING, ctx->s, "cpl: %s (owner %s): mail "
                        "not sent: more than %d a minute", ctx->script, ctx->owner,
                        MAIL_PER_OWNER);
        return;
    }
    rv = sip_cpl_mail_send(conf->cpl_mail, msg, ctx->s);
    if (rv != APR_SUCCESS) {
        sip_stats->cpl_mails_refused++;
        sip_log_limited(&rl, ctx->owner, 4, APLOG_WARNING, ctx->s, "cpl: %s (owner %s): mail "
                        "not sent: %s", ctx->script, ctx->owner,
                        APR_STATUS_IS_EAGAIN(rv) ? "too many mails being sent"
                        : "SipCplMail could not be started");
        return;
    }
    sip_stats->cpl_mails++;
}

static void host_end(void *baton, sip_cpl_end_t how, const apr_array_header_t *locations,
                     const char *node, const char *why)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("CPL run-time failures");
    cpl_ctx_t *ctx = baton;

    end_run_state(ctx);
    switch (how) {
    case SIP_CPL_END_ANSWERED:
        break;
    case SIP_CPL_END_PROXY_RESPONSE:
        send_best(ctx);
        break;
    case SIP_CPL_END_FAILED:
        sip_stats->cpl_failures++;
        sip_log_limited(&rl, ctx->script, 0, APLOG_ERR, ctx->s, "cpl: %s (owner %s) failed "
                        "at <%s> on %s: %s; %s", ctx->script, ctx->owner, node ? node : "?",
                        ctx->s->server_hostname ? ctx->s->server_hostname : "this node",
                        why ? why : "unknown reason",
                        ctx->proxied ? "the best response so far goes to the caller"
                        : "the next routing step takes the call");
        if (ctx->proxied)
            send_best(ctx);
        else
            give_up(ctx);
        return;
    case SIP_CPL_END_DEFAULT:
        /* <outgoing> starts with the destination as its location set
         * (RFC 3880 §5): left as it was, the call proceeds as if there had
         * been no script (relay checks, the callee's own routing steps) */
        if (ctx->dir == SIP_CPL_OUTGOING && locations && locations->nelts == 1 && ctx->txn
            && sip_uri_equal(APR_ARRAY_IDX(locations, 0, sip_cpl_location_t).uri,
                             sip_msg_request_uri(sip_txn_request(ctx->txn))))
            locations = NULL;
        if (locations && locations->nelts && may_answer(ctx)) {
            /* RFC 3880 §10: the location set is proxied to, and the best
             * response goes upstream */
            ctx->running = 1;       /* the final proxy keeps the context */
            ctx->entry->refs++;
            ctx->final_proxy = 1;
            start_attempt(ctx, locations, SIP_CPL_PARALLEL, 0, 1);
            return;
        }
        /* §10: after a proxy, its best response; else as if no script */
        if (ctx->proxied)
            send_best(ctx);
        else
            give_up(ctx);
        return;
    }
    ctx_maybe_free(ctx);
}

static const sip_cpl_host_t host = {host_lookup, host_proxy, host_redirect, host_reject,
                                    host_log, host_mail, host_end};

/* ---- the transaction ---- */

static int ctx_cancelled(void *tu)
{
    cpl_ctx_t *ctx = tu;

    /* RFC 3261 §9.2: the engine answers 487; the branches are cancelled
     * and the script stops where it waits (RFC 3880 has no output for it) */
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, ctx->s, "cpl: %s (owner %s): call cancelled",
                 ctx->script, ctx->owner);
    abort_run(ctx);
    ctx->handback = 1;
    if (ctx->px)
        sip_proxy_cancel(ctx->px);
    return 0;
}

static void ctx_ended(void *tu)
{
    cpl_ctx_t *ctx = tu;

    ctx->txn_over = 1;
    abort_run(ctx);
    ctx_maybe_free(ctx);
}

static const sip_txn_tu_ops_t ctx_ops = {ctx_cancelled, NULL, ctx_ended};

static void ctx_maybe_free(cpl_ctx_t *ctx)
{
    if (ctx->freed || ctx->running || ctx->busy || sip_timer_armed(&ctx->t_defer))
        return;
    if (ctx->txn && !ctx->txn_over)
        return;
    if (ctx->px && !ctx->px_idle)
        return;
    ctx->freed = 1;
    sip_timer_cancel(cpl_loop, &ctx->t_lookup);
    if (ctx->att)
        sip_timer_cancel(cpl_loop, &ctx->att->timer);
    if (ctx->px)
        sip_proxy_release(ctx->px);
    if (ctx->txn)
        sip_txn_detach(ctx->txn);
    ctx->txn = NULL;
    sip_loop_defer_destroy(cpl_loop, ctx->pool);
}

void sip_cpl_exec_run(sip_txn_t *txn, server_rec *s, sip_cpl_entry_t *e, sip_cpl_dir_t dir,
                      const char *owner, sip_cpl_exec_next_fn next, void *baton)
{
    apr_pool_t *p;
    cpl_ctx_t *ctx;
    sip_cpl_run_t *run;

    apr_pool_create(&p, cpl_pool);
    ctx = apr_pcalloc(p, sizeof(*ctx));
    ctx->pool = p;
    ctx->txn = txn;
    ctx->s = s;
    ctx->entry = e;
    ctx->dir = dir;
    ctx->owner = apr_pstrdup(p, owner);
    ctx->script = apr_pstrdup(p, e->name);
    ctx->next = next;
    ctx->next_baton = baton;
    ctx->branches = apr_hash_make(p);
    ctx->running = 1;
    e->refs++;
    sip_stats->cpl_runs++;
    sip_txn_keep_state(txn);
    sip_txn_attach(txn, &ctx_ops, ctx);
    run = sip_cpl_run_start(p, e->sc, dir, sip_txn_request(txn), ctx->owner, apr_time_now(),
                            &host, ctx);
    if (ctx->running && !ctx->final_proxy)
        ctx->run = run;
}
