/* The engine's FastCGI client: SIP-CGI runs carried to resident workers
 * (docs/fastcgi.md).  A target is either an external application server
 * (SipFastCGIConnect: any number of connections to one address, the
 * mod_proxy_fcgi / php-fpm model) or a pool the engine starts itself
 * (SipFastCGI: one UNIX socket per worker, given to it as descriptor 0,
 * FCGI_LISTENSOCK_FILENO, and one connection per worker: the mod_fcgid
 * model).  One request per connection at a time, unless the application
 * answers FCGI_GET_VALUES with FCGI_MPXS_CONNS 1: then several, their
 * records interleaved (libfcgi does not; sip-cgi-bin/sipfcgi.py does).
 * Connections are kept (FCGI_KEEP_CONN); a request is sent again after a
 * lost connection only when the socket took none of it (conn_lost).
 * Workers die with their engine, and a restarted engine kills what a
 * crashed one left (sweep_predecessor).
 * Everything runs in the engine's event loop: non-blocking sockets only. */
#include "sip_fcgi.h"
#include "sip_conf.h"
#include "sip_event.h"
#include "sip_handover.h"  /* sip_engine_self: the state directory's name */
#include "sip_log.h"       /* its lines are sip:'s (LogLevel sip:debug) */
#include "sip_stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netdb.h>
#include <unistd.h>

#include "apr_strings.h"
#include "apr_fnmatch.h"
#include "apr_portable.h"
#include "apr_file_info.h"
#include "http_core.h"     /* ap_state_query */
#include "http_log.h"

#define FCGI_MAX_STDERR     (64 * 1024)     /* per request; more is a broken worker */
#define FCGI_DEFAULT_QUEUE  32
#define FCGI_DEFAULT_CONNS  16
#define FCGI_SUPERVISE      apr_time_from_msec(100)
/* a kept connection closed this soon after its last answer was closed
 * because of it, not after an idle time of the server's */
#define FCGI_CLOSES_AFTER   apr_time_from_msec(500)

typedef struct fconn fconn_t;
typedef struct worker worker_t;

/* Requests in flight on one connection at most (a multiplexing
 * application's FCGI_MAX_REQS above it is capped): enough to batch a
 * worker's reads and writes, few enough that a slow request holds back
 * little behind it. */
#define FCGI_MAX_DEPTH      32

struct sip_fcgi_req {
    apr_pool_t *pool;
    sip_fcgi_target_t *t;
    server_rec *s;
    const char *script;
    char *wbuf;                 /* the encoded request */
    apr_size_t wlen;
    const sip_fcgi_sink_t *sink;
    void *baton;
    fconn_t *conn;
    apr_uint16_t id;            /* on its connection */
    int aborted;                /* abandoned in flight: ABORT_REQUEST sent, its answer dropped */
    sip_timer_t abort_timer;    /* the worker must end it by then */
    int retried;                /* sent again once after its connection was lost before the
                                   socket took any byte of it */
    apr_uint64_t wstart;        /* where its bytes start in its connection's stream */
    sip_fcgi_req_t *next;       /* queue */
    sip_fcgi_parser_t ps;       /* its answer */
    /* STDOUT gathered during one parse call, handed over after it */
    char *out;
    apr_size_t olen, ocap;
    char eline[1024];           /* partial STDERR line */
    apr_size_t elen;
};

struct fconn {
    apr_pool_t *pool;
    sip_fcgi_target_t *t;
    worker_t *w;                /* managed pools: the worker it talks to */
    int fd;
    apr_socket_t *sock;
    sip_io_t io;
    int connecting;
    int dead;                   /* dropped; its memory lives until the loop's turn ends */
    sip_fcgi_req_t *slots[FCGI_MAX_DEPTH];  /* in flight, by request id - 1 */
    int inflight;
    int depth;                  /* requests it may carry at once: 1 unless the application
                                   said FCGI_MPXS_CONNS 1 */
    int probing;                /* FCGI_GET_VALUES sent, not answered yet */
    /* bytes to send, written once per turn of the loop (every request and
     * abort of the turn in one send) */
    char *wbuf;
    apr_size_t wlen, woff, wcap;
    sip_timer_t flush_timer;
    int want_out;               /* the socket was full: waiting for POLLOUT */
    apr_uint64_t queued_total;  /* bytes ever queued on it */
    apr_uint64_t sent_total;    /* of them, bytes the socket accepted */
    int heard;                  /* it has sent something */
    unsigned served;
    apr_time_t last_end;        /* when its last request ended */
    sip_fcgi_demux_t dm;
    fconn_t *next;
};

struct worker {
    pid_t pid;                  /* 0: slot free; also its process group */
    unsigned long long birth;   /* its start time (/proc stat): names it in the state file */
    const char *sock_path;
    fconn_t *conn;
    unsigned served;
    apr_time_t idle_since;
    apr_time_t started;
    int stopping;
};

struct sip_fcgi_target {
    const char *name;           /* the address or the program, for logs and mod_status */
    server_rec *s;
    int managed;
    /* external */
    int family;
    const char *path;           /* unix: */
    const char *host;           /* tcp: */
    apr_port_t port;
    struct sockaddr_storage tcp_addr;   /* tcp: resolved once at engine start */
    socklen_t tcp_len;          /* 0: could not be resolved */
    int max_conns;
    /* managed (SipFastCGI) */
    const char *program;
    int min, max;
    int max_requests;           /* SipFastCGIMaxRequests; 0 = no limit */
    apr_interval_time_t idle;   /* SipFastCGIIdleTimeout */
    worker_t *workers;          /* max slots */
    int queue_max;              /* SipFastCGIQueue */
    /* state */
    fconn_t *conns;
    int nconns;
    sip_fcgi_req_t *qhead, *qtail;
    int queued;
    int busy;
    apr_uint64_t restarts;
    apr_time_t backoff_until;   /* a worker died young: no new one before */
    int no_probe;               /* closed a connection on FCGI_GET_VALUES: never ask again */
    int one_shot;               /* closes connections after answering (FCGI_KEEP_CONN
                                   ignored): each connection carries one request */
    sip_stats_fcgi_t *st;
};

typedef struct fcgi_map {
    const char *pattern;        /* fnmatch on the script's file name */
    sip_fcgi_target_t *t;
} fcgi_map_t;

/* Per virtual host: the mappings and pools its directives named. */
typedef struct sip_fcgi_conf {
    apr_array_header_t *maps;   /* fcgi_map_t, SipFastCGIConnect in order */
    apr_array_header_t *pools;  /* sip_fcgi_target_t *, SipFastCGI */
} sip_fcgi_conf_t;

/* Every target of the configuration, for start-up and mod_status; reset
 * when the configuration pool is cleared (graceful restart). */
