/* sip-suexec: start a user's uploaded SIP-CGI script as SipUploadUser
 * (issue 12; docs/security.md, "Uploaded scripts"), or a forwarding
 * file's "|program" as the file's owner (issue 15; docs/security.md,
 * "Forwarding files").
 *
 * Installed setuid root, group httpd's, mode 4750, so that only httpd's
 * user (the SIP engine) can run it.  Usage:
 *
 *   sip-suexec USER WORKDIR CPU AS NPROC COMMAND [ARG...]
 *   sip-suexec --owner UID MINUID TEMPLATE FILE CPU AS NPROC
 *
 * CPU, AS and NPROC are RLimitCPU (seconds), RLimitMEM (bytes of address
 * space) and RLimitNPROC as "SOFT:HARD", or "-" for no limit.  The script's
 * text is on descriptor 3; COMMAND (bwrap, or the interpreter) reads it.
 *
 * The command runs as USER (not root, uid >= SIP_SUEXEC_UID_MIN, not the
 * caller) with only USER's group, the limits, no way back to root, in
 * WORKDIR (made as USER, so it can be made only where USER may write).
 * The environment is passed on as the C library left it (it drops LD_*
 * and friends for a setuid program); nothing is added.
 *
 * This process stays, as a small root monitor, because the engine cannot
 * signal a process of another uid: SIGTERM from the engine, or the
 * engine's death, makes it kill the command's process group and exit.
 * When the command ends, whatever it left in its group is killed too.
 *
 * --owner runs the "|program args" line of the forwarding FILE as UID,
 * with the checks of Apache's suexec (sip_fwd_owner.h): UID is not root
 * and at least MINUID and SIP_SUEXEC_OWNER_UID_MIN; FILE is where
 * SipForwardFile TEMPLATE puts that user's file (the template's fixed
 * directory root's and writable by root only), a regular file of UID,
 * not a symbolic link, writable by nobody else, in a directory of root or
 * UID writable by nobody else; the program is an absolute path to a
 * regular file (no symbolic link, not setuid) of UID or root that nobody
 * else may write, in such a directory too.  The program and its arguments
 * are read from FILE here, never taken from the caller: httpd's group can
 * make a user run only what that user's own file says.  The environment
 * is cleaned (only the SIP-CGI variables, and a fixed PATH, HOME, USER,
 * LOGNAME), the groups are the user's (setgid, initgroups, then setuid),
 * and the program starts in the user's home directory.  Every refusal is
 * a line on stderr (the engine's error log) and exit status 126. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../sip_fwd_owner.h"

#ifndef SIP_SUEXEC_UID_MIN
#define SIP_SUEXEC_UID_MIN 100      /* below: system accounts, as Apache's suexec */
#endif
/* --owner's floor; make SIP_FORWARD_MIN_UID=... (SipForwardMinUid can
 * only raise it) */
#ifndef SIP_SUEXEC_OWNER_UID_MIN
#define SIP_SUEXEC_OWNER_UID_MIN SIP_FWD_OWNER_MIN_UID
#endif
#define SIP_SUEXEC_SAFE_PATH "/usr/local/bin:/usr/bin:/bin"
/* make SIP_UPLOAD_USER=name builds a helper that runs as that user only:
 * otherwise whoever can run it (httpd's group) can become any user the
 * checks below allow. */

static volatile pid_t child;

static void die(const char *what)
{
    fprintf(stderr, "sip-suexec: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(126);
}

/* "-" (none) or "SOFT:HARD", decimal */
static int parse_limit(const char *s, struct rlimit *rl, int *set)
{
    char *end;
    unsigned long long soft, hard;

    *set = 0;
    if (!strcmp(s, "-"))
        return 1;
    errno = 0;
    soft = strtoull(s, &end, 10);
    if (errno || end == s || *end != ':' || *s == '-')
        return 0;
    s = end + 1;
    hard = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || soft > hard)
        return 0;
    rl->rlim_cur = (rlim_t)soft;
    rl->rlim_max = (rlim_t)hard;
    *set = 1;
    return 1;
}

