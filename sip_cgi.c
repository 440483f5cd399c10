#include "sip_cgi.h"
#include "sip_dns.h"
#include "sip_fcgi.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_proxy.h"
#include "sip_relay.h"
#include "sip_registrar.h"
#include "sip_location.h"
#include "sip_script_store.h"
#include "sip_stats.h"
#include "sip_spawn.h"
#include "sip_upload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <netdb.h>
#include <dirent.h>
#include <unistd.h>

#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_portable.h"
#include "apr_thread_proc.h"
#include "httpd.h"
#include "http_core.h"
#include "util_script.h"

typedef struct sip_cgi_run sip_cgi_run_t;
typedef struct sip_cgi_ctx sip_cgi_ctx_t;

/* What made the script run (RFC 3050 §3.3). */
typedef enum { TRIG_REQUEST, TRIG_RESPONSE, TRIG_CANCEL, TRIG_ACK } trig_kind_t;

typedef struct trigger {
    struct trigger *next;
    trig_kind_t kind;
    sip_msg_t *msg;
    const char *token;              /* RESPONSE_TOKEN */
    sip_proxy_branch_t *branch;     /* the branch a response came from */
    int local;                      /* a response the server made up (§5.8) */
    const char *remote;             /* REMOTE_ADDR */
    const char *regs;               /* REGISTRATIONS, fetched before the run */
} trigger_t;

/* Everything SIP-CGI keeps for one server transaction; it lives exactly
 * as long as the transaction and the work it started (§3.2). */
struct sip_cgi_ctx {
    apr_pool_t *pool;
    sip_txn_t *txn;
    int txn_over;
    server_rec *s;
    const char *path;
    const char *script;
    const char *const *args;        /* arguments after argv[0] (NULL-ended), or NULL */
    /* an uploaded script (sip_upload.h): its text, owner and #! line;
     * upload_aor is NULL for a script of SipDirectory */
    const char *upload_aor, *upload_body, *interp, *interp_arg;
    apr_size_t upload_len;
    /* a forwarding file's program run as the file's owner through
     * sip-suexec --owner (sip_cgi_run_owner); owner_file NULL otherwise */
    const char *owner_file, *owner_tmpl;
    long owner_uid, owner_min_uid;
    const char *cookie;             /* CGI-SET-COOKIE */
    int again;                      /* CGI-AGAIN yes from the last run */
    trigger_t *qhead, *qtail;       /* triggers waiting for the running script */
    sip_cgi_run_t *run;             /* at most one per transaction (§5.3) */
    int runs;                       /* including ACK runs, which never wait */
    sip_proxy_t *px;
    int px_idle;
    apr_hash_t *responses;          /* RESPONSE_TOKEN -> trigger_t */
    unsigned ntokens;
    int uas_2xx;                    /* the script answered the INVITE with 2xx */
    int cancelled;                  /* a CANCEL ended the request */
    int fetching;                   /* REGISTRATIONS being looked up for a run */
    int locating;                   /* proxy targets of ours being looked up */
    int freed;
    /* sip_cgi_run_then: what runs instead of the default handling when
     * the script leaves the request to the server */
    void (*then)(void *baton);
    void *then_baton;
};

struct sip_cgi_run {
    apr_pool_t *pool;
    sip_cgi_ctx_t *ctx;
    trigger_t *trig;
    server_rec *s;
    const char *script;         /* file name, for log lines */
    apr_proc_t proc;
    apr_file_t *in, *out, *err; /* our ends of the script's pipes */
    sip_io_t io_in, io_out, io_err;
    const char *body;
    apr_size_t body_len, body_off;
    char *obuf;                 /* unparsed stdout */
    apr_size_t olen, ocap, ototal;
    apr_off_t max_output;
    char ebuf[1024];            /* partial stderr line */
    apr_size_t elen;
    sip_timer_t t_timeout;
    int out_open, err_open;
    int finished;
    int acted;                  /* a response, proxy or forward action (§5.6.1.6) */
    int again;                  /* this run said CGI-AGAIN yes */
    int exited;                 /* reaped, exit_status valid */
    int exit_status;
    sip_timer_t t_exit;         /* waiting for the exit after EOF */
    int uploaded;               /* proc is sip-suexec's monitor, of another uid (an uploaded
                                   script or a program run as its owner) */
    int exit_polls;
    /* a run carried to a FastCGI worker pool (sip_fcgi.h) instead of a
     * spawned process: no pipes, no pid; exited/exit_status come from
     * END_REQUEST's application status */
    int remote;
    sip_fcgi_req_t *fcgi;       /* the request while it is open */
    sip_cgi_run_t *prev, *next; /* list of running scripts */
};

static sip_loop_t *cgi_loop;
static apr_pool_t *cgi_pool;
static sip_cgi_run_t *running;
static apr_size_t nrunning;
static apr_size_t nremote;      /* of which FastCGI requests (not under SipMaxScripts) */

/* Processes killed or exited but not yet reaped. */
static apr_array_header_t *reap_pids;
static sip_timer_t reap_timer;

static void ctx_pump(sip_cgi_ctx_t *ctx);
static void ctx_maybe_free(sip_cgi_ctx_t *ctx);
static const char *remote_host(apr_pool_t *p, server_rec *s, const sip_sockaddr_t *peer);
static void run_start(sip_cgi_ctx_t *ctx, trigger_t *trig);

void sip_cgi_init(sip_loop_t *loop, apr_pool_t *p)
{
    cgi_loop = loop;
    cgi_pool = p;
    reap_pids = apr_array_make(p, 16, sizeof(pid_t));
    sip_fcgi_init(loop, p);
}

apr_size_t sip_cgi_running(void)
{
    return nrunning;
}

/* ---- choosing the script (RFC 3050 §3.4) ---- */

int sip_cgi_name_ok(const char *name)
{
    const unsigned char *c;

    if (!name || !*name || name[0] == '.' || strlen(name) > NAME_MAX)
        return 0;
    for (c = (const unsigned char *)name; *c; c++)
        if (*c == '/' || *c == '\\' || *c < 0x20 || *c == 0x7f)
            return 0;
    return 1;
}

/* 0 when 'name' is a usable file inside 'realdir' (executable when
 * 'exec': a SIP-CGI script; readable otherwise: a CPL script), -1 when
 * absent, 403 when it exists but must not be used. */
static int check_script(apr_pool_t *p, const char *dir, const char *realdir,
                        const char *name, int exec, const char **path, const char **why)
{
    const char *candidate = apr_pstrcat(p, dir, "/", name, NULL);
    char resolved[PATH_MAX];
    struct stat st;
    apr_size_t dl = strlen(realdir);

    if (lstat(candidate, &st) < 0)
        return -1;
    /* Symlinks may only lead to files inside SipDirectory. */
    if (!realpath(candidate, resolved)) {
        *why = "dangling link";
        return 403;
    }
    if (strncmp(resolved, realdir, dl) != 0 || resolved[dl] != '/') {
        *why = apr_psprintf(p, "%s resolves outside SipDirectory", name);
        return 403;
    }
    if (stat(resolved, &st) < 0 || !S_ISREG(st.st_mode)) {
        *why = apr_psprintf(p, "%s is not a regular file", name);
        return 403;
    }
    if (access(resolved, exec ? X_OK : R_OK) < 0) {
        *why = apr_psprintf(p, "%s is not %s", name, exec ? "executable" : "readable");
        return 403;
    }
    *path = apr_pstrdup(p, resolved);
    return 0;
}

/* realpath() of a SipDirectory, resolved once per engine (it walks every
 * path component with readlink: a tenth of an OPTIONS's cost otherwise).
 * The engine is re-forked on restart, which picks up a moved directory. */
static const char *real_dir(const char *dir)
{
    static apr_pool_t *pool;
    static apr_hash_t *cache;
    char buf[PATH_MAX];
    const char *real;

    if (!pool) {
        apr_pool_create(&pool, NULL);
        cache = apr_hash_make(pool);
    }
    real = apr_hash_get(cache, dir, APR_HASH_KEY_STRING);
    if (real)
        return real;
    if (!realpath(dir, buf))
        return NULL;
    real = apr_pstrdup(pool, buf);
    apr_hash_set(cache, apr_pstrdup(pool, dir), APR_HASH_KEY_STRING, real);
    return real;
}

int sip_cgi_user_file(apr_pool_t *p, const char *user, const char *host, const char *suffix,
                      const char **name, const char **why)
{
    char *n;
    int unescaped;

    if (!user || !*user) {
        *why = "no user in the Request-URI";
        return 404;
    }
    n = apr_pstrcat(p, user, "@", host ? host : "", NULL);
    /* %2F and %00 are refused by ap_unescape_url itself. */
    unescaped = ap_unescape_url(n);
    if (unescaped == OK && strlen(n) + strlen(suffix) > NAME_MAX) {
        *why = "no file can have such a name";
        return 404;
    }
    if (unescaped != OK || !sip_cgi_name_ok(n)) {
        *why = "invalid script name in Request-URI";
        return 403;
    }
    *name = apr_pstrcat(p, n, suffix, NULL);
    return 0;
}

