#include "sip_transport.h"
#include "sip_log.h"
#include "sip_tls.h"
#include "sip_ws.h"
#include "sip_stats.h"
#include "sip_stun.h"
#include "sip_handover.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#include "apr_strings.h"
#include "apr_portable.h"
#include "apr_lib.h"
#include "apr_hash.h"

struct sip_udp {
    apr_socket_t *sock;
    int fd;
    sip_sockaddr_t local;
    void *vhost;
    sip_io_t io;
};

typedef struct sip_outbuf {
    struct sip_outbuf *next;
    apr_size_t len, off;
    char data[1];
} sip_outbuf_t;

typedef struct tcp_list {
    sip_tcp_conn_t *head, *tail;    /* head: idle the longest */
} tcp_list_t;

/* Accepted connections from one address (IPv6: one /64). */
typedef struct ip_count {
    unsigned char key[8];
    apr_size_t klen;
    apr_size_t n;
} ip_count_t;

struct sip_tcp_conn {
    apr_pool_t *pool;
    apr_socket_t *sock;
    int fd;
    sip_tp_kind_t kind;     /* TCP, TLS, WS or WSS */
    sip_tls_conn_t *tls;    /* the TLS layer (TLS, and WSS terminated here), or NULL */
    void *ws;               /* WebSocket framing state (sip_ws.c), NULL before/without it */
    int relayed;            /* an MPM child relays it (WSS over mod_ssl): see sip_handoff_t */
    const char *relay_subject;  /* that relay's client certificate subject, or NULL */
    sip_io_t io;
    sip_sockaddr_t peer, local;
    void *vhost;
    sip_tp_limits_t lim;
    char *in;
    apr_size_t in_len, in_cap;
    sip_outbuf_t *out_head, *out_tail;
    int refs;
    int closed;
    int close_after_flush;
    int connecting;         /* outbound, connect() in progress */
    const char *key;        /* "ip:port" of the peer, for reuse */
    sip_timer_t idle;       /* SipTcpIdleTimeout: reset by whole messages and CRLF pings */
    sip_timer_t msg;        /* SipTcpMessageTimeout for the message begun, or the linger */
    int holds;              /* source copies held (transactions, scripts, proxy) */
    tcp_list_t *list;       /* idle_conns (holds == 0) or busy_conns */
    sip_tcp_conn_t *prev, *next;
    ip_count_t *ipc;        /* accepted: counted against its address */
    int skip_line;          /* discarding the rest of an over-long header line */
    int trimmed;            /* a header line of this message was cut short */
    int lingering;          /* answered, shut down for writing, draining input */
    apr_uint64_t flow_id;   /* its flow id once asked for (sip_source_flow_id), else 0 */
    int remote;             /* a stand-in for another engine's flow 'flow_id': sends go
                             * there over the hand-over channel (flows, end of file) */
    apr_time_t closed_at;   /* remote: when it was learnt closed */
    apr_int16_t tls_read_waits;     /* TLS: what the last read waits for (POLLOUT or 0) */
    apr_int16_t tls_write_waits;    /* TLS: what queued output waits for (POLLIN/POLLOUT) */
    int http_checked;       /* TCP/TLS: its first bytes are not an HTTP upgrade ("GET ") */
    int tls_up;                     /* TLS: handshake done (it runs under SipTcpMessageTimeout) */
    int tls_retry;                  /* TLS: the head of the output waits to be written again */
    int corked;                     /* TLS: answers queue while input is processed */
    apr_size_t out_bytes;   /* queued in out_head.. and not yet written */
};

static sip_loop_t *tp_loop;
static apr_pool_t *tp_pool;
static sip_tp_deliver_cb tp_deliver;
static sip_tp_limits_cb tp_limits;
static apr_size_t tcp_open;
static apr_hash_t *tcp_by_peer;     /* "ip:port" -> sip_tcp_conn_t */
static apr_array_header_t *udps;    /* sip_udp_t * */
typedef struct {
    void *vhost;
    sip_udp_t *u;
} udp_alias_t;
static apr_array_header_t *udp_aliases; /* name-based vhosts sharing a socket */
static sip_tp_closed_cb tp_closed;
static void flow_forget(sip_tcp_conn_t *c);     /* flows: at the end of the file */
static void flow_reset(void);
static void remote_unused(sip_tcp_conn_t *c);

/* Connection limits: LRU lists make "longest idle" O(1). */
static tcp_list_t idle_conns, busy_conns;
static apr_hash_t *conns_by_ip;     /* ip key -> ip_count_t (malloc'ed) */
static apr_size_t max_conns, max_per_ip;

static sip_log_rate_t rl_refused = SIP_LOG_RATE_INIT("refused TCP connections");
static sip_log_rate_t rl_evicted = SIP_LOG_RATE_INIT("idle TCP connections closed for room");
static sip_log_rate_t rl_timeout = SIP_LOG_RATE_INIT("TCP message timeouts");
static sip_log_rate_t rl_stun = SIP_LOG_RATE_INIT("dropped STUN messages");

#define TCP_LINGER apr_time_from_sec(2)     /* to drain input after an error answer */

void sip_transport_on_close(sip_tp_closed_cb cb)
{
    tp_closed = cb;
}

void sip_transport_init(sip_loop_t *loop, apr_pool_t *p, sip_tp_deliver_cb deliver,
                        sip_tp_limits_cb limits)
{
    tp_loop = loop;
    tp_pool = p;
    tp_deliver = deliver;
    tp_limits = limits;
    tcp_by_peer = apr_hash_make(p);
    conns_by_ip = apr_hash_make(p);
    idle_conns.head = idle_conns.tail = busy_conns.head = busy_conns.tail = NULL;
    udps = apr_array_make(p, 4, sizeof(sip_udp_t *));
    udp_aliases = NULL;
    flow_reset();
}

void sip_transport_set_conn_limits(apr_size_t max_total, apr_size_t max_ip)
{
    max_conns = max_total;
    max_per_ip = max_ip;
}

static const char *const tp_via_names[SIP_TP_COUNT] = {"UDP", "TCP", "TLS", "WS", "WSS"};
static const char *const tp_params[SIP_TP_COUNT] = {"udp", "tcp", "tls", "ws", "wss"};

const char *sip_tp_via_name(sip_tp_kind_t k)
{
    return (unsigned)k < SIP_TP_COUNT ? tp_via_names[k] : "UDP";
}

const char *sip_tp_param(sip_tp_kind_t k)
{
    return (unsigned)k < SIP_TP_COUNT ? tp_params[k] : "udp";
}

int sip_tp_from_name(const char *name)
{
    int k;

    for (k = 0; name && k < SIP_TP_COUNT; k++)
        if (!strcasecmp(name, tp_params[k]))
            return k;
    return -1;
}

apr_size_t sip_tcp_open_count(void)
{
    return tcp_open;
}

/* WebSocket connections (WS and WSS) open now and in all, for mod_status. */
static apr_size_t ws_open;

static void ws_count(int delta)
{
    if (delta > 0)
        sip_stats->ws_conns++;
    ws_open += delta;
    sip_stats->now.ws = ws_open;
}

/* ---- addresses ---- */

static const char *format_ip(const sip_sockaddr_t *a, char *buf, socklen_t size)
{
    const void *src;

    /* IPv4 by hand: glibc's inet_ntop formats it with sprintf, a visible
     * share of an OPTIONS (the source address is written several times) */
    if (a->ss.ss_family == AF_INET && size >= 16) {
        const unsigned char *o = (const unsigned char *)
                                 &((const struct sockaddr_in *)&a->ss)->sin_addr;
        char *b = buf;
        int i;

        for (i = 0; i < 4; i++) {
            if (o[i] >= 100)
                *b++ = (char)('0' + o[i] / 100);
            if (o[i] >= 10)
                *b++ = (char)('0' + o[i] / 10 % 10);
            *b++ = (char)('0' + o[i] % 10);
            *b++ = i < 3 ? '.' : '\0';
        }
        return buf;
    }
    if (a->ss.ss_family == AF_INET6)
        src = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
    else
        src = &((const struct sockaddr_in *)&a->ss)->sin_addr;
    if (!inet_ntop(a->ss.ss_family, src, buf, size))
        return "0.0.0.0";
    return buf;
}

const char *sip_sockaddr_ip(apr_pool_t *p, const sip_sockaddr_t *a)
{
    char buf[INET6_ADDRSTRLEN];
    return apr_pstrdup(p, format_ip(a, buf, sizeof(buf)));
}

int sip_sockaddr_port(const sip_sockaddr_t *a)
{
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

apr_status_t sip_sockaddr_set(sip_sockaddr_t *a, const char *ip, int port)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;

    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a->len = sizeof(*v4);
        return APR_SUCCESS;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        a->len = sizeof(*v6);
        return APR_SUCCESS;
    }
    return APR_EINVAL;
}

/* ---- UDP ---- */

apr_status_t sip_udp_open(apr_socket_t **sock, apr_sockaddr_t *sa, apr_pool_t *p)
{
    return sip_udp_open_shared(sock, sa, p, 0);
}

apr_status_t sip_udp_open_shared(apr_socket_t **sock, apr_sockaddr_t *sa, apr_pool_t *p,
                                 int reuseport)
{
    apr_status_t rv;
    int fd, size = 4 * 1024 * 1024, on = 1;

    rv = apr_socket_create(sock, sa->family, SOCK_DGRAM, APR_PROTO_UDP, p);
    if (rv != APR_SUCCESS)
        return rv;
    apr_socket_opt_set(*sock, APR_SO_REUSEADDR, 1);
    /* Datagrams queue here while the engine restarts (graceful restart). */
    if (apr_os_sock_get(&fd, *sock) == APR_SUCCESS) {
        sip_sock_bufsize(fd, SO_RCVBUF, size);
        /* Several engines: one socket each in a group the kernel spreads
         * datagrams over by source address and port. */
        if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) < 0) {
            rv = errno;
            apr_socket_close(*sock);
            return rv;
        }
    }
    rv = apr_socket_bind(*sock, sa);
    if (rv != APR_SUCCESS)
        apr_socket_close(*sock);
    return rv;
}

