/* Name mapping (sip_namemap.h; seed 002 §5.2).  A file is indexed once at
 * configuration time (every form of every person to that person's id), a
 * dbm map is read per lookup (a local file, as mod_rewrite's dbm maps), a
 * program runs as one resident process per SipNameMap whose pipes the
 * engine's event loop polls, and dbd queries run in a thread of their own:
 * neither blocks the engine, and both answer questions in the order they
 * were asked, through the same queue, timeout and cache. */
#include "sip_namemap.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apr_dbd.h"
#include "apr_dbm.h"
#include "apr_file_info.h"
#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_portable.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_thread_cond.h"
#include "apr_thread_mutex.h"
#include "apr_thread_proc.h"
#include "mod_dbd.h"

extern char **environ;

#define NM_MAX_FILE         (16 * 1024 * 1024)
#define NM_TIMEOUT          apr_time_from_sec(2)        /* a step waits no longer */
#define NM_HUNG             (10 * NM_TIMEOUT)           /* then the mapper is restarted */
#define NM_MAX_PENDING      64                          /* questions out at once */
#define NM_BACKOFF_MIN      apr_time_from_sec(1)
#define NM_BACKOFF_MAX      apr_time_from_sec(60)
#define NM_CACHE_MAX        10000
#define NM_LINE_MAX         4096
#define NM_NAME_MAX         256                         /* longer: nobody's name */

/* Lines that requests can cause again and again: SipLogRateLimit, with
 * one source for all (whoever dials, it is a map that fails). */
static sip_log_rate_t nm_failures = SIP_LOG_RATE_INIT("name mapping failures");

typedef enum { NM_FILE, NM_DBM, NM_PROGRAM, NM_DBD } nm_kind_t;

typedef struct nm_mapper nm_mapper_t;

struct sip_namemap {
    nm_kind_t kind;
    const char *what;           /* for the log: "file /etc/..." */
    apr_hash_t *index;          /* file: form -> apr_array_header_t of const char * */
    const char *dbm_type, *path;
    char **argv;                /* program */
    server_rec *server;         /* dbd: where the statement is prepared */
    const char *label;          /* dbd: its mod_dbd label */
    nm_mapper_t *mapper;        /* program, in the engine */
};

/* ---- names ---- */

/* A user id as RFC 3261 §25.1 allows it unescaped (unreserved and
 * user-unreserved characters), but for ',' which separates candidates and
 * ';' and '?', which sip_uri_user_host takes for the end of a user part:
 * what a map may give as a candidate. */
static int nm_user_ok(const char *u)
{
    if (!*u)
        return 0;
    for (; *u; u++)
        if (!apr_isalnum(*u) && !strchr("-_.!~*'()&=+$/", *u))
            return 0;
    return 1;
}

/* A name part in lower case, without the dot of an initial ("Q."). */
static char *nm_name_lower(apr_pool_t *p, const char *s)
{
    char *r = apr_pstrdup(p, s), *c;
    apr_size_t n;

    for (c = r; *c; c++)
        *c = (char)apr_tolower(*c);
    n = strlen(r);
    while (n > 1 && r[n - 1] == '.')
        r[--n] = '\0';
    return r;
}

/* The first character of a name (a whole UTF-8 sequence). */
static const char *nm_initial(apr_pool_t *p, const char *s)
{
    unsigned char c = (unsigned char)*s;
    apr_size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;

    n = strnlen(s, n);
    return apr_pstrmemdup(p, s, n);
}

static void nm_add_form(apr_array_header_t *forms, apr_hash_t *seen, const char *f)
{
    if (!*f || apr_hash_get(seen, f, APR_HASH_KEY_STRING))
        return;
    apr_hash_set(seen, f, APR_HASH_KEY_STRING, f);
    APR_ARRAY_PUSH(forms, const char *) = f;
}

apr_array_header_t *sip_namemap_forms(apr_pool_t *p, const char *user, const char *first,
                                      const char *middle, const char *last)
{
    static const char *const seps[] = {".", "_", ""};
    apr_array_header_t *forms = apr_array_make(p, 24, sizeof(const char *));
    apr_hash_t *seen = apr_hash_make(p);
    const char *f = nm_name_lower(p, first), *l = nm_name_lower(p, last), *m = NULL;
    const char *fi = nm_initial(p, f), *mi = NULL;
    int i;

    if (middle && *middle) {
        m = nm_name_lower(p, middle);
        mi = nm_initial(p, m);
    }
    nm_add_form(forms, seen, nm_name_lower(p, user));          /* U */
    nm_add_form(forms, seen, f);                                /* F */
    nm_add_form(forms, seen, l);                                /* L */
    for (i = 0; i < 3; i++) {                                   /* FL */
        const char *s = seps[i];
        nm_add_form(forms, seen, apr_pstrcat(p, f, s, l, NULL));       /* john.public */
        nm_add_form(forms, seen, apr_pstrcat(p, fi, s, l, NULL));      /* j.public */
        if (!m)
            continue;
        nm_add_form(forms, seen, apr_pstrcat(p, f, s, mi, s, l, NULL));   /* john.q.public */
        nm_add_form(forms, seen, apr_pstrcat(p, fi, s, mi, s, l, NULL));  /* j.q.public */
        if (strcmp(m, mi))
            nm_add_form(forms, seen, apr_pstrcat(p, f, s, m, s, l, NULL)); /* john.quincy.public */
    }
    return forms;
}

/* Candidates separated by spaces or commas (a dbm value: httxt2dbm keeps
 * one word; a mapper's answer), each once; what is not a user id is left
 * out (logged). */
