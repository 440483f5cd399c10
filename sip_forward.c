/* Per-user forwarding files (sip_forward.h; docs/routing.md "Forwarding
 * files"). */
#include "sip_forward.h"
#include "sip_cgi.h"
#include "sip_conf.h"
#include "sip_lists.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_upload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apr_lib.h"
#include "apr_strings.h"

/* ---- where the file is ---- */

const char *sip_forward_path(apr_pool_t *p, const char *tmpl, const char *user,
                             long *owner_uid, int *home_form, const char **why)
{
    char *u = apr_pstrdup(p, user ? user : "");
    struct passwd *pw;
    const char *t;
    char *out;

    *owner_uid = -1;
    *home_form = 0;
    /* the name becomes a file name (SIP-CGI's rules) or an account name */
    if (!*u || ap_unescape_url(u) != OK || !sip_cgi_name_ok(u) || strstr(u, "..")) {
        *why = "the user name is not a safe file name";
        return NULL;
    }
    pw = getpwnam(u);
    if (pw)
        *owner_uid = (long)pw->pw_uid;
    if (!strncmp(tmpl, "~/", 2)) {
        if (!pw || !pw->pw_dir || pw->pw_dir[0] != '/') {
            *why = "no system user of that name";
            return NULL;
        }
        *home_form = 1;
        return apr_pstrcat(p, pw->pw_dir, tmpl + 1, NULL);
    }
    out = apr_palloc(p, strlen(tmpl) + strlen(u) * strlen(tmpl) + 1);
    *out = '\0';
    for (t = tmpl; *t; t++) {
        if (t[0] == '%' && t[1] == 'u') {
            strcat(out, u);
            t++;
        }
        else if (t[0] == '%' && t[1] == '%') {
            strcat(out, "%");
            t++;
        }
        else
            strncat(out, t, 1);
    }
    return out;
}

/* ---- what it says ---- */

sip_forward_t *sip_forward_parse(apr_pool_t *p, const char *text, apr_size_t len,
                                 const char **why)
{
    sip_forward_t *fw = apr_pcalloc(p, sizeof(*fw));
    char *copy = apr_pstrmemdup(p, text, len), *line, *next;
    const char *program = NULL;

    if (strlen(copy) != len) {
        *why = "the file holds a NUL byte";
        return NULL;
    }
    fw->addresses = apr_array_make(p, 4, sizeof(const char *));
    for (line = copy; line; line = next) {
        char *w, *last = NULL, *hash;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if ((hash = strchr(line, '#')))         /* a comment runs to the end of the line */
            *hash = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '|') {
            if (program) {
                *why = "more than one |program line";
                return NULL;
            }
            program = line + 1;
            continue;
        }
        /* seed 002 §7.3 writes "a@b, c@d": blanks or commas separate */
        for (w = apr_strtok(line, " \t\r,", &last); w; w = apr_strtok(NULL, " \t\r,", &last)) {
            const char *a = sip_lists_member_parse(p, w, why);
            if (!a)
                return NULL;
            *(const char **)apr_array_push(fw->addresses) = a;
        }
    }
    if (program) {
        apr_array_header_t *argv = apr_array_make(p, 4, sizeof(const char *));
        char *w, *last = NULL;
        if (fw->addresses->nelts) {
            *why = "a |program line must be the only entry";
            return NULL;
        }
        for (w = apr_strtok((char *)program, " \t\r", &last); w;
             w = apr_strtok(NULL, " \t\r", &last))
            *(const char **)apr_array_push(argv) = w;
        if (!argv->nelts || APR_ARRAY_IDX(argv, 0, const char *)[0] != '/') {
            *why = "|program needs an absolute path";
            return NULL;
        }
        *(const char **)apr_array_push(argv) = NULL;
        fw->argv = (const char *const *)argv->elts;
        return fw;
    }
    if (!fw->addresses->nelts) {
        *why = "no address in it";
        return NULL;
    }
    return fw;
}

/* ---- reading it safely ---- */

static int fwd_refuse(const char **why, const char *reason)
{
    *why = reason;
    return 1;
}

