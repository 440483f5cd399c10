/* The CPL <mail> action (RFC 3880 §7.1): a mailto: URL (RFC 6068) made
 * into a message, given to a sendmail-style command on its standard input.
 *
 * The URL comes from a user's script, so the message is built strictly:
 * plain addr-specs only, the few header fields RFC 6068 §3 and §7 think
 * harmless, no line break anywhere but in the body, and a bounded size.
 * The command runs without a shell; its stdin is written as the pipe takes
 * it from the engine's loop, and the process is polled for (the engine
 * leaves SIGCHLD at its default, as for SIP-CGI scripts in sip_cgi.c) and
 * killed, group and all, when it outlives SIP_CPL_MAIL_TIMEOUT.  What it
 * says on stderr goes into the log line of a failure. */
#include "sip_cpl_mail.h"
#include "sip_log.h"
#include "sip_spawn.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_date.h"
#include "apr_portable.h"

#define SIP_CPL_MAIL_MAX_URL      8192
#define SIP_CPL_MAIL_MAX_RCPT     16
#define SIP_CPL_MAIL_MAX_HEADER   900       /* RFC 5322 §2.1.1 allows 998 */
#define SIP_CPL_MAIL_MAX_RUNNING  8
#define SIP_CPL_MAIL_MAX_ARGS     16
#define SIP_CPL_MAIL_TIMEOUT      apr_time_from_sec(30)
#define SIP_CPL_MAIL_POLL         apr_time_from_msec(20)

/* ------------------------------------------------------------------ */
/* the message                                                          */

static int mail_hex(int c)
{
    return apr_isdigit(c) ? c - '0' : apr_isxdigit(c) ? (apr_tolower(c) - 'a' + 10) : -1;
}

/* %-decode s[0..n) (RFC 6068 §2; '+' stays '+', §5).  NULL on a bad
 * escape or a NUL. */
static char *mail_unescape(apr_pool_t *p, const char *s, apr_size_t n)
{
    char *out = apr_palloc(p, n + 1), *o = out;
    for (apr_size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n)
            return NULL;
        int h = mail_hex((unsigned char)s[i + 1]), l = mail_hex((unsigned char)s[i + 2]);
        if (h < 0 || l < 0 || (h == 0 && l == 0))
            return NULL;
        *o++ = (char)(h * 16 + l);
        i += 2;
    }
    *o = '\0';
    return out;
}

/* A header value: printable ASCII and blanks only (no CR/LF: nothing can
 * start a header field of its own), not too long. */
static int mail_header_ok(const char *v)
{
    apr_size_t n = 0;
    for (; *v; v++, n++)
        if ((*v < 0x20 && *v != '\t') || *v == 0x7f || (unsigned char)*v >= 0x80)
            return 0;
    return n <= SIP_CPL_MAIL_MAX_HEADER;
}

/* RFC 5322 §3.4.1 addr-spec, dot-atom forms only (no quoted local part,
 * no comments, no display name), and a host name as domain. */
static int mail_addr_ok(const char *a, apr_size_t n)
{
    const char *at = memchr(a, '@', n);
    if (!at || at == a || n > 254 || memchr(at + 1, '@', n - (at + 1 - a)))
        return 0;
    apr_size_t ln = at - a, dn = n - ln - 1;
    if (!dn || a[0] == '.' || a[ln - 1] == '.' || at[1] == '.' || at[dn] == '.' || at[1] == '-')
        return 0;
    for (apr_size_t i = 0; i < ln; i++)
        if (!apr_isalnum(a[i]) && !strchr("!#$%&'*+/=?^_`{|}~.-", a[i]))
            return 0;
    for (apr_size_t i = 1; i <= dn; i++)
        if (!apr_isalnum(at[i]) && at[i] != '.' && at[i] != '-')
            return 0;
    for (apr_size_t i = 0; i + 1 < n; i++)
        if (a[i] == '.' && a[i + 1] == '.')
            return 0;
    return 1;
}

/* Append the comma-separated addresses of 'list' to 'out' (", " joined);
 * 0 when one is not an addr-spec or there are too many. */