static apr_array_header_t *nm_split_users(apr_pool_t *p, const char *line, const char *what)
{
    apr_array_header_t *users = apr_array_make(p, 2, sizeof(const char *));
    char *copy = apr_pstrdup(p, line), *last = NULL, *u;
    int i;

    for (u = apr_strtok(copy, ", \t\r\n", &last); u; u = apr_strtok(NULL, ", \t\r\n", &last)) {
        if (!nm_user_ok(u)) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf,
                         "sip namemap: %s gave \"%.64s\", not a user id; left out", what, u);
            continue;
        }
        for (i = 0; i < users->nelts && strcmp(APR_ARRAY_IDX(users, i, const char *), u); i++)
            ;
        if (i == users->nelts)
            APR_ARRAY_PUSH(users, const char *) = u;
    }
    return users;
}

/* ---- SipNameMap file ---- */

static void nm_index_add(apr_pool_t *p, apr_hash_t *index, const char *form, const char *user)
{
    apr_array_header_t *users = apr_hash_get(index, form, APR_HASH_KEY_STRING);
    int i;

    if (!users) {
        users = apr_array_make(p, 1, sizeof(const char *));
        apr_hash_set(index, form, APR_HASH_KEY_STRING, users);
    }
    for (i = 0; i < users->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(users, i, const char *), user))
            return;
    APR_ARRAY_PUSH(users, const char *) = user;
}

sip_namemap_t *sip_namemap_parse_file(apr_pool_t *p, const char *name, const char *text,
                                      const char **why)
{
    sip_namemap_t *m = apr_pcalloc(p, sizeof(*m));
    char *copy = apr_pstrdup(p, text), *line = copy, *next;
    int lineno = 0;

    m->kind = NM_FILE;
    m->what = apr_pstrcat(p, "file ", name, NULL);
    m->index = apr_hash_make(p);
    for (; line; line = next) {
        char *f[5], *last = NULL, *hash;
        apr_array_header_t *forms;
        int n = 0, i;

        lineno++;
        if ((next = strchr(line, '\n')) != NULL)
            *next++ = '\0';
        if ((hash = strchr(line, '#')) != NULL)
            *hash = '\0';
        for (f[0] = apr_strtok(line, " \t\r", &last); f[n] && n < 4;)
            f[++n] = apr_strtok(NULL, " \t\r", &last);
        if (n == 0)
            continue;
        if (n < 3 || f[n]) {
            *why = apr_psprintf(p, "%s:%d: expected \"user First [Middle] Last\"", name, lineno);
            return NULL;
        }
        if (!nm_user_ok(f[0])) {
            *why = apr_psprintf(p, "%s:%d: \"%s\" is not a SIP user id", name, lineno, f[0]);
            return NULL;
        }
        forms = sip_namemap_forms(p, f[0], f[1], n == 4 ? f[2] : NULL, f[n - 1]);
        for (i = 0; i < forms->nelts; i++)
            nm_index_add(p, m->index, APR_ARRAY_IDX(forms, i, const char *), f[0]);
    }
    return m;
}

static sip_namemap_t *nm_load_file(apr_pool_t *p, const char *path, const char **why)
{
    apr_file_t *fp;
    apr_finfo_t fi;
    apr_size_t n;
    apr_status_t rv;
    char *text, err[120];

    rv = apr_file_open(&fp, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv == APR_SUCCESS && (rv = apr_file_info_get(&fi, APR_FINFO_SIZE, fp)) == APR_SUCCESS
        && fi.size > NM_MAX_FILE) {
        apr_file_close(fp);
        *why = apr_psprintf(p, "%s: larger than %d bytes", path, NM_MAX_FILE);
        return NULL;
    }
    if (rv == APR_SUCCESS) {
        n = (apr_size_t)fi.size;
        text = apr_palloc(p, n + 1);
        rv = n ? apr_file_read_full(fp, text, n, &n) : APR_SUCCESS;
        text[n] = '\0';
        apr_file_close(fp);
    }
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(p, "%s: %s", path, apr_strerror(rv, err, sizeof(err)));
        return NULL;
    }
    if (strlen(text) != n) {
        *why = apr_psprintf(p, "%s: holds a NUL byte", path);
        return NULL;
    }
    return sip_namemap_parse_file(p, path, text, why);
}

/* ---- SipNameMap dbm ---- */

static apr_array_header_t *nm_dbm_lookup(sip_namemap_t *m, apr_pool_t *p, const char *key,
                                      const char **why)
{
    apr_dbm_t *db;
    apr_datum_t k, v;
    apr_status_t rv;
    const char *line = NULL;
    char err[120];

    /* opened per lookup, like mod_rewrite's dbm maps: a rebuilt file is
     * seen at once, and nothing stays open across the engine's life */
    rv = apr_dbm_open_ex(&db, m->dbm_type, m->path, APR_DBM_READONLY, APR_OS_DEFAULT, p);
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(p, "cannot open %s: %s", m->path, apr_strerror(rv, err, sizeof(err)));
        return NULL;
    }
    k.dptr = (char *)key;
    k.dsize = strlen(key);
    v.dptr = NULL;
    v.dsize = 0;
    if (apr_dbm_fetch(db, k, &v) == APR_SUCCESS && v.dptr)
        line = apr_pstrmemdup(p, v.dptr, v.dsize);
    apr_dbm_close(db);
    return nm_split_users(p, line ? line : "", m->what);
}

apr_array_header_t *sip_namemap_lookup(sip_namemap_t *m, apr_pool_t *p, const char *name,
                                       const char **why)
{
    const char *key = sip_str_lower(p, name);
    apr_array_header_t *users;

    if (m->kind == NM_DBM)
        return nm_dbm_lookup(m, p, key, why);
    if (m->kind != NM_FILE) {
        *why = "not a file or dbm map";
        return NULL;
    }
    users = apr_hash_get(m->index, key, APR_HASH_KEY_STRING);
    return users ? users : apr_array_make(p, 1, sizeof(const char *));
}

/* ---- configuration ---- */