/* RFC 5626 §8: a limited STUN server on every UDP port SIP is served on,
 * for the Binding requests clients send as keep-alives (§4.4.2). */
static void udp_stun(sip_udp_t *u, const unsigned char *buf, apr_size_t len,
                     const sip_source_t *src)
{
    unsigned char out[SIP_STUN_MAX_ANSWER];
    sip_stun_req_t req;
    apr_size_t n = 0;

    if (sip_stun_parse(buf, len, &req) == SIP_STUN_ANSWER
        && (n = sip_stun_answer(&req, (const struct sockaddr *)&src->peer.ss, out, sizeof(out)))) {
        if (sendto(u->fd, out, n, 0, (const struct sockaddr *)&src->peer.ss, src->peer.len) < 0)
            sip_stats->send_errors++;
        else
            sip_stats->stun_bindings++;
        return;
    }
    sip_stats->stun_dropped++;
    {
        char ip[INET6_ADDRSTRLEN];

        format_ip(&src->peer, ip, sizeof(ip));
        sip_log_limited(&rl_stun, ip, 0, APLOG_DEBUG, u->vhost,
                        "sip: dropped %s from %s:%d (%" APR_SIZE_T_FMT " bytes)",
                        req.why ? req.why : "STUN request with no usable address", ip,
                        sip_sockaddr_port(&src->peer), len);
    }
}

static void udp_readable(void *baton, apr_int16_t ev)
{
    static char buf[65536];
    sip_udp_t *u = baton;
    int i;

    (void)ev;
    /* Bounded so that one busy socket cannot starve timers and TCP. */
    for (i = 0; i < 64; i++) {
        sip_source_t src;
        ssize_t n;

        memset(&src, 0, sizeof(src));
        src.peer.len = sizeof(src.peer.ss);
        n = recvfrom(u->fd, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&src.peer.ss,
                     &src.peer.len);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                             "sip: UDP receive failed");
            return;
        }
        if (n == 0)
            continue;
        src.kind = SIP_TP_UDP;
        src.udp = u;
        src.local = u->local;
        src.vhost = u->vhost;
        if ((unsigned char)buf[0] <= 0x01) {
            /* RFC 5626 §4.4.2: STUN (its first octet is 0 or 1), never SIP */
            udp_stun(u, (const unsigned char *)buf, (apr_size_t)n, &src);
            continue;
        }
        buf[n] = '\0';
        tp_deliver(buf, (apr_size_t)n, 0, &src);
    }
}

static int same_addr(const sip_sockaddr_t *a, const sip_sockaddr_t *b)
{
    const struct sockaddr *x = (const struct sockaddr *)&a->ss;
    const struct sockaddr *y = (const struct sockaddr *)&b->ss;

    if (x->sa_family != y->sa_family)
        return 0;
    if (x->sa_family == AF_INET) {
        const struct sockaddr_in *p = (const void *)x, *q = (const void *)y;
        return p->sin_port == q->sin_port && p->sin_addr.s_addr == q->sin_addr.s_addr;
    }
    if (x->sa_family == AF_INET6) {
        const struct sockaddr_in6 *p = (const void *)x, *q = (const void *)y;
        return p->sin6_port == q->sin6_port
               && memcmp(&p->sin6_addr, &q->sin6_addr, sizeof(p->sin6_addr)) == 0;
    }
    return 0;
}

int sip_transport_udp_source(const sip_sockaddr_t *local, void *vhost, sip_source_t *out)
{
    int i;

    for (i = 0; udps && i < udps->nelts; i++) {
        sip_udp_t *u = APR_ARRAY_IDX(udps, i, sip_udp_t *);
        if (same_addr(&u->local, local)) {
            memset(out, 0, sizeof(*out));
            out->kind = SIP_TP_UDP;
            out->udp = u;
            out->local = u->local;
            out->vhost = vhost;
            return 1;
        }
    }
    return 0;
}

apr_status_t sip_udp_serve(apr_socket_t *sock, void *vhost)
{
    sip_udp_t *u = apr_pcalloc(tp_pool, sizeof(*u));
    apr_status_t rv;

    u->sock = sock;
    u->vhost = vhost;
    rv = apr_os_sock_get(&u->fd, sock);
    if (rv != APR_SUCCESS)
        return rv;
    u->local.len = sizeof(u->local.ss);
    getsockname(u->fd, (struct sockaddr *)&u->local.ss, &u->local.len);
    fcntl(u->fd, F_SETFL, fcntl(u->fd, F_GETFL) | O_NONBLOCK);
    *(sip_udp_t **)apr_array_push(udps) = u;
    sip_io_init_socket(&u->io, sock, udp_readable, u);
    return sip_io_watch(tp_loop, &u->io, APR_POLLIN);
}

/* ---- stream framing (RFC 3261 §18.3: Content-Length frames TCP) ---- */

static int header_name_is(const char *line, apr_size_t len, const char *name)
{
    apr_size_t n = strlen(name), i = n;

    if (len < n || strncasecmp(line, name, n) != 0)
        return 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i < len && line[i] == ':';
}

int sip_stream_frame(const char *buf, apr_size_t len, apr_size_t max_header,
                     apr_size_t max_body, apr_size_t *msg_len)
{
    apr_size_t pos = 0, header_end = 0;
    apr_int64_t clen = 0;
    int have_clen = 0, bad_clen = 0;

    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        apr_size_t line_len, next;

        if (!nl)
            break;
        next = (apr_size_t)(nl - buf) + 1;
        line_len = (apr_size_t)(nl - (buf + pos));
        if (line_len && buf[pos + line_len - 1] == '\r')
            line_len--;
        if (line_len == 0 && pos > 0) {
            header_end = next;
            break;
        }
        if (!have_clen && (header_name_is(buf + pos, line_len, "Content-Length")
                           || header_name_is(buf + pos, line_len, "l"))) {
            const char *v = memchr(buf + pos, ':', line_len) + 1;
            const char *end = buf + pos + line_len;
            char *stop;
            char num[24];
            apr_size_t vl;

            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            vl = (apr_size_t)(end - v);
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            have_clen = 1;
            if (vl == 0 || vl >= sizeof(num))
                bad_clen = 1;
            else {
                memcpy(num, v, vl);
                num[vl] = '\0';
                clen = apr_strtoi64(num, &stop, 10);
                if (*stop || clen < 0 || !apr_isdigit(num[0]))
                    bad_clen = 1;
            }
        }
        pos = next;
        if (pos > max_header) {
            *msg_len = pos;
            return -1;
        }
    }
    if (!header_end) {
        /* A lone CR may be the first half of the final CRLF. */
        if (len - (len && buf[len - 1] == '\r') > max_header) {
            *msg_len = len;
            return -1;
        }
        return 0;
    }
    /* Framing is lost, but the whole header is there for the answer. */
    if (bad_clen || (apr_uint64_t)clen > max_body) {
        *msg_len = header_end;
        return -2;
    }
    if (!have_clen) {
        *msg_len = header_end;
        return -3;
    }
    if (len < header_end + (apr_size_t)clen)
        return 0;
    *msg_len = header_end + (apr_size_t)clen;
    return 1;
}

/* ---- TCP connections ---- */

static void tcp_close(sip_tcp_conn_t *c, const char *why);

static const char *peer_text(sip_tcp_conn_t *c)
{
    return apr_psprintf(c->pool, "%s:%d", sip_sockaddr_ip(c->pool, &c->peer),
                        sip_sockaddr_port(&c->peer));
}

/* -- the idle and busy lists (least recently used first) -- */

static void list_unlink(sip_tcp_conn_t *c)
{
    tcp_list_t *l = c->list;

    if (!l)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->list = NULL;
}

static void list_append(tcp_list_t *l, sip_tcp_conn_t *c)
{
    list_unlink(c);
    c->list = l;
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_prepend(tcp_list_t *l, sip_tcp_conn_t *c)
{
    list_unlink(c);
    c->list = l;
    c->next = l->head;
    c->prev = NULL;
    if (l->head)
        l->head->prev = c;
    else
        l->tail = c;
    l->head = c;
}

/* A whole message went through: most recently used now. */
static void tcp_touch(sip_tcp_conn_t *c)
{
    if (!c->closed && !c->lingering)
        list_append(c->holds ? &busy_conns : &idle_conns, c);
}

/* -- per-address counts -- */

/* IPv4 (also v4-mapped): the address; IPv6: its /64, which one host
 * usually has to itself. */
static apr_size_t ip_key(const sip_sockaddr_t *a, unsigned char key[8])
{
    if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(v6)) {
            memcpy(key, v6->s6_addr + 12, 4);
            return 4;
        }
        memcpy(key, v6->s6_addr, 8);
        return 8;
    }
    memcpy(key, &((const struct sockaddr_in *)&a->ss)->sin_addr, 4);
    return 4;
}

static ip_count_t *ip_count_get(const sip_sockaddr_t *a, int create)
{
    unsigned char key[8];
    apr_size_t klen = ip_key(a, key);
    ip_count_t *ipc = apr_hash_get(conns_by_ip, key, (apr_ssize_t)klen);

    if (!ipc && create && (ipc = calloc(1, sizeof(*ipc))) != NULL) {
        memcpy(ipc->key, key, klen);
        ipc->klen = klen;
        apr_hash_set(conns_by_ip, ipc->key, (apr_ssize_t)ipc->klen, ipc);
    }
    return ipc;
}

static void ip_count_drop(sip_tcp_conn_t *c)
{
    ip_count_t *ipc = c->ipc;

    if (!ipc)
        return;
    c->ipc = NULL;
    if (--ipc->n == 0) {
        apr_hash_set(conns_by_ip, ipc->key, (apr_ssize_t)ipc->klen, NULL);
        free(ipc);
    }
}

/* Below SipTcpMaxConnections again by closing the connections idle the
 * longest (those no transaction holds); 0 when all of them are busy. */
