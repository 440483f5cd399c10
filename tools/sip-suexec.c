/* sip-suexec: start a user's uploaded SIP-CGI script as SipUploadUser
 * (issue 12; docs/security.md, "Uploaded scripts").
 *
 * Installed setuid root, group httpd's, mode 4750, so that only httpd's
 * user (the SIP engine) can run it.  Usage:
 *
 *   sip-suexec USER WORKDIR CPU AS NPROC COMMAND [ARG...]
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
 * When the command ends, whatever it left in its group is killed too. */
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

#ifndef SIP_SUEXEC_UID_MIN
#define SIP_SUEXEC_UID_MIN 100      /* below: system accounts, as Apache's suexec */
#endif
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

int main(int argc, char **argv)
{
    static const int res[3] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC};
    struct rlimit lim[3];
    int set[3], i, status;
    struct passwd *pw;
    struct sigaction sa;
    sigset_t term, old;
    struct stat st;
    uid_t uid, caller = getuid();
    gid_t gid;
    pid_t me, parent = getppid(), r;
    const char *dir;

    if (geteuid() != 0)
        die("not installed setuid root");
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
    uid = pw->pw_uid;
    gid = pw->pw_gid;
    errno = 0;
    if (uid == 0 || gid == 0 || uid < SIP_SUEXEC_UID_MIN)
        die("refusing to run as root or a system account");
    if (uid == caller)
        die("refusing to run as the caller's own user");
    dir = argv[2];
    if (!path_ok(dir))
        die("bad working directory");
    for (i = 0; i < 3; i++)
        if (!parse_limit(argv[3 + i], &lim[i], &set[i])) {
            fprintf(stderr, "sip-suexec: bad limit %.40s\n", argv[3 + i]);
            return 126;
        }
    if (argv[6][0] != '/')
        die("the command must be an absolute path");
    if (fcntl(3, F_GETFD) < 0)
        die("no script on descriptor 3");

    /* the monitor: SIGTERM waits until the child's pid is known */
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
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
        setpgid(0, 0);
        /* as root, so that hard limits can be set whatever they were */
        for (i = 0; i < 3; i++)
            if (set[i] && setrlimit(res[i], &lim[i]) != 0)
                die("setrlimit");
        if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            die("cannot change to the user");
        if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || getuid() != uid
            || geteuid() != uid || getgid() != gid || getegid() != gid)
            die("root could be regained");
        /* a credential change cleared any earlier death signal */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != me)
            die("the monitor is gone");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            die("no_new_privs");
        umask(077);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            die("cannot make the working directory");
        errno = 0;
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid)
            die("the working directory is not the user's own");
        if (chdir(dir) != 0)
            die("cannot enter the working directory");
        execv(argv[6], argv + 6);
        die("cannot execute the command");
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