static int mail_addr_list(apr_pool_t *p, const char *list, apr_array_header_t *out)
{
    const char *s = list;
    for (;;) {
        while (*s == ' ')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && t[-1] == ' ')
            t--;
        if (!mail_addr_ok(s, t - s) || out->nelts >= SIP_CPL_MAIL_MAX_RCPT)
            return 0;
        *(const char **)apr_array_push(out) = apr_pstrmemdup(p, s, t - s);
        if (!*e)
            return 1;
        s = e + 1;
    }
}

/* Text for the body: every line break becomes CRLF, other controls but
 * TAB become '?', so that nothing in it can end the body early or look
 * like anything but text. */
static const char *mail_body_text(apr_pool_t *p, const char *s)
{
    apr_size_t n = strlen(s);
    char *b = apr_palloc(p, 2 * n + 3), *o = b;
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') {
            if (*s == '\r' && s[1] == '\n')
                s++;
            *o++ = '\r';
            *o++ = '\n';
        }
        else if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            *o++ = '?';
        else
            *o++ = *s;
    }
    if (o == b || o[-1] != '\n') {
        *o++ = '\r';
        *o++ = '\n';
    }
    *o = '\0';
    return b;
}

static const char *mail_join(apr_pool_t *p, const apr_array_header_t *a)
{
    const char *out = "";
    for (int i = 0; i < a->nelts; i++)
        out = apr_pstrcat(p, out, i ? ", " : "", APR_ARRAY_IDX(a, i, const char *), NULL);
    return out;
}

const char *sip_cpl_mail_message(apr_pool_t *p, const char *url, const char *from,
                                 const char *call_info, const char **why)
{
    static const char *const safe[] = {"subject", "in-reply-to", "keywords", "comments", NULL};
    static const char *const names[] = {"Subject", "In-Reply-To", "Keywords", "Comments"};
    const char *hvalue[4] = {NULL, NULL, NULL, NULL};
    apr_array_header_t *to = apr_array_make(p, 4, sizeof(const char *));
    apr_array_header_t *cc = apr_array_make(p, 2, sizeof(const char *));
    const char *body = NULL;
    const char *dummy;

    if (!why)
        why = &dummy;
    if (!url || strncasecmp(url, "mailto:", 7)) {
        *why = "not a mailto: URL";
        return NULL;
    }
    if (strlen(url) > SIP_CPL_MAIL_MAX_URL) {
        *why = "mailto: URL too long";
        return NULL;
    }
    if (!from || !*from || !mail_header_ok(from)) {
        *why = "bad sender address";
        return NULL;
    }
    url += 7;
    const char *q = strchr(url, '?');
    apr_size_t tn = q ? (apr_size_t)(q - url) : strlen(url);
    if (strchr(url, '#')) {
        *why = "fragment in mailto: URL";
        return NULL;
    }
    if (tn) {
        const char *addrs = mail_unescape(p, url, tn);
        if (!addrs || !mail_header_ok(addrs) || !mail_addr_list(p, addrs, to)) {
            *why = "bad address in mailto: URL";
            return NULL;
        }
    }

    /* hfields (RFC 6068 §2): hname=hvalue joined by '&' */
    for (const char *s = q ? q + 1 : NULL; s && *s;) {
        const char *amp = strchr(s, '&'), *eq;
        apr_size_t n = amp ? (apr_size_t)(amp - s) : strlen(s);
        eq = memchr(s, '=', n);
        if (!eq) {
            *why = "header without '=' in mailto: URL";
            return NULL;
        }
        char *name = mail_unescape(p, s, eq - s);
        char *value = mail_unescape(p, eq + 1, n - (eq + 1 - s));
        if (!name || !value) {
            *why = "bad %-escape in mailto: URL";
            return NULL;
        }
        s = amp ? amp + 1 : NULL;
        if (!strcasecmp(name, "body")) {
            if (body) {
                *why = "two bodies in mailto: URL";
                return NULL;
            }
            body = value;   /* line breaks are fine here (RFC 6068 §5) */
            continue;
        }
        if (!mail_header_ok(value)) {
            *why = "line break or control character in a mailto: header";
            return NULL;
        }
        if (!strcasecmp(name, "to") || !strcasecmp(name, "cc")) {
            if (!mail_addr_list(p, value, apr_tolower(name[0]) == 't' ? to : cc)
                || to->nelts + cc->nelts > SIP_CPL_MAIL_MAX_RCPT) {
                *why = "bad address in mailto: URL";
                return NULL;
            }
            continue;
        }
        int i;
        for (i = 0; safe[i] && strcasecmp(name, safe[i]); i++)
            ;
        if (!safe[i]) {
            *why = "mailto: header not allowed (only subject, cc, in-reply-to, keywords, "
                   "comments, body)";
            return NULL;
        }
        if (hvalue[i]) {
            *why = "repeated header in mailto: URL";
            return NULL;
        }
        hvalue[i] = value;
    }
    if (!to->nelts) {
        *why = "no recipient in mailto: URL";
        return NULL;
    }
    if (!body)
        body = "";
    if (strlen(body) > SIP_CPL_MAIL_MAX_URL) {
        *why = "mailto: body too long";
        return NULL;
    }

    /* RFC 5322: header fields, an empty line, the body; CRLF throughout. */
    char date[APR_RFC822_DATE_LEN];
    apr_rfc822_date(date, apr_time_now());
    const char *msg = apr_pstrcat(p, "From: ", from, "\r\n", "To: ", mail_join(p, to), "\r\n",
                                  cc->nelts ? "Cc: " : "", cc->nelts ? mail_join(p, cc) : "",
                                  cc->nelts ? "\r\n" : "", "Date: ", date, "\r\n", NULL);
    if (!hvalue[0])
        hvalue[0] = "Call notification";
    for (int i = 0; i < 4; i++)
        if (hvalue[i])
            msg = apr_pstrcat(p, msg, names[i], ": ", hvalue[i], "\r\n", NULL);
    msg = apr_pstrcat(p, msg, "MIME-Version: 1.0\r\n",
                      "Content-Type: text/plain; charset=UTF-8\r\n",
                      "Content-Transfer-Encoding: 8bit\r\n",
                      "Auto-Submitted: auto-generated\r\n\r\n", NULL);   /* RFC 3834 §5 */
    if (*body)
        msg = apr_pstrcat(p, msg, mail_body_text(p, body), NULL);
    if (call_info && *call_info)
        msg = apr_pstrcat(p, msg, *body ? "\r\n" : "", mail_body_text(p, call_info), NULL);
    return msg;
}