static int tcp_make_room(const char *for_whom)
{
    while (max_conns && tcp_open >= max_conns) {
        sip_tcp_conn_t *victim = idle_conns.head;

        if (!victim)
            return 0;
        sip_stats->tcp_evicted++;
        sip_log_limited(&rl_evicted, "all", 0, APLOG_WARNING, ap_server_conf,
                        "sip: SipTcpMaxConnections (%" APR_SIZE_T_FMT ") reached: closing "
                        "the TCP connection idle the longest (from %s) for one %s",
                        max_conns, peer_text(victim), for_whom);
        tcp_close(victim, "evicted for SipTcpMaxConnections");
    }
    return 1;
}

/* -- timers -- */

static void tcp_idle_expired(void *baton)
{
    tcp_close(baton, "idle timeout");
}

static void tcp_msg_expired(void *baton)
{
    sip_tcp_conn_t *c = baton;

    if (c->lingering) {
        tcp_close(c, "lingering close done");
        return;
    }
    if (c->tls && !c->tls_up) {
        sip_log_limited(&rl_timeout, sip_sockaddr_ip(c->pool, &c->peer), 1, APLOG_INFO,
                        c->vhost ? c->vhost : ap_server_conf,
                        "sip: TLS connection %s %s closed: handshake not done within %d s "
                        "(SipTcpMessageTimeout)", c->ipc ? "from" : "to", peer_text(c),
                        (int)apr_time_sec(c->lim.msg));
        tcp_close(c, "TLS handshake timeout");
        return;
    }
    /* The "one byte every few seconds" client: a started message has to
     * end in time, whatever trickles in (cf. mod_reqtimeout). */
    sip_stats->tcp_msg_timeouts++;
    sip_log_limited(&rl_timeout, sip_sockaddr_ip(c->pool, &c->peer), 0, APLOG_INFO,
                    c->vhost ? c->vhost : ap_server_conf,
                    "sip: TCP connection from %s closed: message not complete within %d s "
                    "(SipTcpMessageTimeout), %" APR_SIZE_T_FMT " bytes buffered",
                    peer_text(c), (int)apr_time_sec(c->lim.msg), c->in_len);
    tcp_close(c, "message timeout");
}

static void tcp_destroy_if_unused(sip_tcp_conn_t *c)
{
    if (c->closed && c->refs == 0)
        sip_loop_defer_destroy(tp_loop, c->pool);
}

static void tcp_close(sip_tcp_conn_t *c, const char *why)
{
    if (c->closed)
        return;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, ap_server_conf,
                 "sip: closing %s connection from %s (%s)", sip_tp_via_name(c->kind),
                 peer_text(c), why);
    c->closed = 1;
    tcp_open--;
    sip_stats->now.tcp = tcp_open;
    if (c->kind == SIP_TP_WS || c->kind == SIP_TP_WSS)
        ws_count(-1);
    if (c->kind == SIP_TP_TLS)
        sip_stats->now.tls--;
    list_unlink(c);
    ip_count_drop(c);
    if (c->key && apr_hash_get(tcp_by_peer, c->key, APR_HASH_KEY_STRING) == c)
        apr_hash_set(tcp_by_peer, c->key, APR_HASH_KEY_STRING, NULL);
    flow_forget(c);
    if (tp_closed)
        tp_closed(c);
    sip_io_watch(tp_loop, &c->io, 0);
    sip_timer_cancel(tp_loop, &c->idle);
    sip_timer_cancel(tp_loop, &c->msg);
    if (c->tls) {
        sip_tls_free(c->tls);   /* its close_notify goes out before the close */
        c->tls = NULL;
    }
    apr_socket_close(c->sock);
    c->fd = -1;
    tcp_destroy_if_unused(c);
}

/* After an error answer that ends the stream: closing with unread input
 * would reset the connection, and the reset can destroy the answer before
 * the client reads it.  So send FIN, then read and discard for a while
 * (httpd's lingering close). */
static void tcp_linger(sip_tcp_conn_t *c)
{
    if (c->closed || c->lingering)
        return;
    c->lingering = 1;
    flow_forget(c);
    if (shutdown(c->fd, SHUT_WR) < 0) {
        tcp_close(c, "framing lost");
        return;
    }
    if (!c->holds)
        list_prepend(&idle_conns, c);   /* the first to go when room is needed */
    sip_timer_cancel(tp_loop, &c->idle);
    sip_timer_set(tp_loop, &c->msg, TCP_LINGER, tcp_msg_expired, c);
    sip_io_watch(tp_loop, &c->io, APR_POLLIN);
}

static apr_status_t tcp_conn_cleanup(void *data)
{
    sip_tcp_conn_t *c = data;
    sip_outbuf_t *o = c->out_head;

    while (o) {
        sip_outbuf_t *next = o->next;
        free(o);
        o = next;
    }
    free(c->in);
    return APR_SUCCESS;
}

static void tcp_update_watch(sip_tcp_conn_t *c)
{
    apr_int16_t ev = 0;

    if (c->connecting) {
        sip_io_watch(tp_loop, &c->io, APR_POLLOUT);
        return;
    }
    if (!c->close_after_flush)
        ev |= APR_POLLIN;
    /* TLS: a write may wait for input (a handshake, a key update) and a
     * read for output room; poll for what the layer last asked. */
    if (c->out_head)
        ev |= c->tls ? c->tls_write_waits : APR_POLLOUT;
    if (c->tls)
        ev |= c->tls_read_waits;
    sip_io_watch(tp_loop, &c->io, ev);
}

/* A handshake has SipTcpMessageTimeout to finish, like a message begun
 * (a client that stalls in it holds no more than a slow message would). */
static void tls_check_up(sip_tcp_conn_t *c)
{
    if (!c->tls_up && sip_tls_established(c->tls)) {
        c->tls_up = 1;
        sip_timer_cancel(tp_loop, &c->msg);
    }
}

/* The byte layer under a stream: the socket, or TLS on it.  Both return
 * bytes moved, 0 at end of stream (read), or -1 with errno set (EAGAIN
 * when the call must be retried after the next poll event). */
static ssize_t stream_read(sip_tcp_conn_t *c, char *buf, apr_size_t len)
{
    ssize_t n;

    if (!c->tls)
        return read(c->fd, buf, len);
    n = sip_tls_read(c->tls, buf, len);
    c->tls_read_waits = n == SIP_TLS_WANT_WRITE ? APR_POLLOUT : 0;
    tls_check_up(c);
    if (n > 0 || n == SIP_TLS_CLOSED)
        return n;
    if (n == SIP_TLS_WANT_READ || n == SIP_TLS_WANT_WRITE) {
        if (n == SIP_TLS_WANT_WRITE || (c->out_head && c->tls_write_waits == APR_POLLIN))
            tcp_update_watch(c);
        errno = EAGAIN;
    }
    else
        errno = EPROTO;
    return -1;
}

static ssize_t stream_write(sip_tcp_conn_t *c, const char *buf, apr_size_t len)
{
    ssize_t n;

    if (!c->tls)
        return write(c->fd, buf, len);
    n = sip_tls_write(c->tls, buf, len);
    tls_check_up(c);
    if (n > 0) {
        c->tls_write_waits = APR_POLLOUT;
        c->tls_retry = 0;
        return n;
    }
    if (n == SIP_TLS_WANT_READ || n == SIP_TLS_WANT_WRITE) {
        c->tls_write_waits = n == SIP_TLS_WANT_READ ? APR_POLLIN : APR_POLLOUT;
        c->tls_retry = 1;     /* OpenSSL wants the same bytes again */
        errno = EAGAIN;
    }
    else
        errno = n == SIP_TLS_CLOSED ? EPIPE : EPROTO;
    return -1;
}

/* TLS: queued messages into one buffer (up to a record's 16 kB), so that
 * a burst of answers costs one record and one write, not one each; not
 * while OpenSSL waits for the head to be written again. */
static void tls_coalesce(sip_tcp_conn_t *c)
{
    sip_outbuf_t *o = c->out_head, *m, *next;
    apr_size_t total = 0;

    if (c->tls_retry || !o || !o->next || o->off)
        return;
    for (m = o; m && total + m->len <= 16384; m = m->next)
        total += m->len;
    if (m == o || m == o->next || !(next = malloc(sizeof(*next) + total)))
        return;
    next->len = 0;
    next->off = 0;
    while (c->out_head != m) {
        sip_outbuf_t *cur = c->out_head;
        memcpy(next->data + next->len, cur->data, cur->len);
        next->len += cur->len;
        c->out_head = cur->next;
        free(cur);
    }
    next->next = m;
    c->out_head = next;
    if (!m)
        c->out_tail = next;
}

static void tcp_flush(sip_tcp_conn_t *c)
{
    if (c->connecting) {
        tcp_update_watch(c);
        return;
    }
    if (c->corked)
        return;
    if (c->tls)
        tls_coalesce(c);
    while (c->out_head) {
        sip_outbuf_t *o = c->out_head;
        ssize_t n = stream_write(c, o->data + o->off, o->len - o->off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            tcp_close(c, "write error");
            return;
        }
        o->off += (apr_size_t)n;
        c->out_bytes -= (apr_size_t)n;
        if (o->off < o->len)
            break;
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        free(o);
    }
    if (!c->out_head && c->close_after_flush) {
        tcp_linger(c);
        return;
    }
    tcp_update_watch(c);
}

/* Queue 'a' then 'b' as one buffer (a WebSocket frame header and its
 * payload go out together). */
static apr_status_t tcp_write2(sip_tcp_conn_t *c, const void *a, apr_size_t alen,
                               const char *b, apr_size_t blen)
{
    sip_outbuf_t *o;

    if (c->closed || c->lingering)
        return APR_ECONNABORTED;
    o = malloc(sizeof(*o) + alen + blen);
    if (!o)
        return APR_ENOMEM;
    o->next = NULL;
    o->len = alen + blen;
    o->off = 0;
    if (alen)
        memcpy(o->data, a, alen);
    if (blen)
        memcpy(o->data + alen, b, blen);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_bytes += o->len;
    tcp_flush(c);
    return APR_SUCCESS;
}

static apr_status_t tcp_write(sip_tcp_conn_t *c, const char *buf, apr_size_t len)
{
    return tcp_write2(c, NULL, 0, buf, len);
}