static const char *nm_root_path(apr_pool_t *p, const char *root, const char *path)
{
    char *out = NULL;

    if (apr_filepath_merge(&out, root, path, APR_FILEPATH_NOTRELATIVE, p) != APR_SUCCESS)
        return NULL;
    return out;
}

static const char *nm_create(apr_pool_t *p, server_rec *s, const char *kind, const char *arg,
                             const char *root, sip_namemap_t **out)
{
    sip_namemap_t *m;
    const char *why = NULL, *path, *colon;
    char err[120];
    apr_status_t rv;

    if (!strcasecmp(kind, "file")) {
        if (!(path = nm_root_path(p, root, arg)))
            return apr_pstrcat(p, "invalid path ", arg, NULL);
        *out = nm_load_file(p, path, &why);
        return *out ? NULL : why;
    }
    m = apr_pcalloc(p, sizeof(*m));
    if (!strcasecmp(kind, "dbm")) {
        apr_dbm_t *db;

        m->kind = NM_DBM;
        m->dbm_type = "default";
        path = arg;
        /* "sdbm:/path": a type is a word before the colon */
        colon = strchr(arg, ':');
        if (colon && colon > arg && colon - arg < 8) {
            const char *c;
            for (c = arg; c < colon && apr_isalpha(*c); c++)
                ;
            if (c == colon) {
                m->dbm_type = apr_pstrmemdup(p, arg, (apr_size_t)(colon - arg));
                path = colon + 1;
            }
        }
        if (!(m->path = nm_root_path(p, root, path)))
            return apr_pstrcat(p, "invalid path ", path, NULL);
        rv = apr_dbm_open_ex(&db, m->dbm_type, m->path, APR_DBM_READONLY, APR_OS_DEFAULT, p);
        if (rv != APR_SUCCESS)
            return apr_psprintf(p, "cannot open %s map %s: %s", m->dbm_type, m->path,
                                apr_strerror(rv, err, sizeof(err)));
        apr_dbm_close(db);
        m->what = apr_psprintf(p, "dbm %s:%s", m->dbm_type, m->path);
    }
    else if (!strcasecmp(kind, "program")) {
        m->kind = NM_PROGRAM;
        if (apr_tokenize_to_argv(arg, &m->argv, p) != APR_SUCCESS || !m->argv[0])
            return "program needs a command";
        if (!(path = nm_root_path(p, root, m->argv[0])))
            return apr_pstrcat(p, "invalid path ", m->argv[0], NULL);
        if (access(path, X_OK) != 0)
            return apr_psprintf(p, "cannot run %s: %s", path, strerror(errno));
        m->argv[0] = (char *)path;
        m->what = apr_pstrcat(p, "mapper ", path, NULL);
    }
    else if (!strcasecmp(kind, "dbd")) {
        APR_OPTIONAL_FN_TYPE(ap_dbd_prepare) *prepare = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_prepare);
        const char *ps = strstr(arg, "%s");

        if (!prepare || !s)
            return "dbd needs mod_dbd (LoadModule dbd_module before it)";
        if (!ps || strstr(ps + 2, "%s"))
            return "dbd needs an SQL query with one %s (the name)";
        m->kind = NM_DBD;
        m->server = s;
        /* one label per directive: mod_dbd prepares it on every connection */
        m->label = apr_psprintf(p, "sip_namemap_%pp", (void *)m);
        prepare(s, arg, m->label);
        m->what = apr_pstrcat(p, "dbd query \"", arg, "\"", NULL);
    }
    else
        return apr_pstrcat(p, "unknown source ", kind, " (file, dbm, dbd or program)", NULL);
    *out = m;
    return NULL;
}

const char *sip_namemap_directive(apr_pool_t *p, server_rec *s, sip_server_conf *c,
                                  const char *directive, const char *a1, const char *a2,
                                  const char *root)
{
    const char *why;
    char *end;
    long v;

    if (!strcasecmp(directive, "SipNameMap")) {
        sip_namemap_t *m = NULL;
        if ((why = nm_create(p, s, a1, a2, root, &m)) != NULL)
            return apr_pstrcat(p, "SipNameMap: ", why, NULL);
        c->namemap = m;
        return NULL;
    }
    if (!strcasecmp(directive, "SipNameMapMultiple")) {
        if (strcmp(a1, "300") && strcmp(a1, "404"))
            return "SipNameMapMultiple needs 300 (a Contact per candidate) or 404";
        c->namemap_multiple = atoi(a1);
        return NULL;
    }
    v = strtol(a1, &end, 10);
    if (end == a1 || *end || v < 0 || v > 86400 * 7)
        return "SipNameMapCacheTTL needs seconds (0 to 604800)";
    c->namemap_ttl = apr_time_from_sec(v);
    return NULL;
}

/* ---- the answer cache ---- */

struct sip_namemap_cache {
    apr_pool_t *pool;
    apr_hash_t *h;
    apr_size_t max, stored;
};

typedef struct {
    const char *answer;
    apr_time_t expires;
} nm_cache_entry_t;

sip_namemap_cache_t *sip_namemap_cache_create(apr_pool_t *p, apr_size_t max)
{
    sip_namemap_cache_t *c = apr_pcalloc(p, sizeof(*c));

    apr_pool_create(&c->pool, p);
    c->h = apr_hash_make(c->pool);
    c->max = max ? max : 1;
    return c;
}

void sip_namemap_cache_put(sip_namemap_cache_t *c, const char *name, const char *answer,
                           apr_time_t now, apr_interval_time_t ttl)
{
    nm_cache_entry_t *e;

    if (ttl <= 0)
        return;
    /* everything stored since the last clearing is in c->pool: clearing it
     * all at once is what bounds memory (a replaced entry is not freed) */
    if (c->stored >= c->max) {
        apr_pool_clear(c->pool);
        c->h = apr_hash_make(c->pool);
        c->stored = 0;
    }
    e = apr_palloc(c->pool, sizeof(*e));
    e->answer = apr_pstrdup(c->pool, answer);
    e->expires = now + ttl;
    apr_hash_set(c->h, apr_pstrdup(c->pool, name), APR_HASH_KEY_STRING, e);
    c->stored++;
}