static apr_array_header_t *all_targets;
static sip_loop_t *fcgi_loop;
static apr_pool_t *fcgi_pool;
static const char *sock_dir;
static sip_timer_t supervise_timer;
static unsigned worker_seq;
static const char *state_file, *state_file_new;    /* the workers' groups (write_worker_list) */

static void conn_event(void *baton, apr_int16_t ev);
static void conn_drop(fconn_t *c, int kill_worker);
static void conn_lost(fconn_t *c, int err, const char *what);
static void target_dispatch(sip_fcgi_target_t *t);

static void update_stats(sip_fcgi_target_t *t)
{
    int n = 0, i;

    if (!t->st)
        return;
    if (t->managed) {
        for (i = 0; i < t->max; i++)
            n += t->workers[i].pid != 0;
    }
    else
        n = t->nconns;
    t->st->workers = (apr_uint32_t)n;
    t->st->busy = (apr_uint32_t)t->busy;
    t->st->queued = (apr_uint32_t)t->queued;
    t->st->restarts = t->restarts;
}

/* ---- configuration ---- */

static apr_status_t forget_targets(void *data)
{
    (void)data;
    all_targets = NULL;
    return APR_SUCCESS;
}

static sip_fcgi_conf_t *fcgi_conf(cmd_parms *cmd)
{
    sip_server_conf *sc = sip_get_conf(cmd->server);

    if (!sc->fcgi) {
        sip_fcgi_conf_t *fc = apr_pcalloc(cmd->pool, sizeof(*fc));
        fc->maps = apr_array_make(cmd->pool, 2, sizeof(fcgi_map_t));
        fc->pools = apr_array_make(cmd->pool, 2, sizeof(sip_fcgi_target_t *));
        sc->fcgi = fc;
    }
    if (!all_targets) {
        all_targets = apr_array_make(cmd->pool, 4, sizeof(sip_fcgi_target_t *));
        apr_pool_cleanup_register(cmd->pool, NULL, forget_targets, apr_pool_cleanup_null);
    }
    return sc->fcgi;
}

static sip_fcgi_target_t *target_new(cmd_parms *cmd, const char *name)
{
    sip_fcgi_target_t *t = apr_pcalloc(cmd->pool, sizeof(*t));

    t->name = apr_pstrdup(cmd->pool, name);
    t->s = cmd->server;
    t->queue_max = -1;
    t->max_requests = -1;
    t->idle = -1;
    *(sip_fcgi_target_t **)apr_array_push(all_targets) = t;
    return t;
}