/* ------------------------------------------------------------------ */
/* the command                                                          */

typedef struct mail_run mail_run_t;
struct mail_run {
    apr_pool_t *pool;
    server_rec *s;
    const char *command;
    pid_t pid;
    apr_file_t *in;             /* our end of its stdin; NULL once closed */
    sip_io_t io;
    apr_file_t *err;            /* our end of its stderr; NULL once closed */
    sip_io_t io_err;
    char said[160];             /* the start of what it wrote there, for the log */
    apr_size_t said_len;
    const char *msg;
    apr_size_t len, sent;
    apr_time_t deadline;
    int killed;
    int reaped;                 /* by mail_cleanup */
    sip_timer_t t_poll;
    mail_run_t *next, *prev;
};

static sip_loop_t *mail_loop;
static apr_pool_t *mail_pool;
static mail_run_t *mail_runs;
static apr_size_t mail_nrunning;
static apr_interval_time_t mail_timeout = SIP_CPL_MAIL_TIMEOUT;    /* tests shorten it */

apr_size_t sip_cpl_mail_running(void)
{
    return mail_nrunning;
}

static void mail_close_stdin(mail_run_t *m)
{
    if (!m->in)
        return;
    sip_io_watch(mail_loop, &m->io, 0);
    apr_file_close(m->in);
    m->in = NULL;
}

/* Its stderr, read as it comes (a full pipe would stall it): the first
 * bytes are kept for the log, the rest dropped; EOF closes our end. */
static void mail_stderr(void *baton, apr_int16_t events)
{
    mail_run_t *m = baton;
    char buf[512];
    (void)events;

    while (m->err) {
        apr_size_t n = sizeof(buf);
        apr_status_t rv = apr_file_read(m->err, buf, &n);
        if (n && m->said_len < sizeof(m->said) - 1) {
            apr_size_t k = sizeof(m->said) - 1 - m->said_len;
            memcpy(m->said + m->said_len, buf, n < k ? n : k);
            m->said_len += n < k ? n : k;
        }
        if (APR_STATUS_IS_EAGAIN(rv))
            return;
        if (rv != APR_SUCCESS) {
            sip_io_watch(mail_loop, &m->io_err, 0);
            apr_file_close(m->err);
            m->err = NULL;
        }
    }
}