int sip_namemap_cache_get(sip_namemap_cache_t *c, apr_pool_t *p, const char *name,
                          apr_time_t now, apr_array_header_t **users)
{
    nm_cache_entry_t *e = apr_hash_get(c->h, name, APR_HASH_KEY_STRING);

    if (!e || now >= e->expires)
        return 0;
    *users = nm_split_users(p, e->answer, "the cache");
    return 1;
}

/* ---- acting on the candidates ---- */

typedef enum { NM_ACT_PASS, NM_ACT_RETARGET, NM_ACT_MULTIPLE } nm_act_t;

/* What the candidates of 'name' (as dialled, decoded) ask for. */
static nm_act_t nm_decide(const char *name, const apr_array_header_t *users)
{
    int i;

    if (!users || users->nelts == 0)
        return NM_ACT_PASS;
    /* a user's own id is never ambiguous, even when others share it as a
     * first or last name */
    for (i = 0; i < users->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(users, i, const char *), name))
            return NM_ACT_PASS;
    return users->nelts == 1 ? NM_ACT_RETARGET : NM_ACT_MULTIPLE;
}

/* Carry out what nm_decide() said: SIP_STEP_DONE when the transaction was
 * answered. */
static sip_step_t nm_act(sip_txn_t *txn, server_rec *s, const char *name,
                      const apr_array_header_t *users)
{
    const sip_server_conf *conf = sip_get_conf(s);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *ruri = sip_msg_request_uri(req), *uri, **hdrs;
    int i;

    switch (nm_decide(name, users)) {
    case NM_ACT_PASS:
        return SIP_STEP_NEXT;
    case NM_ACT_RETARGET:
        uri = sip_uri_with_user(p, ruri, APR_ARRAY_IDX(users, 0, const char *), 0);
        if (!uri || sip_txn_retarget(txn, uri) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "sip namemap: cannot retarget %.256s "
                         "to user %s", ruri, APR_ARRAY_IDX(users, 0, const char *));
            return SIP_STEP_NEXT;
        }
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip namemap: %s %.256s mapped to %s",
                     sip_msg_method(req), ruri, uri);
        return SIP_STEP_NEXT;
    case NM_ACT_MULTIPLE:
        break;
    }
    if (conf->namemap_multiple == 404) {
        sip_txn_refuse(txn, 404, "Not Found", NULL,
                       apr_psprintf(p, "%d users answer to that name (SipNameMapMultiple 404)",
                                    users->nelts));
        return SIP_STEP_DONE;
    }
    /* §5.2: the candidates in a 300 (RFC 3261 §21.3.1: one Contact each) */
    hdrs = apr_pcalloc(p, sizeof(*hdrs) * (2 * (apr_size_t)users->nelts + 1));
    for (i = 0; i < users->nelts; i++) {
        uri = sip_uri_with_user(p, ruri, APR_ARRAY_IDX(users, i, const char *), 1);
        hdrs[2 * i] = "Contact";
        hdrs[2 * i + 1] = apr_pstrcat(p, "<", uri ? uri : "", ">", NULL);
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip namemap: %s %.256s: %d candidates, 300",
                 sip_msg_method(req), ruri, users->nelts);
    sip_txn_reply(txn, 300, "Multiple Choices", hdrs);
    return SIP_STEP_DONE;
}

/* ---- asking a mapper (SipNameMap program) or the database (dbd) ---- */

typedef struct nm_query nm_query_t;

typedef struct nm_waiter {
    nm_query_t *q;
    sip_txn_t *txn;
    server_rec *s;
    const char *name;           /* as dialled, decoded */
    sip_step_resume_fn resume;
    void *baton;
    int gone;                   /* resumed, or the transaction ended */
    struct nm_waiter *next;
} nm_waiter_t;

struct nm_query {
    apr_pool_t *pool;
    nm_mapper_t *mp;
    const char *key;            /* lower case: what the mapper is asked */
    apr_time_t sent;
    apr_interval_time_t ttl;
    sip_timer_t timer;
    int timed_out;
    nm_waiter_t *waiters;
    nm_query_t *next;
};

struct nm_mapper {
    sip_namemap_t *map;
    server_rec *s;
    apr_pool_t *pool;           /* the mapper's life in the engine */
    apr_pool_t *run;            /* one process: its pipes */
    pid_t pid;
    apr_file_t *in, *out;       /* our ends: its stdin, its stdout */
    sip_io_t io_in, io_out;
    char *obuf;
    apr_size_t olen, ocap;
    char ibuf[NM_LINE_MAX];
    apr_size_t ilen;
    nm_query_t *head, *tail;    /* asked, in order: one answer line each */
    int pending;
    sip_namemap_cache_t *cache;
    apr_interval_time_t backoff;
    sip_timer_t t_restart;
    int down_logged;
    nm_mapper_t *next;
};

static sip_loop_t *nm_loop;
static nm_mapper_t *mappers;
static apr_array_header_t *nm_reap;     /* pid_t: killed, not yet reaped */
static sip_timer_t nm_reap_timer;

static void nm_reap_tick(void *baton)
{
    int i, status;

    (void)baton;
    for (i = 0; i < nm_reap->nelts;) {
        pid_t pid = APR_ARRAY_IDX(nm_reap, i, pid_t), r = waitpid(pid, &status, WNOHANG);
        if (r == 0) {
            i++;
            continue;
        }
        APR_ARRAY_IDX(nm_reap, i, pid_t) = APR_ARRAY_IDX(nm_reap, nm_reap->nelts - 1, pid_t);
        nm_reap->nelts--;
    }
    if (nm_reap->nelts)
        sip_timer_set(nm_loop, &nm_reap_timer, apr_time_from_msec(50), nm_reap_tick, NULL);
}