/* ---- the lookup cache ----
 * check_script costs lstat, realpath's readlink per path component, stat
 * and access: most of the syscalls of an OPTIONS or a rule 302, for a
 * lookup whose answer is nearly always the same.  An answer (a script,
 * none, or a refusal) is kept while SipDirectory is the same directory
 * with the same mtime and ctime (adding, removing or renaming an entry,
 * a symlink swapped, changes them) and for at most SIP_CGI_LOOKUP_TTL
 * (what the directory cannot tell: a mode changed, a subdirectory's
 * entries).  At most one stat of the directory per lookup (one per
 * SIP_CGI_DIRSTAT_REUSE µs) instead of six or more calls. */

void sip_cgi_dirstamp(const struct stat *st, sip_cgi_dirstamp_t *out)
{
    out->dev = (apr_uint64_t)st->st_dev;
    out->ino = (apr_uint64_t)st->st_ino;
    out->mtime_ns = (apr_int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    out->ctime_ns = (apr_int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

int sip_cgi_lookup_fresh(const sip_cgi_dirstamp_t *then, apr_time_t checked,
                         const sip_cgi_dirstamp_t *dir, apr_time_t now)
{
    /* file times come from a coarse clock: a change made just after the
     * check, within the same tick, could leave mtime as it was.  An
     * answer taken while the directory was that recent is not kept
     * ("racily clean", as git says of its index). */
    apr_int64_t racy = ((apr_int64_t)checked - SIP_CGI_LOOKUP_RACY) * 1000;

    if (now < checked || now - checked >= SIP_CGI_LOOKUP_TTL)
        return 0;
    if (then->dev != dir->dev || then->ino != dir->ino || then->mtime_ns != dir->mtime_ns
        || then->ctime_ns != dir->ctime_ns)
        return 0;
    return then->mtime_ns < racy && then->ctime_ns < racy;
}

typedef struct {
    sip_cgi_dirstamp_t dir;
    apr_time_t checked;
    int r;                      /* check_script's answer: 0, -1 or 403 */
    const char *path, *why;
} lookup_t;

#define LOOKUP_CACHE_MAX 1024   /* entries written before the cache starts over */

/* how long one stat of the directory answers for it */
#define SIP_CGI_DIRSTAT_REUSE 200    /* µs */

static apr_pool_t *lookup_pool;
static sip_cgi_dirstamp_t stamp;
static apr_time_t stamp_at;
static char stamp_dir[PATH_MAX];  /* "": none yet */
static apr_hash_t *lookups;
static unsigned lookup_writes;

/* ---- names absent from SipDirectory ----
 * Each REGISTER or request for a new user asks for user@host (and
 * user@host.cpl), which is nearly never there: an lstat per message, and a
 * cache entry per user that pushes the useful ones out.  Adding, removing
 * or renaming an entry changes the directory's mtime, so the directory's
 * listing, read under the same freshness rules as a lookup
 * (sip_cgi_lookup_fresh), answers "absent" without a system call.  Names
 * are compared lowercased: on a case-folding file system a name that
 * matches in another case still goes to check_script. */
#define LISTING_MAX 4096        /* entries; a larger directory is not listed */

static struct {
    apr_pool_t *pool;
    char dir[PATH_MAX];         /* "": none */
    sip_cgi_dirstamp_t stamp;   /* the directory before it was read */
    apr_time_t checked;
    apr_hash_t *names;          /* lowercased name -> "", NULL: not listed */
} listing;

static char *lower_name(apr_pool_t *p, const char *name)
{
    char *l = apr_pstrdup(p, name), *c;

    for (c = l; *c; c++)
        *c = (char)apr_tolower((unsigned char)*c);
    return l;
}

static void read_listing(const char *dir, const sip_cgi_dirstamp_t *stamp, apr_time_t now)
{
    DIR *d;
    struct dirent *de;
    unsigned n = 0;

    if (!listing.pool)
        apr_pool_create(&listing.pool, NULL);
    apr_pool_clear(listing.pool);
    apr_cpystrn(listing.dir, dir, sizeof(listing.dir));
    listing.stamp = *stamp;
    listing.checked = now;
    listing.names = NULL;
    if (!(d = opendir(dir)))
        return;
    listing.names = apr_hash_make(listing.pool);
    while ((de = readdir(d))) {
        if (++n > LISTING_MAX) {
            listing.names = NULL;
            break;
        }
        apr_hash_set(listing.names, lower_name(listing.pool, de->d_name),
                     APR_HASH_KEY_STRING, "");
    }
    closedir(d);
}

static int absent_by_listing(const char *dir, const char *name,
                             const sip_cgi_dirstamp_t *now_dir, apr_time_t now)
{
    char low[NAME_MAX + 1];
    apr_size_t i;

    if (strcmp(listing.dir, dir)
        || !sip_cgi_lookup_fresh(&listing.stamp, listing.checked, now_dir, now)) {
        /* a directory changed within the racy window could not be trusted
         * from its listing anyway: don't read it */
        if (!sip_cgi_lookup_fresh(now_dir, now, now_dir, now))
            return 0;
        read_listing(dir, now_dir, now);
    }
    if (!listing.names || strlen(name) > NAME_MAX)
        return 0;
    for (i = 0; name[i]; i++)
        low[i] = (char)apr_tolower((unsigned char)name[i]);
    low[i] = '\0';
    return apr_hash_get(listing.names, low, APR_HASH_KEY_STRING) == NULL;
}

static int check_script_cached(apr_pool_t *p, const char *dir, const char *realdir,
                               const char *name, int exec, const char **path, const char **why)
{
    struct stat st;
    sip_cgi_dirstamp_t now_dir;
    apr_time_t now;
    const char *key;
    lookup_t *e;
    int r;

    now = apr_time_now();
    /* the lookups of one message (user@host, then the default script) and
     * of messages read in one burst share one stat of the directory */
    if (!strcmp(stamp_dir, dir) && now >= stamp_at
        && now - stamp_at < SIP_CGI_DIRSTAT_REUSE) {
        now_dir = stamp;
        now = stamp_at;
    }
    else {
        if (stat(dir, &st) < 0)
            return check_script(p, dir, realdir, name, exec, path, why);
        sip_cgi_dirstamp(&st, &now_dir);
        stamp = now_dir;
        stamp_at = now;
        apr_cpystrn(stamp_dir, dir, sizeof(stamp_dir));
    }
    if (!lookup_pool) {
        apr_pool_create(&lookup_pool, NULL);
        lookups = apr_hash_make(lookup_pool);
    }
    key = apr_pstrcat(p, exec ? "x" : "r", dir, "/", name, NULL);
    e = apr_hash_get(lookups, key, APR_HASH_KEY_STRING);
    if (e && sip_cgi_lookup_fresh(&e->dir, e->checked, &now_dir, now)) {
        /* copies: the cache may start over while the caller holds them */
        if (e->path)
            *path = apr_pstrdup(p, e->path);
        if (e->why)
            *why = apr_pstrdup(p, e->why);
        return e->r;
    }
    if (absent_by_listing(dir, name, &now_dir, now))
        return -1;
    r = check_script(p, dir, realdir, name, exec, path, why);
    if (++lookup_writes > LOOKUP_CACHE_MAX) {
        apr_pool_clear(lookup_pool);
        lookups = apr_hash_make(lookup_pool);
        lookup_writes = 1;
        e = NULL;
    }
    if (!e) {
        e = apr_palloc(lookup_pool, sizeof(*e));
        apr_hash_set(lookups, apr_pstrdup(lookup_pool, key), APR_HASH_KEY_STRING, e);
    }
    e->dir = now_dir;
    e->checked = now;
    e->r = r;
    e->path = r == 0 ? apr_pstrdup(lookup_pool, *path) : NULL;
    e->why = r > 0 && *why ? apr_pstrdup(lookup_pool, *why) : NULL;
    return r;
}

int sip_cgi_locate_file(apr_pool_t *p, const char *dir, const char *name, int exec,
                        const char **path, const char **why)
{
    const char *realdir = dir ? real_dir(dir) : NULL;
    int r;

    if (!realdir) {
        *why = "no SipDirectory";
        return 404;
    }
    if (!name || !sip_cgi_name_ok(name)) {
        *why = "no such script";
        return 404;
    }
    r = check_script_cached(p, dir, realdir, name, exec, path, why);
    if (r >= 0)
        return r;
    *why = "no script";
    return 404;
}

int sip_cgi_locate(apr_pool_t *p, const char *dir, const char *default_script,
                   const char *user, const char *host, const char **path, const char **why)
{
    const char *name = NULL;
    int r;

    if (!dir || !real_dir(dir)) {
        *why = "no SipDirectory";
        return 404;
    }
    if (user && *user) {
        r = sip_cgi_user_file(p, user, host, "", &name, why);
        if (r == 403)
            return r;
        if (r == 0 && (r = sip_cgi_locate_file(p, dir, name, 1, path, why)) != 404)
            return r;
    }
    if (default_script && (r = sip_cgi_locate_file(p, dir, default_script, 1, path, why)) != 404)
        return r;
    *why = "no script";
    return 404;
}

/* ---- output splitting (RFC 3050 §5.6 delimiting rules) ---- */

static int hdr_is(const char *line, apr_size_t len, const char *longname, char compact)
{
    apr_size_t n = strlen(longname), i;

    if (len > n && strncasecmp(line, longname, n) == 0)
        i = n;
    else if (len > 1 && apr_tolower(line[0]) == compact)
        i = 1;
    else
        return 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i < len && line[i] == ':';
}

int sip_cgi_split(const char *buf, apr_size_t len, int eof, apr_size_t *skip,
                  apr_size_t *msg_len, const char **why)
{
    apr_size_t pos = 0, start, hdr_end = 0;
    int have_type = 0;
    apr_int64_t clen = -1;

    /* Blank lines may separate messages. */
    while (pos < len && (buf[pos] == '\n' || buf[pos] == '\r'))
        pos++;
    *skip = pos;
    start = pos;
    if (pos == len)
        return 0;

    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        apr_size_t ll;

        if (!nl)
            break;
        ll = (apr_size_t)(nl - (buf + pos));
        if (ll && buf[pos + ll - 1] == '\r')
            ll--;
        if (ll == 0) {
            hdr_end = (apr_size_t)(nl - buf) + 1;
            break;
        }
        if (pos != start) {
            if (hdr_is(buf + pos, ll, "Content-Type", 'c'))
                have_type = 1;
            else if (hdr_is(buf + pos, ll, "Content-Length", 'l')) {
                const char *v = memchr(buf + pos, ':', ll) + 1, *end = buf + pos + ll;
                char num[24], *stop;
                apr_size_t n;
                while (v < end && (*v == ' ' || *v == '\t'))
                    v++;
                n = (apr_size_t)(end - v);
                while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                    n--;
                /* the output is not NUL-terminated: parse a copy */
                if (n == 0 || n >= sizeof(num)) {
                    *why = "bad Content-Length";
                    return -1;
                }
                memcpy(num, v, n);
                num[n] = '\0';
                clen = apr_strtoi64(num, &stop, 10);
                if (clen < 0 || !apr_isdigit(num[0]) || *stop) {
                    *why = "bad Content-Length";
                    return -1;
                }
            }
        }
        pos = (apr_size_t)(nl - buf) + 1;
    }
    if (!hdr_end) {
        if (!eof)
            return 0;
        /* The last message may lack its final blank line. */
        *msg_len = len - start;
        return 1;
    }
    if (clen > 0 && !have_type) {
        *why = "Content-Length without Content-Type";     /* rule 5 */
        return -1;
    }
    if (!have_type || clen == 0) {                           /* rule 2 */
        *msg_len = hdr_end - start;
        return 1;
    }
    if (clen > 0) {                                          /* rule 3 */
        if (len - hdr_end >= (apr_uint64_t)clen) {
            *msg_len = hdr_end - start + (apr_size_t)clen;
            return 1;
        }
        if (eof) {
            *why = "output ended inside a body";
            return -1;
        }
        return 0;
    }
    if (!eof)                                                /* rule 4 */
        return 0;
    *msg_len = len - start;
    return 1;
}

/* ---- process handling ---- */

static void reap_tick(void *baton)
{
    int i;

    (void)baton;
    for (i = 0; i < reap_pids->nelts;) {
        pid_t pid = APR_ARRAY_IDX(reap_pids, i, pid_t);
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == 0) {
            i++;
            continue;
        }
        APR_ARRAY_IDX(reap_pids, i, pid_t) = APR_ARRAY_IDX(reap_pids, reap_pids->nelts - 1, pid_t);
        reap_pids->nelts--;
    }
    if (reap_pids->nelts)
        sip_timer_set(cgi_loop, &reap_timer, apr_time_from_msec(20), reap_tick, NULL);
}

static void reap_later(pid_t pid)
{
    *(pid_t *)apr_array_push(reap_pids) = pid;
    if (!sip_timer_armed(&reap_timer))
        sip_timer_set(cgi_loop, &reap_timer, apr_time_from_msec(5), reap_tick, NULL);
}

static void log_exit(sip_cgi_run_t *run, int status)
{
    if (WIFSIGNALED(status))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s, "sip-cgi: %s killed by signal %d",
                     run->script, WTERMSIG(status));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, run->s, "sip-cgi: %s exited with status %d",
                     run->script, WEXITSTATUS(status));
}