int sip_forward_read(apr_pool_t *p, const char *path, const long *owners, int n,
                     sip_forward_t **out, const char **why)
{
    struct stat lst, st, dst;
    char *dir = apr_pstrdup(p, path), *slash = strrchr(dir, '/');
    char *buf;
    ssize_t got;
    apr_size_t total = 0;
    int fd, i, owned = 0;

    if (lstat(path, &lst) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return -1;
        return fwd_refuse(why, apr_psprintf(p, "cannot be examined (%s)", strerror(errno)));
    }
    if (S_ISLNK(lst.st_mode))
        return fwd_refuse(why, "it is a symbolic link");
    if (!S_ISREG(lst.st_mode))
        return fwd_refuse(why, "it is not a regular file");
    for (i = 0; i < n; i++)
        owned |= owners[i] >= 0 && (uid_t)owners[i] == lst.st_uid;
    if (!owned)
        return fwd_refuse(why, apr_psprintf(p, "it is owned by uid %ld, not by its user",
                                            (long)lst.st_uid));
    if (lst.st_mode & (S_IWGRP | S_IWOTH))
        return fwd_refuse(why, "it is writable by group or others");
    if (lst.st_size > SIP_FORWARD_MAX_SIZE)
        return fwd_refuse(why, "it is larger than 64 KiB");
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    if (!slash || stat(dir, &dst) < 0)
        return fwd_refuse(why, "its directory cannot be examined");
    if (dst.st_mode & (S_IWGRP | S_IWOTH))
        return fwd_refuse(why, "its directory is writable by group or others");
    if (dst.st_uid != 0 && dst.st_uid != lst.st_uid)
        return fwd_refuse(why, "its directory belongs to someone else");
    /* what is read must be what was checked */
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fwd_refuse(why, apr_psprintf(p, "cannot be opened (%s)", strerror(errno)));
    if (fstat(fd, &st) < 0 || st.st_dev != lst.st_dev || st.st_ino != lst.st_ino) {
        close(fd);
        return fwd_refuse(why, "it changed while being read");
    }
    buf = apr_palloc(p, SIP_FORWARD_MAX_SIZE + 1);
    while (total <= SIP_FORWARD_MAX_SIZE
           && (got = read(fd, buf + total, SIP_FORWARD_MAX_SIZE + 1 - total)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return fwd_refuse(why, apr_psprintf(p, "cannot be read (%s)", strerror(errno)));
        }
        total += (apr_size_t)got;
    }
    close(fd);
    if (total > SIP_FORWARD_MAX_SIZE)
        return fwd_refuse(why, "it is larger than 64 KiB");
    if (!(*out = sip_forward_parse(p, buf, total, why)))
        return 1;
    (*out)->owner = lst.st_uid;
    return 0;
}

/* ---- "|program" ---- */

const char *sip_forward_min_uid_parse(const char *arg, long *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(arg, &end, 10);
    if (!apr_isdigit(*arg) || *end || errno || n < 1 || n > 0x7fffffffL)
        return "SipForwardMinUid needs a uid from 1 to 2147483647 (never 0: root)";
    *out = n;
    return NULL;
}

long sip_forward_min_uid(const sip_server_conf *conf)
{
    return conf->forward_min_uid > 0 ? conf->forward_min_uid : SIP_FWD_OWNER_MIN_UID;
}

/* The directory 'path' is in, stat()ed. */
static int fwd_stat_dir_of(apr_pool_t *p, const char *path, struct stat *st)
{
    char *dir = apr_pstrdup(p, path), *slash = strrchr(dir, '/');

    if (!slash)
        return -1;
    *(slash == dir ? slash + 1 : slash) = '\0';
    return stat(dir, st);
}

/* A program run as the file's owner through sip-suexec --owner: the
 * helper's own checks (sip_fwd_owner.h), made here first so that a
 * refusal leaves the call to the next step rather than to a failed
 * script.  NULL when it may run, else why not. */
