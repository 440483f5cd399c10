#include "sip_cgi.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_portable.h"
#include "apr_thread_proc.h"
#include "httpd.h"
#include "http_core.h"
#include "util_script.h"

typedef struct sip_cgi_run sip_cgi_run_t;

struct sip_cgi_run {
    apr_pool_t *pool;
    sip_txn_t *txn;             /* NULL once detached */
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
    apr_array_header_t *targets;    /* CGI-PROXY-REQUEST URIs */
    sip_cgi_run_t *prev, *next; /* list of running scripts */
};

static sip_loop_t *cgi_loop;
static apr_pool_t *cgi_pool;
static sip_cgi_run_t *running;
static apr_size_t nrunning;

/* Processes killed or exited but not yet reaped. */
static apr_array_header_t *reap_pids;
static sip_timer_t reap_timer;

void sip_cgi_init(sip_loop_t *loop, apr_pool_t *p)
{
    cgi_loop = loop;
    cgi_pool = p;
    reap_pids = apr_array_make(p, 16, sizeof(pid_t));
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

/* 0 when 'name' is a runnable script inside 'realdir', -1 when absent,
 * 403 when it exists but must not run. */
static int check_script(apr_pool_t *p, const char *dir, const char *realdir,
                        const char *name, const char **path, const char **why)
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
    if (access(resolved, X_OK) < 0) {
        *why = apr_psprintf(p, "%s is not executable", name);
        return 403;
    }
    *path = apr_pstrdup(p, resolved);
    return 0;
}

int sip_cgi_locate(apr_pool_t *p, const char *dir, const char *default_script,
                   const char *user, const char *host, const char **path, const char **why)
{
    char realdir[PATH_MAX];
    int r;

    if (!dir || !realpath(dir, realdir)) {
        *why = "no SipDirectory";
        return 404;
    }
    if (user && *user) {
        char *name = apr_pstrcat(p, user, "@", host ? host : "", NULL);
        /* %2F and %00 are refused by ap_unescape_url itself. */
        if (ap_unescape_url(name) != OK || !sip_cgi_name_ok(name)) {
            *why = "invalid script name in Request-URI";
            return 403;
        }
        r = check_script(p, dir, realdir, name, path, why);
        if (r >= 0)
            return r;
    }
    if (default_script && sip_cgi_name_ok(default_script)) {
        r = check_script(p, dir, realdir, default_script, path, why);
        if (r >= 0)
            return r;
    }
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
                const char *v = memchr(buf + pos, ':', ll) + 1;
                char *stop;
                while (*v == ' ' || *v == '\t')
                    v++;
                clen = apr_strtoi64(v, &stop, 10);
                while (*stop == ' ' || *stop == '\t')
                    stop++;
                if (clen < 0 || !apr_isdigit(*v) || (*stop != '\r' && *stop != '\n')) {
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

/* End the run: answer 500 when no final response was sent, kill what is
 * left of the script's process group and reap it. */
static void run_finish(sip_cgi_run_t *run, const char *failure)
{
    int status;
    pid_t r;

    if (run->finished)
        return;
    run->finished = 1;
    sip_timer_cancel(cgi_loop, &run->t_timeout);
    /* What the script wrote to stderr before it ended still goes to the log. */
    while (run->err && run->err_open)
        stderr_event(run, APR_POLLIN);
    close_pipe(&run->io_in, &run->in, NULL);
    close_pipe(&run->io_out, &run->out, &run->out_open);
    close_pipe(&run->io_err, &run->err, &run->err_open);

    if (run->txn && !failure && !sip_txn_final_sent(run->txn) && run->targets->nelts) {
        /* RFC 3050 §5.6.1.2: several proxy requests fork in parallel. */
        sip_txn_t *txn = run->txn;
        sip_proxy_t *px;
        int i;

        sip_txn_detach(txn);
        run->txn = NULL;
        px = sip_proxy_new(txn, run->s);
        for (i = 0; i < run->targets->nelts; i++)
            sip_proxy_add_target(px, APR_ARRAY_IDX(run->targets, i, const char *), 1.0);
        sip_proxy_start(px);
    }
    if (run->txn) {
        if (!sip_txn_final_sent(run->txn)) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s,
                         "sip-cgi: %s: %s; answering 500", run->script,
                         failure ? failure : "no final response");
            sip_txn_reply(run->txn, 500, "Internal Server Error", NULL);
        }
        else if (failure)
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s, "sip-cgi: %s: %s", run->script,
                         failure);
        sip_txn_detach(run->txn);
        run->txn = NULL;
    }

    r = waitpid(run->proc.pid, &status, WNOHANG);
    if (r == run->proc.pid)
        log_exit(run, status);
    /* Background children of the script share its process group. */
    kill(-run->proc.pid, SIGKILL);
    if (r != run->proc.pid)
        reap_later(run->proc.pid);

    if (run->prev)
        run->prev->next = run->next;
    else
        running = run->next;
    if (run->next)
        run->next->prev = run->prev;
    nrunning--;
    sip_loop_defer_destroy(cgi_loop, run->pool);
}