static void stderr_event(void *baton, apr_int16_t ev);

static void close_pipe(sip_io_t *io, apr_file_t **f, int *open_flag)
{
    if (*f) {
        sip_io_watch(cgi_loop, io, 0);
        apr_file_close(*f);
        *f = NULL;
    }
    if (open_flag)
        *open_flag = 0;
}

static int txn_live(const sip_cgi_ctx_t *ctx)
{
    return ctx->txn && !ctx->txn_over;
}

/* The script failed the request: 500 if nothing final went up yet, and no
 * branch it started keeps ringing.  Returns 0 when it was too late. */
static int answer_500(sip_cgi_ctx_t *ctx)
{
    if (!txn_live(ctx) || sip_txn_final_sent(ctx->txn))
        return 0;
    sip_txn_reply(ctx->txn, 500, "Internal Server Error", NULL);
    if (ctx->px)
        sip_proxy_cancel(ctx->px);
    return 1;
}

/* Triggers wait in arrival order behind the running script (§5.3). */
static void ctx_enqueue(sip_cgi_ctx_t *ctx, trigger_t *t)
{
    if (ctx->qtail)
        ctx->qtail->next = t;
    else
        ctx->qhead = t;
    ctx->qtail = t;
    ctx_pump(ctx);
}

/* ---- proxy callbacks (responses to what the script proxied) ---- */

static int ctx_on_response(void *baton, sip_proxy_branch_t *b, sip_msg_t *resp, int local)
{
    sip_cgi_ctx_t *ctx = baton;
    trigger_t *t;

    /* §5.6.1.5: only an armed script sees the next message; while a run is
     * going (it may arm again) messages wait their turn (§5.3). */
    if (!txn_live(ctx) || (!ctx->again && !ctx->run && !ctx->qhead))
        return 0;
    t = apr_pcalloc(ctx->pool, sizeof(*t));
    t->kind = TRIG_RESPONSE;
    t->msg = sip_msg_dup(ctx->pool, resp);
    if (!t->msg)
        return 0;
    t->branch = b;
    t->local = local;
    /* RFC 3050 §5.5.1.7: the address the response came from, which need
     * not be the one the branch was sent to */
    t->remote = local ? "127.0.0.1"
                : sip_msg_peer(resp) ? apr_pstrdup(ctx->pool, sip_msg_peer(resp))
                : sip_proxy_branch_peer(ctx->pool, b);
    t->token = apr_psprintf(ctx->pool, "r%u%s", ++ctx->ntokens, sip_txn_to_tag(ctx->txn));
    apr_hash_set(ctx->responses, t->token, APR_HASH_KEY_STRING, t);
    ctx_enqueue(ctx, t);
    return 1;
}

static void ctx_on_idle(void *baton)
{
    sip_cgi_ctx_t *ctx = baton;
    ctx->px_idle = 1;
    ctx_maybe_free(ctx);
}

static const sip_proxy_owner_t px_owner = {ctx_on_response, ctx_on_idle};

static sip_proxy_t *ctx_proxy(sip_cgi_ctx_t *ctx)
{
    if (!ctx->px && txn_live(ctx))
        ctx->px = sip_proxy_new_owned(ctx->txn, ctx->s, &px_owner, ctx);
    ctx->px_idle = 0;
    return ctx->px;
}

/* ---- proxying to a user of our own (sip_registrar_fork_user) ---- */

static sip_proxy_t *local_proxy(void *baton)
{
    sip_cgi_ctx_t *ctx = baton;

    ctx->locating--;
    return txn_live(ctx) && !sip_txn_final_sent(ctx->txn) ? ctx_proxy(ctx) : NULL;
}

static void local_done(void *baton)
{
    ctx_maybe_free(baton);
}

static const sip_registrar_fork_ops_t local_fork_ops = {local_proxy, NULL, local_done};

static void fork_to_local_user(sip_cgi_ctx_t *ctx, const char *uri, const sip_msg_t *block)
{
    ctx->locating++;
    sip_registrar_fork_user(ctx->pool, ctx->s, uri, block, &local_fork_ops, ctx);
}

/* ---- the default action (§5.6.1.6) ---- */