void sip_tcp_close_after_flush(sip_tcp_conn_t *c)
{
    if (c->closed || c->lingering || c->remote)
        return;
    c->close_after_flush = 1;
    /* Nothing more can be sent on it: the flow is closed now, for the other
     * engines too, not when the lingering close ends (a WebSocket closed by
     * its browser lingers; a peer's stand-in must not look open meanwhile) */
    flow_forget(c);
    if (!c->out_head)
        tcp_linger(c);
    else
        tcp_update_watch(c);
}

static void tcp_consume(sip_tcp_conn_t *c, apr_size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Cut header lines longer than their limit down to limit + 1 bytes (enough
 * for the message layer to answer 414 or 400), so that a huge line costs
 * no memory and the headers after it, which the answer needs, still fit.
 * An unfinished long line sets skip_line: input is dropped up to its end.
 * Returns 1 when something was cut. */
static int tcp_trim_long_lines(sip_tcp_conn_t *c)
{
    apr_size_t pos = 0;
    int first = 1, cut = 0;

    while (pos < c->in_len) {
        char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
        apr_size_t end = nl ? (apr_size_t)(nl - c->in) : c->in_len;
        apr_size_t len = end - pos, cap = first ? c->lim.max_line : c->lim.max_field;

        if (nl && len && c->in[end - 1] == '\r')
            len--;
        if (!first && nl && len == 0)
            break;      /* the blank line: the body is not ours to cut */
        if (len > cap + 1) {
            apr_size_t keep = pos + cap + 1;
            cut = 1;
            if (nl) {
                memmove(c->in + keep, c->in + end, c->in_len - end);
                c->in_len -= end - keep;
                end = keep;
            }
            else {
                c->in_len = keep;
                c->skip_line = 1;
                break;
            }
        }
        if (!nl)
            break;
        pos = end + 1;
        first = 0;
    }
    c->trimmed |= cut;
    return cut;
}

static void ws_engine_upgrade(sip_tcp_conn_t *c);
static void tcp_register(sip_tcp_conn_t *c);

/* Hand every complete message in the input buffer to the receiver. */
/* Where a message on stream 'c' came from (no reference taken). */
static void conn_source(const sip_tcp_conn_t *c, sip_source_t *src)
{
    memset(src, 0, sizeof(*src));
    src->kind = c->kind;
    src->tcp = (sip_tcp_conn_t *)c;
    src->peer = c->peer;
    src->local = c->local;
    src->vhost = c->vhost;
}

static void tcp_process_input(sip_tcp_conn_t *c)
{
    sip_source_t src;
    int delivered = 0;

    /* A browser's WebSocket upgrade straight to the SIP port (SipWebSocket
     * On for the vhost): only as the very first bytes, and only in HTTP's
     * origin form ("GET /"): "GET sip:..." is a SIP request with an
     * unknown method, answered 501 like any other. */
    if (!c->http_checked && c->in_len) {
        apr_size_t n = c->in_len < 5 ? c->in_len : 5;
        if (memcmp(c->in, "GET /", n) != 0)
            c->http_checked = 1;
        else if (n == 5) {
            ws_engine_upgrade(c);
            return;
        }
        else {
            /* wait for the fifth byte, within SipTcpMessageTimeout */
            if (!sip_timer_armed(&c->msg))
                sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
            return;
        }
    }

    conn_source(c, &src);

    c->refs++;  /* the receiver may close the connection under us */
    if (c->tls)
        c->corked++;
    while (!c->closed && !c->close_after_flush && c->in_len) {
        apr_size_t mlen = 0;
        int r;

        /* RFC 5626 §4.4.1 keep-alive: CRLFCRLF ping gets a CRLF pong;
         * RFC 3261 §7.5: stray CRLFs before a message are ignored.  Both
         * count as activity for the idle timer, and only for it. */
        if (c->in[0] == '\r' || c->in[0] == '\n') {
            if (c->in_len >= 4 && memcmp(c->in, "\r\n\r\n", 4) == 0) {
                tcp_consume(c, 4);
                sip_timer_set(tp_loop, &c->idle, c->lim.idle, tcp_idle_expired, c);
                tcp_write(c, "\r\n", 2);
                continue;
            }
            if (c->in_len < 4 && memcmp(c->in, "\r\n\r\n", c->in_len) == 0)
                break;
            tcp_consume(c, c->in[0] == '\r' && c->in_len > 1 && c->in[1] == '\n' ? 2 : 1);
            sip_timer_set(tp_loop, &c->idle, c->lim.idle, tcp_idle_expired, c);
            continue;
        }
        r = sip_stream_frame(c->in, c->in_len, c->lim.max_header, c->lim.max_body, &mlen);
        if ((r == 0 || r == -1) && tcp_trim_long_lines(c))
            continue;
        if (r == 0)
            break;
        if (r < 0 || c->trimmed) {
            /* Answer what can be answered, then give up on this stream. */
            c->close_after_flush = 1;
            tp_deliver(c->in, mlen, SIP_TP_FRAMING_LOST, &src);
            sip_tcp_close_after_flush(c);
            break;
        }
        tcp_touch(c);
        sip_timer_set(tp_loop, &c->idle, c->lim.idle, tcp_idle_expired, c);
        delivered = 1;
        {
            /* The receiver sees one NUL-terminated message, not the rest of
             * the stream (the buffer always has one spare byte). */
            char saved = c->in[mlen];
            c->in[mlen] = '\0';
            tp_deliver(c->in, mlen, 0, &src);
            c->in[mlen] = saved;
        }
        if (!c->closed)
            tcp_consume(c, mlen);
    }
    /* SipTcpMessageTimeout runs from the first byte of a message (or from
     * the end of the one before it) to its last. */
    if (!c->closed && !c->lingering && !c->close_after_flush) {
        if (c->in_len && c->in[0] != '\r' && c->in[0] != '\n') {
            if (delivered || !sip_timer_armed(&c->msg))
                sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
        }
        else
            sip_timer_cancel(tp_loop, &c->msg);
    }
    if (c->corked && --c->corked == 0 && !c->closed && c->out_head)
        tcp_flush(c);
    c->refs--;
    tcp_destroy_if_unused(c);
}

/* ---- WebSocket (RFC 7118 over RFC 6455) ---- */

/* Per-connection framing state (c->ws). */
typedef struct ws_state {
    char *msg;              /* a fragmented message being joined (malloc'ed) */
    apr_size_t msg_len, msg_cap;
    int in_msg;             /* its first frame came, its last not yet */
    int close_sent;         /* our close frame is queued: nothing more goes out */
} ws_state_t;

static sip_log_rate_t rl_ws = SIP_LOG_RATE_INIT("WebSocket protocol errors");

#define WS_MAX_BACKLOG 65536    /* queued output above which pings go unanswered */

static apr_status_t ws_state_cleanup(void *data)
{
    ws_state_t *ws = data;

    free(ws->msg);
    ws->msg = NULL;
    return APR_SUCCESS;
}

static ws_state_t *ws_state(sip_tcp_conn_t *c)
{
    if (!c->ws) {
        ws_state_t *ws = apr_pcalloc(c->pool, sizeof(*ws));
        apr_pool_cleanup_register(c->pool, ws, ws_state_cleanup, apr_pool_cleanup_null);
        c->ws = ws;
    }
    return c->ws;
}

/* Largest message (and so frame payload) a WebSocket connection takes. */
static apr_uint64_t ws_max_payload(const sip_tcp_conn_t *c)
{
    return (apr_uint64_t)c->lim.max_header + c->lim.max_body;
}

/* One unmasked server frame (§5.1: servers never mask). */
static apr_status_t ws_send_frame(sip_tcp_conn_t *c, int opcode, const char *buf, apr_size_t len)
{
    unsigned char hdr[10];
    apr_size_t hl = sip_ws_frame_header(hdr, opcode, len);

    return tcp_write2(c, hdr, hl, buf, len);
}

/* Send our close frame (§5.5.1) with 'code' and close once it is out. */
static void ws_close(sip_tcp_conn_t *c, int code)
{
    ws_state_t *ws = ws_state(c);
    char body[2];

    if (!ws->close_sent && !c->closed && !c->lingering) {
        body[0] = (char)(code >> 8);
        body[1] = (char)code;
        ws_send_frame(c, SIP_WS_CLOSE, body, code ? 2 : 0);
        ws->close_sent = 1;
    }
    sip_tcp_close_after_flush(c);
}

/* §7.4.1: 1002 protocol error, 1009 message too big, 1007 bad data. */
static void ws_fail(sip_tcp_conn_t *c, int code, const char *why)
{
    sip_stats->ws_errors++;
    sip_log_limited(&rl_ws, sip_sockaddr_ip(c->pool, &c->peer), code, APLOG_INFO,
                    c->vhost ? c->vhost : ap_server_conf,
                    "sip: %s connection from %s closed (%d): %s", sip_tp_via_name(c->kind),
                    peer_text(c), code, why);
    ws_close(c, code);
}

/* RFC 3629 well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF):
 * text frames must carry it (§5.6), so other messages go as binary. */
static int ws_utf8_ok(const unsigned char *s, apr_size_t len)
{
    apr_size_t i = 0;

    while (i < len) {
        unsigned char b = s[i];
        apr_size_t n, k;
        apr_uint32_t cp;

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF)
            n = 1, cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF)
            n = 2, cp = b & 0x0F;
        else if (b >= 0xF0 && b <= 0xF4)
            n = 3, cp = b & 0x07;
        else
            return 0;
        if (len - i <= n)
            return 0;
        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
            || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* One whole WebSocket message: a SIP message (RFC 7118 §5), or a CRLF
 * keep-alive (RFC 5626 §4.4.1, sent that way by SIP.js). 'buf' has a
 * spare byte after 'len' for the NUL the receiver expects. */
static void ws_deliver(sip_tcp_conn_t *c, char *buf, apr_size_t len, const sip_source_t *src)
{
    char saved = buf[len];

    buf[len] = '\0';
    sip_timer_set(tp_loop, &c->idle, c->lim.idle, tcp_idle_expired, c);
    if (strspn(buf, "\r\n") == len) {
        if (len >= 4 && memcmp(buf, "\r\n\r\n", 4) == 0)
            ws_send_frame(c, SIP_WS_TEXT, "\r\n", 2);
    }
    else {
        tcp_touch(c);
        tp_deliver(buf, len, 0, src);
    }
    buf[len] = saved;
}

/* Frames in c->in: data frames carry the SIP messages, fragments are
 * joined, control frames are answered. */
static void ws_process_input(sip_tcp_conn_t *c)
{
    ws_state_t *ws = ws_state(c);
    apr_uint64_t max = ws_max_payload(c);
    sip_source_t src;
    int progressed = 0;

    conn_source(c, &src);

    c->refs++;  /* the receiver may close the connection under us */
    while (!c->closed && !c->close_after_flush && c->in_len) {
        sip_ws_frame_t f;
        char *payload;
        apr_size_t plen, flen;
        int r = sip_ws_frame_parse(c->in, c->in_len, 1, max, &f);

        if (r == 0)
            break;
        if (r < 0) {
            ws_fail(c, -r, r == -1009 ? "frame above the message size limit"
                                      : "protocol error (RSV bits, opcode, unmasked or bad "
                                        "control frame)");
            break;
        }
        plen = (apr_size_t)f.payload_len;
        flen = f.header_len + plen;
        payload = c->in + f.header_len;
        sip_ws_unmask(payload, plen, (const unsigned char *)payload - 4);
        progressed = 1;
        switch (f.opcode) {
        case SIP_WS_TEXT:
        case SIP_WS_BINARY:
            if (ws->in_msg) {
                ws_fail(c, 1002, "new message inside a fragmented one");
                break;
            }
            if (f.fin) {
                /* the buffer always has a spare byte after its content */
                ws_deliver(c, payload, plen, &src);
                break;
            }
            ws->in_msg = 1;
            ws->msg_len = 0;
            /* fall through - the first fragment is joined like the others */
        case SIP_WS_CONT:
            if (!ws->in_msg) {
                ws_fail(c, 1002, "continuation frame outside a fragmented message");
                break;
            }
            if (plen > max - ws->msg_len) {
                ws_fail(c, 1009, "fragmented message above the message size limit");
                break;
            }
            if (ws->msg_len + plen + 1 > ws->msg_cap) {
                /* doubling: many small fragments must not cost a copy each */
                apr_size_t need = ws->msg_len + plen + 1, cap = ws->msg_cap ? ws->msg_cap : 4096;
                char *bigger;
                while (cap < need)
                    cap *= 2;
                if (cap > max + 1)
                    cap = (apr_size_t)max + 1;
                bigger = realloc(ws->msg, cap);
                if (!bigger) {
                    tcp_close(c, "out of memory");
                    break;
                }
                ws->msg = bigger;
                ws->msg_cap = cap;
            }
            memcpy(ws->msg + ws->msg_len, payload, plen);
            ws->msg_len += plen;
            if (f.fin) {
                ws->in_msg = 0;
                ws_deliver(c, ws->msg, ws->msg_len, &src);
                if (ws->msg_cap > 65536) {
                    /* a big message once is no reason to keep its buffer */
                    free(ws->msg);
                    ws->msg = NULL;
                    ws->msg_cap = 0;
                }
            }
            break;
        case SIP_WS_PING:
            /* §5.5.2: a pong with the same application data; not while
             * earlier output is still unread (§5.5.3 allows answering
             * only the latest ping), or a client that pings and never
             * reads would grow our queue without end */
            if (c->out_bytes < WS_MAX_BACKLOG)
                ws_send_frame(c, SIP_WS_PONG, payload, plen);
            sip_timer_set(tp_loop, &c->idle, c->lim.idle, tcp_idle_expired, c);
            break;
        case SIP_WS_PONG:
            break;
        case SIP_WS_CLOSE:
            /* §5.5.1: answer with a close echoing the status code, then
             * close; a one-byte body is malformed */
            if (plen == 1) {
                ws_fail(c, 1002, "close frame with a one-byte body");
                break;
            }
            ws_close(c, plen >= 2 ? ((unsigned char)payload[0] << 8) | (unsigned char)payload[1]
                                  : 1000);
            break;
        }
        if (!c->closed)
            tcp_consume(c, flen);
    }
    /* SipTcpMessageTimeout: a frame begun, or a fragmented message, must
     * end in time (the slow-loris client). */
    if (!c->closed && !c->lingering && !c->close_after_flush) {
        if (c->in_len || ws->in_msg) {
            if (progressed && !ws->in_msg)
                sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
            else if (!sip_timer_armed(&c->msg))
                sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
        }
        else
            sip_timer_cancel(tp_loop, &c->msg);
    }
    c->refs--;
    tcp_destroy_if_unused(c);
}

static sip_log_rate_t rl_upgrade = SIP_LOG_RATE_INIT("refused WebSocket upgrades");

/* The engine's own opening handshake (RFC 6455 §4.2) on a TCP or TLS
 * connection of a ProtocolSip vhost; the connection becomes WS or WSS. */
static void ws_engine_upgrade(sip_tcp_conn_t *c)
{
    apr_pool_t *p;
    const char *method = NULL, *path = NULL, *why = NULL, *accept = NULL, *reason, *text;
    apr_table_t *headers = NULL;
    apr_size_t used = 0;
    int r, status = 400;

    apr_pool_create(&p, c->pool);
    r = sip_ws_http_request_parse(p, c->in, c->in_len, &method, &path, &headers, &used);
    /* the input buffer is as big as the vhost's message limits, which may
     * be below the 8 KB a head may have */
    if (r == 0 && c->in_len >= c->lim.max_header + c->lim.max_body)
        r = -1;
    if (r == 0) {
        /* the head must be whole within SipTcpMessageTimeout */
        if (!sip_timer_armed(&c->msg))
            sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
        apr_pool_destroy(p);
        return;
    }
    if (r < 0)
        why = "not an HTTP/1.1 request head of at most 8 KB";
    else if (!c->lim.ws_upgrade) {
        why = "SipWebSocket is not on for this virtual host";
        status = 404;
    }
    else
        why = sip_ws_handshake_check(p, method, headers, &accept, &status);
    c->http_checked = 1;
    sip_timer_cancel(tp_loop, &c->msg);
    if (why) {
        reason = status == 404 ? "Not Found" : status == 426 ? "Upgrade Required" : "Bad Request";
        sip_log_limited(&rl_upgrade, sip_sockaddr_ip(p, &c->peer), status, APLOG_INFO,
                        c->vhost ? c->vhost : ap_server_conf,
                        "sip: WebSocket upgrade from %s refused (%d): %s", peer_text(c), status,
                        why);
        text = apr_psprintf(p, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close"
                            "\r\n\r\n", status, reason,
                            status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "");
        c->in_len = 0;
        tcp_write(c, text, strlen(text));
        sip_tcp_close_after_flush(c);
        apr_pool_destroy(p);
        return;
    }
    text = apr_pstrcat(p, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: ", accept,
                       "\r\nSec-WebSocket-Protocol: sip\r\n\r\n", NULL);
    tcp_write(c, text, strlen(text));
    apr_pool_destroy(p);
    tcp_consume(c, used);
    /* from now on a WS (WSS over TLS) connection, found under that kind */
    if (c->key && apr_hash_get(tcp_by_peer, c->key, APR_HASH_KEY_STRING) == c)
        apr_hash_set(tcp_by_peer, c->key, APR_HASH_KEY_STRING, NULL);
    c->kind = c->kind == SIP_TP_TLS ? SIP_TP_WSS : SIP_TP_WS;
    tcp_register(c);
    ws_count(1);
    tcp_touch(c);
    sip_timer_set(tp_loop, &c->idle, c->lim.idle, tcp_idle_expired, c);
    if (c->in_len && !c->closed)
        ws_process_input(c);
}

static void stream_process_input(sip_tcp_conn_t *c)
{
    if (c->kind == SIP_TP_WS || c->kind == SIP_TP_WSS)
        ws_process_input(c);
    else
        tcp_process_input(c);
}

/* One whole SIP message out on a stream (WebSocket: in one frame, text
 * when it is valid UTF-8, RFC 7118 §5). */
static apr_status_t remote_send(sip_tcp_conn_t *c, const char *buf, apr_size_t len);

static apr_status_t stream_send_msg(sip_tcp_conn_t *c, const char *buf, apr_size_t len)
{
    if (c->remote)
        return remote_send(c, buf, len);
    if (c->kind == SIP_TP_WS || c->kind == SIP_TP_WSS) {
        if (ws_state(c)->close_sent)
            return APR_ECONNABORTED;
        return ws_send_frame(c, ws_utf8_ok((const unsigned char *)buf, len) ? SIP_WS_TEXT
                                                                            : SIP_WS_BINARY,
                             buf, len);
    }
    return tcp_write(c, buf, len);
}

/* Input after the answer that ends a stream: read and drop. */
static void tcp_drain(sip_tcp_conn_t *c)
{
    static char sink[65536];
    ssize_t n = stream_read(c, sink, sizeof(sink));

    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        tcp_close(c, "lingering close done");
}

static void tcp_event(void *baton, apr_int16_t ev)
{
    sip_tcp_conn_t *c = baton;

    if (c->closed)
        return;
    if (c->lingering) {
        tcp_drain(c);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (ev & (APR_POLLERR | APR_POLLHUP))) {
            tcp_close(c, "connect failed");
            return;
        }
        c->connecting = 0;
        c->local.len = sizeof(c->local.ss);
        getsockname(c->fd, (struct sockaddr *)&c->local.ss, &c->local.len);
    }
    if (c->tls) {
        /* the TLS layer may have asked for the other direction */
        if ((ev & APR_POLLIN) && c->out_head && c->tls_write_waits == APR_POLLIN)
            ev |= APR_POLLOUT;
        if ((ev & APR_POLLOUT) && c->tls_read_waits == APR_POLLOUT)
            ev |= APR_POLLIN;
    }
    if (ev & APR_POLLOUT) {
        tcp_flush(c);
        if (c->closed || c->lingering)
            return;
    }
    while (ev & (APR_POLLIN | APR_POLLHUP | APR_POLLERR)) {
        apr_size_t room;
        ssize_t n;

        if (c->closed || c->lingering || c->close_after_flush)
            return;
        /* a WebSocket frame has up to 14 header bytes besides its payload */
        room = c->lim.max_header + c->lim.max_body + 1
               + (c->kind == SIP_TP_WS || c->kind == SIP_TP_WSS ? 14 : 0);
        if (c->in_cap < room && c->in_cap - c->in_len < 4096) {
            apr_size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
            char *bigger;
            if (cap > room)
                cap = room;
            bigger = realloc(c->in, cap + 1);
            if (!bigger) {
                tcp_close(c, "out of memory");
                return;
            }
            c->in = bigger;
            c->in_cap = cap;
        }
        n = stream_read(c, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == 0) {
            tcp_close(c, "closed by peer");
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                tcp_close(c, "read error");
            return;
        }
        /* TLS decrypts a whole record: what did not fit waits in the
         * layer, and the socket will not say so */
        ev = c->tls && sip_tls_pending(c->tls) ? APR_POLLIN : 0;
        if (c->skip_line) {
            /* the rest of a line already cut short: drop up to its end */
            char *nl = memchr(c->in + c->in_len, '\n', (apr_size_t)n);
            if (!nl)
                continue;
            c->skip_line = 0;
            n -= nl - (c->in + c->in_len);
            memmove(c->in + c->in_len, nl, (apr_size_t)n);
        }
        c->in_len += (apr_size_t)n;
        stream_process_input(c);
    }
}

