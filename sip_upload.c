#include "sip_upload.h"
#include "sip_cgi.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_request.h"
#include "sip_script_store.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apr_strings.h"
#include "http_log.h"

/* The kernel reads at most this much of a #! line (BINPRM_BUF_SIZE). */
#define SHEBANG_MAX 255

int sip_upload_interpreter_ok(apr_pool_t *p, const char *body, apr_size_t len,
                              const apr_array_header_t *allowed, const char **interp,
                              const char **arg, const char **why)
{
    const char *nl, *s, *e;
    char *line, *prog, *rest;
    apr_size_t n;
    int i;

    *interp = *arg = NULL;
    if (len < 2 || body[0] != '#' || body[1] != '!') {
        *why = "a SIP-CGI script must start with a #! line naming its interpreter";
        return 0;
    }
    nl = memchr(body, '\n', len < SHEBANG_MAX ? len : SHEBANG_MAX);
    if (!nl) {
        *why = "the #! line is missing its end or is too long";
        return 0;
    }
    n = (apr_size_t)(nl - body - 2);
    if (n && body[2 + n - 1] == '\r')
        n--;
    line = apr_pstrmemdup(p, body + 2, n);
    if (strlen(line) != n) {
        *why = "the #! line holds a NUL byte";
        return 0;
    }
    s = line + strspn(line, " \t");
    e = s + strcspn(s, " \t");
    prog = apr_pstrmemdup(p, s, (apr_size_t)(e - s));
    rest = apr_pstrdup(p, e + strspn(e, " \t"));
    n = strlen(rest);
    while (n && (rest[n - 1] == ' ' || rest[n - 1] == '\t'))
        rest[--n] = '\0';
    for (i = 0; allowed && i < allowed->nelts; i++)
        if (!strcmp(prog, APR_ARRAY_IDX(allowed, i, const char *)))
            break;
    if (!allowed || i == allowed->nelts) {
        *why = apr_psprintf(p, "interpreter %.128s is not allowed here (SipUploadInterpreters)",
                            *prog ? prog : "(none)");
        return 0;
    }
    /* Linux passes everything after the program as one argument: keep it
     * one, without spaces, so the sandbox runs what the kernel would */
    if (strpbrk(rest, " \t")) {
        *why = "the #! line may give its interpreter at most one argument";
        return 0;
    }
    *interp = prog;
    *arg = *rest ? rest : NULL;
    return 1;
}

/* ---- running uploaded sip-cgi scripts (issue 12 item 6) ---- */

/* The working directory of an AoR below SipUploadWorkDir: a hash, so no
 * AoR text ever becomes a path (the same naming as the script store). */
const char *sip_upload_workdir(apr_pool_t *p, const char *base, const char *aor)
{
    return apr_pstrcat(p, base, "/", sip_script_aor_hash(p, aor), NULL);
}

#define PUSH(a, v) (*(const char **)apr_array_push(a) = (v))

/* The system directories a merged-/usr system has as links into /usr are
 * links in the sandbox too; elsewhere they are bound read-only. */
static void push_system_dirs(apr_pool_t *p, apr_array_header_t *a)
{
    static const char *const dirs[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                                       NULL};
    static const char *const etc[] = {"/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives",
                                      NULL};
    char target[PATH_MAX];
    struct stat st;
    int i;

    PUSH(a, "--ro-bind");
    PUSH(a, "/usr");
    PUSH(a, "/usr");
    for (i = 0; dirs[i]; i++) {
        ssize_t n;
        if (lstat(dirs[i], &st) != 0)
            continue;
        if (S_ISLNK(st.st_mode) && (n = readlink(dirs[i], target, sizeof(target) - 1)) > 0) {
            PUSH(a, "--symlink");
            PUSH(a, apr_pstrmemdup(p, target, (apr_size_t)n));
        }
        else {
            PUSH(a, "--ro-bind");
            PUSH(a, dirs[i]);
        }
        PUSH(a, dirs[i]);
    }
    /* what the dynamic loader and interpreters read from /etc; nothing else
     * of it (no passwd, no keys, no httpd configuration) */
    for (i = 0; etc[i]; i++) {
        PUSH(a, "--ro-bind-try");
        PUSH(a, etc[i]);
        PUSH(a, etc[i]);
    }
}