static void default_action(sip_cgi_ctx_t *ctx, trigger_t *t)
{
    if (!txn_live(ctx))
        return;
    switch (t->kind) {
    case TRIG_RESPONSE:
        if (ctx->px)
            sip_proxy_default_response(ctx->px, t->branch, t->msg, t->local);
        break;
    case TRIG_REQUEST:
        if (ctx->then) {
            /* the request is the caller's again: this context lets go of
             * the transaction (freed when its run is over) before the
             * caller answers, proxies or runs another script */
            void (*then)(void *) = ctx->then;
            ctx->then = NULL;
            ctx->txn_over = 1;
            sip_txn_detach(ctx->txn);
            ctx->txn = NULL;
            then(ctx->then_baton);
            break;
        }
        /* Scripts only see requests for our own domains (others are
         * relayed before any script runs): the registrar looks the user up. */
        sip_relay_default_request(ctx->txn, ctx->s);
        break;
    default:
        break;  /* CANCEL and ACK runs are advisory (§5.10, §5.11) */
    }
}

/* ---- end of a run ---- */

static void run_finish(sip_cgi_run_t *run, const char *failure)
{
    sip_cgi_ctx_t *ctx = run->ctx;
    trigger_t *trig = run->trig;
    int status = 0, abnormal = 0;
    pid_t r;

    if (run->finished)
        return;
    run->finished = 1;
    sip_timer_cancel(cgi_loop, &run->t_timeout);
    if (run->remote) {
        /* the worker's answer ended (exited), or the run gives up on it */
        if (run->fcgi)
            sip_fcgi_cancel(run->fcgi);
        run->fcgi = NULL;
        nremote--;
        if (run->exited) {
            log_exit(run, run->exit_status);
            abnormal = WEXITSTATUS(run->exit_status) != 0;
        }
        goto unlink;
    }
    /* What the script wrote to stderr before it ended still goes to the log. */
    while (run->err && run->err_open)
        stderr_event(run, APR_POLLIN);
    close_pipe(&run->io_in, &run->in, NULL);
    close_pipe(&run->io_out, &run->out, &run->out_open);
    close_pipe(&run->io_err, &run->err, &run->err_open);

    sip_timer_cancel(cgi_loop, &run->t_exit);
    if (run->exited) {
        r = run->proc.pid;
        status = run->exit_status;
    }
    else
        r = waitpid(run->proc.pid, &status, WNOHANG);
    if (r == run->proc.pid) {
        log_exit(run, status);
        abnormal = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        /* A failure named by the caller is counted by the caller. */
        if (!failure && (WIFSIGNALED(status) || (abnormal && !run->acted)))
            sip_stats->script_crashes++;
    }
    /* Background children of the script share its process group.  An
     * uploaded script runs as another user, out of our reach: its monitor
     * (sip-suexec, still ours to signal) kills its group on SIGTERM, and
     * has done so already when it has exited. */
    if (!run->uploaded)
        kill(-run->proc.pid, SIGKILL);
    else if (r != run->proc.pid)
        kill(run->proc.pid, SIGTERM);
    if (r != run->proc.pid)
        reap_later(run->proc.pid);

unlink:
    if (run->prev)
        run->prev->next = run->next;
    else
        running = run->next;
    if (run->next)
        run->next->prev = run->prev;
    nrunning--;
    sip_stats->now.scripts = nrunning;

    if (trig->kind != TRIG_ACK) {
        ctx->run = NULL;
        ctx->again = run->again;
    }
    ctx->runs--;
    if (ctx->cancelled && trig->kind == TRIG_REQUEST)
        ;   /* the CANCEL handling answers (487) */
    else if (trig->kind == TRIG_REQUEST || trig->kind == TRIG_RESPONSE) {
        if (failure || (abnormal && !run->acted)) {
            /* R78: a crash or a non-zero exit without actions is a failure */
            const char *why = failure ? failure
                              : apr_psprintf(run->pool, "exited abnormally without output");
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s, "sip-cgi: %s: %s%s", run->script, why,
                         answer_500(ctx) ? "; answered 500" : "");
        }
        else if (!run->acted)
            default_action(ctx, trig);
        else if (trig->kind == TRIG_REQUEST && !ctx->px && answer_500(ctx))
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s,
                         "sip-cgi: %s: no final response; answered 500", run->script);
        /* the script had its say on this branch's final response */
        if (trig->kind == TRIG_RESPONSE && sip_msg_status(trig->msg) >= 200 && ctx->px
            && txn_live(ctx))
            sip_proxy_branch_settled(ctx->px, trig->branch);
    }
    sip_loop_defer_destroy(cgi_loop, run->pool);
    ctx_pump(ctx);
    ctx_maybe_free(ctx);
}

static void run_timeout(void *baton)
{
    sip_cgi_run_t *run = baton;
    sip_stats->script_timeouts++;
    run_finish(run, "script timed out");
}

/* ---- actions (RFC 3050 §5.6.1) ---- */

/* Split "KEYWORD arg SIP/2.0" into its argument; NULL if malformed. */
static const char *action_arg(apr_pool_t *p, const char *line, apr_size_t kwlen)
{
    const char *a = line + kwlen, *e;

    while (*a == ' ' || *a == '\t')
        a++;
    e = a + strcspn(a, " \t");
    if (e == a)
        return NULL;
    {
        const char *v = e;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(v, "SIP/2.0") != 0)
            return NULL;
    }
    return apr_pstrmemdup(p, a, (apr_size_t)(e - a));
}

static int send_status(sip_cgi_run_t *run, const char *buf, apr_size_t len)
{
    sip_cgi_ctx_t *ctx = run->ctx;
    apr_pool_t *p;
    sip_msg_t *resp, *block;
    const char *why = NULL, *out;
    apr_size_t olen = 0;
    int st;

    if (!txn_live(ctx))
        return 0;
    if (sip_txn_final_sent(ctx->txn)) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, run->s,
                     "sip-cgi: %s: response after the final one ignored", run->script);
        return 0;
    }
    apr_pool_create(&p, run->pool);
    resp = sip_msg_parse_script_response(p, buf, len, &why);
    if (!resp) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s, "sip-cgi: %s: bad response: %s",
                     run->script, why);
        apr_pool_destroy(p);
        return -1;
    }
    sip_msg_complete_response(resp, sip_txn_request(ctx->txn), sip_txn_to_tag(ctx->txn));
    out = sip_msg_serialize(p, resp, &olen);
    block = sip_msg_parse_block(p, buf, len);
    /* CGI-Remove applies to the script's own responses too (§5.6.2.2) */
    if (out && block && sip_msg_has_header(block, "CGI-Remove")) {
        const char *only = apr_pstrcat(p, "X\r\nCGI-Remove: ", sip_msg_header(block, "CGI-Remove"),
                                       "\r\n\r\n", NULL);
        sip_msg_t *rm = sip_msg_parse_block(p, only, strlen(only));
        out = rm ? sip_msg_merge_text(p, out, olen, rm, &olen) : out;
    }
    st = sip_msg_status(resp);
    if (out)
        sip_txn_respond(ctx->txn, st, out, olen);
    if (st >= 200 && ctx->px)
        sip_proxy_cancel(ctx->px);
    if (st >= 200 && st < 300 && strcmp(sip_msg_method(sip_txn_request(ctx->txn)), "INVITE") == 0)
        ctx->uas_2xx = 1;   /* §5.11.1: its ACK goes to the script */
    apr_pool_destroy(p);
    return out ? 0 : -1;
}