static sip_tcp_conn_t *tcp_new(int fd, sip_tp_kind_t kind, void *vhost, const sip_tp_limits_t *lim)
{
    apr_pool_t *p;
    sip_tcp_conn_t *c;

    apr_pool_create(&p, tp_pool);
    c = apr_pcalloc(p, sizeof(*c));
    c->pool = p;
    c->fd = fd;
    c->kind = kind;
    c->vhost = vhost;
    c->lim = *lim;
    c->tls_write_waits = APR_POLLOUT;
    apr_os_sock_put(&c->sock, &c->fd, p);
    apr_pool_cleanup_register(p, c, tcp_conn_cleanup, apr_pool_cleanup_null);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    tcp_open++;
    sip_stats->now.tcp = tcp_open;
    sip_stats->tcp_conns++;
    if (kind == SIP_TP_WS || kind == SIP_TP_WSS)
        ws_count(1);
    if (kind == SIP_TP_TLS) {
        sip_stats->now.tls++;
        sip_stats->tls_conns++;
    }
    list_append(&idle_conns, c);
    sip_io_init_socket(&c->io, c->sock, tcp_event, c);
    sip_timer_set(tp_loop, &c->idle, lim->idle, tcp_idle_expired, c);
    return c;
}

/* "KIND ip:port": a TCP and a TLS connection to one peer are not interchangeable. */
static const char *conn_key(char *buf, apr_size_t size, sip_tp_kind_t kind, const sip_sockaddr_t *a)
{
    char ip[INET6_ADDRSTRLEN];

    apr_snprintf(buf, size, "%s %s:%d", sip_tp_param(kind), format_ip(a, ip, sizeof(ip)),
                 sip_sockaddr_port(a));
    return buf;
}