const char *sip_fcgi_cmd_connect(cmd_parms *cmd, int argc, char *const argv[])
{
    sip_fcgi_conf_t *fc = fcgi_conf(cmd);
    const char *pattern = argc >= 2 ? argv[0] : "*", *addr = argv[argc >= 2 ? 1 : 0];
    sip_fcgi_target_t *t;
    fcgi_map_t *m;

    if (argc < 1 || argc > 3)
        return "SipFastCGIConnect [script-name-pattern] unix:/path|tcp:host:port [connections]";
    if (!strncmp(addr, "pool:", 5)) {
        /* scripts matching 'pattern' go to a SipFastCGI pool named before
         * (a worker serving many scripts: it gets SCRIPT_FILENAME) */
        char real[PATH_MAX];
        const char *prog = realpath(addr + 5, real) ? real : addr + 5;
        int i;
        if (argc == 3)
            return "SipFastCGIConnect: pool: takes no connection count (SipFastCGI's max)";
        for (i = 0; i < fc->pools->nelts; i++) {
            t = APR_ARRAY_IDX(fc->pools, i, sip_fcgi_target_t *);
            if (strcmp(t->program, prog) == 0) {
                m = apr_array_push(fc->maps);
                m->pattern = apr_pstrdup(cmd->pool, pattern);
                m->t = t;
                return NULL;
            }
        }
        return apr_psprintf(cmd->pool, "SipFastCGIConnect: no SipFastCGI %s before in this "
                            "virtual host", prog);
    }
    t = target_new(cmd, addr);
    t->max_conns = FCGI_DEFAULT_CONNS;
    if (argc == 3) {
        char *end;
        long n = strtol(argv[2], &end, 10);
        if (*end || n < 1 || n > 1024)
            return "SipFastCGIConnect: connections must be 1 to 1024";
        t->max_conns = (int)n;
    }
    if (!strncmp(addr, "unix:", 5)) {
        t->family = AF_UNIX;
        t->path = addr + 5;
        if (*t->path != '/' || strlen(t->path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return "SipFastCGIConnect: unix: needs an absolute socket path (under 108 bytes)";
    }
    else if (!strncmp(addr, "tcp:", 4)) {
        char *scope = NULL, *host = NULL;
        apr_port_t port = 0;
        if (apr_parse_addr_port(&host, &scope, &port, addr + 4, cmd->pool) != APR_SUCCESS
            || !host || !port)
            return "SipFastCGIConnect: tcp: needs host:port";
        t->family = AF_INET;
        t->host = host;
        t->port = port;
    }
    else
        return "SipFastCGIConnect: the address must start with unix: or tcp:";
    m = apr_array_push(fc->maps);
    m->pattern = apr_pstrdup(cmd->pool, pattern);
    m->t = t;
    return NULL;
}

const char *sip_fcgi_cmd_pool(cmd_parms *cmd, int argc, char *const argv[])
{
    sip_fcgi_conf_t *fc = fcgi_conf(cmd);
    sip_fcgi_target_t *t;
    char real[PATH_MAX];
    long lo = 1, hi = 4;
    char *end;

    if (argc < 1 || argc > 3)
        return "SipFastCGI /path/to/program [min [max]]";
    if (argv[0][0] != '/')
        return "SipFastCGI: the program must be an absolute path";
    if (argc >= 2 && ((lo = strtol(argv[1], &end, 10)) < 0 || *end || lo > 256))
        return "SipFastCGI: min must be 0 to 256";
    if (argc >= 3 && ((hi = strtol(argv[2], &end, 10)) < 1 || *end || hi > 256))
        return "SipFastCGI: max must be 1 to 256";
    if (argc == 2 && hi < lo)
        hi = lo;
    if (hi < lo)
        return "SipFastCGI: max is below min";
    /* scripts are located through realpath (sip_cgi_locate): compare alike */
    t = target_new(cmd, realpath(argv[0], real) ? real : argv[0]);
    t->managed = 1;
    t->program = t->name;
    t->min = (int)lo;
    t->max = (int)hi;
    t->workers = apr_pcalloc(cmd->pool, sizeof(worker_t) * (apr_size_t)hi);
    *(sip_fcgi_target_t **)apr_array_push(fc->pools) = t;
    return NULL;
}

/* The settings below apply to the targets named before them in the same
 * virtual host (the last SipFastCGI / SipFastCGIConnect), or, given before
 * any, are the defaults of the virtual host's later ones. */
static sip_fcgi_target_t *last_target(cmd_parms *cmd)
{
    sip_fcgi_conf_t *fc = fcgi_conf(cmd);

    (void)fc;
    return all_targets->nelts ? APR_ARRAY_IDX(all_targets, all_targets->nelts - 1,
                                              sip_fcgi_target_t *) : NULL;
}

static const char *number(const char *arg, long lo, long hi, long *out)
{
    char *end;
    long n = strtol(arg, &end, 10);

    if (*end || end == arg || n < lo || n > hi)
        return "number out of range";
    *out = n;
    return NULL;
}

const char *sip_fcgi_cmd_max_requests(cmd_parms *cmd, const char *arg)
{
    sip_fcgi_target_t *t = last_target(cmd);
    long n;

    if (!t || !t->managed || t->s != cmd->server)
        return "SipFastCGIMaxRequests follows the SipFastCGI it applies to";
    if (number(arg, 0, 100000000, &n))
        return "SipFastCGIMaxRequests: 0 (no limit) or a number of requests";
    t->max_requests = (int)n;
    return NULL;
}

const char *sip_fcgi_cmd_idle(cmd_parms *cmd, const char *arg)
{
    sip_fcgi_target_t *t = last_target(cmd);
    long n;

    if (!t || !t->managed || t->s != cmd->server)
        return "SipFastCGIIdleTimeout follows the SipFastCGI it applies to";
    if (number(arg, 0, 86400, &n))
        return "SipFastCGIIdleTimeout: seconds, 0 to 86400";
    t->idle = apr_time_from_sec(n);
    return NULL;
}

const char *sip_fcgi_cmd_queue(cmd_parms *cmd, const char *arg)
{
    sip_fcgi_target_t *t = last_target(cmd);
    long n;

    if (!t || t->s != cmd->server)
        return "SipFastCGIQueue follows the SipFastCGI or SipFastCGIConnect it applies to";
    if (number(arg, 0, 100000, &n))
        return "SipFastCGIQueue: 0 to 100000 waiting requests";
    t->queue_max = (int)n;
    return NULL;
}

sip_fcgi_target_t *sip_fcgi_lookup(server_rec *s, const char *path, const char *name)
{
    sip_fcgi_conf_t *fc = sip_get_conf(s)->fcgi;
    int i;

    if (!fc)
        return NULL;
    for (i = 0; path && i < fc->pools->nelts; i++) {
        sip_fcgi_target_t *t = APR_ARRAY_IDX(fc->pools, i, sip_fcgi_target_t *);
        if (strcmp(t->program, path) == 0)
            return t;
    }
    for (i = 0; name && i < fc->maps->nelts; i++) {
        const fcgi_map_t *m = &APR_ARRAY_IDX(fc->maps, i, fcgi_map_t);
        if (apr_fnmatch(m->pattern, name, APR_FNM_PERIOD) == APR_SUCCESS)
            return m->t;
    }
    return NULL;
}

/* ---- managed workers ---- */

static int listen_socket(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    apr_cpystrn(sa.sun_path, path, sizeof(sa.sun_path));
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A process's start time (field 22 of /proc/PID/stat, clock ticks since
 * boot), 0 when it is gone: with the pid it names one process, not
 * whichever has the pid later. */
static unsigned long long proc_birth(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long birth = 0;
    ssize_t n;
    int fd, field;

    apr_snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* the command name (field 2) may hold spaces: count from its ')' */
    p = strrchr(buf, ')');
    for (field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (p)
        birth = strtoull(p + 1, NULL, 10);
    return birth;
}

/* The state file: every live worker's process group and start time, so
 * that an engine restarted after a crash can end what its predecessor
 * left (sweep_predecessor).  Rewritten whole at each start and reaping. */
static void write_worker_list(void)
{
    FILE *f;
    int i, j;

    if (!state_file)
        return;
    f = fopen(state_file_new, "we");
    if (!f)
        return;
    for (i = 0; all_targets && i < all_targets->nelts; i++) {
        sip_fcgi_target_t *t = APR_ARRAY_IDX(all_targets, i, sip_fcgi_target_t *);
        for (j = 0; t->managed && j < t->max; j++)
            if (t->workers[j].pid)
                fprintf(f, "%d %llu\n", (int)t->workers[j].pid, t->workers[j].birth);
    }
    if (fclose(f) == 0)
        rename(state_file_new, state_file);
}

/* The worker, between fork and exec: async-signal-safe calls only (the
 * engine may run other threads, sip_location_dbd.c). */
static void worker_child(pid_t engine, int fd, const char *dir, const char *program,
                         char *const argv[], char *const envp[])
{
    struct sigaction dfl;
    sigset_t none;
    int sig, nul;

    /* It dies with the engine: an engine killed (-9, a crash) leaves no
     * worker running for ever.  The signal is bound to the thread that
     * forks, the engine's main thread, which runs the loop until the
     * process ends.  If the engine died before this line, nothing would
     * send it: look. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != engine)
        _exit(127);
    /* its own process group: a timeout or a CANCEL kills what it started
     * too, and a restarted engine can end the group (sweep_predecessor) */
    setpgid(0, 0);
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);     /* the engine ignores SIGPIPE: not the worker */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* descriptor 0: the listening socket (FCGI_LISTENSOCK_FILENO); 1 is
     * /dev/null; 2 stays the engine's, the error log */
    nul = open("/dev/null", O_WRONLY);
    if (dup2(fd, 0) < 0 || nul < 0 || dup2(nul, 1) < 0 || chdir(dir) < 0)
        _exit(127);
    closefrom(3);
    execve(program, argv, envp);
    _exit(127);
}

static int worker_start(sip_fcgi_target_t *t, worker_t *w)
{
    char dir[PATH_MAX], *slash, pathenv[PATH_MAX + 8];
    char *argv[2];
    char *envp[3];
    const char *path = getenv("PATH");
    pid_t pid, engine = getpid();
    int fd;

    if (!sock_dir || apr_time_now() < t->backoff_until)
        return -1;
    /* one name per worker slot of the engine (pools share the directory) */
    if (!w->sock_path)
        w->sock_path = apr_psprintf(fcgi_pool, "%s/w%u", sock_dir, ++worker_seq);
    fd = listen_socket(w->sock_path);
    if (fd < 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, t->s, "sip-fcgi: cannot listen on %s",
                     w->sock_path);
        return -1;
    }
    apr_cpystrn(dir, t->program, sizeof(dir));
    slash = strrchr(dir, '/');
    *slash = '\0';
    argv[0] = slash + 1;
    argv[1] = NULL;
    apr_snprintf(pathenv, sizeof(pathenv), "PATH=%s", path ? path : "/usr/bin:/bin");
    envp[0] = pathenv;
    envp[1] = "SIP_FCGI_WORKER=1";
    envp[2] = NULL;
    /* fork, not posix_spawn: PR_SET_PDEATHSIG must be set in the child.
     * Workers start seldom (min at start, growth, replacement), so the
     * copy of the engine's page tables is paid seldom too. */
    pid = fork();
    if (pid == 0)
        worker_child(engine, fd, dir, t->program, argv, envp);    /* never returns */
    close(fd);
    if (pid < 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, t->s, "sip-fcgi: cannot start %s", t->program);
        return -1;
    }
    setpgid(pid, pid);      /* as the child does: whichever runs first */
    w->pid = pid;
    w->birth = proc_birth(pid);
    w->served = 0;
    w->stopping = 0;
    w->conn = NULL;
    w->idle_since = w->started = apr_time_now();
    write_worker_list();
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, t->s, "sip-fcgi: started %s (pid %d) on %s",
                 t->program, (int)pid, w->sock_path);
    return 0;
}