/* One complete message of the script's output. */
static int handle_message(sip_cgi_run_t *run, const char *buf, apr_size_t len)
{
    sip_cgi_ctx_t *ctx = run->ctx;
    sip_msg_t *block;
    const char *line, *arg;
    int advisory = run->trig->kind == TRIG_CANCEL || run->trig->kind == TRIG_ACK;

    block = sip_msg_parse_block(ctx->pool, buf, len);
    if (!block)
        return -1;
    line = sip_msg_start_line(block);
    if (advisory && strncasecmp(line, "CGI-SET-COOKIE", 14) != 0) {
        /* §5.10: what a script writes for a CANCEL has no effect */
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, run->s,
                     "sip-cgi: %s: action ignored on a %s run: %s", run->script,
                     run->trig->kind == TRIG_CANCEL ? "CANCEL" : "ACK", line);
        return 0;
    }
    if (strncmp(line, "SIP/2.0 ", 8) == 0) {
        run->acted = 1;
        return send_status(run, buf, len);
    }
    if (strncasecmp(line, "CGI-PROXY-REQUEST", 17) == 0) {
        sip_uri_info_t u;
        sip_proxy_t *px;
        if (!(arg = action_arg(ctx->pool, line, 17)) || !sip_uri_info(ctx->pool, arg, &u))
            return -1;
        run->acted = 1;
        if (!txn_live(ctx) || sip_txn_final_sent(ctx->txn))
            return 0;
        if (sip_uri_aor(ctx->pool, arg) && sip_proxy_uri_is_local(arg, ctx->s, ctx->pool))
            fork_to_local_user(ctx, arg, block);
        else if ((px = ctx_proxy(ctx)))
            sip_proxy_fork(px, arg, block);
        return 0;
    }
    if (strncasecmp(line, "CGI-FORWARD-RESPONSE", 20) == 0) {
        trigger_t *t;
        if (!(arg = action_arg(ctx->pool, line, 20)))
            return -1;
        run->acted = 1;
        t = strcasecmp(arg, "this") == 0
            ? (run->trig->kind == TRIG_RESPONSE ? run->trig : NULL)
            : apr_hash_get(ctx->responses, arg, APR_HASH_KEY_STRING);
        if (!t || !ctx->px) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s,
                         "sip-cgi: %s: CGI-FORWARD-RESPONSE %s: no such response", run->script, arg);
            run->acted = 0;     /* falls back to the default action */
            return 0;
        }
        if (t->local) {
            /* a response we made up has no Via of ours to remove */
            const char *line = apr_psprintf(ctx->pool, "SIP/2.0 %d %s\r\n\r\n",
                                            sip_msg_status(t->msg), sip_msg_reason(t->msg));
            return send_status(run, line, strlen(line));
        }
        if (txn_live(ctx))
            sip_proxy_forward_upstream(ctx->px, t->msg, block);
        return 0;
    }
    if (strncasecmp(line, "CGI-SET-COOKIE", 14) == 0) {
        if (!(arg = action_arg(ctx->pool, line, 14)) || !sip_is_token(arg))
            return -1;
        ctx->cookie = arg;
        return 0;
    }
    if (strncasecmp(line, "CGI-AGAIN", 9) == 0) {
        if (!(arg = action_arg(ctx->pool, line, 9)))
            return -1;
        if (!strcasecmp(arg, "yes"))
            run->again = 1;
        else if (!strcasecmp(arg, "no"))
            run->again = 0;
        else
            return -1;
        return 0;
    }
    if (strncasecmp(line, "CGI-", 4) == 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, run->s,
                     "sip-cgi: %s: unknown action ignored: %s", run->script, line);
        return 0;
    }
    {
        /* A request line: a new request from the script (§3.1, digest 3.4.6) */
        const char *sp = strchr(line, ' ');
        const char *ver = sp ? strrchr(line, ' ') : NULL;
        sip_proxy_t *px;
        if (!sp || ver == sp || strcmp(ver + 1, "SIP/2.0") != 0)
            return -1;
        if ((px = ctx_proxy(ctx)) && !sip_proxy_originate(px, block))
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s,
                         "sip-cgi: %s: could not send new request %s", run->script, line);
        return 0;
    }
}

static void parse_output(sip_cgi_run_t *run, int eof)
{
    apr_size_t pos = 0;

    while (!run->finished) {
        apr_size_t skip = 0, mlen = 0;
        const char *why = NULL;
        int r = sip_cgi_split(run->obuf + pos, run->olen - pos, eof, &skip, &mlen, &why);

        if (r == 0) {
            pos += skip;
            break;
        }
        if (r < 0) {
            sip_stats->script_bad_output++;
            run_finish(run, apr_psprintf(run->pool, "malformed output: %s", why));
            return;
        }
        if (handle_message(run, run->obuf + pos + skip, mlen) < 0) {
            sip_stats->script_bad_output++;
            run_finish(run, "output is not a valid SIP-CGI message");
            return;
        }
        pos += skip + mlen;
    }
    if (run->finished)
        return;
    memmove(run->obuf, run->obuf + pos, run->olen - pos);
    run->olen -= pos;
}

/* The output has ended; the exit status (crash or not) decides what
 * happens next, and it follows EOF by a moment.  A script that keeps
 * running after closing its output is given a second, then killed. */
static void wait_exit(void *baton)
{
    sip_cgi_run_t *run = baton;
    int status;

    if (waitpid(run->proc.pid, &status, WNOHANG) == run->proc.pid) {
        run->exited = 1;
        run->exit_status = status;
        run_finish(run, NULL);
        return;
    }
    if (++run->exit_polls > 200) {
        run_finish(run, NULL);
        return;
    }
    sip_timer_set(cgi_loop, &run->t_exit, apr_time_from_msec(run->exit_polls < 20 ? 1 : 5),
                  wait_exit, run);
}

static void stdout_event(void *baton, apr_int16_t ev)
{
    sip_cgi_run_t *run = baton;
    int fd;

    (void)ev;
    apr_os_file_get(&fd, run->out);
    for (;;) {
        ssize_t n;

        if (run->ocap - run->olen < 4096) {
            apr_size_t cap = run->ocap * 2;
            char *bigger = apr_palloc(run->pool, cap);
            memcpy(bigger, run->obuf, run->olen);
            run->obuf = bigger;
            run->ocap = cap;
        }
        n = read(fd, run->obuf + run->olen, run->ocap - run->olen);
        if (n > 0) {
            run->olen += (apr_size_t)n;
            run->ototal += (apr_size_t)n;
            if ((apr_off_t)run->ototal > run->max_output) {
                sip_stats->script_bad_output++;
                run_finish(run, "output exceeds SipScriptMaxOutput");
                return;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            parse_output(run, 0);
            return;
        }
        /* EOF (or a read error, treated alike) */
        close_pipe(&run->io_out, &run->out, &run->out_open);
        parse_output(run, 1);
        if (!run->finished)
            wait_exit(run);
        return;
    }
}

static void stderr_flush_line(sip_cgi_run_t *run)
{
    if (run->elen) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s, "sip-cgi: stderr from %s: %.*s",
                     run->script, (int)run->elen, run->ebuf);
        run->elen = 0;
    }
}

static void stderr_event(void *baton, apr_int16_t ev)
{
    sip_cgi_run_t *run = baton;
    char buf[4096];
    int fd;
    ssize_t n, i;

    (void)ev;
    apr_os_file_get(&fd, run->err);
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
        return;
    if (n < 0 && errno == EAGAIN) {
        if (run->finished) {    /* draining at the end: nothing more to wait for */
            stderr_flush_line(run);
            close_pipe(&run->io_err, &run->err, &run->err_open);
        }
        return;
    }
    if (n <= 0) {
        stderr_flush_line(run);
        close_pipe(&run->io_err, &run->err, &run->err_open);
        return;
    }
    for (i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            stderr_flush_line(run);
            continue;
        }
        if (run->elen == sizeof(run->ebuf))
            stderr_flush_line(run);
        run->ebuf[run->elen++] = buf[i];
    }
}

static void stdin_event(void *baton, apr_int16_t ev)
{
    sip_cgi_run_t *run = baton;
    int fd;

    (void)ev;
    apr_os_file_get(&fd, run->in);
    while (run->body_off < run->body_len) {
        ssize_t n = write(fd, run->body + run->body_off, run->body_len - run->body_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            sip_io_watch(cgi_loop, &run->io_in, APR_POLLOUT);
            return;
        }
        if (n < 0)
            break;  /* the script does not read its input: fine */
        run->body_off += (apr_size_t)n;
    }
    close_pipe(&run->io_in, &run->in, NULL);
}

/* ---- environment (RFC 3050 §5.5, digest §2) ---- */

static const char *env_name(apr_pool_t *p, const char *header)
{
    char *n = apr_pstrcat(p, "SIP_", header, NULL), *c;
    for (c = n + 4; *c; c++)
        *c = apr_isalnum(*c) ? apr_toupper(*c) : '_';
    return n;
}

/* RFC 3050 §5.5.1.21: 1*product, so httpd's "(Debian)" comments go. */
static const char *server_software(apr_pool_t *p)
{
    char *banner = apr_pstrdup(p, ap_get_server_banner()), *last = NULL, *w;
    const char *out = "";

    for (w = apr_strtok(banner, " ", &last); w; w = apr_strtok(NULL, " ", &last))
        if (w[0] != '(' && w[strlen(w) - 1] != ')')
            out = apr_pstrcat(p, out, *out ? " " : "", w, NULL);
    return apr_pstrcat(p, out, *out ? " " : "", "mod_sip/" SIP_MODULE_VERSION, NULL);
}