static void run_timeout(void *baton)
{
    sip_cgi_run_t *run = baton;
    run_finish(run, "script timed out");
}

static int run_cancelled(void *tu)
{
    sip_cgi_run_t *run = tu;

    ap_log_error(APLOG_MARK, APLOG_INFO, 0, run->s, "sip-cgi: %s: request cancelled",
                 run->script);
    sip_txn_detach(run->txn);
    run->txn = NULL;
    run_finish(run, NULL);
    return 0;
}

/* One complete message from the script's output. */
static int handle_message(sip_cgi_run_t *run, const char *buf, apr_size_t len)
{
    apr_pool_t *p;
    sip_msg_t *resp;
    const char *why = NULL, *out;
    apr_size_t olen = 0;

    if (len > 18 && strncasecmp(buf, "CGI-PROXY-REQUEST ", 18) == 0) {
        const char *line_end = memchr(buf, '\n', len);
        char *line = apr_pstrmemdup(run->pool, buf + 18, (line_end ? (apr_size_t)(line_end - buf) : len) - 18);
        char *sp = strchr(line, ' ');
        sip_uri_info_t u;

        if (sp)
            *sp = '\0';
        if (!sp || strncmp(sp + 1, "SIP/2.0", 7) != 0 || !sip_uri_info(run->pool, line, &u)) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, run->s,
                         "sip-cgi: %s: malformed CGI-PROXY-REQUEST line", run->script);
            return -1;
        }
        *(const char **)apr_array_push(run->targets) = line;
        return 0;
    }
    if (len >= 4 && strncasecmp(buf, "CGI-", 4) == 0) {
        const char *sp = memchr(buf, ' ', len);
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, run->s,
                     "sip-cgi: %s: action %.*s is not supported yet; ignored", run->script,
                     sp ? (int)(sp - buf) : (int)(len > 40 ? 40 : len), buf);
        return 0;
    }
    if (len < 8 || strncmp(buf, "SIP/2.0 ", 8) != 0)
        return -1;
    if (!run->txn)
        return 0;
    if (sip_txn_final_sent(run->txn)) {
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
    sip_msg_complete_response(resp, sip_txn_request(run->txn), sip_txn_to_tag(run->txn));
    out = sip_msg_serialize(p, resp, &olen);
    if (out)
        sip_txn_respond(run->txn, sip_msg_status(resp), out, olen);
    apr_pool_destroy(p);
    return out ? 0 : -1;
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
            run_finish(run, apr_psprintf(run->pool, "malformed output: %s", why));
            return;
        }
        if (handle_message(run, run->obuf + pos + skip, mlen) < 0) {
            run_finish(run, "output is not a SIP response");
            return;
        }
        pos += skip + mlen;
    }
    if (run->finished)
        return;
    memmove(run->obuf, run->obuf + pos, run->olen - pos);
    run->olen -= pos;
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
        run_finish(run, NULL);
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