static void worker_stop(sip_fcgi_target_t *t, worker_t *w, int sig)
{
    if (w->pid && !w->stopping) {
        kill(-w->pid, sig);     /* its process group: what it started goes too */
        w->stopping = 1;
    }
    if (w->conn)
        conn_drop(w->conn, 0);
}

static int live_workers(const sip_fcgi_target_t *t)
{
    int i, n = 0;

    for (i = 0; i < t->max; i++)
        n += t->workers[i].pid != 0;
    return n;
}

/* Reaps exited workers, keeps 'min' running, retires idle ones beyond it. */
static void supervise(void *baton)
{
    apr_time_t now = apr_time_now();
    int i, j, reaped = 0;

    (void)baton;
    for (i = 0; all_targets && i < all_targets->nelts; i++) {
        sip_fcgi_target_t *t = APR_ARRAY_IDX(all_targets, i, sip_fcgi_target_t *);
        if (!t->managed)
            continue;
        for (j = 0; j < t->max; j++) {
            worker_t *w = &t->workers[j];
            int status;
            if (!w->pid || waitpid(w->pid, &status, WNOHANG) != w->pid)
                continue;
            if (!w->stopping) {
                t->restarts++;
                /* a program that cannot start is not restarted in a loop */
                if (now - w->started < apr_time_from_sec(1))
                    t->backoff_until = now + apr_time_from_sec(1);
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, t->s,
                             "sip-fcgi: worker %s (pid %d) %s %d", t->program, (int)w->pid,
                             WIFSIGNALED(status) ? "killed by signal" : "exited with status",
                             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            }
            kill(-w->pid, SIGKILL);     /* what it left running in its group */
            w->pid = 0;
            reaped = 1;
            /* reaped before its connection's end was read: the same rule
             * for what it had in flight (conn_lost) */
            if (w->conn)
                conn_lost(w->conn, 0, "exited");
            unlink(w->sock_path);
        }
        for (j = 0; j < t->max; j++) {
            worker_t *w = &t->workers[j];
            if (w->pid && !w->stopping && !w->conn && t->idle > 0
                && live_workers(t) > t->min && now - w->idle_since > t->idle)
                worker_stop(t, w, SIGTERM);
        }
        for (j = 0; j < t->max && live_workers(t) < t->min; j++)
            if (!t->workers[j].pid)
                worker_start(t, &t->workers[j]);
        target_dispatch(t);
        update_stats(t);
    }
    if (reaped)
        write_worker_list();
    sip_timer_set(fcgi_loop, &supervise_timer, FCGI_SUPERVISE, supervise, NULL);
}

/* ---- connections ---- */

static sip_fcgi_parser_t *demux_lookup(void *baton, apr_uint16_t id);
static int demux_mgmt(void *baton, int type, const unsigned char *content, apr_size_t len);
static int demux_after(void *baton, sip_fcgi_parser_t *ps, int ended);

static apr_status_t free_wbuf(void *data)
{
    fconn_t *c = data;

    free(c->wbuf);
    c->wbuf = NULL;
    return APR_SUCCESS;
}

static fconn_t *conn_open(sip_fcgi_target_t *t, worker_t *w)
{
    apr_pool_t *p;
    fconn_t *c;
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, r;

    memset(&ss, 0, sizeof(ss));
    if (w || t->family == AF_UNIX) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        su->sun_family = AF_UNIX;
        apr_cpystrn(su->sun_path, w ? w->sock_path : t->path, sizeof(su->sun_path));
        sl = sizeof(*su);
    }
    else {
        /* resolved once at engine start (sip_fcgi_init): a lookup here
         * would block the engine at every new connection */
        if (!t->tcp_len)
            return NULL;
        memcpy(&ss, &t->tcp_addr, t->tcp_len);
        sl = t->tcp_len;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    do
        r = connect(fd, (struct sockaddr *)&ss, sl);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EAGAIN) {
        /* a UNIX socket's backlog is full: the request waits its turn */
        close(fd);
        return NULL;
    }
    if (r < 0 && errno != EINPROGRESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, t->s, "sip-fcgi: cannot connect to %s",
                     w ? w->sock_path : t->name);
        close(fd);
        return NULL;
    }
    apr_pool_create(&p, fcgi_pool);
    c = apr_pcalloc(p, sizeof(*c));
    c->pool = p;
    c->t = t;
    c->w = w;
    c->fd = fd;
    c->connecting = r < 0;
    c->depth = 1;
    apr_pool_cleanup_register(p, c, free_wbuf, apr_pool_cleanup_null);
    sip_fcgi_demux_init(&c->dm, demux_lookup, demux_mgmt, demux_after, c);
    apr_os_sock_put(&c->sock, &c->fd, p);
    sip_io_init_socket(&c->io, c->sock, conn_event, c);
    c->next = t->conns;
    t->conns = c;
    t->nconns++;
    if (w)
        w->conn = c;
    sip_io_watch(fcgi_loop, &c->io, c->connecting ? APR_POLLOUT : APR_POLLIN);
    return c;
}

static void req_fail(sip_fcgi_req_t *r, const char *why)
{
    const sip_fcgi_sink_t *sink = r->sink;

    r->sink = NULL;
    if (sink)
        sink->end(r->baton, why, 0);
}

static void stderr_line(sip_fcgi_req_t *r)
{
    if (r->elen)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->s, "sip-cgi: stderr from %s: %.*s", r->script,
                     (int)r->elen, r->eline);
    r->elen = 0;
}