static char **build_env(apr_pool_t *p, sip_cgi_ctx_t *ctx, trigger_t *t)
{
    const sip_source_t *src = sip_txn_source(ctx->txn);
    const sip_msg_t *msg = t->msg;
    const apr_array_header_t *hdrs = sip_msg_headers(msg);
    apr_table_t *env = apr_table_make(p, 32);
    server_rec *s = ctx->s;
    apr_size_t blen = 0;
    const char *path = getenv("PATH");
    int i;

    apr_table_setn(env, "GATEWAY_INTERFACE", "SIP-CGI/1.1");
    apr_table_setn(env, "SERVER_SOFTWARE", server_software(p));
    apr_table_setn(env, "SERVER_NAME", s->server_hostname ? s->server_hostname
                   : sip_sockaddr_ip(p, &src->local));
    apr_table_setn(env, "SERVER_PORT", apr_itoa(p, sip_sockaddr_port(&src->local)));
    apr_table_setn(env, "SERVER_PROTOCOL", sip_msg_version(msg) ? sip_msg_version(msg) : "SIP/2.0");
    apr_table_setn(env, "PATH", path ? path : DEFAULT_PATH);
    if (t->kind == TRIG_RESPONSE) {
        const char *rt = sip_proxy_branch_token(t->branch);
        sip_sockaddr_t from;
        apr_table_setn(env, "REMOTE_ADDR", t->remote);
        if (!t->local && sip_sockaddr_set(&from, t->remote, 0) == APR_SUCCESS) {
            const char *rh = remote_host(p, s, &from);
            if (rh)
                apr_table_setn(env, "REMOTE_HOST", rh);
        }
        apr_table_setn(env, "RESPONSE_STATUS", apr_itoa(p, sip_msg_status(msg)));
        if (sip_msg_reason(msg))
            apr_table_setn(env, "RESPONSE_REASON", sip_msg_reason(msg));
        apr_table_setn(env, "RESPONSE_TOKEN", t->token);
        if (rt)
            apr_table_setn(env, "REQUEST_TOKEN", rt);
    }
    else {
        const char *rh = t->remote ? NULL : remote_host(p, s, &src->peer);
        if (rh)
            apr_table_setn(env, "REMOTE_HOST", rh);
        apr_table_setn(env, "REMOTE_ADDR", t->remote ? t->remote : sip_sockaddr_ip(p, &src->peer));
        apr_table_setn(env, "REQUEST_METHOD", sip_msg_method(msg));
        apr_table_setn(env, "REQUEST_URI", sip_msg_request_uri(msg));
        /* over TLS: mod_ssl's names, as a CGI script behind mod_ssl sees */
        sip_source_tls_env(p, src, env);
    }
    if (ctx->cookie)
        apr_table_setn(env, "SCRIPT_COOKIE", ctx->cookie);
    if (sip_txn_user(ctx->txn)) {   /* RFC 3050 §5.5.1.1, §5.5.1.10 */
        apr_table_setn(env, "AUTH_TYPE", "Digest");
        apr_table_setn(env, "REMOTE_USER", sip_txn_user(ctx->txn));
    }
    if (t->regs)    /* RFC 3050 §5.5.1.6: read afresh for every run */
        apr_table_setn(env, "REGISTRATIONS", t->regs);
    if (sip_msg_body(msg, &blen)) {
        const char *ct = sip_msg_content_type(msg);
        apr_table_setn(env, "CONTENT_LENGTH", apr_off_t_toa(p, (apr_off_t)blen));
        if (ct)
            apr_table_setn(env, "CONTENT_TYPE", ct);
    }
    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        /* RFC 3050 §5.5.1.5, §7.3: credentials stay with the server */
        if (strcasecmp(h->name, "Authorization") == 0
            || strcasecmp(h->name, "Proxy-Authorization") == 0)
            continue;
        apr_table_merge(env, env_name(p, h->name), h->value);
    }
    return ap_create_environment(p, env);
}

/* ---- spawning ---- */

/* RLimitCPU, RLimitMEM and RLimitNPROC of the vhost, as mod_cgi applies
 * them; posix_spawn cannot, so they are set on the new process at once. */
static void apply_rlimits(sip_cgi_run_t *run, pid_t pid)
{
    core_dir_config *d = ap_get_core_module_config(run->s->lookup_defaults);

    if (!d)
        return;
#ifdef RLIMIT_CPU
    if (d->limit_cpu)
        prlimit(pid, RLIMIT_CPU, d->limit_cpu, NULL);
#endif
#if defined(RLIMIT_AS)
    if (d->limit_mem)
        prlimit(pid, RLIMIT_AS, d->limit_mem, NULL);
#endif
#ifdef RLIMIT_NPROC
    if (d->limit_nproc)
        prlimit(pid, RLIMIT_NPROC, d->limit_nproc, NULL);
#endif
}

/* REMOTE_HOST (RFC 3050 §5.5.1.8) when HostnameLookups is On or Double
 * (verified then): the engine resolved a request's sender before it got
 * here (sip_request_wants_name), so this only reads the DNS cache and
 * never waits; a response's sender is named when the cache knows it. */
static const char *remote_host(apr_pool_t *p, server_rec *s, const sip_sockaddr_t *peer)
{
    core_dir_config *d = ap_get_core_module_config(s->lookup_defaults);

    if (!d || (d->hostname_lookups != HOSTNAME_LOOKUP_ON
               && d->hostname_lookups != HOSTNAME_LOOKUP_DOUBLE))
        return NULL;
    return sip_dns_cached_name(p, peer, d->hostname_lookups == HOSTNAME_LOOKUP_DOUBLE);
}

/* RLimitCPU, RLimitMEM, RLimitNPROC as sip-suexec takes them: it sets
 * them itself, between dropping to the user and starting the script. */
static void upload_limits(apr_pool_t *p, server_rec *s, const char *out[3])
{
    core_dir_config *d = ap_get_core_module_config(s->lookup_defaults);
    struct rlimit *l[3] = {NULL, NULL, NULL};
    int i;

    if (d) {
        l[0] = d->limit_cpu;
        l[1] = d->limit_mem;
        l[2] = d->limit_nproc;
    }
    for (i = 0; i < 3; i++)
        out[i] = l[i] ? apr_psprintf(p, "%" APR_UINT64_T_FMT ":%" APR_UINT64_T_FMT,
                                     (apr_uint64_t)l[i]->rlim_cur,
                                     (apr_uint64_t)l[i]->rlim_max) : NULL;
}

/* The script's text for sip-suexec's descriptor 3: a memory file, so it
 * never touches the disk nor needs a name anyone could open. */