/* A waiter is done without an answer, or with one that leaves the name as
 * dialled: the dispatcher's next step (resume exactly once). */
static void nm_waiter_pass(nm_waiter_t *w)
{
    if (w->gone)
        return;
    w->gone = 1;
    w->resume(w->baton);
}

static void nm_waiter_answer(nm_waiter_t *w, const apr_array_header_t *users)
{
    sip_txn_t *txn = w->txn;

    if (w->gone)
        return;
    if (sip_txn_final_sent(txn) || nm_decide(w->name, users) != NM_ACT_MULTIPLE) {
        if (!sip_txn_final_sent(txn))
            nm_act(txn, w->s, w->name, users);     /* retargets, or leaves it */
        nm_waiter_pass(w);
        return;
    }
    /* answered here: detach first, the answer may end the transaction */
    w->gone = 1;
    sip_txn_detach_keep(txn);
    nm_act(txn, w->s, w->name, users);
    sip_txn_release(txn);
}

static int nm_waiter_cancel(void *tu)
{
    (void)tu;
    return 0;       /* the engine answers 487; the answer finds final_sent */
}

static void nm_waiter_ended(void *tu)
{
    nm_waiter_t *w = tu;

    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, w->s, "sip namemap: the request for \"%.64s\" "
                 "ended while %s was asked; its answer will be dropped", w->name,
                 w->q->mp->map->what);
    w->gone = 1;
    sip_txn_detach(w->txn);
}

static const sip_txn_tu_ops_t nm_waiter_ops = {nm_waiter_cancel, NULL, nm_waiter_ended};

static void nm_query_free(nm_query_t *q)
{
    sip_timer_cancel(nm_loop, &q->timer);
    apr_pool_destroy(q->pool);
}

static void nm_mapper_start(nm_mapper_t *mp);

static void nm_mapper_restart_tick(void *baton)
{
    nm_mapper_start(baton);
}

/* The mapper is gone or useless: whoever waits goes on with the name as
 * dialled, and a new one starts after a back-off. */
static void nm_mapper_fail(nm_mapper_t *mp, const char *why)
{
    nm_query_t *q;
    nm_waiter_t *w;

    mp->backoff = mp->backoff ? mp->backoff * 2 : NM_BACKOFF_MIN;
    if (mp->backoff > NM_BACKOFF_MAX)
        mp->backoff = NM_BACKOFF_MAX;
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, mp->s, "sip namemap: %s (pid %d) %s; restarting "
                 "it in %d s, names are left as dialled meanwhile", mp->map->what, (int)mp->pid,
                 why, (int)apr_time_sec(mp->backoff));
    if (mp->pid > 0) {
        kill(-mp->pid, SIGKILL);        /* its process group: what it started too */
        APR_ARRAY_PUSH(nm_reap, pid_t) = mp->pid;
        if (!sip_timer_armed(&nm_reap_timer))
            sip_timer_set(nm_loop, &nm_reap_timer, apr_time_from_msec(5), nm_reap_tick, NULL);
    }
    mp->pid = 0;
    sip_io_watch(nm_loop, &mp->io_in, 0);
    sip_io_watch(nm_loop, &mp->io_out, 0);
    /* events already returned for these descriptors may still come */
    sip_loop_defer_destroy(nm_loop, mp->run);
    mp->run = NULL;
    mp->in = mp->out = NULL;
    mp->obuf = NULL;
    mp->olen = mp->ocap = mp->ilen = 0;
    mp->down_logged = 0;
    /* take the queue first: a resumed step may ask again */
    q = mp->head;
    mp->head = mp->tail = NULL;
    mp->pending = 0;
    while (q) {
        nm_query_t *next = q->next;
        for (w = q->waiters; w; w = w->next)
            nm_waiter_pass(w);
        nm_query_free(q);
        q = next;
    }
    sip_timer_set(nm_loop, &mp->t_restart, mp->backoff, nm_mapper_restart_tick, mp);
}

static void nm_mapper_flush(nm_mapper_t *mp)
{
    int fd;
    ssize_t n;

    apr_os_file_get(&fd, mp->in);
    while (mp->olen) {
        n = write(fd, mp->obuf, mp->olen);
        if (n > 0) {
            memmove(mp->obuf, mp->obuf + n, mp->olen - (apr_size_t)n);
            mp->olen -= (apr_size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            sip_io_watch(nm_loop, &mp->io_in, APR_POLLOUT);
            return;
        }
        nm_mapper_fail(mp, "stopped reading its input");
        return;
    }
    sip_io_watch(nm_loop, &mp->io_in, 0);
}

static void nm_in_event(void *baton, apr_int16_t ev)
{
    nm_mapper_t *mp = baton;

    (void)ev;
    if (mp->in)
        nm_mapper_flush(mp);
}

/* One line of answer (NULL: the lookup failed): for the oldest question. */
static void nm_mapper_answer(nm_mapper_t *mp, const char *line)
{
    nm_query_t *q = mp->head;
    apr_array_header_t *users;
    nm_waiter_t *w;

    if (!q) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, mp->s, "sip namemap: %s answered \"%.64s\" "
                     "to no question; ignored", mp->map->what, line);
        return;
    }
    mp->head = q->next;
    if (!mp->head)
        mp->tail = NULL;
    mp->pending--;
    if (!line) {
        for (w = q->waiters; w; w = w->next)
            nm_waiter_pass(w);
        nm_query_free(q);
        return;
    }
    mp->backoff = 0;            /* it works: a later failure starts over */
    sip_namemap_cache_put(mp->cache, q->key, line, apr_time_now(), q->ttl);
    users = nm_split_users(q->pool, line, mp->map->what);
    for (w = q->waiters; w; w = w->next)
        nm_waiter_answer(w, users);
    nm_query_free(q);
}

