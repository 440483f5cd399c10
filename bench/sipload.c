/*
 * bench/sipload.c: a closed-loop OPTIONS load generator for SIP over TLS,
 * WebSocket (ws) and secure WebSocket (wss), for bench/run.  sipp has no
 * WebSocket transport, and Debian's sipp is built without TLS.  With -m udp
 * it sends INVITEs over UDP instead and expects a 3xx with a Contact, which
 * it ACKs (RFC 3261 §17.1.1.3) before the next INVITE: the script rows'
 * INVITE -> 302 without sipp's open-loop pacing (bench/README.md says why).
 *
 *   sipload -m tls|ws|wss|tcp|udp [-c CONNS] [-n INFLIGHT] [-d SECONDS]
 *           [-p PATH] [-u USER] [-r DOMAIN] [-S] HOST PORT
 *
 * Opens CONNS connections (TLS handshake, then for ws/wss the RFC 6455
 * upgrade with "Sec-WebSocket-Protocol: sip"), all before the clock starts.
 * Then each connection keeps INFLIGHT OPTIONS outstanding: every answer
 * sends the next request.  After SECONDS it stops sending and waits up to
 * 3 s for what is still outstanding.  With -S it prints "ready" once its
 * connections are open and waits for SIGUSR1 before it starts, so that
 * bench/run can start several processes at once and measure the servers'
 * CPU over the traffic alone, without the handshakes.  The Request-URI is sip:USER@DOMAIN
 * (default HOST:PORT; a WebSocket served on an HTTP port names the SIP
 * domain instead, as a browser phone does).  Prints one line of key=value pairs:
 *
 *   sent ok bad lost closed dup elapsed rate cpu_user cpu_sys per_second=a,b,...
 *
 * For udp a "connection" is a UDP socket of its own (its own port), connected
 * to the server; nothing is retransmitted, so a lost datagram shows as an
 * unanswered request.
 *
 * ok counts 200 answers (udp: 3xx with a Contact), dup (udp) final answers
 * seen again (retransmitted: the ACK did not reach the transaction), bad
 * any other final answer (1xx are ignored), lost
 * requests never answered, closed connections the server closed.  The exit
 * code is 0 only when every request was answered 200.  Several processes
 * are run side by side by bench/run so that the generator is not the
 * bottleneck; cpu_user/cpu_sys let it check.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum mode { M_TCP, M_TLS, M_WS, M_WSS, M_UDP };

typedef struct conn {
    int fd;
    SSL *ssl;
    int idx;
    int lport;                  /* local port, for the Via of tls/tcp */
    int inflight;
    unsigned long seq;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_cap;
    int want_out;
    int dead;
    unsigned long *answered;    /* udp: the seq answered, by seq % ANSWERED */
} conn_t;

#define ANSWERED 65536

static enum mode mode = M_TLS;
static const char *host = "127.0.0.1";
static int port;
static const char *path = "/sip";
static const char *user = "bench";
static char domain[256];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int setup_idx = -1;     /* the connection being opened, for messages */

static void die(const char *what)
{
    if (setup_idx >= 0)
        fprintf(stderr, "sipload: connection %d: %s: %s\n", setup_idx + 1, what,
                errno == EAGAIN ? "no answer within 10 s" : strerror(errno));
    else
        fprintf(stderr, "sipload: %s: %s\n", what, strerror(errno));
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    *buf = realloc(*buf, c);
    if (!*buf)
        die("realloc");
    *cap = c;
}

/* Blocking I/O for the set-up phase. */
static int io_write_all(conn_t *c, const char *p, size_t n)
{
    while (n) {
        int r = c->ssl ? SSL_write(c->ssl, p, (int)n) : (int)write(c->fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int is_ws(void) { return mode == M_WS || mode == M_WSS; }
static int is_tls(void) { return mode == M_TLS || mode == M_WSS; }

static void ws_upgrade(conn_t *c)
{
    unsigned char key[16];
    char key64[32], req[512], buf[2048];
    size_t got = 0;

    RAND_bytes(key, sizeof key);
    EVP_EncodeBlock((unsigned char *)key64, key, sizeof key);
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: sip\r\n\r\n", path, host, port, key64);
    if (io_write_all(c, req, strlen(req)) < 0)
        die("upgrade request");
    /* read the 101 head byte by byte: a frame may not follow it before we
     * send, but the head must not swallow anything past its end */
    while (got < sizeof buf - 1) {
        int r = c->ssl ? SSL_read(c->ssl, buf + got, 1) : (int)read(c->fd, buf + got, 1);
        if (r <= 0)
            die("upgrade answer");
        got += (size_t)r;
        if (got >= 4 && !memcmp(buf + got - 4, "\r\n\r\n", 4))
            break;
    }
    buf[got] = '\0';
    if (strncmp(buf, "HTTP/1.1 101", 12)) {
        fprintf(stderr, "sipload: upgrade refused: %.200s\n", buf);
        exit(2);
    }
}

static int local_port_of(int fd)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &l) < 0)
        return 0;
    return ntohs(sa.sin_port);
}