static void on_stderr(void *baton, const char *buf, apr_size_t len)
{
    sip_fcgi_req_t *r = baton;
    apr_size_t i;

    for (i = 0; i < len; i++) {
        if (buf[i] == '\n') {
            stderr_line(r);
            continue;
        }
        if (r->elen == sizeof(r->eline))
            stderr_line(r);
        r->eline[r->elen++] = buf[i];
    }
}

static void on_stdout(void *baton, const char *buf, apr_size_t len)
{
    sip_fcgi_req_t *r = baton;

    if (!r->sink)
        return;     /* abandoned: its answer goes nowhere */
    if (r->ocap - r->olen < len) {
        apr_size_t cap = (r->ocap ? r->ocap : 4096) * 2;
        char *bigger;
        while (cap - r->olen < len)
            cap *= 2;
        bigger = apr_palloc(r->pool, cap);
        if (r->olen)
            memcpy(bigger, r->out, r->olen);
        r->out = bigger;
        r->ocap = cap;
    }
    memcpy(r->out + r->olen, buf, len);
    r->olen += len;
}

/* The request leaves its connection (answered, failed or retried). */
static void req_detach(sip_fcgi_req_t *r)
{
    fconn_t *c = r->conn;

    if (!c)
        return;
    c->slots[r->id - 1] = NULL;
    c->inflight--;
    c->t->busy--;
    r->conn = NULL;
    sip_timer_cancel(fcgi_loop, &r->abort_timer);
}

static void req_destroy(sip_fcgi_req_t *r)
{
    req_detach(r);
    stderr_line(r);
    apr_pool_destroy(r->pool);
}

static void conn_drop_why(fconn_t *c, int kill_worker, const char *failure)
{
    sip_fcgi_target_t *t = c->t;
    fconn_t **pp;
    int i;

    if (c->dead)
        return;
    /* out of every list first: what the failed runs start next must not
     * come here */
    c->dead = 1;
    for (pp = &t->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    t->nconns--;
    if (c->w) {
        c->w->conn = NULL;
        if (kill_worker && c->w->pid && !c->w->stopping) {
            /* busy with a request we gave up on: it cannot be trusted to
             * come back soon, and a new one takes its place */
            kill(-c->w->pid, SIGKILL);
            c->w->stopping = 1;
        }
    }
    sip_timer_cancel(fcgi_loop, &c->flush_timer);
    sip_io_watch(fcgi_loop, &c->io, 0);
    close(c->fd);
    for (i = 0; i < FCGI_MAX_DEPTH; i++) {
        sip_fcgi_req_t *r = c->slots[i];
        if (!r)
            continue;
        req_detach(r);
        req_fail(r, failure);
        req_destroy(r);
    }
    sip_loop_defer_destroy(fcgi_loop, c->pool);
    update_stats(t);
}

static void conn_drop(fconn_t *c, int kill_worker)
{
    conn_drop_why(c, kill_worker, "the FastCGI connection was lost");
}

/* The connection is lost (the worker closed it, died, or the socket
 * refused a send).  A request is sent again elsewhere only when it
 * provably never reached the worker: the socket took none of its bytes
 * (they were still queued, or the send that carried them failed, which a
 * closed UNIX socket does at once).  Any other in flight may have run, its
 * side effects with it, although nothing came back: it fails (500), and
 * the loss is logged.  A kept connection the worker closed while idle is
 * noticed before reuse (the poll, free_conn), so it costs no request. */
static void conn_lost(fconn_t *c, int err, const char *what)
{
    sip_fcgi_target_t *t = c->t;
    int i, lost = 0, again = 0;

    /* closed while idle, at once after its answer: the worker or server
     * ignores FCGI_KEEP_CONN, and a request written as it closes would be
     * lost (below).  It gets one request per connection from now on.  (A
     * worker that exits after answering is taken for one too, at the cost
     * of a connection per request; SipFastCGIMaxRequests recycles workers
     * without a race.) */
    if (!c->inflight && c->served && !t->one_shot && !(c->w && c->w->stopping)
        && apr_time_now() - c->last_end < FCGI_CLOSES_AFTER) {
        t->one_shot = 1;
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, t->s, "sip-fcgi: %s closes its connections "
                     "after answering (FCGI_KEEP_CONN ignored): one request per connection",
                     t->name);
    }

    for (i = FCGI_MAX_DEPTH - 1; i >= 0; i--) {
        sip_fcgi_req_t *r = c->slots[i];
        if (!r || r->aborted)
            continue;
        if (r->retried || r->wstart < c->sent_total) {
            lost++;
            continue;
        }
        req_detach(r);
        r->retried = 1;
        r->next = t->qhead;
        t->qhead = r;
        if (!t->qtail)
            t->qtail = r;
        t->queued++;
        again++;
    }
    if (again)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, err, t->s, "sip-fcgi: %s %s; %d request%s it "
                     "never took go%s to another connection", t->name, what, again,
                     again > 1 ? "s" : "", again > 1 ? "" : "es");
    if (lost)
        ap_log_error(APLOG_MARK, APLOG_ERR, err, t->s, "sip-fcgi: %s %s with %d request%s "
                     "before END_REQUEST (not sent again: %s may have run)", t->name, what,
                     lost, lost > 1 ? "s" : "", lost > 1 ? "they" : "it");
    conn_drop(c, 0);
    target_dispatch(t);
}

static void conn_flush(fconn_t *c);

static void flush_due(void *baton)
{
    conn_flush(baton);
}

/* Bytes for the worker: sent at the end of this turn of the loop, with
 * whatever else this turn has for the same connection. */
static void conn_queue(fconn_t *c, const char *buf, apr_size_t len)
{
    if (c->wcap - c->wlen < len) {
        apr_size_t cap = c->wcap ? c->wcap : 4096;
        char *bigger;
        if (c->woff) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        while (cap - c->wlen < len)
            cap *= 2;
        if (cap != c->wcap) {
            bigger = realloc(c->wbuf, cap);
            if (!bigger)
                abort();    /* out of memory in the engine: the parent restarts it */
            c->wbuf = bigger;
            c->wcap = cap;
        }
    }
    memcpy(c->wbuf + c->wlen, buf, len);
    c->wlen += len;
    c->queued_total += len;
    if (!c->connecting && !c->want_out && !c->flush_timer.slot)
        sip_timer_set(fcgi_loop, &c->flush_timer, 0, flush_due, c);
}