char **sip_upload_argv(apr_pool_t *p, const sip_upload_conf_t *c, const char *workdir,
                       const char *const limits[3], const char *interp, const char *arg)
{
    apr_array_header_t *a = apr_array_make(p, 64, sizeof(const char *));
    int i;

    PUSH(a, c->suexec);
    PUSH(a, c->user);
    PUSH(a, workdir);
    for (i = 0; i < 3; i++)
        PUSH(a, limits[i] ? limits[i] : "-");
    if (c->sandbox) {
        PUSH(a, SIP_BWRAP_PATH);
        /* no network, no IPC, own pid/uts/cgroup/user namespaces; killed
         * with its parent (the helper); no terminal to inject input into
         * (TIOCSTI) */
        PUSH(a, "--unshare-all");
        /* and none of its own: user namespaces open much of the kernel */
        PUSH(a, "--unshare-user");
        PUSH(a, "--disable-userns");
        PUSH(a, "--die-with-parent");
        PUSH(a, "--new-session");
        PUSH(a, "--cap-drop");
        PUSH(a, "ALL");
        push_system_dirs(p, a);
        PUSH(a, "--proc");
        PUSH(a, "/proc");
        PUSH(a, "--dev");
        PUSH(a, "/dev");
        /* in memory, which RLimitMEM does not count: bounded apart */
        PUSH(a, "--size");
        PUSH(a, apr_off_t_toa(p, c->tmp_size > 0 ? c->tmp_size : SIP_DEFAULT_UPLOAD_TMP_SIZE));
        PUSH(a, "--tmpfs");
        PUSH(a, "/tmp");
        PUSH(a, "--bind");
        PUSH(a, workdir);
        PUSH(a, SIP_UPLOAD_SANDBOX_WORK);
        PUSH(a, "--chdir");
        PUSH(a, SIP_UPLOAD_SANDBOX_WORK);
        /* the script's text, from descriptor 3, as a read-only file */
        PUSH(a, "--ro-bind-data");
        PUSH(a, "3");
        PUSH(a, SIP_UPLOAD_SANDBOX_SCRIPT);
    }
    PUSH(a, interp);
    if (arg)
        PUSH(a, arg);
    PUSH(a, c->sandbox ? SIP_UPLOAD_SANDBOX_SCRIPT : "/dev/fd/3");
    PUSH(a, NULL);
    return (char **)a->elts;
}

/* ---- start-up (httpd parent, as root) ---- */

static int helper_ok(apr_pool_t *p, server_rec *s, const char *path, long httpd_gid)
{
    struct stat st;
    struct statvfs fs;

    if (stat(path, &st) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadSuexec %s is missing (make install puts it there)", path);
        return 0;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != 0 || !(st.st_mode & S_ISUID)
        || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadSuexec %s must be a file owned by root, setuid, writable by "
                     "root only (install -o root -g <httpd group> -m 4750)", path);
        return 0;
    }
    if (!((st.st_mode & S_IXOTH) || ((long)st.st_gid == httpd_gid && (st.st_mode & S_IXGRP)))) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: httpd's group may not execute SipUploadSuexec %s", path);
        return 0;
    }
    if (statvfs(path, &fs) == 0 && (fs.f_flag & ST_NOSUID)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadSuexec %s is on a file system mounted nosuid", path);
        return 0;
    }
    (void)p;
    return 1;
}

/* SipUploadWorkDir belongs to SipUploadUser, mode 0700: only the user's
 * scripts (through the helper) can enter it; httpd cannot. */
static int workdir_ok(apr_pool_t *p, server_rec *s, const char *dir, const struct passwd *pw)
{
    struct stat st;
    char *parent = apr_pstrdup(p, dir), *slash = strrchr(parent, '/');
    apr_status_t rv;

    if (slash && slash != parent) {
        *slash = '\0';
        /* missing parents: traversable, not listable (SIP_STATE_DIR) */
        rv = apr_dir_make_recursive(parent, APR_FPROT_UREAD | APR_FPROT_UWRITE
                                    | APR_FPROT_UEXECUTE | APR_FPROT_GEXECUTE
                                    | APR_FPROT_WEXECUTE, p);
        if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "mod_sip: uploaded SIP-CGI scripts "
                         "cannot run: cannot make %s", parent);
            return 0;
        }
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: cannot make SipUploadWorkDir %s", dir);
        return 0;
    }
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadWorkDir %s is not a directory", dir);
        return 0;
    }
    if (st.st_uid != pw->pw_uid || st.st_gid != pw->pw_gid) {
        apr_status_t why = geteuid() != 0 ? EPERM
                           : chown(dir, pw->pw_uid, pw->pw_gid) != 0 ? errno : APR_SUCCESS;
        if (why != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, why, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                         "run: SipUploadWorkDir %s must belong to %s", dir, pw->pw_name);
            return 0;
        }
    }
    if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: cannot make SipUploadWorkDir %s mode 0700", dir);
        return 0;
    }
    return 1;
}

/* Run an empty script the way the engine will run users' scripts: as
 * httpd's user, through the helper and (when On) the sandbox.  This finds
 * what the file checks cannot: user namespaces switched off, a work
 * directory the user cannot reach, an interpreter missing in the sandbox. */