static char **build_env(apr_pool_t *p, sip_txn_t *txn, server_rec *s)
{
    const sip_msg_t *req = sip_txn_request(txn);
    const sip_source_t *src = sip_txn_source(txn);
    const apr_array_header_t *hdrs = sip_msg_headers(req);
    apr_table_t *env = apr_table_make(p, 32);
    apr_size_t blen = 0;
    const char *path = getenv("PATH");
    int i;

    apr_table_setn(env, "GATEWAY_INTERFACE", "SIP-CGI/1.1");
    apr_table_setn(env, "SERVER_SOFTWARE", ap_get_server_banner());
    apr_table_setn(env, "SERVER_NAME", s->server_hostname ? s->server_hostname
                   : sip_sockaddr_ip(p, &src->local));
    apr_table_setn(env, "SERVER_PORT", apr_itoa(p, sip_sockaddr_port(&src->local)));
    apr_table_setn(env, "SERVER_PROTOCOL", sip_msg_version(req));
    apr_table_setn(env, "REMOTE_ADDR", sip_sockaddr_ip(p, &src->peer));
    apr_table_setn(env, "REQUEST_METHOD", sip_msg_method(req));
    apr_table_setn(env, "REQUEST_URI", sip_msg_request_uri(req));
    apr_table_setn(env, "PATH", path ? path : DEFAULT_PATH);
    if (sip_msg_body(req, &blen)) {
        const char *ct = sip_msg_content_type(req);
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

static apr_status_t spawn(sip_cgi_run_t *run, const char *path, char **envp)
{
    apr_file_t *in_r, *out_w, *err_w;
    int in_fd, out_fd, err_fd;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    char *dir = apr_pstrdup(run->pool, path), *slash = strrchr(dir, '/');
    char *argv[2];
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
    if (slash)
        *slash = '\0';
    argv[0] = slash ? slash + 1 : dir;
    argv[1] = NULL;

    /* posix_spawn (vfork-like) is far cheaper than APR's fork() here. */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawn_file_actions_addchdir_np(&fa, dir);     /* RFC 3050 §6.1 */
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);         /* the engine ignores SIGPIPE */
    posix_spawnattr_setpgroup(&attr, 0);                /* own group: killable as one */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
                                        | POSIX_SPAWN_SETPGROUP);
    rc = posix_spawn(&pid, path, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    apr_file_close(in_r);
    apr_file_close(out_w);
    apr_file_close(err_w);
    if (rc != 0)
        return rc;
    run->proc.pid = pid;
    return APR_SUCCESS;
}

void sip_cgi_run(sip_txn_t *txn, const char *path, server_rec *s)
{
    sip_server_conf *conf = sip_get_conf(s);
    apr_pool_t *p;
    sip_cgi_run_t *run;
    apr_status_t rv;
    const char *slash = strrchr(path, '/');

    apr_pool_create(&p, cgi_pool);
    run = apr_pcalloc(p, sizeof(*run));
    run->pool = p;
    run->txn = txn;
    run->s = s;
    run->script = apr_pstrdup(p, slash ? slash + 1 : path);
    run->max_output = conf->max_output;
    run->ocap = 16384;
    run->targets = apr_array_make(p, 2, sizeof(const char *));
    run->obuf = apr_palloc(p, run->ocap);
    run->body = sip_msg_body(sip_txn_request(txn), &run->body_len);

    rv = spawn(run, path, build_env(p, txn, s));
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "sip-cgi: cannot run %s", path);
        sip_txn_reply(txn, 500, "Internal Server Error", NULL);
        apr_pool_destroy(p);
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "sip-cgi: started %s (pid %d) for %s %s",
                 run->script, (int)run->proc.pid, sip_msg_method(sip_txn_request(txn)),
                 sip_msg_request_uri(sip_txn_request(txn)));
    run->next = running;
    if (running)
        running->prev = run;
    running = run;
    nrunning++;
    sip_txn_attach(txn, run_cancelled, run);

    sip_io_init_file(&run->io_in, run->in, stdin_event, run);
    sip_io_init_file(&run->io_out, run->out, stdout_event, run);
    sip_io_init_file(&run->io_err, run->err, stderr_event, run);
    run->out_open = run->err_open = 1;
    sip_io_watch(cgi_loop, &run->io_out, APR_POLLIN);
    sip_io_watch(cgi_loop, &run->io_err, APR_POLLIN);
    sip_timer_set(cgi_loop, &run->t_timeout, conf->script_timeout, run_timeout, run);
    stdin_event(run, 0);
}

void sip_cgi_shutdown(void)
{
    while (running)
        run_finish(running, "server shutting down");
    /* SIGKILL was sent; allow a second for the kernel to finish them. */
    for (int i = 0; reap_pids->nelts && i < 100; i++) {
        reap_tick(NULL);
        if (reap_pids->nelts)
            apr_sleep(apr_time_from_msec(10));
    }
}