static void tcp_register(sip_tcp_conn_t *c)
{
    char key[INET6_ADDRSTRLEN + 16];

    c->key = apr_pstrdup(c->pool, conn_key(key, sizeof(key), c->kind, &c->peer));
    apr_hash_set(tcp_by_peer, c->key, APR_HASH_KEY_STRING, c);
}

static void tcp_adopt(int fd, const sip_handoff_t *h)
{
    void *vhost = h->vhost;
    sip_tcp_conn_t *c;
    sip_tp_limits_t lim;
    sip_sockaddr_t peer;
    ip_count_t *ipc;
    char ip[INET6_ADDRSTRLEN];

    if (!tp_limits(vhost, &lim)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf,
                     "sip: connection passed for an unknown virtual host; closed");
        close(fd);
        return;
    }
    if (h->relayed)
        peer = h->peer;
    else {
        peer.len = sizeof(peer.ss);
        if (getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) < 0) {
            close(fd);      /* already gone */
            return;
        }
    }
    /* Limits before anything is allocated: a refused connection costs a
     * hash lookup and a close(). */
    ipc = ip_count_get(&peer, 0);
    if (max_per_ip && ipc && ipc->n >= max_per_ip) {
        sip_stats->tcp_refused++;
        format_ip(&peer, ip, sizeof(ip));
        sip_log_limited(&rl_refused, ip, 1, APLOG_WARNING, vhost,
                        "sip: TCP connection from %s:%d refused: %" APR_SIZE_T_FMT
                        " connections from that address already (SipTcpMaxConnectionsPerIP)",
                        ip, sip_sockaddr_port(&peer), ipc->n);
        close(fd);
        return;
    }
    if (!tcp_make_room("new connection")) {
        sip_stats->tcp_refused++;
        format_ip(&peer, ip, sizeof(ip));
        sip_log_limited(&rl_refused, ip, 2, APLOG_WARNING, vhost,
                        "sip: TCP connection from %s:%d refused: SipTcpMaxConnections (%"
                        APR_SIZE_T_FMT ") reached and every connection is busy",
                        ip, sip_sockaddr_port(&peer), max_conns);
        close(fd);
        return;
    }
    c = tcp_new(fd, h->kind, vhost, &lim);
    c->peer = peer;
    c->relayed = h->relayed;
    if (h->relayed && h->tls_subject[0])
        c->relay_subject = apr_pstrndup(c->pool, h->tls_subject, sizeof(h->tls_subject));
    c->ipc = ipc ? ipc : ip_count_get(&peer, 1);
    if (c->ipc)
        c->ipc->n++;
    if (h->relayed)
        c->local = h->local;
    else {
        c->local.len = sizeof(c->local.ss);
        getsockname(fd, (struct sockaddr *)&c->local.ss, &c->local.len);
    }
    tcp_register(c);
    if (h->kind == SIP_TP_TLS) {
        c->tls = sip_tls_accept(fd, vhost);
        if (!c->tls) {
            tcp_close(c, "no TLS context for this virtual host");
            return;
        }
        sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
    }
    if (h->early_len) {
        /* what httpd read past the upgrade request (the buffer starts empty) */
        apr_size_t n = h->early_len < sizeof(h->early) ? h->early_len : sizeof(h->early);
        c->in = malloc(8192 + 1);
        if (!c->in) {
            tcp_close(c, "out of memory");
            return;
        }
        c->in_cap = 8192;
        memcpy(c->in, h->early, n);
        c->in_len = n;
        stream_process_input(c);
        if (c->closed || c->lingering)
            return;     /* closed, or tcp_linger watches for the rest of the input */
    }
    /* answers to early bytes may be waiting for the socket to drain */
    if (sip_io_watch(tp_loop, &c->io, APR_POLLIN | (c->out_head ? APR_POLLOUT : 0)) != APR_SUCCESS)
        tcp_close(c, "cannot poll");
}

