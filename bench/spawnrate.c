/* spawnrate: how fast this machine can run a script the way a SIP-CGI
 * server does.  Spawns SCRIPT N times with posix_spawn, one after the
 * other, each with a pipe on stdin (a small SIP message is written, then
 * closed) and a pipe on stdout (read to EOF), then waits for it.
 *
 *   cc -O2 -o spawnrate spawnrate.c && ./spawnrate SCRIPT [N]
 *
 * Prints "spawns=N seconds=S rate=R/s". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char MSG[] =
    "INVITE sip:exec@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-spawnrate\r\n"
    "From: <sip:bench@127.0.0.1>;tag=1\r\n"
    "To: <sip:exec@127.0.0.1>\r\n"
    "Call-ID: spawnrate@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int spawn_one(const char *script)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) {
        perror("pipe2");
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = { (char *)script, NULL };
    pid_t pid;
    int rc = posix_spawn(&pid, script, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(in[0]);
    close(out[1]);
    if (rc) {
        fprintf(stderr, "posix_spawn %s: %s\n", script, strerror(rc));
        close(in[1]);
        close(out[0]);
        return -1;
    }
    if (write(in[1], MSG, sizeof MSG - 1) < 0 && errno != EPIPE)
        perror("write");
    close(in[1]);
    char buf[4096];
    size_t total = 0;
    ssize_t n;
    while ((n = read(out[0], buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("read");
            break;
        }
        total += n;
    }
    close(out[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || total == 0) {
        fprintf(stderr, "%s: bad exit (status %d) or no output\n", script, st);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [N]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 1000;
    signal(SIGPIPE, SIG_IGN);
    double t0 = now();
    long ok = 0;
    for (long i = 0; i < n; i++)
        if (spawn_one(argv[1]) == 0)
            ok++;
    double dt = now() - t0;
    printf("spawns=%ld failed=%ld seconds=%.3f rate=%.1f/s\n", ok, n - ok, dt, ok / dt);
    return ok == n ? 0 : 1;
}