static void conn_open(conn_t *c, SSL_CTX *ctx)
{
    struct sockaddr_in sa;
    int one = 1;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "sipload: %s is not an IPv4 address\n", host);
        exit(2);
    }
    if (mode == M_UDP) {
        /* a socket per "connection", connected: recv() sees only the
         * server; 4 MB of receive buffer as sipp's -buff_size */
        int sz = 4 << 20;
        c->fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (c->fd < 0)
            die("socket");
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("connect");
        c->lport = local_port_of(c->fd);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->answered = calloc(ANSWERED, sizeof *c->answered);
        if (!c->answered)
            die("calloc");
        return;
    }
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        die("socket");
    /* a server that never answers the handshake (a full backlog) fails
     * the run with a message instead of hanging it */
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->lport = local_port_of(c->fd);
    if (is_tls()) {
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        if (SSL_connect(c->ssl) != 1)
            die("TLS handshake");
    }
    if (is_ws())
        ws_upgrade(c);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

/* udp: one INVITE (with the SDP offer of bench/invite302.xml), sent at once. */
static const char sdp[] =
    "v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

static int send_invite(conn_t *c, int pid)
{
    char msg[1536];
    int n;

    c->seq++;
    n = snprintf(msg, sizeof msg,
                 "INVITE sip:%s@%s SIP/2.0\r\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%d-%d-%lu;rport\r\n"
                 "Max-Forwards: 70\r\n"
                 "From: <sip:load@%s>;tag=%d-%d\r\n"
                 "To: <sip:%s@%s>\r\n"
                 "Call-ID: %d-%d-%lu@sipload\r\n"
                 "CSeq: 1 INVITE\r\n"
                 "Contact: <sip:load@127.0.0.1:%d>\r\n"
                 "Content-Type: application/sdp\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 user, domain, c->lport, pid, c->idx, c->seq, host, pid, c->idx,
                 user, domain, pid, c->idx, c->seq, c->lport, sizeof sdp - 1, sdp);
    if (send(c->fd, msg, (size_t)n, 0) != n)
        return -1;
    c->inflight++;
    return 0;
}

/* The value of header name (or its compact form) in a message's head. */
static const char *header(const char *p, size_t n, const char *name, const char *compact,
                          size_t *len)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    size_t nl = strlen(name), cl = strlen(compact);

    if (!end)
        end = p + n;
    for (const char *l = memmem(p, (size_t)(end - p), "\r\n", 2); l && l < end; ) {
        const char *v = NULL, *e;
        l += 2;
        if ((size_t)(end - l) > nl && !strncasecmp(l, name, nl) && (l[nl] == ':' || l[nl] == ' '))
            v = l + nl;
        else if ((size_t)(end - l) > cl && !strncasecmp(l, compact, cl)
                 && (l[cl] == ':' || l[cl] == ' '))
            v = l + cl;
        e = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!e)
            e = end;
        if (v) {
            while (v < e && (*v == ' ' || *v == ':'))
                v++;
            *len = (size_t)(e - v);
            return v;
        }
        l = e;
    }
    return NULL;
}

/* udp: the ACK of a non-2xx final answer: the INVITE's Via (same branch),
 * Request-URI, From, Call-ID and CSeq number, the answer's To (its tag). */
static void send_ack(conn_t *c, int pid, const char *p, size_t n)
{
    char msg[1024];
    size_t tl, il;
    const char *to = header(p, n, "To", "t", &tl);
    const char *id = header(p, n, "Call-ID", "i", &il);
    unsigned long seq;
    int m;

    if (!to || !id || sscanf(id, "%*d-%*d-%lu@", &seq) != 1)
        return;
    m = snprintf(msg, sizeof msg,
                 "ACK sip:%s@%s SIP/2.0\r\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%d-%d-%lu;rport\r\n"
                 "Max-Forwards: 70\r\n"
                 "From: <sip:load@%s>;tag=%d-%d\r\n"
                 "To: %.*s\r\n"
                 "Call-ID: %.*s\r\n"
                 "CSeq: 1 ACK\r\n"
                 "Content-Length: 0\r\n\r\n",
                 user, domain, c->lport, pid, c->idx, seq, host, pid, c->idx,
                 (int)tl, to, (int)il, id);
    if (m > 0 && m < (int)sizeof msg)
        (void)send(c->fd, msg, (size_t)m, 0);
}