static int probe_ok(apr_pool_t *p, server_rec *s, const sip_upload_conf_t *c, long httpd_uid,
                    long httpd_gid)
{
    static const char *const none[3] = {NULL, NULL, NULL};
    char **argv = sip_upload_argv(p, c, apr_pstrcat(p, c->workdir, "/start-up-check", NULL),
                                  none, "/bin/sh", NULL);
    apr_time_t until = apr_time_now() + apr_time_from_sec(10);
    int status = 0;
    pid_t pid = fork(), r;

    if (pid < 0)
        return 0;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        gid_t g = (gid_t)httpd_gid;
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 3) < 0)
            _exit(125);
        /* stderr stays: the helper's and bwrap's complaints go to the log */
        if (geteuid() == 0 && (setgroups(1, &g) != 0 || setgid(g) != 0
                               || setuid((uid_t)httpd_uid) != 0))
            _exit(125);
        execv(argv[0], argv);
        _exit(127);
    }
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && apr_time_now() < until)
        apr_sleep(apr_time_from_msec(5));
    if (r != pid) {
        kill(pid, SIGTERM);
        waitpid(pid, &status, 0);
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: a test run through %s did not end", c->suexec);
        return 0;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: a test run of an empty script through %s%s failed (status %d; its "
                     "message, if any, is above)", c->suexec, c->sandbox ? " and bubblewrap" : "",
                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        return 0;
    }
    return 1;
}

int sip_upload_check_runnable(apr_pool_t *p, server_rec *s, const sip_upload_conf_t *c,
                              long httpd_uid, long httpd_gid)
{
    struct passwd *pw;

    if (!c->user) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "mod_sip: no SipUploadUser: sip-cgi "
                     "script uploads are refused (415)");
        return 0;
    }
    pw = getpwnam(c->user);
    if (!pw) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadUser %s does not exist", c->user);
        return 0;
    }
    if (pw->pw_uid == 0 || pw->pw_gid == 0 || (long)pw->pw_uid == httpd_uid
        || (long)pw->pw_gid == httpd_gid) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadUser %s must be neither root nor httpd's User or Group "
                     "(they can read the script store, the location journal and keys)", c->user);
        return 0;
    }
    if (pw->pw_uid < SIP_UPLOAD_UID_MIN) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadUser %s is a system account (uid below %d)", c->user,
                     SIP_UPLOAD_UID_MIN);
        return 0;
    }
    if (!helper_ok(p, s, c->suexec, httpd_gid))
        return 0;
    if (c->sandbox && access(SIP_BWRAP_PATH, X_OK) != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "mod_sip: uploaded SIP-CGI scripts cannot "
                     "run: SipUploadSandbox On needs bubblewrap (%s; Debian package bubblewrap)",
                     SIP_BWRAP_PATH);
        return 0;
    }
    if (!workdir_ok(p, s, c->workdir, pw) || !probe_ok(p, s, c, httpd_uid, httpd_gid))
        return 0;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_sip: uploaded SIP-CGI scripts run as %s "
                 "through %s%s", c->user, c->suexec,
                 c->sandbox ? " in a bubblewrap sandbox" : " WITHOUT a sandbox (SipUploadSandbox Off)");
    return 1;
}

/* ---- running them for the routing steps (sip_dispatch.c) ---- */

const char *sip_upload_applies(apr_pool_t *p, sip_txn_t *txn, server_rec *s)
{
    const char *aor;

    if (!sip_upload_conf()->used)
        return NULL;
    /* A REGISTER always reaches the registrar: a user's script must never
     * lock its owner out of replacing or removing it (and a server that
     * cannot run scripts must still register phones).  So the old script
     * never handles the upload of a new one either (reg-payload §4.1). */
    if (!strcmp(sip_msg_method(sip_txn_request(txn)), "REGISTER"))
        return NULL;
    aor = sip_msg_aor(p, sip_txn_request(txn));
    if (!aor || !sip_request_script_upload(p, s, aor))
        return NULL;
    return aor;
}

void sip_upload_fail_closed(sip_txn_t *txn, server_rec *s, const char *aor, const char *what,
                            const char *why)
{
    static sip_log_rate_t rl = SIP_LOG_RATE_INIT("uploaded scripts that cannot run");
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *ip = sip_sockaddr_ip(p, &sip_txn_source(txn)->peer);

    sip_log_limited(&rl, ip, 500, APLOG_ERR, s, "sip: 500 for %s %.256s from %s: the "
                    "uploaded %s script of %s cannot run: %s", sip_msg_method(req),
                    sip_msg_request_uri(req), ip, what, aor, why);
    sip_txn_reply(txn, 500, "Server Internal Error", NULL);
}

void sip_upload_run_cgi(sip_txn_t *txn, server_rec *s, const sip_script_t *cgi)
{
    const sip_upload_conf_t *c = sip_upload_conf();
    const char *interp, *arg, *why;

    if (!c->runnable)
        sip_upload_fail_closed(txn, s, cgi->aor, "SIP-CGI", "uploaded scripts cannot run on "
                               "this server (the start-up log says why)");
    /* the allowlist may have changed since the upload */
    else if (!sip_upload_interpreter_ok(sip_txn_pool(txn), cgi->body, cgi->len, c->interpreters,
                                        &interp, &arg, &why))
        sip_upload_fail_closed(txn, s, cgi->aor, "SIP-CGI", why);
    else
        sip_cgi_run_uploaded(txn, s, cgi, interp, arg);
}