/* What it wrote on stderr, on one printable line. */
static const char *mail_said(mail_run_t *m)
{
    char *c = apr_pstrmemdup(m->pool, m->said, m->said_len), *e = c;
    for (char *q = c; *q; q++) {
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
            *q = ' ';
        if (*q != ' ')
            e = q + 1;
    }
    *e = '\0';
    return *c ? apr_pstrcat(m->pool, ": ", c, NULL) : "";
}

static void mail_log_status(mail_run_t *m, int status)
{
    mail_stderr(m, APR_POLLIN);     /* what is left in the pipe */
    if (WIFSIGNALED(status))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, m->s, "cpl mail: %s killed by signal %d%s%s",
                     m->command, WTERMSIG(status), m->killed ? " (timed out)" : "",
                     mail_said(m));
    else if (WIFEXITED(status) && WEXITSTATUS(status))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, m->s, "cpl mail: %s exited with status %d%s",
                     m->command, WEXITSTATUS(status), mail_said(m));
    else if (m->sent < m->len)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, m->s,
                     "cpl mail: %s took %" APR_SIZE_T_FMT " of %" APR_SIZE_T_FMT " bytes%s",
                     m->command, m->sent, m->len, mail_said(m));
}

static void mail_finish(mail_run_t *m)
{
    mail_close_stdin(m);
    if (m->err) {
        sip_io_watch(mail_loop, &m->io_err, 0);
        apr_file_close(m->err);
        m->err = NULL;
    }
    sip_timer_cancel(mail_loop, &m->t_poll);
    if (m->prev)
        m->prev->next = m->next;
    else
        mail_runs = m->next;
    if (m->next)
        m->next->prev = m->prev;
    mail_nrunning--;
    /* an event for m->io or m->io_err may still be in this batch */
    sip_loop_defer_destroy(mail_loop, m->pool);
}

/* Polled: the engine has no SIGCHLD handler (sip_engine.c), as for
 * SIP-CGI scripts. */
static void mail_poll(void *baton)
{
    mail_run_t *m = baton;
    int status;
    pid_t r = waitpid(m->pid, &status, WNOHANG);

    if (r == m->pid || (r < 0 && errno == ECHILD)) {
        if (r == m->pid)
            mail_log_status(m, status);
        mail_finish(m);
        return;
    }
    if (!m->killed && apr_time_now() >= m->deadline) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, m->s, "cpl mail: %s still running after %d ms, "
                     "killed", m->command, (int)apr_time_as_msec(mail_timeout));
        m->killed = 1;
        kill(-m->pid, SIGKILL);     /* its own process group: helpers too */
        mail_close_stdin(m);
    }
    sip_timer_set(mail_loop, &m->t_poll, SIP_CPL_MAIL_POLL, mail_poll, m);
}

static void mail_writable(void *baton, apr_int16_t events)
{
    mail_run_t *m = baton;
    (void)events;

    while (m->in && m->sent < m->len) {
        apr_size_t n = m->len - m->sent;
        apr_status_t rv = apr_file_write(m->in, m->msg + m->sent, &n);
        m->sent += n;
        if (APR_STATUS_IS_EAGAIN(rv))
            return;             /* the pipe is full: wait for POLLOUT */
        if (rv != APR_SUCCESS) {
            /* it stopped reading (EPIPE; SIGPIPE is ignored by the engine) */
            mail_close_stdin(m);
            return;
        }
    }
    mail_close_stdin(m);        /* all written: EOF ends the message */
}

static char **mail_argv(apr_pool_t *p, const char *command)
{
    char **argv = apr_pcalloc(p, (SIP_CPL_MAIL_MAX_ARGS + 1) * sizeof(char *));
    char *c = apr_pstrdup(p, command), *last = NULL, *tok;
    int n = 0;

    for (tok = apr_strtok(c, " \t", &last); tok; tok = apr_strtok(NULL, " \t", &last)) {
        if (n == SIP_CPL_MAIL_MAX_ARGS)
            return NULL;
        argv[n++] = tok;
    }
    return n && argv[0][0] == '/' ? argv : NULL;
}