/* Queue one OPTIONS on c (a masked text frame for ws/wss: RFC 6455 §5.3,
 * one SIP message per frame: RFC 7118 §5). */
static void queue_request(conn_t *c, int pid)
{
    char msg[1024];
    char via[128];
    int n;

    c->seq++;
    if (is_ws())
        snprintf(via, sizeof via, "SIP/2.0/%s b%dc%d.invalid", mode == M_WS ? "WS" : "WSS",
                 pid, c->idx);
    else
        snprintf(via, sizeof via, "SIP/2.0/%s 127.0.0.1:%d", mode == M_TLS ? "TLS" : "TCP",
                 c->lport);
    n = snprintf(msg, sizeof msg,
                 "OPTIONS sip:%s@%s SIP/2.0\r\n"
                 "Via: %s;branch=z9hG4bK-%d-%d-%lu;rport\r\n"
                 "Max-Forwards: 70\r\n"
                 "From: <sip:load@%s>;tag=%d-%d\r\n"
                 "To: <sip:%s@%s>\r\n"
                 "Call-ID: %d-%d-%lu@sipload\r\n"
                 "CSeq: %lu OPTIONS\r\n"
                 "Accept: application/sdp\r\n"
                 "Content-Length: 0\r\n\r\n",
                 user, domain, via, pid, c->idx, c->seq, host, pid, c->idx,
                 user, domain, pid, c->idx, c->seq, c->seq);
    if (!is_ws()) {
        grow(&c->out, &c->out_cap, c->out_len + (size_t)n);
        memcpy(c->out + c->out_len, msg, (size_t)n);
        c->out_len += (size_t)n;
    } else {
        unsigned char h[8], mask[4];
        size_t hl = 0;
        h[hl++] = 0x81;                         /* FIN, text */
        if (n < 126) {
            h[hl++] = 0x80 | (unsigned char)n;
        } else {
            h[hl++] = 0x80 | 126;
            h[hl++] = (unsigned char)(n >> 8);
            h[hl++] = (unsigned char)n;
        }
        RAND_bytes(mask, 4);
        grow(&c->out, &c->out_cap, c->out_len + hl + 4 + (size_t)n);
        memcpy(c->out + c->out_len, h, hl);
        memcpy(c->out + c->out_len + hl, mask, 4);
        for (int i = 0; i < n; i++)
            c->out[c->out_len + hl + 4 + i] = msg[i] ^ (char)mask[i & 3];
        c->out_len += hl + 4 + (size_t)n;
    }
    c->inflight++;
}


/* Write what is queued; returns -1 when the connection is gone. */
static int flush_out(conn_t *c)
{
    size_t off = 0;
    c->want_out = 0;
    while (off < c->out_len) {
        int r;
        if (c->ssl) {
            r = SSL_write(c->ssl, c->out + off, (int)(c->out_len - off));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    c->want_out = 1;
                    break;
                }
                return -1;
            }
        } else {
            r = (int)write(c->fd, c->out + off, c->out_len - off);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    c->want_out = 1;
                    break;
                }
                return -1;
            }
        }
        off += (size_t)r;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    return 0;
}

/* One complete SIP message at the head of c->in: its length, or 0. */
static size_t sip_msg_len(const char *p, size_t n, size_t *body_at)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - p) + 4;
    size_t clen = 0;
    for (const char *l = p; l < end; ) {
        const char *nl = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!nl)
            nl = end;
        if ((nl - l > 15 && !strncasecmp(l, "Content-Length:", 15)) ||
            (nl - l > 2 && !strncasecmp(l, "l:", 2)))
            clen = strtoul(strchr(l, ':') + 1, NULL, 10);
        l = nl + 2;
    }
    *body_at = head;
    return head + clen <= n ? head + clen : 0;
}

typedef struct counts {
    unsigned long sent, ok, bad, closed, dup;
    unsigned long *per_sec;
    int nsec;
} counts_t;