/* An absolute path of plain components: no "." or ".." (nor any name
 * starting with a dot), no empty component. */
static int path_ok(const char *p)
{
    size_t n = strlen(p);

    if (p[0] != '/' || n < 2 || n >= PATH_MAX || p[n - 1] == '/')
        return 0;
    if (strstr(p, "/.") || strstr(p, "//"))
        return 0;
    for (; *p; p++)
        if (!(*p == '/' || *p == '-' || *p == '_' || *p == '.' || (*p >= '0' && *p <= '9')
              || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return 0;
    return 1;
}

static void on_term(int sig)
{
    (void)sig;
    if (child > 0) {
        kill(-child, SIGKILL);
        kill(child, SIGKILL);
    }
    _exit(143);
}

/* What to start, as whom, and where: made by one of the two modes. */
typedef struct job {
    uid_t uid;
    gid_t gid;
    const char *name;       /* --owner: the user's name, for initgroups; else NULL */
    const char *dir;        /* the working directory (made) or home (entered) */
    int make_dir;
    const char *limits[3];
    char *const *argv;      /* what runs: argv[0] is its absolute path */
    char *const *envp;      /* NULL: the environment as it came */
} job_t;

static void upload_mode(int argc, char **argv, uid_t caller, job_t *j)
{
    struct passwd *pw;

    if (argc < 7)
        die("usage: sip-suexec USER WORKDIR CPU AS NPROC COMMAND [ARG...]");
#ifdef SIP_SUEXEC_TARGET
    errno = 0;
    if (strcmp(argv[1], SIP_SUEXEC_TARGET) != 0)
        die("this helper runs scripts as " SIP_SUEXEC_TARGET " only");
#endif
    errno = 0;
    pw = getpwnam(argv[1]);
    if (!pw)
        die("no such user");
    j->uid = pw->pw_uid;
    j->gid = pw->pw_gid;
    errno = 0;
    if (j->uid == 0 || j->gid == 0 || j->uid < SIP_SUEXEC_UID_MIN)
        die("refusing to run as root or a system account");
    if (j->uid == caller)
        die("refusing to run as the caller's own user");
    j->dir = argv[2];
    j->make_dir = 1;
    if (!path_ok(j->dir))
        die("bad working directory");
    j->limits[0] = argv[3];
    j->limits[1] = argv[4];
    j->limits[2] = argv[5];
    if (argv[6][0] != '/')
        die("the command must be an absolute path");
    if (fcntl(3, F_GETFD) < 0)
        die("no script on descriptor 3");
    j->argv = argv + 6;
}

/* ---- --owner ---- */

static const char *owner_file = "";

static void refuse(const char *why)
{
    fprintf(stderr, "sip-suexec: forwarding file %s refused: %s\n", owner_file, why);
    exit(126);
}

static void refuse_if(const char *why)
{
    if (why)
        refuse(why);
}

static long number(const char *s)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || *s == '+' || n < 0)
        refuse("bad number on the command line");
    return n;
}

/* The directory a path is in (a copy), stat()ed. */
static void check_dir_of(const char *path, uid_t uid)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    struct stat st;
    size_t n = slash && slash != path ? (size_t)(slash - path) : 1;

    memcpy(dir, path, n);
    dir[n] = '\0';
    if (stat(dir, &st) != 0)
        refuse("a directory on the way cannot be examined");
    refuse_if(sip_fwd_owner_dir_check(&st, uid));
}

static char *env_entry(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 2;
    char *e = malloc(n);

    if (!e)
        die("out of memory");
    snprintf(e, n, "%s=%s", name, value);
    return e;
}