/* An outbound connection; writes queue until connect() completes. */
static sip_tcp_conn_t *tcp_connect(sip_tp_kind_t kind, void *vhost, const sip_sockaddr_t *dest,
                                    const char *tls_host)
{
    sip_tp_limits_t lim;
    sip_tcp_conn_t *c;
    int fd;

    if (!tp_limits(vhost, &lim))
        return NULL;
    if (!tcp_make_room("outgoing connection")) {
        sip_stats->tcp_refused++;
        return NULL;
    }
    fd = socket(dest->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return NULL;
    c = tcp_new(fd, kind, vhost, &lim);
    c->peer = *dest;
    c->http_checked = 1;    /* our own connection: its peer answers, never upgrades */
    if (kind == SIP_TP_TLS) {
        c->tls = sip_tls_connect(fd, vhost, tls_host);
        if (!c->tls) {
            tcp_close(c, "no TLS client context");
            return NULL;
        }
        sip_timer_set(tp_loop, &c->msg, c->lim.msg, tcp_msg_expired, c);
    }
    if (connect(fd, (const struct sockaddr *)&dest->ss, dest->len) < 0) {
        if (errno != EINPROGRESS) {
            tcp_close(c, "connect failed");
            return NULL;
        }
        c->connecting = 1;
    }
    else {
        c->local.len = sizeof(c->local.ss);
        getsockname(fd, (struct sockaddr *)&c->local.ss, &c->local.len);
    }
    tcp_register(c);
    sip_io_watch(tp_loop, &c->io, c->connecting ? APR_POLLOUT : APR_POLLIN);
    return c;
}

/* A held connection is busy: it is not closed to make room while idle
 * ones exist. */
void sip_source_hold(sip_source_t *src)
{
    sip_tcp_conn_t *c = src->tcp;

    if (!c)
        return;
    c->refs++;
    if (c->holds++ == 0 && !c->closed && !c->lingering && !c->remote)
        list_append(&busy_conns, c);
}

void sip_source_release(sip_source_t *src)
{
    sip_tcp_conn_t *c = src->tcp;

    if (!c)
        return;
    src->tcp = NULL;
    if (--c->holds == 0 && !c->closed && !c->lingering && !c->remote)
        list_append(&idle_conns, c);    /* idle from now on */
    c->refs--;
    if (c->remote)
        remote_unused(c);
    else
        tcp_destroy_if_unused(c);
}

int sip_source_is_open(const sip_source_t *src)
{
    if (!sip_tp_reliable(src->kind))
        return 1;
    return src->tcp && !src->tcp->closed && !src->tcp->close_after_flush;
}

apr_status_t sip_transport_send(const sip_source_t *src, const sip_sockaddr_t *dest,
                                const char *buf, apr_size_t len)
{
    apr_status_t rv = APR_SUCCESS;

    if (!dest)
        dest = &src->peer;
    if (sip_tp_reliable(src->kind))
        rv = !src->tcp || src->tcp->closed ? APR_ECONNABORTED : stream_send_msg(src->tcp, buf, len);
    else if (sendto(src->udp->fd, buf, len, 0, (const struct sockaddr *)&dest->ss, dest->len) < 0)
        rv = errno;
    if (rv == APR_SUCCESS)
        sip_stats->msgs_out[src->kind]++;
    else
        sip_stats->send_errors++;
    return rv;
}

static sip_udp_t *udp_for(void *vhost)
{
    int i;
    for (i = 0; i < udps->nelts; i++)
        if (APR_ARRAY_IDX(udps, i, sip_udp_t *)->vhost == vhost)
            return APR_ARRAY_IDX(udps, i, sip_udp_t *);
    for (i = 0; udp_aliases && i < udp_aliases->nelts; i++)
        if (APR_ARRAY_IDX(udp_aliases, i, udp_alias_t).vhost == vhost)
            return APR_ARRAY_IDX(udp_aliases, i, udp_alias_t).u;
    return udps->nelts ? APR_ARRAY_IDX(udps, 0, sip_udp_t *) : NULL;
}

void sip_udp_alias(void *vhost, void *same_as)
{
    udp_alias_t *a;

    if (!udp_aliases)
        udp_aliases = apr_array_make(tp_pool, 4, sizeof(udp_alias_t));
    a = apr_array_push(udp_aliases);
    a->vhost = vhost;
    a->u = udp_for(same_as);
}

static apr_status_t send_to(sip_tp_kind_t kind, void *vhost, const sip_sockaddr_t *dest,
                           const char *tls_host, const char *buf, apr_size_t len,
                           sip_source_t *used)
{
    sip_source_t src;

    memset(&src, 0, sizeof(src));
    src.kind = kind;
    src.peer = *dest;
    src.vhost = vhost;
    if (kind == SIP_TP_UDP) {
        src.udp = udp_for(vhost);
        if (!src.udp) {
            sip_stats->send_errors++;
            return APR_ENOTSOCK;
        }
        src.local = src.udp->local;
    }
    else {
        char key[INET6_ADDRSTRLEN + 16];
        sip_tcp_conn_t *c;

        c = apr_hash_get(tcp_by_peer, conn_key(key, sizeof(key), kind, dest), APR_HASH_KEY_STRING);
        if (!c || c->closed || c->close_after_flush) {
            /* RFC 7118 §5: the server cannot open WebSocket connections;
             * only the browser's own one reaches it. */
            c = kind == SIP_TP_TCP || kind == SIP_TP_TLS ? tcp_connect(kind, vhost, dest, tls_host)
                                                         : NULL;
        }
        if (!c) {
            sip_stats->send_errors++;
            return APR_ECONNREFUSED;
        }
        src.tcp = c;
        src.local = c->local;
    }
    if (used) {
        *used = src;
        sip_source_hold(used);
    }
    return sip_transport_send(&src, dest, buf, len);
}

apr_status_t sip_transport_send_to(sip_tp_kind_t kind, void *vhost, const sip_sockaddr_t *dest,
                                   const char *buf, apr_size_t len, sip_source_t *used)
{
    return send_to(kind, vhost, dest, NULL, buf, len, used);
}

apr_status_t sip_transport_send_tls(void *vhost, const sip_sockaddr_t *dest, const char *tls_host,
                                    const char *buf, apr_size_t len, sip_source_t *used)
{
    return send_to(SIP_TP_TLS, vhost, dest, tls_host, buf, len, used);
}

const char *sip_source_tls_subject(apr_pool_t *p, const sip_source_t *src)
{
    sip_tcp_conn_t *c = src->tcp;

    if (!c || !sip_tp_secure(src->kind))
        return NULL;
    if (c->relay_subject)
        return apr_pstrdup(p, c->relay_subject);
    return c->tls ? sip_tls_peer_subject(p, c->tls) : NULL;
}

void sip_source_set_tls_subject(sip_source_t *src, const char *subject)
{
    sip_tcp_conn_t *c = src->tcp;

    if (c && c->remote && subject && !c->relay_subject && sip_tp_secure(src->kind))
        c->relay_subject = apr_pstrdup(c->pool, subject);
}

void sip_source_tls_env(apr_pool_t *p, const sip_source_t *src, apr_table_t *env)
{
    sip_tcp_conn_t *c = src->tcp;

    if (!c || c->closed || !sip_tp_secure(src->kind))
        return;
    if (c->tls)
        sip_tls_env(p, c->tls, env);
    else if (c->relayed || c->remote) {
        /* mod_ssl in the relaying child, or another engine, holds the
         * session: what it passed */
        apr_table_setn(env, "HTTPS", "on");
        if (c->relay_subject)
            apr_table_setn(env, "SSL_CLIENT_S_DN", apr_pstrdup(p, c->relay_subject));
    }
}

int sip_transport_tls_port(void *vhost)
{
    return sip_tls_port(vhost);
}

int sip_transport_local_addr(void *vhost, sip_sockaddr_t *out)
{
    sip_udp_t *u = udp_for(vhost);
    if (!u)
        return 0;
    *out = u->local;
    return 1;
}

int sip_transport_is_local(const char *ip, int port)
{
    sip_sockaddr_t a;
    int i;

    if (sip_sockaddr_set(&a, ip, port) != APR_SUCCESS)
        return 0;
    for (i = 0; i < udps->nelts; i++) {
        sip_udp_t *u = APR_ARRAY_IDX(udps, i, sip_udp_t *);
        if (sip_sockaddr_port(&u->local) != port || u->local.ss.ss_family != a.ss.ss_family)
            continue;
        if (u->local.ss.ss_family == AF_INET) {
            struct in_addr la = ((struct sockaddr_in *)&u->local.ss)->sin_addr;
            if (la.s_addr == INADDR_ANY || la.s_addr == ((struct sockaddr_in *)&a.ss)->sin_addr.s_addr)
                return 1;
        }
        else if (memcmp(&((struct sockaddr_in6 *)&u->local.ss)->sin6_addr,
                        &((struct sockaddr_in6 *)&a.ss)->sin6_addr, sizeof(struct in6_addr)) == 0
                 || IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&u->local.ss)->sin6_addr))
            return 1;
    }
    return 0;
}

/* ---- descriptor passing (MPM child -> engine) ---- */

apr_status_t sip_fdpass_pair(int fds[2])
{
    /* Room for a burst of connections while the engine is busy: the
     * queue is bounded by the sender's buffer, about 50 hand-offs by
     * default. */
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) < 0)
        return errno;
    sip_sock_bufsize(fds[1], SO_SNDBUF, 4 * 1024 * 1024);
    return APR_SUCCESS;
}

/* How long a worker thread waits for a busy engine to take a connection
 * before closing it. */
#define FDPASS_WAIT_MS 2000

apr_status_t sip_fdpass_send(int chan, int fd, const sip_handoff_t *h)
{
    struct msghdr msg;
    struct iovec iov;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct cmsghdr *cm;
    apr_time_t deadline;

    memset(&msg, 0, sizeof(msg));
    memset(&ctl, 0, sizeof(ctl));
    iov.iov_base = (void *)h;
    iov.iov_len = sizeof(*h);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    /* A full queue (a burst while the engine is busy) is waited out, but
     * not for long: a worker thread must not hang on a stalled engine. */
    for (deadline = 0;;) {
        struct pollfd pfd;
        int left;

        if (sendmsg(chan, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
            return APR_SUCCESS;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return errno;
        if (!deadline)
            deadline = apr_time_now() + apr_time_from_msec(FDPASS_WAIT_MS);
        left = (int)apr_time_as_msec(deadline - apr_time_now());
        if (left <= 0)
            return APR_EAGAIN;
        pfd.fd = chan;
        pfd.events = POLLOUT;
        pfd.revents = 0;
        if (poll(&pfd, 1, left) == 0)
            return APR_EAGAIN;
    }
}

static int fdpass_chan = -1;

static void fdpass_readable(void *baton, apr_int16_t ev)
{
    int i;

    (void)baton;
    (void)ev;
    for (i = 0; i < 64; i++) {
        struct msghdr msg;
        struct iovec iov;
        sip_handoff_t h;
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * 4)];
        } ctl;
        struct cmsghdr *cm;
        ssize_t n;

        memset(&msg, 0, sizeof(msg));
        memset(&h, 0, sizeof(h));
        iov.iov_base = &h;
        iov.iov_len = sizeof(h);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        n = recvmsg(fdpass_chan, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
            return;
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int nfd = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int)), k;
                for (k = 0; k < nfd; k++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
                    if (k == 0 && n == (ssize_t)sizeof(h) && h.kind > SIP_TP_UDP
                        && h.kind < SIP_TP_COUNT && h.early_len <= sizeof(h.early))
                        tcp_adopt(fd, &h);
                    else
                        close(fd);
                }
            }
        }
    }
}

apr_status_t sip_fdpass_serve(int chan)
{
    static sip_io_t io;
    apr_socket_t *sock = NULL;

    fdpass_chan = chan;
    fcntl(chan, F_SETFL, fcntl(chan, F_GETFL) | O_NONBLOCK);
    apr_os_sock_put(&sock, &fdpass_chan, tp_pool);
    sip_io_init_socket(&io, sock, fdpass_readable, NULL);
    return sip_io_watch(tp_loop, &io, APR_POLLIN);
}

/* ---- flows (RFC 5626 §5.3, RFC 7118 §5): a connection named by an id ----
 *
 * The location store keeps a binding's connection as a number, not a
 * pointer: a closed connection's memory goes away, and an id that names
 * nothing any more just fails to resolve.  An id is
 *   engine (8 bits, SIP_FLOW_ENGINE_SHIFT) | transport (4) | generation (20) | counter (32)
 * The engine holding the connection is in the top bits (sip_handover.h),
 * its transport next, so that another engine can make a stand-in for it
 * from the id alone; the generation is random per engine start, so that an
 * id written into a Record-Route or a replica before a restart cannot name
 * another client's connection after it.
 *
 * Several engines (docs/architecture.md, "Several engines"): a flow of
 * another engine is a stand-in connection ('remote'), found in the same
 * table; sending on it hands the text to the owner (SIP_HO_SEND_FLOW),
 * which writes it on its connection.  The owner tells every engine when
 * a flow closes (SIP_HO_FLOW_CLOSED), and answers a send on a flow it
 * no longer has the same way, so a stand-in learns it is closed at once
 * or at its first use.  Closed stand-ins are remembered for a while
 * (REMOTE_CLOSED_KEEP) so that lookups in that time see them closed
 * without asking the owner. */