static void got_response(const char *p, size_t n, counts_t *ct, double t0, conn_t *c)
{
    int code, good;
    size_t cl;
    if (n < 12 || strncmp(p, "SIP/2.0 ", 8))
        return;                                 /* a request or garbage: not ours */
    code = atoi(p + 8);
    if (code < 200)
        return;
    if (mode == M_UDP) {
        /* a final answer seen twice (its ACK went unmatched or was lost):
         * ACK it again, count it once */
        size_t il;
        const char *id = header(p, n, "Call-ID", "i", &il);
        unsigned long seq;
        if (!id || sscanf(id, "%*d-%*d-%lu@", &seq) != 1)
            return;
        if (c->answered[seq % ANSWERED] == seq) {
            ct->dup++;
            if (code >= 300)
                send_ack(c, (int)getpid(), p, n);
            return;
        }
        c->answered[seq % ANSWERED] = seq;
    }
    c->inflight--;
    if (mode == M_UDP) {
        if (code >= 300)
            send_ack(c, (int)getpid(), p, n);
        good = code >= 300 && code < 400 && header(p, n, "Contact", "m", &cl) && cl > 0;
    } else
        good = code == 200;
    if (good) {
        int s = (int)(now() - t0);
        ct->ok++;
        if (s >= 0 && s < ct->nsec)
            ct->per_sec[s]++;
    } else {
        if (ct->bad < 3)
            fprintf(stderr, "sipload: answer %.60s\n", p);
        ct->bad++;
    }
}

/* Parse what c->in holds; returns -1 on a close frame or a framing error. */
static int parse_in(conn_t *c, counts_t *ct, double t0)
{
    size_t off = 0;
    for (;;) {
        char *p = c->in + off;
        size_t n = c->in_len - off;
        if (!is_ws()) {
            size_t body_at, len;
            while (n >= 2 && p[0] == '\r' && p[1] == '\n') {   /* keep-alive CRLFs */
                p += 2; n -= 2; off += 2;
            }
            len = sip_msg_len(p, n, &body_at);
            if (!len)
                break;
            got_response(p, len, ct, t0, c);
            off += len;
        } else {
            size_t hl = 2, plen;
            if (n < 2)
                break;
            unsigned op = (unsigned char)p[0] & 0x0f;
            plen = (unsigned char)p[1] & 0x7f;
            if ((unsigned char)p[1] & 0x80)
                return -1;                      /* a server must not mask */
            if (plen == 126) {
                if (n < 4)
                    break;
                plen = ((size_t)(unsigned char)p[2] << 8) | (unsigned char)p[3];
                hl = 4;
            } else if (plen == 127) {
                if (n < 10)
                    break;
                plen = 0;
                for (int i = 2; i < 10; i++)
                    plen = (plen << 8) | (unsigned char)p[i];
                hl = 10;
            }
            if (n < hl + plen)
                break;
            if (op == 0x8)
                return -1;
            if (op == 0x1 || op == 0x2)
                got_response(p + hl, plen, ct, t0, c);
            off += hl + plen;
        }
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 0;
}

static int read_in(conn_t *c, counts_t *ct, double t0)
{
    if (mode == M_UDP) {
        /* one datagram, one message */
        char buf[65536];
        for (;;) {
            ssize_t r = recv(c->fd, buf, sizeof buf - 1, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
            buf[r] = '\0';
            got_response(buf, (size_t)r, ct, t0, c);
        }
    }
    for (;;) {
        int r;
        grow(&c->in, &c->in_cap, c->in_len + 16384);
        if (c->ssl) {
            r = SSL_read(c->ssl, c->in + c->in_len, 16384);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    break;
                return -1;
            }
        } else {
            r = (int)read(c->fd, c->in + c->in_len, 16384);
            if (r == 0)
                return -1;
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                return -1;
            }
        }
        c->in_len += (size_t)r;
    }
    return parse_in(c, ct, t0);
}

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
    (void)sig;
    go = 1;
}