static void owner_mode(int argc, char **argv, uid_t caller, job_t *j)
{
    extern char **environ;
    static char *words[SIP_FWD_OWNER_MAX_ARGS + 1];
    static char text[SIP_FWD_OWNER_MAX_SIZE + 1];
    struct passwd *pw;
    struct stat lst, st, dst;
    char expect[PATH_MAX], tdir[PATH_MAX];
    const char *tmpl, *why = NULL;
    char **env;
    long uid, min;
    size_t total = 0, n, i;
    ssize_t got;
    int fd;

    if (argc != 9)
        die("usage: sip-suexec --owner UID MINUID TEMPLATE FILE CPU AS NPROC");
    owner_file = argv[5];
    uid = number(argv[2]);
    min = number(argv[3]);
    if (min < SIP_SUEXEC_OWNER_UID_MIN)
        min = SIP_SUEXEC_OWNER_UID_MIN;
    tmpl = argv[4];
#ifdef SIP_SUEXEC_FORWARD_FILE
    if (strcmp(tmpl, SIP_SUEXEC_FORWARD_FILE) != 0)
        refuse("this helper runs programs of SipForwardFile " SIP_SUEXEC_FORWARD_FILE " only");
#endif
    pw = getpwuid((uid_t)uid);
    if (!pw || (long)pw->pw_uid != uid)
        refuse("its owner is no user of this system");
    j->uid = pw->pw_uid;
    j->gid = pw->pw_gid;
    refuse_if(sip_fwd_owner_uid_check(j->uid, j->gid, min));
    if (j->uid == caller)
        refuse("it would run as the caller's own user");
    /* copies: getpw* results do not outlive the next lookup (initgroups) */
    j->name = strdup(pw->pw_name);
    j->dir = strdup(pw->pw_dir ? pw->pw_dir : "");
    if (!j->name || !j->dir)
        die("out of memory");
    if (!sip_fwd_owner_path_clean(j->dir))
        refuse("the owner's home directory is not an absolute path");

    /* the file is the one SipForwardFile gives this user, nowhere else */
    if (!sip_fwd_owner_path_clean(owner_file)
        || !sip_fwd_owner_expand(expect, sizeof(expect), tmpl, j->name, j->dir)
        || strcmp(expect, owner_file) != 0)
        refuse("it is not the owner's forwarding file under SipForwardFile");
    if (sip_fwd_owner_template_dir(tdir, sizeof(tdir), tmpl)) {
        if (stat(tdir, &dst) != 0 || !S_ISDIR(dst.st_mode) || dst.st_uid != 0
            || (dst.st_mode & (S_IWGRP | S_IWOTH)))
            refuse("SipForwardFile's directory is not root's alone");
    }
    check_dir_of(owner_file, j->uid);
    if (lstat(owner_file, &lst) != 0)
        refuse("it cannot be examined");
    refuse_if(sip_fwd_owner_file_check(&lst, j->uid));
    /* what is read must be what was checked */
    fd = open(owner_file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        refuse("it cannot be opened");
    if (fstat(fd, &st) != 0 || st.st_dev != lst.st_dev || st.st_ino != lst.st_ino)
        refuse("it changed while being read");
    refuse_if(sip_fwd_owner_file_check(&st, j->uid));
    while (total <= SIP_FWD_OWNER_MAX_SIZE
           && (got = read(fd, text + total, SIP_FWD_OWNER_MAX_SIZE + 1 - total)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            refuse("it cannot be read");
        total += (size_t)got;
    }
    close(fd);
    if (total > SIP_FWD_OWNER_MAX_SIZE)
        refuse("it is larger than 64 KiB");
    text[total] = '\0';
    if (strlen(text) != total)
        refuse("the file holds a NUL byte");
    if (!sip_fwd_owner_program_line(text, words, &why))
        refuse(why);

    /* the program: as suexec checks its target */
    if (!sip_fwd_owner_path_clean(words[0]))
        refuse("the program's path has '.', '..' or '//' components");
    if (lstat(words[0], &st) != 0)
        refuse("the program cannot be examined");
    refuse_if(sip_fwd_owner_program_check(&st, j->uid));
    check_dir_of(words[0], j->uid);
    j->argv = words;

    /* a clean environment: the SIP-CGI variables and nothing else */
    for (n = 0; environ && environ[n]; n++)
        ;
    env = calloc(n + 5, sizeof(char *));
    if (!env)
        die("out of memory");
    for (i = 0, n = 0; environ && environ[i]; i++)
        if (sip_fwd_owner_env_ok(environ[i]))
            env[n++] = environ[i];
    env[n++] = env_entry("PATH", SIP_SUEXEC_SAFE_PATH);
    env[n++] = env_entry("HOME", j->dir);
    env[n++] = env_entry("USER", j->name);
    env[n++] = env_entry("LOGNAME", j->name);
    env[n] = NULL;
    j->envp = env;
    j->limits[0] = argv[6];
    j->limits[1] = argv[7];
    j->limits[2] = argv[8];
}

/* The child, as root until the user is taken on: limits, identity,
 * directory, then the command. */
static void become(const job_t *j, pid_t monitor, const struct rlimit *lim, const int *set)
{
    static const int res[3] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC};
    struct stat st;
    int i;

    setpgid(0, 0);
    /* as root, so that hard limits can be set whatever they were */
    for (i = 0; i < 3; i++)
        if (set[i] && setrlimit(res[i], &lim[i]) != 0)
            die("setrlimit");
    /* the group first (setgid needs root), the user last (as suexec) */
    if (j->name) {
        if (setgid(j->gid) != 0 || initgroups(j->name, j->gid) != 0 || setuid(j->uid) != 0)
            die("cannot change to the user");
    }
    else if (setgroups(1, &j->gid) != 0 || setgid(j->gid) != 0 || setuid(j->uid) != 0)
        die("cannot change to the user");
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || getuid() != j->uid
        || geteuid() != j->uid || getgid() != j->gid || getegid() != j->gid)
        die("root could be regained");
    /* a credential change cleared any earlier death signal */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != monitor)
        die("the monitor is gone");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("no_new_privs");
    umask(077);
    if (j->make_dir) {
        if (mkdir(j->dir, 0700) != 0 && errno != EEXIST)
            die("cannot make the working directory");
        errno = 0;
        if (lstat(j->dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != j->uid)
            die("the working directory is not the user's own");
    }
    if (chdir(j->dir) != 0)
        die(j->make_dir ? "cannot enter the working directory" : "cannot enter the user's home");
    if (j->envp)
        execve(j->argv[0], j->argv, j->envp);
    else
        execv(j->argv[0], j->argv);
    die("cannot execute the command");
}