static void conn_flush(fconn_t *c)
{
    sip_timer_cancel(fcgi_loop, &c->flush_timer);
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->want_out = 1;
            sip_io_watch(fcgi_loop, &c->io, APR_POLLIN | APR_POLLOUT);
            return;
        }
        if (n < 0) {
            conn_lost(c, errno, "refused a send");
            return;
        }
        c->woff += (apr_size_t)n;
        c->sent_total += (apr_uint64_t)n;
    }
    c->woff = c->wlen = 0;
    c->want_out = 0;
    sip_io_watch(fcgi_loop, &c->io, APR_POLLIN);
}

static void conn_assign(fconn_t *c, sip_fcgi_req_t *r)
{
    int i;

    for (i = 0; c->slots[i]; i++)
        ;
    c->slots[i] = r;
    c->inflight++;
    r->conn = c;
    r->id = (apr_uint16_t)(i + 1);
    r->olen = 0;
    c->t->busy++;
    sip_fcgi_parser_init(&r->ps, r->id, FCGI_MAX_STDERR, on_stdout, on_stderr, r);
    if (c->w)
        c->w->served++;
    if (!c->served && !c->probing && c->wlen == 0 && !c->t->no_probe) {
        /* the first request asks, in the same send, whether the application
         * takes several requests per connection (§4.1) */
        unsigned char gv[64];
        conn_queue(c, (const char *)gv, sip_fcgi_encode_get_values(gv));
        c->probing = 1;
    }
    sip_fcgi_set_id(r->wbuf, r->wlen, r->id);
    r->wstart = c->queued_total;
    conn_queue(c, r->wbuf, r->wlen);
}

/* The worker's answers: every record of every request in flight. */
static sip_fcgi_parser_t *demux_lookup(void *baton, apr_uint16_t id)
{
    fconn_t *c = baton;

    return id >= 1 && id <= FCGI_MAX_DEPTH && c->slots[id - 1] ? &c->slots[id - 1]->ps : NULL;
}

static int demux_mgmt(void *baton, int type, const unsigned char *content, apr_size_t len)
{
    fconn_t *c = baton;
    int mpxs = 0, max_reqs = 0;
    const char *why;

    if (!c->probing)
        return -1;
    c->probing = 0;
    if (type == AP_FCGI_UNKNOWN_TYPE)
        return 0;       /* it does not know GET_VALUES: one request at a time */
    if (type != AP_FCGI_GET_VALUES_RESULT
        || sip_fcgi_parse_values(content, len, &mpxs, &max_reqs, &why) < 0)
        return -1;
    if (mpxs && max_reqs != 1)
        c->depth = max_reqs > 0 && max_reqs < FCGI_MAX_DEPTH ? max_reqs : FCGI_MAX_DEPTH;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, c->t->s, "sip-fcgi: %s takes %d request%s per "
                 "connection", c->t->name, c->depth, c->depth > 1 ? "s" : "");
    return 0;
}

static void abort_overdue(void *baton)
{
    sip_fcgi_req_t *r = baton;
    fconn_t *c = r->conn;

    ap_log_error(APLOG_MARK, APLOG_ERR, 0, c->t->s, "sip-fcgi: %s: %s did not end an aborted "
                 "request in time; connection closed", r->script, c->t->name);
    conn_drop(c, 1);
    target_dispatch(c->t);
}

static int demux_after(void *baton, sip_fcgi_parser_t *ps, int ended)
{
    fconn_t *c = baton;
    sip_fcgi_req_t *r = ps->baton;
    const sip_fcgi_sink_t *sink;
    int protocol_status;
    apr_uint32_t app_status;

    if (r->olen) {
        apr_size_t olen = r->olen;
        r->olen = 0;
        if (r->sink && r->sink->out(r->baton, r->out, olen)) {
            /* the run is over (it called sip_fcgi_cancel) */
            if (c->dead || !ended)
                return c->dead;
        }
    }
    if (!ended)
        return 0;
    /* 'ps' lives in the request's pool, which req_destroy gives back (and
     * the engine's bounded allocator may unmap at once): read it before */
    protocol_status = ps->protocol_status;
    app_status = ps->app_status;
    sink = r->sink;
    r->sink = NULL;
    c->served++;
    c->last_end = apr_time_now();
    req_detach(r);
    if (sink) {
        if (protocol_status != 0)
            sink->end(r->baton, protocol_status == 2 ? "the FastCGI server is overloaded"
                      : "the FastCGI server refused the request", 0);
        else
            sink->end(r->baton, NULL, app_status);
    }
    req_destroy(r);
    if (!c->dead && protocol_status != 0 && c->depth == 1)
        conn_drop(c, 0);    /* refused outright: not to be trusted with the next */
    return c->dead;
}

static void conn_read(fconn_t *c)
{
    sip_fcgi_target_t *t = c->t;
    char buf[16384];

    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        const char *why = NULL;
        int pr;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            /* closed on FCGI_GET_VALUES, before any answer: not asked again */
            if (c->probing && !c->served && !c->heard)
                t->no_probe = 1;
            conn_lost(c, n < 0 ? errno : 0, "closed the connection");
            return;
        }
        if (!c->inflight && !c->probing) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, t->s,
                         "sip-fcgi: %s sent data while no request was open; connection closed",
                         t->name);
            conn_drop(c, 1);
            target_dispatch(t);
            return;
        }
        c->heard = 1;
        pr = sip_fcgi_demux(&c->dm, buf, (apr_size_t)n, &why);
        if (c->dead)
            break;
        if (pr < 0) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, t->s,
                         "sip-fcgi: malformed FastCGI record from %s: %s; connection closed",
                         t->name, why);
            conn_drop_why(c, 1, apr_psprintf(c->pool, "malformed FastCGI record: %s", why));
            break;
        }
        /* a short read took all there was: the poll (level-triggered)
         * says when more comes, without a recv that finds nothing */
        if ((apr_size_t)n < sizeof(buf))
            break;
    }
    if (!c->dead && !c->inflight && c->w && t->max_requests > 0
        && c->w->served >= (unsigned)t->max_requests) {
        worker_t *w = c->w;
        conn_drop(c, 0);
        worker_stop(t, w, SIGTERM);     /* recycled: SipFastCGIMaxRequests */
    }
    else if (!c->dead && !c->inflight && c->w)
        c->w->idle_since = apr_time_now();
    if (!c->dead && !c->inflight && t->one_shot && c->served)
        conn_drop(c, 0);    /* it would close it itself, racing the next request */
    target_dispatch(t);
}