int main(int argc, char **argv)
{
    int nconn = 4, inflight = 4, opt, ep, pid = getpid();
    double secs = 4, t0, t_end, t_stop;
    SSL_CTX *ctx = NULL;
    conn_t *cs;
    counts_t ct;
    struct epoll_event *evs;

    int sync = 0;
    while ((opt = getopt(argc, argv, "m:c:n:d:p:u:r:S")) != -1) {
        switch (opt) {
        case 'm':
            mode = !strcmp(optarg, "tls") ? M_TLS : !strcmp(optarg, "ws") ? M_WS
                 : !strcmp(optarg, "wss") ? M_WSS : !strcmp(optarg, "tcp") ? M_TCP
                 : !strcmp(optarg, "udp") ? M_UDP : -1;
            if ((int)mode < 0) {
                fprintf(stderr, "sipload: -m tls|ws|wss|tcp|udp\n");
                return 2;
            }
            break;
        case 'c': nconn = atoi(optarg); break;
        case 'n': inflight = atoi(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'p': path = optarg; break;
        case 'u': user = optarg; break;
        case 'r': snprintf(domain, sizeof domain, "%s", optarg); break;
        case 'S': sync = 1; break;
        default:
            fprintf(stderr, "usage: sipload -m tls|ws|wss|tcp|udp [-c conns] [-n inflight] "
                            "[-d seconds] [-p path] [-u user] [-r domain] [-S] host port\n");
            return 2;
        }
    }
    if (argc - optind != 2 || nconn < 1 || inflight < 1 || secs <= 0) {
        fprintf(stderr, "usage: sipload -m tls|ws|wss|tcp|udp [-c conns] [-n inflight] "
                        "[-d seconds] [-p path] [-u user] [-r domain] [-S] host port\n");
        return 2;
    }
    /* a connection the server closed must count as closed, not kill us */
    signal(SIGPIPE, SIG_IGN);
    /* -S: SIGUSR1 stays blocked until sigsuspend, so it cannot be lost */
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sync) {
        signal(SIGUSR1, on_usr1);
        sigprocmask(SIG_BLOCK, &usr1, &old);
    }
    host = argv[optind];
    port = atoi(argv[optind + 1]);
    if (!domain[0])
        snprintf(domain, sizeof domain, "%s:%d", host, port);
    if (is_tls()) {
        /* the bench's certificate is self-signed: no verification */
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
            die("SSL_CTX_new");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    cs = calloc((size_t)nconn, sizeof *cs);
    evs = calloc((size_t)nconn, sizeof *evs);
    ep = epoll_create1(0);
    if (!cs || !evs || ep < 0)
        die("setup");
    for (int i = 0; i < nconn; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cs[i] };
        cs[i].idx = setup_idx = i;
        conn_open(&cs[i], ctx);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    setup_idx = -1;
    if (sync) {
        printf("ready\n");
        fflush(stdout);
        while (!go)
            sigsuspend(&old);
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    memset(&ct, 0, sizeof ct);
    ct.nsec = (int)secs + 5;
    ct.per_sec = calloc((size_t)ct.nsec, sizeof *ct.per_sec);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    t0 = now();
    t_end = t0 + secs;
    t_stop = t_end + 3;
    for (;;) {
        double t = now();
        int sending = t < t_end, outstanding = 0, alive = 0;
        for (int i = 0; i < nconn; i++) {
            conn_t *c = &cs[i];
            if (c->dead)
                continue;
            alive++;
            outstanding += c->inflight;
            if (sending) {
                while (c->inflight < inflight) {
                    if (mode == M_UDP) {
                        if (send_invite(c, pid) < 0) {
                            /* a full socket buffer: try again on the next turn */
                            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                                break;
                            c->dead = 1;
                            ct.closed++;
                            break;
                        }
                    } else
                        queue_request(c, pid);
                    ct.sent++;
                }
                if (c->dead)
                    continue;
            }
            if (c->out_len && flush_out(c) < 0) {
                c->dead = 1;
                ct.closed++;
                continue;
            }
            struct epoll_event ev = { .events = EPOLLIN | (c->want_out ? EPOLLOUT : 0),
                                      .data.ptr = c };
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
        if (!alive || t >= t_stop || (!sending && !outstanding))
            break;
        int n = epoll_wait(ep, evs, nconn, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if (read_in(c, &ct, t0) < 0) {
                c->dead = 1;
                ct.closed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    double elapsed = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    unsigned long lost = 0;
    for (int i = 0; i < nconn; i++)
        lost += (unsigned long)cs[i].inflight;
    /* the rate over the sending time: answers after it are the drain */
    double window = elapsed < secs ? elapsed : secs;
    unsigned long in_window = 0;
    for (int s = 0; s < (int)secs && s < ct.nsec; s++)
        in_window += ct.per_sec[s];
    printf("sent=%lu ok=%lu bad=%lu lost=%lu closed=%lu dup=%lu elapsed=%.3f rate=%.1f "
           "cpu_user=%.3f cpu_sys=%.3f per_second=",
           ct.sent, ct.ok, ct.bad, lost, ct.closed, ct.dup, elapsed,
           (int)secs > 0 ? in_window / (double)(int)secs : ct.ok / window,
           (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6,
           (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6);
    for (int s = 0; s < (int)secs && s < ct.nsec; s++)
        printf("%s%lu", s ? "," : "", ct.per_sec[s]);
    printf("\n");
    return ct.bad || lost || ct.closed || ct.dup ? 1 : 0;
}