int main(int argc, char **argv)
{
    struct rlimit lim[3];
    int set[3], i, status;
    struct sigaction sa;
    sigset_t term, old;
    uid_t caller = getuid();
    pid_t me, parent = getppid(), r;
    job_t job;

    memset(&job, 0, sizeof(job));
    if (geteuid() != 0)
        die("not installed setuid root");
    if (argc > 1 && !strcmp(argv[1], "--owner"))
        owner_mode(argc, argv, caller, &job);
    else
        upload_mode(argc, argv, caller, &job);
    for (i = 0; i < 3; i++)
        if (!parse_limit(job.limits[i], &lim[i], &set[i])) {
            fprintf(stderr, "sip-suexec: bad limit %.40s\n", job.limits[i]);
            return 126;
        }

    /* the monitor: SIGTERM waits until the child's pid is known */
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    errno = 0;
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
        die("the engine is gone");
    me = getpid();

    child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        sa.sa_handler = SIG_DFL;
        sigaction(SIGTERM, &sa, NULL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        become(&job, me, lim, set);
    }
    setpgid(child, child);      /* whichever of the two runs first */
    sigprocmask(SIG_SETMASK, &old, NULL);
    /* the output ends when the command's ends, not ours */
    close(0);
    close(1);
    close(3);
    while ((r = waitpid(child, &status, 0)) < 0 && errno == EINTR)
        ;
    kill(-child, SIGKILL);
    if (r == child && WIFEXITED(status))
        return WEXITSTATUS(status);
    if (r == child && WIFSIGNALED(status)) {
        fprintf(stderr, "sip-suexec: the script was killed by signal %d (%s)\n",
                WTERMSIG(status), strsignal(WTERMSIG(status)));
        return 128 + WTERMSIG(status);
    }
    return 126;
}