static void conn_event(void *baton, apr_int16_t ev)
{
    fconn_t *c = baton;

    if (c->dead)
        return;
    if (c->connecting) {
        int err = 0;
        socklen_t l = sizeof(err);
        if (!(ev & (APR_POLLOUT | APR_POLLERR | APR_POLLHUP)))
            return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            sip_fcgi_target_t *t = c->t;
            ap_log_error(APLOG_MARK, APLOG_ERR, err, t->s, "sip-fcgi: cannot connect to %s",
                         t->name);
            conn_drop(c, 0);
            target_dispatch(t);
            return;
        }
        c->connecting = 0;
        conn_flush(c);
        return;
    }
    if (ev & APR_POLLOUT) {
        conn_flush(c);
        if (c->dead)
            return;
    }
    if (ev & (APR_POLLIN | APR_POLLHUP | APR_POLLERR))
        conn_read(c);
}

/* ---- requests ---- */

static int conn_usable(const sip_fcgi_target_t *t, const fconn_t *c)
{
    return !c->dead && !(t->one_shot && c->served)
        && (!c->w || (!c->w->stopping && (t->max_requests <= 0
                                          || c->w->served < (unsigned)t->max_requests)));
}

/* A connection that can take a request now: an idle one, else a new one
 * if allowed (the pool grows under load), else the multiplexed one with
 * the fewest in flight. */
/* An idle kept TCP connection the server closed since the poll last
 * looked (its FIN already here) is dropped now rather than given a
 * request: over TCP a send to a closed peer succeeds, and the request then
 * fails (conn_lost).  Over a UNIX socket that send fails at once, and the
 * request goes elsewhere: no check is spent there. */
static int conn_closed_idle(fconn_t *c)
{
    char b;
    ssize_t n;

    if (c->w || c->t->family == AF_UNIX || c->connecting || !c->served)
        return 0;
    n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n > 0)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, c->t->s, "sip-fcgi: %s sent data while no "
                     "request was open; connection closed", c->t->name);
    conn_drop(c, n > 0);
    return 1;
}

static fconn_t *free_conn(sip_fcgi_target_t *t)
{
    fconn_t *c, *next, *best = NULL;
    int i;

    for (c = t->conns; c; c = next) {
        next = c->next;
        if (!c->inflight && conn_usable(t, c) && !conn_closed_idle(c))
            return c;
    }
    if (!t->managed) {
        if (t->nconns < t->max_conns && (c = conn_open(t, NULL)))
            return c;
    }
    else {
        for (i = 0; i < t->max; i++) {
            worker_t *w = &t->workers[i];
            if (w->pid && !w->stopping && !w->conn && (c = conn_open(t, w)))
                return c;
        }
        for (i = 0; i < t->max; i++)
            if (!t->workers[i].pid) {
                if (worker_start(t, &t->workers[i]) == 0 && (c = conn_open(t, &t->workers[i])))
                    return c;
                break;
            }
    }
    for (c = t->conns; c; c = c->next)
        if (c->inflight < c->depth && conn_usable(t, c) && (!best || c->inflight < best->inflight))
            best = c;
    return best;
}

static void target_dispatch(sip_fcgi_target_t *t)
{
    while (t->qhead) {
        fconn_t *c = free_conn(t);
        sip_fcgi_req_t *r = t->qhead;
        if (!c)
            break;
        t->qhead = r->next;
        if (!t->qhead)
            t->qtail = NULL;
        r->next = NULL;
        t->queued--;
        conn_assign(c, r);
    }
    update_stats(t);
}

sip_fcgi_req_t *sip_fcgi_submit(sip_fcgi_target_t *t, server_rec *s, const char *script,
                                const char *const *envp, const char *body, apr_size_t blen,
                                const sip_fcgi_sink_t *sink, void *baton, int *busy)
{
    apr_pool_t *p;
    sip_fcgi_req_t *r;
    fconn_t *c;
    int qmax = t->queue_max >= 0 ? t->queue_max : FCGI_DEFAULT_QUEUE;

    *busy = 0;
    c = t->qhead ? NULL : free_conn(t);
    if (!c && !t->managed && !t->nconns)
        return NULL;    /* the server cannot be reached (logged): 500 */
    if (!c && t->queued >= qmax) {
        *busy = 1;
        return NULL;
    }
    apr_pool_create(&p, fcgi_pool);
    r = apr_pcalloc(p, sizeof(*r));
    r->pool = p;
    r->t = t;
    r->s = s;
    r->script = apr_pstrdup(p, script);
    r->sink = sink;
    r->baton = baton;
    r->wbuf = sip_fcgi_encode_request(p, 1, 1, envp, body, blen, &r->wlen);
    if (!r->wbuf) {
        apr_pool_destroy(p);
        return NULL;
    }
    if (c)
        conn_assign(c, r);
    else {
        if (t->qtail)
            t->qtail->next = r;
        else
            t->qhead = r;
        t->qtail = r;
        t->queued++;
    }
    update_stats(t);
    if (t->st)
        t->st->requests++;
    return r;
}

void sip_fcgi_cancel(sip_fcgi_req_t *r)
{
    sip_fcgi_target_t *t = r->t;
    fconn_t *c = r->conn;

    r->sink = NULL;
    if (c && c->dead)
        return;     /* its connection is being dropped (a run ended by another's failure):
                       the drop ends it, and nothing may be queued or timed on 'c' now */
    if (c && c->inflight > 1) {
        /* (several in flight only on a multiplexed connection) the others
         * go on: the worker is told, and the request keeps its id until the
         * worker ends it (SipScriptTimeout at most, or the connection goes) */
        sip_server_conf *conf = sip_get_conf(r->s);
        apr_interval_time_t grace = conf->script_timeout > 0 ? conf->script_timeout
                                                             : apr_time_from_sec(10);
        unsigned char ab[AP_FCGI_HEADER_LEN];
        if (r->aborted)
            return;
        r->aborted = 1;
        sip_fcgi_encode_abort(ab, r->id);
        conn_queue(c, (const char *)ab, sizeof(ab));
        sip_timer_set(fcgi_loop, &r->abort_timer, grace, abort_overdue, r);
        return;
    }
    if (c) {
        /* alone on its connection: no ABORT_REQUEST, which few libraries
         * act on before they finish, so the connection (and a managed
         * worker, with what it started) is given up */
        conn_drop(c, 1);
        target_dispatch(t);
        return;
    }
    {
        sip_fcgi_req_t **pp;
        for (pp = &t->qhead; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                if (t->qtail == r) {
                    sip_fcgi_req_t *q;
                    t->qtail = NULL;
                    for (q = t->qhead; q; q = q->next)
                        t->qtail = q;
                }
                t->queued--;
                break;
            }
    }
    apr_pool_destroy(r->pool);
    update_stats(t);
}

/* ---- engine start and stop ---- */

/* An engine killed (-9, a crash) cannot stop its workers.  Most die with
 * it (PR_SET_PDEATHSIG, worker_child), but not all: the signal is cleared
 * when a worker executes a set-user-ID program, and what a worker started
 * (a wrapper's child, a pre-forking server's children) never had it.  All
 * of them are in the worker's process group, named in the state file with
 * the leader's start time: the next engine of the same number kills those
 * groups before it starts its own workers.  A leader alive with another
 * start time is another process that got the pid (the group of that
 * number then is empty: a pid in use as a group id is not given out). */