static void nm_out_event(void *baton, apr_int16_t ev)
{
    nm_mapper_t *mp = baton;
    int fd;

    (void)ev;
    if (!mp->out)
        return;
    apr_os_file_get(&fd, mp->out);
    for (;;) {
        ssize_t n = read(fd, mp->ibuf + mp->ilen, sizeof(mp->ibuf) - mp->ilen);
        char *nl;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            nm_mapper_fail(mp, n == 0 ? "exited" : "cannot be read");
            return;
        }
        mp->ilen += (apr_size_t)n;
        while (mp->out && (nl = memchr(mp->ibuf, '\n', mp->ilen)) != NULL) {
            apr_size_t len = (apr_size_t)(nl - mp->ibuf);
            char line[NM_LINE_MAX];

            memcpy(line, mp->ibuf, len);
            line[len] = '\0';
            memmove(mp->ibuf, nl + 1, mp->ilen - len - 1);
            mp->ilen -= len + 1;
            nm_mapper_answer(mp, line);
        }
        if (!mp->out)
            return;             /* failed meanwhile */
        if (mp->ilen == sizeof(mp->ibuf)) {
            nm_mapper_fail(mp, "wrote a line longer than 4096 bytes");
            return;
        }
    }
}

static void nm_mapper_start(nm_mapper_t *mp)
{
    apr_file_t *in_r, *out_w;
    int in_fd, out_fd;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    apr_status_t rv;
    pid_t pid;
    int rc;

    apr_pool_create(&mp->run, mp->pool);
    /* our ends never block the engine; the mapper's ends are ordinary */
    if ((rv = apr_file_pipe_create_ex(&in_r, &mp->in, APR_READ_BLOCK, mp->run))
        || (rv = apr_file_pipe_create_ex(&mp->out, &out_w, APR_WRITE_BLOCK, mp->run))) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, mp->s, "sip namemap: no pipes for %s",
                     mp->map->what);
        mp->pid = 0;
        nm_mapper_fail(mp, "could not start");
        return;
    }
    apr_os_file_get(&in_fd, in_r);
    apr_os_file_get(&out_fd, out_w);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);   /* stderr: the error log */
    sip_spawn_attr_init(&attr);
    rc = posix_spawn(&pid, mp->map->argv[0], &fa, &attr, mp->map->argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    apr_file_close(in_r);
    apr_file_close(out_w);
    if (rc != 0) {
        mp->pid = 0;
        nm_mapper_fail(mp, apr_psprintf(mp->run, "could not start: %s", strerror(rc)));
        return;
    }
    mp->pid = pid;
    sip_io_init_file(&mp->io_in, mp->in, nm_in_event, mp);
    sip_io_init_file(&mp->io_out, mp->out, nm_out_event, mp);
    sip_io_watch(nm_loop, &mp->io_out, APR_POLLIN);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, mp->s, "sip namemap: %s started (pid %d)",
                 mp->map->what, (int)pid);
}

/* ---- SipNameMap dbd: one thread does the queries, in order ----
 * ap_dbd_acquire needs a request_rec, which the engine has none of for
 * this: the thread takes a connection with ap_dbd_open and gives it back
 * with ap_dbd_close around each query, using the statement prepared at
 * configuration (ap_dbd_prepare).  Answers come back in the order asked,
 * like a mapper's lines, through a pipe the event loop polls. */

typedef struct nm_job {
    apr_pool_t *pool;           /* the job's own: the thread writes into it */
    nm_mapper_t *mp;
    const char *key;
    const char *answer;         /* NULL: failed (error says why) */
    const char *error;
    struct nm_job *next;
} nm_job_t;

static apr_thread_mutex_t *nm_db_lock;
static apr_thread_cond_t *nm_db_cond;
static nm_job_t *nm_db_todo, *nm_db_todo_tail, *nm_db_done;
static int nm_db_wake[2] = {-1, -1};
static sip_io_t nm_db_wake_io;
static int nm_db_stopping;

static void nm_db_query(nm_job_t *j, apr_pool_t *tp)
{
    APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    sip_namemap_t *m = j->mp->map;
    ap_dbd_t *db = dbd_open ? dbd_open(tp, m->server) : NULL;
    apr_dbd_prepared_t *stmt;
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    const char *answer = "";
    int rc;

    if (!db) {
        j->error = "no database connection (is mod_dbd configured?)";
        return;
    }
    stmt = apr_hash_get(db->prepared, m->label, APR_HASH_KEY_STRING);
    if (!stmt)
        j->error = "the query was not prepared";
    else if ((rc = apr_dbd_pvselect(db->driver, tp, db->handle, &res, stmt, 0, j->key, NULL)))
        j->error = apr_pstrdup(j->pool, apr_dbd_error(db->driver, db->handle, rc));
    else {
        /* every row read, to its end: drivers free the result then */
        while (apr_dbd_get_row(db->driver, tp, res, &row, -1) == 0) {
            const char *v = apr_dbd_get_entry(db->driver, row, 0);
            if (v && *v)
                answer = *answer ? apr_pstrcat(j->pool, answer, " ", v, NULL)
                                 : apr_pstrdup(j->pool, v);
        }
        j->answer = answer;
    }
    if (dbd_close)
        dbd_close(m->server, db);
}