static int upload_memfd(sip_cgi_ctx_t *ctx)
{
    int fd = memfd_create("sip-cgi-upload", MFD_CLOEXEC);
    apr_size_t off = 0;

    if (fd < 0)
        return -1;
    while (off < ctx->upload_len) {
        ssize_t n = write(fd, ctx->upload_body + off, ctx->upload_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (apr_size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static apr_status_t spawn(sip_cgi_run_t *run, const char *path, char **envp)
{
    sip_cgi_ctx_t *ctx = run->ctx;
    apr_file_t *in_r, *out_w, *err_w;
    int in_fd, out_fd, err_fd, script_fd = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    char *dir = apr_pstrdup(run->pool, path), *slash = strrchr(dir, '/');
    char *argv1[2], **argv = argv1;
    int nargs = 0;
    pid_t pid;
    int rc;
    apr_status_t rv;

    /* Our ends never block the engine; the script's ends are ordinary. */
    if ((rv = apr_file_pipe_create_ex(&in_r, &run->in, APR_READ_BLOCK, run->pool))
        || (rv = apr_file_pipe_create_ex(&run->out, &out_w, APR_WRITE_BLOCK, run->pool))
        || (rv = apr_file_pipe_create_ex(&run->err, &err_w, APR_WRITE_BLOCK, run->pool)))
        return rv;
    apr_os_file_get(&in_fd, in_r);
    apr_os_file_get(&out_fd, out_w);
    apr_os_file_get(&err_fd, err_w);
    if (ctx->upload_aor) {
        const char *limits[3];
        const sip_upload_conf_t *c = sip_upload_conf();
        upload_limits(run->pool, run->s, limits);
        argv = sip_upload_argv(run->pool, c, sip_upload_workdir(run->pool, c->workdir,
                                                                  ctx->upload_aor),
                               limits, ctx->interp, ctx->interp_arg);
        path = argv[0];
        script_fd = upload_memfd(ctx);
        if (script_fd < 0) {
            rv = errno;
            apr_file_close(in_r);
            apr_file_close(out_w);
            apr_file_close(err_w);
            return rv;
        }
    }
    else if (ctx->owner_file) {
        /* the helper reads the program from the file itself and enters
         * the owner's home */
        const char *limits[3];
        upload_limits(run->pool, run->s, limits);
        argv = apr_pcalloc(run->pool, 10 * sizeof(char *));
        argv[0] = (char *)sip_upload_conf()->suexec;
        argv[1] = "--owner";
        argv[2] = apr_ltoa(run->pool, ctx->owner_uid);
        argv[3] = apr_ltoa(run->pool, ctx->owner_min_uid);
        argv[4] = (char *)ctx->owner_tmpl;
        argv[5] = (char *)ctx->owner_file;
        for (int i = 0; i < 3; i++)
            argv[6 + i] = (char *)(limits[i] ? limits[i] : "-");
        path = argv[0];
    }
    else {
        if (slash)
            *slash = '\0';
        while (ctx->args && ctx->args[nargs])
            nargs++;
        if (nargs)
            argv = apr_pcalloc(run->pool, (nargs + 2) * sizeof(char *));
        argv[0] = slash ? slash + 1 : dir;
        for (int i = 0; i < nargs; i++)
            argv[i + 1] = apr_pstrdup(run->pool, ctx->args[i]);
        argv[nargs + 1] = NULL;
    }

    /* posix_spawn (vfork-like) is far cheaper than APR's fork() here. */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    if (script_fd >= 0) {
        /* sip-suexec enters the user's working directory itself */
        posix_spawn_file_actions_adddup2(&fa, script_fd, 3);
        posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    }
    else if (ctx->owner_file)
        posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    else {
        posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        posix_spawn_file_actions_addchdir_np(&fa, dir);     /* RFC 3050 §6.1 */
    }
    sip_spawn_attr_init(&attr);
    rc = posix_spawn(&pid, path, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    apr_file_close(in_r);
    apr_file_close(out_w);
    apr_file_close(err_w);
    if (script_fd >= 0)
        close(script_fd);
    if (rc != 0)
        return rc;
    run->proc.pid = pid;
    run->uploaded = script_fd >= 0 || ctx->owner_file != NULL;
    /* a setuid process cannot be given limits from here: sip-suexec
     * applies them to the script */
    if (!run->uploaded)
        apply_rlimits(run, pid);
    return APR_SUCCESS;
}

static void run_failed_to_start(sip_cgi_ctx_t *ctx, trigger_t *trig)
{
    if (trig->kind == TRIG_REQUEST || trig->kind == TRIG_RESPONSE)
        answer_500(ctx);
}

/* Overload: new requests are told to come back (RFC 3261 §21.5.4);
 * other triggers get the server's default handling. */
static void refuse_busy(sip_cgi_ctx_t *ctx, trigger_t *trig)
{
    sip_stats->scripts_refused++;
    if (trig->kind == TRIG_REQUEST && txn_live(ctx) && !sip_txn_final_sent(ctx->txn)) {
        static const char *const hdrs[] = {"Retry-After", "5", NULL};
        sip_txn_reply(ctx->txn, 503, "Service Unavailable", hdrs);
    }
    else if (trig->kind == TRIG_RESPONSE)
        default_action(ctx, trig);
}

/* ---- FastCGI: the run's output comes from a worker (sip_fcgi.h) ---- */

static void append_output(sip_cgi_run_t *run, const char *buf, apr_size_t len)
{
    if (run->ocap - run->olen < len) {
        apr_size_t cap = run->ocap * 2;
        char *bigger;
        while (cap - run->olen < len)
            cap *= 2;
        bigger = apr_palloc(run->pool, cap);
        memcpy(bigger, run->obuf, run->olen);
        run->obuf = bigger;
        run->ocap = cap;
    }
    memcpy(run->obuf + run->olen, buf, len);
    run->olen += len;
}

static int fcgi_out(void *baton, const char *buf, apr_size_t len)
{
    sip_cgi_run_t *run = baton;

    run->ototal += len;
    if ((apr_off_t)run->ototal > run->max_output) {
        sip_stats->script_bad_output++;
        run_finish(run, "output exceeds SipScriptMaxOutput");
        return 1;
    }
    append_output(run, buf, len);
    parse_output(run, 0);
    return run->finished;
}

static void fcgi_end(void *baton, const char *failure, apr_uint32_t app_status)
{
    sip_cgi_run_t *run = baton;

    run->fcgi = NULL;
    if (failure) {
        sip_stats->script_crashes++;
        run_finish(run, failure);
        return;
    }
    parse_output(run, 1);
    if (run->finished)
        return;
    run->exited = 1;
    run->exit_status = (int)((app_status & 0xff) << 8);    /* as a wait status */
    run_finish(run, NULL);
}

static const sip_fcgi_sink_t fcgi_sink = {fcgi_out, fcgi_end};

/* The worker pool the context's script maps to; scripts of other users
 * (uploaded, forwarding files' programs) always run as processes. */
static sip_fcgi_target_t *run_target(sip_cgi_ctx_t *ctx)
{
    if (ctx->upload_aor || ctx->owner_file || ctx->args)
        return NULL;
    return sip_fcgi_lookup(ctx->s, ctx->path, ctx->script);
}

/* The run's transport, chosen here only: a FastCGI request when the
 * script maps to a pool, else a spawned process and its pipes.  *busy:
 * the pool can take no more (503). */
static apr_status_t run_transport_start(sip_cgi_run_t *run, char **envp, int *busy)
{
    sip_fcgi_target_t *t = run_target(run->ctx);

    apr_size_t n = 0;
    char **params;

    *busy = 0;
    if (!t)
        return spawn(run, run->ctx->path, envp);
    /* the SIP-CGI environment, and which script was selected, which a
     * server for many scripts needs (as php-fpm): SCRIPT_FILENAME */
    while (envp[n])
        n++;
    params = apr_palloc(run->pool, (n + 2) * sizeof(*params));
    memcpy(params, envp, n * sizeof(*params));
    params[n] = apr_pstrcat(run->pool, "SCRIPT_FILENAME=", run->ctx->path, NULL);
    params[n + 1] = NULL;
    envp = params;
    run->remote = 1;
    run->fcgi = sip_fcgi_submit(t, run->s, run->script, (const char *const *)envp, run->body,
                                run->body_len, &fcgi_sink, run, busy);
    if (!run->fcgi)
        return *busy ? APR_EAGAIN : APR_EGENERAL;
    nremote++;
    return APR_SUCCESS;
}

static void run_spawn(sip_cgi_ctx_t *ctx, trigger_t *trig)
{
    sip_server_conf *conf = sip_get_conf(ctx->s);
    apr_pool_t *p;
    sip_cgi_run_t *run;
    apr_status_t rv;

    int busy = 0;

    if (nrunning - nremote >= (apr_size_t)conf->max_scripts && !run_target(ctx)) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ctx->s,
                     "sip-cgi: SipMaxScripts (%d) reached; not running %s", conf->max_scripts,
                     ctx->script);
        refuse_busy(ctx, trig);
        return;
    }
    apr_pool_create(&p, cgi_pool);
    run = apr_pcalloc(p, sizeof(*run));
    run->pool = p;
    run->ctx = ctx;
    run->trig = trig;
    run->s = ctx->s;
    run->script = ctx->script;
    run->max_output = conf->max_output;
    run->ocap = 16384;
    run->obuf = apr_palloc(p, run->ocap);
    run->body = sip_msg_body(trig->msg, &run->body_len);

    rv = run_transport_start(run, build_env(p, ctx, trig), &busy);
    if (busy) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ctx->s,
                     "sip-cgi: every FastCGI worker for %s is busy and the queue is full",
                     ctx->script);
        apr_pool_destroy(p);
        refuse_busy(ctx, trig);
        return;
    }
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, ctx->s, "sip-cgi: cannot run %s", ctx->path);
        sip_stats->script_start_failures++;
        apr_pool_destroy(p);
        run_failed_to_start(ctx, trig);
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, ctx->s, "sip-cgi: started %s (%s) for %s",
                 run->script,
                 run->remote ? "FastCGI" : apr_psprintf(p, "pid %d", (int)run->proc.pid),
                 trig->kind == TRIG_RESPONSE ? apr_psprintf(p, "response %d", sip_msg_status(trig->msg))
                 : apr_pstrcat(p, sip_msg_method(trig->msg), " ", sip_msg_request_uri(trig->msg), NULL));
    run->next = running;
    if (running)
        running->prev = run;
    running = run;
    nrunning++;
    sip_stats->now.scripts = nrunning;
    sip_stats->scripts++;
    ctx->runs++;
    if (trig->kind != TRIG_ACK)
        ctx->run = run;
    sip_timer_set(cgi_loop, &run->t_timeout, conf->script_timeout, run_timeout, run);
    if (!run->remote) {
        sip_io_init_file(&run->io_in, run->in, stdin_event, run);
        sip_io_init_file(&run->io_out, run->out, stdout_event, run);
        sip_io_init_file(&run->io_err, run->err, stderr_event, run);
        run->out_open = run->err_open = 1;
        sip_io_watch(cgi_loop, &run->io_out, APR_POLLIN);
        sip_io_watch(cgi_loop, &run->io_err, APR_POLLIN);
        stdin_event(run, 0);
    }
}

typedef struct regs_fetch {
    sip_cgi_ctx_t *ctx;
    trigger_t *trig;
} regs_fetch_t;

static void regs_fetched(void *baton, int status, apr_array_header_t *bindings)
{
    regs_fetch_t *f = baton;

    if (!status)
        f->trig->regs = sip_registrar_format(f->ctx->pool, bindings);
    if (f->trig->kind != TRIG_ACK)
        f->ctx->fetching = 0;
    f->ctx->runs--;
    if (txn_live(f->ctx) || f->trig->kind == TRIG_ACK)
        run_spawn(f->ctx, f->trig);
    ctx_pump(f->ctx);
    ctx_maybe_free(f->ctx);
}