static void sweep_predecessor(const char *dir)
{
    char *path = apr_pstrcat(fcgi_pool, dir, "/workers", NULL), line[64];
    int groups = 0;
    FILE *f = fopen(path, "re");
    DIR *d;
    struct dirent *e;

    while (f && fgets(line, sizeof(line), f)) {
        int pid;
        unsigned long long birth, now;
        if (sscanf(line, "%d %llu", &pid, &birth) != 2 || pid <= 1)
            continue;
        now = proc_birth(pid);
        if (now && now != birth)
            continue;
        if (kill(-pid, SIGKILL) == 0)
            groups++;
    }
    if (f)
        fclose(f);
    if (groups)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, NULL, "sip-fcgi: killed %d worker process "
                     "group%s left by the previous engine", groups, groups > 1 ? "s" : "");
    /* its sockets and list: this engine makes its own */
    d = opendir(dir);
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            unlink(apr_pstrcat(fcgi_pool, dir, "/", e->d_name, NULL));
    if (d)
        closedir(d);
}

/* The workers' sockets and the state file: a private directory (0700) of
 * the engine's user, named after httpd's parent, the configuration's
 * generation (a graceful restart's new engines start while the old ones
 * stop) and the engine's number, so that the engine restarted in its
 * place after a crash finds it.  A name already taken
 * by anything but such a directory (another user's, a symlink) is not
 * used: a random name instead, without the sweep. */
static const char *state_dir(apr_pool_t *p, const char *tmp)
{
    char *d = apr_psprintf(p, "%s/mod_sip-fcgi.%d.%d.%d", tmp, (int)getppid(),
                           ap_state_query(AP_SQ_CONFIG_GEN), sip_engine_self());
    struct stat st;

    if (mkdir(d, 0700) == 0)
        return d;
    if (errno == EEXIST && lstat(d, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid()
        && !(st.st_mode & 077)) {
        sweep_predecessor(d);
        return d;
    }
    ap_log_error(APLOG_MARK, APLOG_WARNING, errno, NULL, "sip-fcgi: %s is not this engine's "
                 "directory; worker sockets go elsewhere, and workers a crash leaves cannot "
                 "be found by the next engine", d);
    d = apr_pstrcat(p, tmp, "/mod_sip-fcgi.XXXXXX", NULL);
    if (mkdtemp(d))
        return d;
    ap_log_error(APLOG_MARK, APLOG_ERR, errno, NULL,
                 "sip-fcgi: cannot make a directory for worker sockets in %s", tmp);
    return NULL;
}

void sip_fcgi_init(sip_loop_t *loop, apr_pool_t *p)
{
    int i, managed = 0;
    const char *tmp = NULL;

    fcgi_loop = loop;
    fcgi_pool = p;
    sip_stats_fcgi_reset();
    for (i = 0; all_targets && i < all_targets->nelts; i++) {
        sip_fcgi_target_t *t = APR_ARRAY_IDX(all_targets, i, sip_fcgi_target_t *);
        t->st = sip_stats_fcgi_slot(t->name);
        managed |= t->managed;
        if (!t->managed && t->family != AF_UNIX && t->host) {
            /* once, before the engine serves anything (a name here is the
             * administrator's, resolved as httpd resolves Listen); a literal
             * address needs no lookup */
            apr_sockaddr_t *sa;
            if (apr_sockaddr_info_get(&sa, t->host, APR_UNSPEC, t->port, 0, p) == APR_SUCCESS
                && (apr_size_t)sa->salen <= sizeof(t->tcp_addr)) {
                char *ip = NULL;
                memcpy(&t->tcp_addr, &sa->sa, (apr_size_t)sa->salen);
                t->tcp_len = (socklen_t)sa->salen;
                apr_sockaddr_ip_get(&ip, sa);
                ap_log_error(APLOG_MARK, APLOG_INFO, 0, t->s,
                             "sip-fcgi: %s is %s:%u (resolved once at engine start)", t->name,
                             ip ? ip : "?", (unsigned)t->port);
            }
            else
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, t->s,
                             "sip-fcgi: cannot resolve %s at engine start; its scripts will "
                             "fail until httpd restarts", t->name);
        }
    }
    if (!managed)
        return;
    if (apr_temp_dir_get(&tmp, p) != APR_SUCCESS)
        tmp = "/tmp";
    sock_dir = state_dir(p, tmp);
    if (sock_dir) {
        state_file = apr_pstrcat(p, sock_dir, "/workers", NULL);
        state_file_new = apr_pstrcat(p, sock_dir, "/workers.new", NULL);
    }
    supervise(NULL);
}

void sip_fcgi_shutdown(void)
{
    int i, j, k;

    for (i = 0; all_targets && i < all_targets->nelts; i++) {
        sip_fcgi_target_t *t = APR_ARRAY_IDX(all_targets, i, sip_fcgi_target_t *);
        while (t->qhead) {
            sip_fcgi_req_t *r = t->qhead;
            t->qhead = r->next;
            apr_pool_destroy(r->pool);
        }
        t->qtail = NULL;
        t->queued = 0;
        while (t->conns) {
            for (j = 0; j < FCGI_MAX_DEPTH; j++)
                if (t->conns->slots[j])
                    t->conns->slots[j]->sink = NULL;
            conn_drop(t->conns, 0);
        }
        for (j = 0; t->managed && j < t->max; j++)
            if (t->workers[j].pid)
                kill(-t->workers[j].pid, SIGTERM);
        /* a second for them to go, then no mercy; none is left unreaped */
        for (k = 0; t->managed && k < 100 && live_workers(t); k++) {
            for (j = 0; j < t->max; j++) {
                worker_t *w = &t->workers[j];
                if (w->pid && waitpid(w->pid, NULL, WNOHANG) == w->pid) {
                    w->pid = 0;
                    unlink(w->sock_path);
                }
            }
            if (live_workers(t))
                apr_sleep(apr_time_from_msec(10));
        }
        for (j = 0; t->managed && j < t->max; j++)
            if (t->workers[j].pid) {
                kill(-t->workers[j].pid, SIGKILL);
                waitpid(t->workers[j].pid, NULL, 0);
                unlink(t->workers[j].sock_path);
                t->workers[j].pid = 0;
            }
    }
    if (state_file)
        unlink(state_file);
    if (sock_dir)
        rmdir(sock_dir);
    if (fcgi_loop)
        sip_timer_cancel(fcgi_loop, &supervise_timer);
}