#define FLOW_KIND_SHIFT 52
#define FLOW_GEN_SHIFT 32
#define FLOW_GEN_MASK 0xfffffu
#define REMOTE_CLOSED_KEEP apr_time_from_sec(600)

static apr_hash_t *flows;           /* apr_uint64_t id -> sip_tcp_conn_t (ours and stand-ins) */
static apr_uint64_t flow_next;
static apr_uint32_t flow_gen;       /* this engine's generation */
static apr_uint32_t peer_gen[SIP_ENGINES_MAX];  /* a peer's, once known (0: not known) */
static sip_tcp_conn_t *closed_oldest, *closed_newest;   /* closed stand-ins, oldest first */

static void flow_reset(void)
{
    flows = NULL;   /* it lived in the previous tp_pool */
    closed_oldest = closed_newest = NULL;
    memset(peer_gen, 0, sizeof(peer_gen));
    flow_gen = 0;
}

static apr_uint32_t flow_id_gen(apr_uint64_t id)
{
    return (apr_uint32_t)(id >> FLOW_GEN_SHIFT) & FLOW_GEN_MASK;
}

static void flows_make(void)
{
    apr_uint32_t r = 0;

    if (flows)
        return;
    flows = apr_hash_make(tp_pool);
    if (apr_generate_random_bytes((unsigned char *)&r, sizeof(r)) != APR_SUCCESS)
        r = (apr_uint32_t)apr_time_now() ^ (apr_uint32_t)getpid();
    flow_gen = (r & FLOW_GEN_MASK) ? (r & FLOW_GEN_MASK) : 1;
    flow_next = 1;
}

apr_uint32_t sip_transport_flow_generation(void)
{
    flows_make();
    return flow_gen;
}

static void flow_forget(sip_tcp_conn_t *c)
{
    sip_ho_origin_t o;

    if (!c->flow_id || !flows || c->remote
        || apr_hash_get(flows, &c->flow_id, sizeof(c->flow_id)) != c)
        return;     /* not a flow, or already forgotten when it began to close */
    apr_hash_set(flows, &c->flow_id, sizeof(c->flow_id), NULL);
    if (sip_engine_count() > 1) {
        /* every engine sees it closed at once (480/430, docs/flows.md) */
        memset(&o, 0, sizeof(o));
        o.kind = c->kind;
        o.engine = sip_engine_self();
        o.flow = c->flow_id;
        sip_handover_broadcast(SIP_HO_FLOW_CLOSED, &o, "", 0);
    }
}

apr_uint64_t sip_source_flow_id(const sip_source_t *src)
{
    sip_tcp_conn_t *c = src ? src->tcp : NULL;

    if (!c || !sip_tp_reliable(src->kind) || c->closed)
        return 0;
    if (!c->flow_id) {
        flows_make();
        c->flow_id = ((apr_uint64_t)sip_engine_self() << SIP_FLOW_ENGINE_SHIFT)
                     | ((apr_uint64_t)(c->kind & 0xf) << FLOW_KIND_SHIFT)
                     | ((apr_uint64_t)flow_gen << FLOW_GEN_SHIFT) | flow_next++;
        flow_next &= 0xffffffffu;
        if (!flow_next)
            flow_next = 1;
        apr_hash_set(flows, &c->flow_id, sizeof(c->flow_id), c);
    }
    return c->flow_id;
}

/* -- stand-ins for other engines' flows -- */

static void closed_unlink(sip_tcp_conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (closed_oldest == c)
        closed_oldest = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else if (closed_newest == c)
        closed_newest = c->prev;
    c->prev = c->next = NULL;
}

static void remote_destroy(sip_tcp_conn_t *c)
{
    closed_unlink(c);
    if (flows && apr_hash_get(flows, &c->flow_id, sizeof(c->flow_id)) == c)
        apr_hash_set(flows, &c->flow_id, sizeof(c->flow_id), NULL);
    apr_pool_destroy(c->pool);
}

/* Forget closed stand-ins kept longer than REMOTE_CLOSED_KEEP that no
 * source holds; a lookup after that asks the owner again. */
static void remote_prune(apr_time_t now)
{
    while (closed_oldest && closed_oldest->closed_at + REMOTE_CLOSED_KEEP < now) {
        sip_tcp_conn_t *c = closed_oldest;
        closed_unlink(c);
        c->closed_at = 0;       /* out of the list: destroyed when let go */
        if (!c->refs)
            remote_destroy(c);
    }
}

static void remote_unused(sip_tcp_conn_t *c)
{
    if (c->refs == 0 && c->closed && !c->closed_at)
        remote_destroy(c);
}

static void remote_mark_closed(sip_tcp_conn_t *c, apr_time_t now)
{
    if (c->closed)
        return;
    c->closed = 1;
    c->closed_at = now;
    c->prev = closed_newest;
    c->next = NULL;
    if (closed_newest)
        closed_newest->next = c;
    else
        closed_oldest = c;
    closed_newest = c;
    if (tp_closed)
        tp_closed(c);   /* client transactions on it fail over (503) */
}

static sip_tcp_conn_t *remote_get(apr_uint64_t id, int create)
{
    sip_tcp_conn_t *c;
    apr_pool_t *cp;
    int engine = sip_flow_engine(id);
    unsigned kind = (unsigned)(id >> FLOW_KIND_SHIFT) & 0xf;

    flows_make();
    c = apr_hash_get(flows, &id, sizeof(id));
    if (c || !create)
        return c;
    if (kind < SIP_TP_TCP || kind >= SIP_TP_COUNT || engine >= sip_engine_count())
        return NULL;
    apr_pool_create(&cp, tp_pool);
    c = apr_pcalloc(cp, sizeof(*c));
    c->pool = cp;
    c->fd = -1;
    c->remote = 1;
    c->kind = (sip_tp_kind_t)kind;
    c->flow_id = id;
    apr_hash_set(flows, &c->flow_id, sizeof(c->flow_id), c);
    /* a flow of a generation that engine no longer runs is gone */
    if (peer_gen[engine] && peer_gen[engine] != flow_id_gen(id))
        remote_mark_closed(c, apr_time_now());
    return c;
}

static apr_status_t remote_send(sip_tcp_conn_t *c, const char *buf, apr_size_t len)
{
    sip_ho_origin_t o;

    if (c->closed)
        return APR_ECONNABORTED;
    memset(&o, 0, sizeof(o));
    o.kind = c->kind;
    o.peer = c->peer;
    o.local = c->local;
    o.vhost = c->vhost;
    o.engine = sip_engine_self();
    o.flow = c->flow_id;
    return sip_handover_send(sip_flow_engine(c->flow_id), SIP_HO_SEND_FLOW, &o, buf, len);
}

int sip_transport_flow_source(apr_uint64_t id, sip_source_t *out)
{
    sip_tcp_conn_t *c;

    if (!id)
        return 0;
    if (sip_engine_count() > 1 && sip_flow_engine(id) != sip_engine_self()) {
        remote_prune(apr_time_now());
        c = remote_get(id, 1);
    }
    else
        c = flows ? apr_hash_get(flows, &id, sizeof(id)) : NULL;
    if (!c || c->closed || c->close_after_flush || c->lingering)
        return 0;
    conn_source(c, out);
    sip_source_hold(out);
    return 1;
}

int sip_transport_remote_source(apr_uint64_t id, sip_tp_kind_t kind, const sip_sockaddr_t *peer,
                                const sip_sockaddr_t *local, void *vhost, sip_source_t *out)
{
    sip_tcp_conn_t *c;

    memset(out, 0, sizeof(*out));
    if (!id || sip_flow_engine(id) == sip_engine_self())
        return sip_transport_flow_source(id, out);
    if (!(c = remote_get(id, 1)) || c->closed || c->kind != kind)
        return 0;
    /* what the owner saw: for Via received, logs and the binding's source */
    if (!c->vhost) {
        c->peer = *peer;
        c->local = *local;
        c->vhost = vhost;
    }
    conn_source(c, out);
    sip_source_hold(out);
    return 1;
}

apr_status_t sip_transport_flow_send(apr_uint64_t id, const char *buf, apr_size_t len)
{
    sip_tcp_conn_t *c = id && flows ? apr_hash_get(flows, &id, sizeof(id)) : NULL;
    apr_status_t rv;

    if (!c || c->remote || c->closed || c->close_after_flush || c->lingering)
        return APR_ECONNABORTED;
    rv = stream_send_msg(c, buf, len);
    if (rv == APR_SUCCESS)
        sip_stats->msgs_out[c->kind]++;
    else
        sip_stats->send_errors++;
    return rv;
}

void sip_transport_remote_closed(apr_uint64_t id)
{
    apr_time_t now = apr_time_now();
    sip_tcp_conn_t *c;

    if (!id || sip_flow_engine(id) == sip_engine_self())
        return;
    remote_prune(now);
    if ((c = remote_get(id, 1)))
        remote_mark_closed(c, now);
}

void sip_transport_peer_generation(int engine, apr_uint32_t g)
{
    apr_hash_index_t *hi;
    apr_time_t now = apr_time_now();

    g &= FLOW_GEN_MASK;
    if (engine < 0 || engine >= SIP_ENGINES_MAX || engine == sip_engine_self() || !g
        || peer_gen[engine] == g)
        return;
    flows_make();
    peer_gen[engine] = g;
    /* a restarted engine: every connection its predecessor held is gone */
    for (hi = apr_hash_first(NULL, flows); hi; hi = apr_hash_next(hi)) {
        sip_tcp_conn_t *c = apr_hash_this_val(hi);
        if (c->remote && sip_flow_engine(c->flow_id) == engine && flow_id_gen(c->flow_id) != g)
            remote_mark_closed(c, now);
    }
}