static apr_status_t mail_spawn(mail_run_t *m, char **argv)
{
    static char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    apr_file_t *in_r, *err_w;
    int in_fd, err_fd, null_fd, rc;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    apr_status_t rv;

    /* our ends never block the engine; the command's ends are ordinary */
    if ((rv = apr_file_pipe_create_ex(&in_r, &m->in, APR_READ_BLOCK, m->pool)))
        return rv;
    if ((rv = apr_file_pipe_create_ex(&m->err, &err_w, APR_WRITE_BLOCK, m->pool))) {
        apr_file_close(in_r);
        apr_file_close(m->in);
        m->in = NULL;
        return rv;
    }
    null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null_fd < 0) {
        rv = errno;
        apr_file_close(in_r);
        apr_file_close(m->in);
        apr_file_close(err_w);
        apr_file_close(m->err);
        m->in = NULL;
        m->err = NULL;
        return rv;
    }
    apr_os_file_get(&in_fd, in_r);
    apr_os_file_get(&err_fd, err_w);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, null_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    sip_spawn_attr_init(&attr);
    rc = posix_spawn(&m->pid, argv[0], &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    apr_file_close(in_r);
    apr_file_close(err_w);
    close(null_fd);
    if (rc) {
        apr_file_close(m->in);
        apr_file_close(m->err);
        m->in = NULL;
        m->err = NULL;
        return rc;
    }
    return APR_SUCCESS;
}

/* When the engine's pool goes: no child left behind, none a zombie. */
static apr_status_t mail_cleanup(void *data)
{
    (void)data;
    for (mail_run_t *m = mail_runs; m; m = m->next)
        kill(-m->pid, SIGKILL);
    /* SIGKILLed, they go at once; a second at most, as sip_cgi_shutdown */
    for (int i = 0, left = 1; left && i < 100; i++) {
        left = 0;
        for (mail_run_t *m = mail_runs; m; m = m->next)
            if (!m->reaped && waitpid(m->pid, NULL, WNOHANG) == 0)
                left = 1;
            else
                m->reaped = 1;
        if (left)
            apr_sleep(apr_time_from_msec(10));
    }
    mail_runs = NULL;
    mail_nrunning = 0;
    mail_loop = NULL;
    return APR_SUCCESS;
}

void sip_cpl_mail_init(sip_loop_t *loop, apr_pool_t *p)
{
    mail_loop = loop;
    mail_pool = p;
    mail_runs = NULL;
    mail_nrunning = 0;
    /* before the subpools (each run's) go */
    apr_pool_pre_cleanup_register(p, NULL, mail_cleanup);
}

apr_status_t sip_cpl_mail_send(const char *command, const char *message, server_rec *s)
{
    apr_pool_t *p;
    apr_status_t rv;

    if (!mail_loop || !command || !message)
        return APR_EINIT;
    if (mail_nrunning >= SIP_CPL_MAIL_MAX_RUNNING)
        return APR_EAGAIN;
    if ((rv = apr_pool_create(&p, mail_pool)))
        return rv;
    mail_run_t *m = apr_pcalloc(p, sizeof(*m));
    char **argv = mail_argv(p, command);
    if (!argv) {
        apr_pool_destroy(p);
        return APR_EINVAL;      /* empty, relative or too many words */
    }
    m->pool = p;
    m->s = s;
    m->command = argv[0];
    m->msg = apr_pstrdup(p, message);
    m->len = strlen(message);
    if ((rv = mail_spawn(m, argv))) {
        apr_pool_destroy(p);
        return rv;
    }
    m->deadline = apr_time_now() + mail_timeout;
    m->next = mail_runs;
    if (mail_runs)
        mail_runs->prev = m;
    mail_runs = m;
    mail_nrunning++;
    sip_io_init_file(&m->io_err, m->err, mail_stderr, m);
    if ((rv = sip_io_watch(mail_loop, &m->io_err, APR_POLLIN)) != APR_SUCCESS) {
        apr_file_close(m->err);     /* it writes into a closed pipe, and is told so */
        m->err = NULL;
    }
    sip_io_init_file(&m->io, m->in, mail_writable, m);
    mail_writable(m, APR_POLLOUT);      /* most messages fit the pipe at once */
    if (m->in && (rv = sip_io_watch(mail_loop, &m->io, APR_POLLOUT)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "cpl mail: cannot watch %s", m->command);
        mail_close_stdin(m);
    }
    sip_timer_set(mail_loop, &m->t_poll, SIP_CPL_MAIL_POLL, mail_poll, m);
    return APR_SUCCESS;
}