static void *APR_THREAD_FUNC nm_db_main(apr_thread_t *thd, void *data)
{
    apr_pool_t *tp;

    (void)data;
    apr_pool_create(&tp, NULL);
    for (;;) {
        nm_job_t *j;
        char one = 1;

        apr_thread_mutex_lock(nm_db_lock);
        while (!nm_db_todo && !nm_db_stopping)
            apr_thread_cond_wait(nm_db_cond, nm_db_lock);
        if (nm_db_stopping) {
            apr_thread_mutex_unlock(nm_db_lock);
            break;
        }
        j = nm_db_todo;
        nm_db_todo = j->next;
        if (!nm_db_todo)
            nm_db_todo_tail = NULL;
        apr_thread_mutex_unlock(nm_db_lock);
        nm_db_query(j, tp);
        apr_pool_clear(tp);
        apr_thread_mutex_lock(nm_db_lock);
        j->next = nm_db_done;
        nm_db_done = j;
        apr_thread_mutex_unlock(nm_db_lock);
        if (write(nm_db_wake[1], &one, 1) < 0) {
            /* the pipe is full: the loop is awake already */
        }
    }
    apr_pool_destroy(tp);
    /* Return, not apr_thread_exit(): as in sip_location_dbd.c, pthread_exit's
     * forced unwind leaves ASan's scope poison on this stack for the
     * thread's teardown (a false stack-use-after-scope at engine exit). */
    (void)thd;
    return NULL;
}

static void nm_db_completed(void *baton, apr_int16_t ev)
{
    char buf[64];
    nm_job_t *list, *rev = NULL;

    (void)baton;
    (void)ev;
    while (read(nm_db_wake[0], buf, sizeof(buf)) > 0)
        ;
    apr_thread_mutex_lock(nm_db_lock);
    list = nm_db_done;
    nm_db_done = NULL;
    apr_thread_mutex_unlock(nm_db_lock);
    while (list) {                  /* oldest first */
        nm_job_t *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        nm_job_t *j = rev;
        rev = j->next;
        if (!j->answer)
            sip_log_limited(&nm_failures, "namemap", 1, APLOG_ERR, j->mp->s,
                            "sip namemap: %s failed for \"%.64s\": %s; the name is left as "
                            "dialled", j->mp->map->what, j->key,
                            j->error ? j->error : "unknown error");
        nm_mapper_answer(j->mp, j->answer);
        apr_pool_destroy(j->pool);
    }
}

static void nm_db_submit(nm_mapper_t *mp, const char *key)
{
    apr_pool_t *jp;
    nm_job_t *j;

    apr_pool_create(&jp, NULL);
    j = apr_pcalloc(jp, sizeof(*j));
    j->pool = jp;
    j->mp = mp;
    j->key = apr_pstrdup(jp, key);
    apr_thread_mutex_lock(nm_db_lock);
    if (nm_db_todo_tail)
        nm_db_todo_tail->next = j;
    else
        nm_db_todo = j;
    nm_db_todo_tail = j;
    apr_thread_cond_signal(nm_db_cond);
    apr_thread_mutex_unlock(nm_db_lock);
}

static apr_status_t nm_db_start(apr_pool_t *p)
{
    apr_thread_t *thd;
    apr_file_t *rf = NULL;
    apr_status_t rv;

    if (pipe2(nm_db_wake, O_NONBLOCK | O_CLOEXEC) < 0)
        return errno;
    if ((rv = apr_thread_mutex_create(&nm_db_lock, APR_THREAD_MUTEX_DEFAULT, p))
        || (rv = apr_thread_cond_create(&nm_db_cond, p)))
        return rv;
    apr_os_pipe_put(&rf, &nm_db_wake[0], p);
    sip_io_init_file(&nm_db_wake_io, rf, nm_db_completed, NULL);
    sip_io_watch(nm_loop, &nm_db_wake_io, APR_POLLIN);
    return apr_thread_create(&thd, NULL, nm_db_main, NULL, p);
}

static void nm_query_timeout(void *baton)
{
    nm_query_t *q = baton;
    nm_mapper_t *mp = q->mp;
    nm_waiter_t *w;

    sip_log_limited(&nm_failures, "namemap", 2, APLOG_WARNING, mp->s, "sip namemap: %s "
                    "gave no answer for \"%.64s\" within %d s; the name is left as dialled",
                    mp->map->what, q->key, (int)apr_time_sec(NM_TIMEOUT));
    q->timed_out = 1;
    w = q->waiters;
    q->waiters = NULL;
    for (; w; w = w->next)
        nm_waiter_pass(w);
    /* the question stays in line: its answer, when it comes, is the next
     * line; a mapper silent for much longer is stuck, and replaced */
    if (mp->map->kind == NM_PROGRAM && mp->head && apr_time_now() - mp->head->sent >= NM_HUNG)
        nm_mapper_fail(mp, apr_psprintf(mp->pool, "has not answered for %d s",
                                     (int)apr_time_sec(NM_HUNG)));
}

/* A waiter for the mapper's answer about 'key': the question is queued
 * unless the same one is already out (nm_mapper_flush sends it). */
static nm_waiter_t *nm_mapper_ask(nm_mapper_t *mp, const char *key, apr_interval_time_t ttl)
{
    nm_waiter_t *w;
    nm_query_t *q;
    apr_pool_t *p;
    apr_size_t need = strlen(key) + 1;

    for (q = mp->head; q; q = q->next)
        if (!q->timed_out && !strcmp(q->key, key))
            break;
    if (!q) {
        apr_pool_create(&p, mp->pool);
        q = apr_pcalloc(p, sizeof(*q));
        q->pool = p;
        q->mp = mp;
        q->key = apr_pstrdup(p, key);
        q->sent = apr_time_now();
        q->ttl = ttl;
        if (mp->tail)
            mp->tail->next = q;
        else
            mp->head = q;
        mp->tail = q;
        mp->pending++;
        sip_timer_set(nm_loop, &q->timer, NM_TIMEOUT, nm_query_timeout, q);
        if (mp->map->kind == NM_DBD)
            nm_db_submit(mp, key);
        else {
            if (mp->olen + need > mp->ocap) {
                apr_size_t cap = (mp->olen + need) * 2;
                char *b = apr_palloc(mp->run, cap);
                if (mp->olen)
                    memcpy(b, mp->obuf, mp->olen);
                mp->obuf = b;
                mp->ocap = cap;
            }
            memcpy(mp->obuf + mp->olen, key, need - 1);
            mp->obuf[mp->olen + need - 1] = '\n';
            mp->olen += need;
        }
    }
    w = apr_pcalloc(q->pool, sizeof(*w));
    w->q = q;
    w->next = q->waiters;
    q->waiters = w;
    return w;
}