/* The user's bindings are looked up first (the store may answer later),
 * then the script starts. */
static void run_start(sip_cgi_ctx_t *ctx, trigger_t *trig)
{
    const sip_msg_t *req = sip_txn_request(ctx->txn);
    const char *aor = sip_msg_aor(ctx->pool, req);
    regs_fetch_t *f;

    if (!aor) {
        run_spawn(ctx, trig);
        return;
    }
    f = apr_pcalloc(ctx->pool, sizeof(*f));
    f->ctx = ctx;
    f->trig = trig;
    if (trig->kind != TRIG_ACK)
        ctx->fetching = 1;
    ctx->runs++;    /* keeps the context while the lookup is out */
    sip_location_fetch(ctx->pool, aor, regs_fetched, f);
}

/* Start the next waiting trigger when no script runs (§5.3). */
static void ctx_pump(sip_cgi_ctx_t *ctx)
{
    while (!ctx->run && !ctx->fetching && ctx->qhead) {
        trigger_t *t = ctx->qhead;

        ctx->qhead = t->next;
        if (!ctx->qhead)
            ctx->qtail = NULL;
        t->next = NULL;
        if (!txn_live(ctx))
            continue;
        if (t->kind == TRIG_REQUEST || ctx->again) {
            ctx->again = 0;     /* CGI-AGAIN covers the next invocation only */
            run_start(ctx, t);
        }
        else
            default_action(ctx, t);
    }
}

static void ctx_maybe_free(sip_cgi_ctx_t *ctx)
{
    if (ctx->freed || !ctx->txn_over || ctx->runs || ctx->qhead || ctx->locating
        || (ctx->px && !ctx->px_idle))
        return;
    ctx->freed = 1;
    if (ctx->px)
        sip_proxy_release(ctx->px);
    if (ctx->txn)
        sip_txn_detach(ctx->txn);
    ctx->txn = NULL;
    sip_loop_defer_destroy(cgi_loop, ctx->pool);
}

/* ---- transaction callbacks ---- */

static int ctx_cancelled(void *tu)
{
    sip_cgi_ctx_t *ctx = tu;
    int relayed = ctx->px != NULL;

    ctx->cancelled = 1;
    /* §5.10: the server answers the CANCEL and cancels the branches; the
     * script only hears about it (if it asked to be run again). */
    if (ctx->px)
        sip_proxy_cancel(ctx->px);
    else if (ctx->run && ctx->run->trig->kind == TRIG_REQUEST) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ctx->s, "sip-cgi: %s: request cancelled",
                     ctx->script);
        ctx->run->acted = 1;    /* no default action after this */
        run_finish(ctx->run, NULL);
    }
    if (ctx->again) {
        trigger_t *t = apr_pcalloc(ctx->pool, sizeof(*t));
        t->kind = TRIG_CANCEL;
        t->msg = sip_msg_dup(ctx->pool, (sip_msg_t *)sip_txn_request(ctx->txn));
        if (t->msg) {
            /* the script sees the CANCEL itself: same dialog, method CANCEL */
            t->remote = sip_sockaddr_ip(ctx->pool, &sip_txn_source(ctx->txn)->peer);
            t->msg = sip_msg_make_cancel(ctx->pool, t->msg);
            t->msg = t->msg ? sip_msg_dup(ctx->pool, t->msg) : NULL;
        }
        if (t->msg)
            ctx_enqueue(ctx, t);
    }
    return relayed;
}

static void ctx_ack(void *tu, sip_msg_t *ack)
{
    sip_cgi_ctx_t *ctx = tu;
    trigger_t *t;

    if (!ctx->uas_2xx)
        return;
    /* §5.11.1: the script answered 200 itself, so it gets the ACK, at once */
    t = apr_pcalloc(ctx->pool, sizeof(*t));
    t->kind = TRIG_ACK;
    t->msg = sip_msg_dup(ctx->pool, ack);
    if (t->msg)
        run_start(ctx, t);
}

static void ctx_ended(void *tu)
{
    sip_cgi_ctx_t *ctx = tu;

    ctx->txn_over = 1;
    ctx_maybe_free(ctx);
}

static const sip_txn_tu_ops_t ctx_ops = {ctx_cancelled, ctx_ack, ctx_ended};

static sip_cgi_ctx_t *ctx_new(sip_txn_t *txn, server_rec *s)
{
    apr_pool_t *p;
    sip_cgi_ctx_t *ctx;

    apr_pool_create(&p, cgi_pool);
    ctx = apr_pcalloc(p, sizeof(*ctx));
    ctx->pool = p;
    ctx->txn = txn;
    ctx->s = s;
    ctx->responses = apr_hash_make(p);
    return ctx;
}

static void ctx_begin(sip_cgi_ctx_t *ctx)
{
    trigger_t *t;

    sip_txn_keep_state(ctx->txn);
    sip_txn_attach(ctx->txn, &ctx_ops, ctx);

    t = apr_pcalloc(ctx->pool, sizeof(*t));
    t->kind = TRIG_REQUEST;
    t->msg = (sip_msg_t *)sip_txn_request(ctx->txn);
    ctx->qhead = ctx->qtail = t;
    ctx_pump(ctx);
    ctx_maybe_free(ctx);
}

void sip_cgi_run(sip_txn_t *txn, const char *path, server_rec *s)
{
    sip_cgi_ctx_t *ctx = ctx_new(txn, s);
    const char *slash = strrchr(path, '/');

    ctx->path = apr_pstrdup(ctx->pool, path);
    ctx->script = apr_pstrdup(ctx->pool, slash ? slash + 1 : path);
    ctx_begin(ctx);
}

void sip_cgi_run_then(sip_txn_t *txn, const char *path, server_rec *s, void (*then)(void *),
                      void *baton)
{
    sip_cgi_ctx_t *ctx = ctx_new(txn, s);
    const char *slash = strrchr(path, '/');

    ctx->path = apr_pstrdup(ctx->pool, path);
    ctx->script = apr_pstrdup(ctx->pool, slash ? slash + 1 : path);
    ctx->then = then;
    ctx->then_baton = baton;
    ctx_begin(ctx);
}

void sip_cgi_run_args(sip_txn_t *txn, const char *path, const char *const *args, server_rec *s)
{
    sip_cgi_ctx_t *ctx = ctx_new(txn, s);
    const char *slash = strrchr(path, '/');
    int n = 0;
    const char **copy;

    while (args && args[n])
        n++;
    copy = apr_pcalloc(ctx->pool, (n + 1) * sizeof(*copy));
    for (int i = 0; i < n; i++)
        copy[i] = apr_pstrdup(ctx->pool, args[i]);
    ctx->args = copy;
    ctx->path = apr_pstrdup(ctx->pool, path);
    ctx->script = apr_pstrdup(ctx->pool, slash ? slash + 1 : path);
    ctx_begin(ctx);
}

void sip_cgi_run_owner(sip_txn_t *txn, server_rec *s, const char *file, const char *tmpl,
                       long uid, long min_uid, const char *program)
{
    sip_cgi_ctx_t *ctx = ctx_new(txn, s);

    ctx->owner_file = apr_pstrdup(ctx->pool, file);
    ctx->owner_tmpl = apr_pstrdup(ctx->pool, tmpl);
    ctx->owner_uid = uid;
    ctx->owner_min_uid = min_uid;
    ctx->path = sip_upload_conf()->suexec;
    ctx->script = apr_psprintf(ctx->pool, "%s (uid %ld, from %s)", program, uid, file);
    ctx_begin(ctx);
}

void sip_cgi_run_uploaded(sip_txn_t *txn, server_rec *s, const sip_script_t *script,
                          const char *interp, const char *arg)
{
    sip_cgi_ctx_t *ctx = ctx_new(txn, s);

    ctx->upload_aor = apr_pstrdup(ctx->pool, script->aor);
    ctx->upload_body = apr_pstrmemdup(ctx->pool, script->body, script->len);
    ctx->upload_len = script->len;
    ctx->interp = apr_pstrdup(ctx->pool, interp);
    ctx->interp_arg = arg ? apr_pstrdup(ctx->pool, arg) : NULL;
    ctx->path = sip_upload_conf()->suexec;
    ctx->script = apr_pstrcat(ctx->pool, "uploaded script of ", ctx->upload_aor, NULL);
    ctx_begin(ctx);
}

void sip_cgi_shutdown(void)
{
    while (running)
        run_finish(running, "server shutting down");
    sip_fcgi_shutdown();
    /* SIGKILL was sent; allow a second for the kernel to finish them. */
    for (int i = 0; reap_pids->nelts && i < 100; i++) {
        reap_tick(NULL);
        if (reap_pids->nelts)
            apr_sleep(apr_time_from_msec(10));
    }
}