static const char *fwd_owner_refused(apr_pool_t *p, const sip_server_conf *conf, const char *path,
                                     const sip_forward_t *fw)
{
    const char *helper = sip_upload_conf() ? sip_upload_conf()->suexec : NULL;
    const char *prog = fw->argv[0], *why;
    long min = sip_forward_min_uid(conf);
    struct passwd *pw = getpwuid(fw->owner);
    char expect[PATH_MAX], tdir[PATH_MAX];
    struct stat st;

    if (!pw)
        return apr_psprintf(p, "its owner (uid %ld) is no user of this system", (long)fw->owner);
    if ((why = sip_fwd_owner_uid_check(pw->pw_uid, pw->pw_gid, min)))
        return apr_psprintf(p, "|program from a file of uid %ld: %s (%ld)", (long)fw->owner,
                            why, min);
    /* the owner's own file, where SipForwardFile puts it, nowhere else */
    if (!sip_fwd_owner_path_clean(path))
        return "|program: the file's path has '.', '..' or '//' components";
    if (!pw->pw_dir || !sip_fwd_owner_path_clean(pw->pw_dir))
        return "|program: the owner's home directory is not a plain absolute path";
    if (!sip_fwd_owner_expand(expect, sizeof(expect), conf->forward_file, pw->pw_name,
                              pw->pw_dir)
        || strcmp(expect, path))
        return apr_psprintf(p, "|program: the file is not its owner's (%s) forwarding file",
                            pw->pw_name);
    if (sip_fwd_owner_template_dir(tdir, sizeof(tdir), conf->forward_file)
        && (stat(tdir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0
            || (st.st_mode & (S_IWGRP | S_IWOTH))))
        return apr_psprintf(p, "|program: SipForwardFile's directory %s is not root's alone",
                            tdir);
    if (!sip_fwd_owner_path_clean(prog))
        return apr_psprintf(p, "|program %s has '.', '..' or '//' components", prog);
    if (lstat(prog, &st) != 0)
        return apr_psprintf(p, "|program %s cannot be examined (%s)", prog, strerror(errno));
    if ((why = sip_fwd_owner_program_check(&st, fw->owner)))
        return apr_psprintf(p, "|program %s: %s", prog, why);
    if (fwd_stat_dir_of(p, prog, &st) != 0)
        return apr_psprintf(p, "|program %s: its directory cannot be examined", prog);
    if ((why = sip_fwd_owner_dir_check(&st, fw->owner)))
        return apr_psprintf(p, "|program %s: %s", prog, why);
    /* as sip_upload.c's start-up check, in short: a missing helper would
     * only fail the call */
    if (!helper || stat(helper, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0
        || !(st.st_mode & S_ISUID))
        return apr_psprintf(p, "|program runs as the file's owner through sip-suexec, and "
                            "SipUploadSuexec %s is not installed setuid root",
                            helper ? helper : "(none)");
    return NULL;
}

/* How "|program" runs: a file of httpd's own (non-root) user runs it as
 * httpd (*as_owner 0); any other file's as that file's owner through
 * sip-suexec (*as_owner 1).  NULL when it may, else why not. */
static const char *fwd_program_refused(apr_pool_t *p, const sip_server_conf *conf,
                                       const char *path, const sip_forward_t *fw, int *as_owner)
{
    struct stat st;
    uid_t me = geteuid();

    *as_owner = fw->owner != me || me == 0;
    if (*as_owner)
        return fwd_owner_refused(p, conf, path, fw);
    if (stat(fw->argv[0], &st) < 0 || !S_ISREG(st.st_mode) || access(fw->argv[0], X_OK) < 0)
        return apr_psprintf(p, "|program %s is not an executable file", fw->argv[0]);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return apr_psprintf(p, "|program %s is writable by group or others", fw->argv[0]);
    return NULL;
}

/* ---- the step ---- */

sip_step_t sip_forward_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume, void *baton)
{
    static sip_log_rate_t refusals = SIP_LOG_RATE_INIT("refused forwarding files");
    const sip_server_conf *conf = sip_get_conf(s);
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *method = sip_msg_method(req), *path, *why = NULL;
    long owners[3];
    int home = 0, r, n = 0, i, as_owner = 0;
    int max = conf->list_max_members > 0 ? conf->list_max_members : SIP_DEFAULT_LIST_MAX_MEMBERS;
    sip_forward_t *fw = NULL;

    (void)resume;
    (void)baton;
    if (!conf->forward_file || sip_msg_to_tag(req)
        || (strcmp(method, "INVITE") && strcmp(method, "OPTIONS") && strcmp(method, "MESSAGE")))
        return SIP_STEP_NEXT;
    path = sip_forward_path(p, conf->forward_file, sip_msg_uri_user(req), &owners[0], &home,
                            &why);
    if (!path)
        return SIP_STEP_NEXT;           /* no file can be this user's */
    n = 1;
    if (!home) {                        /* the administrator's directory */
        owners[n++] = 0;
        owners[n++] = (long)geteuid();
    }
    r = sip_forward_read(p, path, owners, n, &fw, &why);
    if (r < 0)
        return SIP_STEP_NEXT;
    if (r == 0 && fw->argv)
        why = fwd_program_refused(p, conf, path, fw, &as_owner);
    else if (r == 0 && fw->addresses->nelts > max)
        why = apr_psprintf(p, "more than %d addresses (SipListMaxMembers)", max);
    if (r > 0 || why) {
        const char *ip = sip_sockaddr_ip(p, &sip_txn_source(txn)->peer);
        sip_log_limited(&refusals, ip, 0, APLOG_WARNING, s, "sip: forwarding file %s refused for "
                        "%s %s: %s", path, method, sip_msg_request_uri(req), why);
        return SIP_STEP_NEXT;
    }
    if (fw->argv && as_owner) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip: %s %s runs %s as uid %ld (its owner) "
                     "from forwarding file %s", method, sip_msg_request_uri(req), fw->argv[0],
                     (long)fw->owner, path);
        sip_cgi_run_owner(txn, s, path, conf->forward_file, (long)fw->owner,
                          sip_forward_min_uid(conf), fw->argv[0]);
        return SIP_STEP_DONE;
    }
    if (fw->argv) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "sip: %s %s runs %s from forwarding file %s",
                     method, sip_msg_request_uri(req), fw->argv[0], path);
        sip_cgi_run_args(txn, fw->argv[0], fw->argv + 1, s);
        return SIP_STEP_DONE;
    }
    {
        apr_array_header_t *uris = apr_array_make(p, fw->addresses->nelts, sizeof(const char *));
        for (i = 0; i < fw->addresses->nelts; i++) {
            const char *u = sip_lists_member_uri(p, APR_ARRAY_IDX(fw->addresses, i, const char *),
                                                 sip_msg_request_uri(req));
            if (u)
                *(const char **)apr_array_push(uris) = u;
        }
        sip_lists_fork(txn, s, uris, apr_pstrcat(p, "forwarding file ", path, NULL));
    }
    return SIP_STEP_DONE;
}