static sip_step_t nm_ask_step(sip_namemap_t *m, sip_txn_t *txn, server_rec *s,
                               const char *name, const char *key, sip_step_resume_fn resume,
                               void *baton)
{
    const sip_server_conf *conf = sip_get_conf(s);
    nm_mapper_t *mp = m->mapper;
    apr_array_header_t *users;
    nm_waiter_t *w;

    if (!mp)
        return SIP_STEP_NEXT;
    if (sip_namemap_cache_get(mp->cache, sip_txn_pool(txn), key, apr_time_now(), &users))
        return nm_act(txn, s, name, users);
    if ((!mp->pid && m->kind == NM_PROGRAM) || mp->pending >= NM_MAX_PENDING) {
        if (!mp->down_logged)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "sip namemap: %s %s; names are left "
                         "as dialled until it answers again", m->what,
                         mp->pid || m->kind != NM_PROGRAM ? "has too many questions unanswered"
                                                          : "is not running");
        mp->down_logged = 1;
        return SIP_STEP_NEXT;
    }
    mp->down_logged = 0;
    w = nm_mapper_ask(mp, key, conf->namemap_ttl);
    w->txn = txn;
    w->s = s;
    w->name = apr_pstrdup(w->q->pool, name);
    w->resume = resume;
    w->baton = baton;
    sip_txn_attach(txn, &nm_waiter_ops, w);
    /* a write that fails here fails the mapper, which resumes 'w' at once
     * (the dispatcher then has run the next steps: WAIT is still right) */
    if (mp->olen)
        nm_mapper_flush(mp);
    return SIP_STEP_WAIT;
}

void sip_namemap_init(sip_loop_t *loop, apr_pool_t *p, server_rec *main_server)
{
    server_rec *s;

    nm_loop = loop;
    nm_reap = apr_array_make(p, 4, sizeof(pid_t));
    for (s = main_server; s; s = s->next) {
        sip_namemap_t *m = sip_get_conf(s)->namemap;
        nm_mapper_t *mp;

        if (sip_get_conf(s)->enabled != 1 || !m || m->mapper
            || (m->kind != NM_PROGRAM && m->kind != NM_DBD))
            continue;
        if (m->kind == NM_DBD && !nm_db_wake_io.added && nm_db_start(p) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "sip namemap: cannot start the database "
                         "thread; %s leaves names as dialled", m->what);
            continue;
        }
        mp = apr_pcalloc(p, sizeof(*mp));
        apr_pool_create(&mp->pool, p);
        mp->map = m;
        mp->s = s;
        mp->cache = sip_namemap_cache_create(mp->pool, NM_CACHE_MAX);
        mp->next = mappers;
        mappers = mp;
        m->mapper = mp;
        if (m->kind == NM_PROGRAM)
            nm_mapper_start(mp);
    }
}

void sip_namemap_shutdown(void)
{
    nm_mapper_t *mp;
    int i;

    if (nm_db_lock) {
        /* a query still running ends with the process */
        apr_thread_mutex_lock(nm_db_lock);
        nm_db_stopping = 1;
        apr_thread_cond_signal(nm_db_cond);
        apr_thread_mutex_unlock(nm_db_lock);
    }
    for (mp = mappers; mp; mp = mp->next)
        if (mp->pid > 0) {
            kill(-mp->pid, SIGKILL);
            APR_ARRAY_PUSH(nm_reap, pid_t) = mp->pid;
            mp->pid = 0;
        }
    for (i = 0; nm_reap && nm_reap->nelts && i < 100; i++) {
        nm_reap_tick(NULL);
        if (nm_reap->nelts)
            apr_sleep(apr_time_from_msec(10));
    }
}

/* ---- the step ---- */

static int nm_method_applies(const char *method)
{
    /* §5.2 maps the callee's name: requests that reach a person; REGISTER
     * names the registering user itself */
    return !strcmp(method, "INVITE") || !strcmp(method, "OPTIONS")
           || !strcmp(method, "MESSAGE") || !strcmp(method, "SUBSCRIBE");
}

sip_step_t sip_namemap_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume, void *baton)
{
    const sip_server_conf *conf = sip_get_conf(s);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *raw, *name, *key, *c, *why = NULL;
    apr_array_header_t *users;

    if (!conf->namemap || !nm_method_applies(sip_msg_method(req)) || sip_msg_to_tag(req)
        || !(raw = sip_msg_uri_user(req)) || !(name = sip_uri_user_decoded(p, raw)))
        return SIP_STEP_NEXT;
    /* a line-based mapper must never see a line break or control in a name */
    if (strlen(name) > NM_NAME_MAX)
        return SIP_STEP_NEXT;
    for (c = name; *c; c++)
        if ((unsigned char)*c < ' ' || *c == 0x7f)
            return SIP_STEP_NEXT;
    key = sip_str_lower(p, name);
    if (conf->namemap->kind == NM_PROGRAM || conf->namemap->kind == NM_DBD)
        return nm_ask_step(conf->namemap, txn, s, name, key, resume, baton);
    if (!(users = sip_namemap_lookup(conf->namemap, p, name, &why))) {
        sip_log_limited(&nm_failures, "namemap", 3, APLOG_ERR, s,
                        "sip namemap: %s: %s; %.64s left as dialled", conf->namemap->what, why,
                        name);
        return SIP_STEP_NEXT;
    }
    return nm_act(txn, s, name, users);
}
