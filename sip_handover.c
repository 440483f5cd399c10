/* Several engines: identity, marks and the hand-over channel
 * (sip_handover.h, docs/architecture.md "Several engines").
 *
 * The channel: the parent makes one SOCK_DGRAM socketpair per engine
 * before forking; engine n polls chans[n][0], and every engine writes to
 * engine n through chans[n][1].  A datagram is a fixed header (the kind
 * and the origin, in this host's byte order: both ends are the same
 * build on the same machine) followed by the SIP text.  The parent keeps
 * every pair, so a restarted engine finds its channel where the old one
 * left it. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "apr_atomic.h"
#include "apr_strings.h"
#include "apr_portable.h"
#include "httpd.h"
#include "http_log.h"
#include "http_main.h"
#include "sip_handover.h"
#include "sip_stats.h"

static int engine_self = 0;
static int engine_count = 1;
static sip_ho_handler_t handlers[SIP_HO_KIND_COUNT];

int sip_engine_self(void) { return engine_self; }
int sip_engine_count(void) { return engine_count; }

void sip_engine_identity_set(int self, int count)
{
    engine_count = count < 1 ? 1 : count > SIP_ENGINES_MAX ? SIP_ENGINES_MAX : count;
    engine_self = self < 0 || self >= engine_count ? 0 : self;
}

char sip_engine_mark(int engine)
{
    static const char marks[] = "0123456789abcdefghijklmnopqrstuv";

    return engine >= 0 && engine < SIP_ENGINES_MAX ? marks[engine] : '0';
}

int sip_engine_from_mark(char c)
{
    int n = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'v' ? c - 'a' + 10 : -1;

    return n >= 0 && n < engine_count ? n : -1;
}

int sip_engine_of_branch(const char *branch)
{
    if (!branch || strncmp(branch, "z9hG4bKmS", 9) != 0)
        return -1;
    return engine_count == 1 ? 0 : sip_engine_from_mark(branch[9]);
}

int sip_engine_of_tag(const char *tag)
{
    if (!tag || tag[0] != 'm' || tag[1] != 'S' || !tag[2])
        return -1;
    return engine_count == 1 ? 0 : sip_engine_from_mark(tag[2]);
}

int sip_engine_home(const char *aor)
{
    /* FNV-1a: stable across processes and builds, unlike a seeded hash. */
    apr_uint32_t h = 2166136261u;

    for (; aor && *aor; aor++)
        h = (h ^ (unsigned char)*aor) * 16777619u;
    return (int)(h % (apr_uint32_t)engine_count);
}

/* ---- the wire format ---- */

#define HO_VERSION 1

typedef struct ho_header {
    unsigned char version, kind, tp, engine;
    apr_uint32_t cookie;
    apr_uint64_t flow;
    apr_uint64_t vhost;
    apr_uint32_t peer_len, local_len;
    apr_uint32_t subject_len;   /* the subject's bytes (with its NUL) before the text */
    struct sockaddr_storage peer, local;
} ho_header_t;

apr_size_t sip_handover_header_size(void)
{
    return sizeof(ho_header_t);
}

/* An address as sent: its length must fit and agree with its family. */
static int addr_ok(const struct sockaddr_storage *ss, apr_uint32_t len)
{
    switch (ss->ss_family) {
    case AF_UNSPEC:
        return len <= sizeof(*ss);
    case AF_INET:
        return len == sizeof(struct sockaddr_in);
    case AF_INET6:
        return len == sizeof(struct sockaddr_in6);
    default:
        return 0;
    }
}

apr_size_t sip_handover_encode(char *buf, apr_size_t size, sip_ho_kind_t kind,
                               const sip_ho_origin_t *from, const char *text, apr_size_t len)
{
    ho_header_t h;
    apr_size_t sub = from->tls_subject ? strlen(from->tls_subject) + 1 : 0;

    if (sub > SIP_HO_SUBJECT_MAX)
        sub = 0;    /* too long to carry: the receiver goes without it */
    if (size < sizeof(h) + sub || len > size - sizeof(h) - sub)
        return 0;
    memset(&h, 0, sizeof(h));
    h.version = HO_VERSION;
    h.kind = (unsigned char)kind;
    h.tp = (unsigned char)from->kind;
    h.engine = (unsigned char)from->engine;
    h.cookie = from->cookie;
    h.flow = from->flow;
    h.vhost = (apr_uint64_t)(apr_uintptr_t)from->vhost;
    h.peer_len = from->peer.len <= sizeof(h.peer) ? (apr_uint32_t)from->peer.len : 0;
    h.local_len = from->local.len <= sizeof(h.local) ? (apr_uint32_t)from->local.len : 0;
    memcpy(&h.peer, &from->peer.ss, sizeof(h.peer));
    memcpy(&h.local, &from->local.ss, sizeof(h.local));
    h.subject_len = (apr_uint32_t)sub;
    memcpy(buf, &h, sizeof(h));
    if (sub)
        memcpy(buf + sizeof(h), from->tls_subject, sub);
    if (len)
        memcpy(buf + sizeof(h) + sub, text, len);
    return sizeof(h) + sub + len;
}

int sip_handover_decode(const char *buf, apr_size_t len, sip_ho_kind_t *kind,
                        sip_ho_origin_t *out, const char **text, apr_size_t *text_len)
{
    ho_header_t h;

    if (len < sizeof(h))
        return 0;
    memcpy(&h, buf, sizeof(h));
    if (h.version != HO_VERSION || h.kind < SIP_HO_DELIVER || h.kind >= SIP_HO_KIND_COUNT
        || h.tp >= SIP_TP_COUNT || h.engine >= SIP_ENGINES_MAX
        || !addr_ok(&h.peer, h.peer_len) || !addr_ok(&h.local, h.local_len)
        || (h.tp == SIP_TP_UDP && h.flow) || h.subject_len > SIP_HO_SUBJECT_MAX
        || h.subject_len > len - sizeof(h)
        /* one string, its NUL last */
        || (h.subject_len && memchr(buf + sizeof(h), '\0', h.subject_len)
                             != buf + sizeof(h) + h.subject_len - 1))
        return 0;
    memset(out, 0, sizeof(*out));
    *kind = (sip_ho_kind_t)h.kind;
    out->kind = (sip_tp_kind_t)h.tp;
    out->engine = h.engine;
    out->cookie = h.cookie;
    out->flow = h.flow;
    out->vhost = (void *)(apr_uintptr_t)h.vhost;
    memcpy(&out->peer.ss, &h.peer, sizeof(h.peer));
    out->peer.len = (socklen_t)h.peer_len;
    memcpy(&out->local.ss, &h.local, sizeof(h.local));
    out->local.len = (socklen_t)h.local_len;
    out->tls_subject = h.subject_len ? buf + sizeof(h) : NULL;
    *text = buf + sizeof(h) + h.subject_len;
    *text_len = len - sizeof(h) - h.subject_len;
    return 1;
}

/* ---- the channel ---- */

static int chans[SIP_ENGINES_MAX][2] = {{-1, -1}};
static int chans_made;
static apr_size_t max_text = 65536;
static char *send_buf, *recv_buf, *catch_buf;
static sip_io_t chan_io;
static sip_loop_t *chan_loop;

/* Replicas sent to each engine, counted by their senders in memory the
 * parent maps before forking (it outlives an engine's restart), and the
 * ones this engine has read: a request can be routed only once every
 * replica sent before it arrived has been applied (sip_handover_catch_up). */
static apr_uint32_t *replicas_sent;
static apr_uint32_t replicas_read;

/* Datagrams read while catching up that were not replicas: handled, in
 * their order, before anything read after them. */
typedef struct stashed {
    struct stashed *next;
    apr_size_t len;
    char buf[1];
} stashed_t;
static stashed_t *stash_head, **stash_tail = &stash_head;
static sip_timer_t stash_timer;

static apr_status_t close_chans(void *data)
{
    int i;

    (void)data;
    for (i = 0; i < chans_made; i++) {
        if (chans[i][0] >= 0)
            close(chans[i][0]);
        if (chans[i][1] >= 0)
            close(chans[i][1]);
        chans[i][0] = chans[i][1] = -1;
    }
    chans_made = 0;
    return APR_SUCCESS;
}

apr_status_t sip_handover_prepare(apr_pool_t *pconf, int count)
{
    int i, size = 4 * 1024 * 1024;

    chans_made = 0;
    if (count <= 1)
        return APR_SUCCESS;
    if (!replicas_sent) {       /* once per parent: kept across restarts */
        void *m = mmap(NULL, SIP_ENGINES_MAX * sizeof(apr_uint32_t), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return errno;
        replicas_sent = m;
    }
    apr_pool_cleanup_register(pconf, NULL, close_chans, apr_pool_cleanup_null);
    for (i = 0; i < count && i < SIP_ENGINES_MAX; i++) {
        /* CLOEXEC: scripts the engines start must not hold the channel. */
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, chans[i]) < 0)
            return errno;
        chans_made = i + 1;
        fcntl(chans[i][0], F_SETFL, fcntl(chans[i][0], F_GETFL) | O_NONBLOCK);
        fcntl(chans[i][1], F_SETFL, fcntl(chans[i][1], F_GETFL) | O_NONBLOCK);
        /* A datagram in flight is charged to the writing end: room for a
         * burst of misdelivered responses while the receiver is busy. */
        sip_sock_bufsize(chans[i][1], SO_SNDBUF, size);
        sip_sock_bufsize(chans[i][0], SO_RCVBUF, size);
    }
    return APR_SUCCESS;
}

void sip_handover_set_max(apr_size_t max)
{
    max_text = max < 65536 ? 65536 : max;
}

/* One datagram of our channel, read into 'buf' (one byte of room after
 * its 'n'). */
static void chan_dispatch(char *buf, apr_size_t n)
{
    sip_ho_origin_t from;
    sip_ho_kind_t kind;
    const char *text;
    apr_size_t tlen;

    if (!sip_handover_decode(buf, n, &kind, &from, &text, &tlen)
        || from.engine >= engine_count || from.engine == engine_self) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf,
                     "sip: malformed hand-over datagram (%ld bytes) dropped", (long)n);
        return;
    }
    /* The text is a C string for the layers above, as a UDP one is. */
    buf[n] = '\0';
    sip_stats->ho_received++;
    if (kind == SIP_HO_REPLICA)
        replicas_read++;
    if (handlers[kind])
        handlers[kind](kind, &from, text, tlen);
}

/* The oldest stashed datagram, handled; 0 when there was none. */
static int stash_one(void)
{
    stashed_t *d = stash_head;

    if (!d)
        return 0;
    if (!(stash_head = d->next))
        stash_tail = &stash_head;
    chan_dispatch(d->buf, d->len);
    free(d);
    return 1;
}

static void stash_run(void *baton)
{
    (void)baton;
    while (stash_one())
        ;
}

static void chan_readable(void *baton, apr_int16_t ev)
{
    int i;

    (void)baton;
    (void)ev;
    /* Bounded, as for a UDP socket: the loop's other work goes on. */
    for (i = 0; i < 64; i++) {
        ssize_t n;

        if (stash_one())
            continue;
        n = recv(chans[engine_self][0], recv_buf, sizeof(ho_header_t) + max_text, MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf,
                             "sip: hand-over channel receive failed");
            return;
        }
        chan_dispatch(recv_buf, (apr_size_t)n);
    }
}

void sip_handover_catch_up(void)
{
    static int busy;

    if (engine_count <= 1 || !replicas_sent || !catch_buf || busy
        || (apr_int32_t)(apr_atomic_read32(&replicas_sent[engine_self]) - replicas_read) <= 0)
        return;
    busy = 1;
    while ((apr_int32_t)(apr_atomic_read32(&replicas_sent[engine_self]) - replicas_read) > 0) {
        sip_ho_kind_t kind = 0;
        ssize_t n = recv(chans[engine_self][0], catch_buf, sizeof(ho_header_t) + max_text,
                         MSG_DONTWAIT);

        if (n < 0)
            break;      /* counted but not here: lost, or read by our handler already */
        if ((apr_size_t)n > offsetof(ho_header_t, kind))
            kind = (sip_ho_kind_t)(unsigned char)catch_buf[offsetof(ho_header_t, kind)];
        if (kind == SIP_HO_REPLICA) {
            chan_dispatch(catch_buf, (apr_size_t)n);
            continue;
        }
        /* anything else waits its turn, behind what was stashed before */
        {
            stashed_t *d = malloc(sizeof(*d) + (apr_size_t)n);
            if (!d)
                break;
            d->next = NULL;
            d->len = (apr_size_t)n;
            memcpy(d->buf, catch_buf, (apr_size_t)n);
            *stash_tail = d;
            stash_tail = &d->next;
        }
    }
    if (stash_head)
        sip_timer_set(chan_loop, &stash_timer, 0, stash_run, NULL);
    busy = 0;
}

apr_status_t sip_handover_start(sip_loop_t *loop, apr_pool_t *p)
{
    apr_socket_t *sock = NULL;
    apr_os_sock_t fd;
    int i;

    if (engine_count <= 1 || chans_made < engine_count)
        return engine_count <= 1 ? APR_SUCCESS : APR_ENOTSOCK;
    /* Ours to read, the others' to write to. */
    for (i = 0; i < chans_made; i++) {
        if (i == engine_self) {
            close(chans[i][1]);
            chans[i][1] = -1;
        }
        else {
            close(chans[i][0]);
            chans[i][0] = -1;
        }
    }
    send_buf = apr_palloc(p, sizeof(ho_header_t) + max_text + 1);
    recv_buf = apr_palloc(p, sizeof(ho_header_t) + max_text + 1);
    catch_buf = apr_palloc(p, sizeof(ho_header_t) + max_text + 1);
    chan_loop = loop;
    /* what is queued from before a restart is not waited for */
    if (replicas_sent)
        replicas_read = apr_atomic_read32(&replicas_sent[engine_self]);
    fd = chans[engine_self][0];
    if (apr_os_sock_put(&sock, &fd, p) != APR_SUCCESS)
        return APR_ENOTSOCK;
    sip_io_init_socket(&chan_io, sock, chan_readable, NULL);
    return sip_io_watch(loop, &chan_io, APR_POLLIN);
}

void sip_handover_on(sip_ho_kind_t kind, sip_ho_handler_t h)
{
    if (kind > 0 && kind < SIP_HO_KIND_COUNT)
        handlers[kind] = h;
}

apr_status_t sip_handover_send(int to, sip_ho_kind_t kind, const sip_ho_origin_t *from,
                               const char *text, apr_size_t len)
{
    sip_ho_origin_t o = *from;
    apr_size_t n;

    if (to < 0 || to >= engine_count || to == engine_self || !send_buf
        || chans[to][1] < 0)
        return APR_EINVAL;
    o.engine = engine_self;
    n = sip_handover_encode(send_buf, sizeof(ho_header_t) + max_text, kind, &o, text, len);
    if (!n || send(chans[to][1], send_buf, n, MSG_DONTWAIT) < 0) {
        /* Full (or too big): lost like a UDP datagram; the sender's
         * retransmission repairs it. */
        sip_stats->ho_dropped++;
        return APR_EAGAIN;
    }
    sip_stats->ho_sent++;
    if (kind == SIP_HO_REPLICA && replicas_sent)
        apr_atomic_inc32(&replicas_sent[to]);
    return APR_SUCCESS;
}

void sip_handover_broadcast(sip_ho_kind_t kind, const sip_ho_origin_t *from,
                            const char *text, apr_size_t len)
{
    int i;

    for (i = 0; i < engine_count; i++)
        if (i != engine_self)
            sip_handover_send(i, kind, from, text, len);
}

void sip_handover_origin(const sip_source_t *src, sip_ho_origin_t *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = src->kind;
    out->peer = src->peer;
    out->local = src->local;
    out->vhost = src->vhost;
    out->engine = engine_self;
    out->flow = src->kind == SIP_TP_UDP ? 0 : sip_source_flow_id(src);
}

void sip_handover_origin_tls(apr_pool_t *p, const sip_source_t *src, sip_ho_origin_t *out)
{
    sip_handover_origin(src, out);
    out->tls_subject = sip_source_tls_subject(p, src);
}

int sip_handover_source(const sip_ho_origin_t *o, sip_source_t *out)
{
    memset(out, 0, sizeof(*out));
    /* UDP: our own socket of the same SO_REUSEPORT group answers. */
    if (o->kind == SIP_TP_UDP) {
        if (!sip_transport_udp_source(&o->local, o->vhost, out))
            return 0;
        out->peer = o->peer;
        return 1;
    }
    /* A stream held here (with one engine, or a flow of ours). */
    if (o->engine == engine_self)
        return o->flow && sip_transport_flow_source(o->flow, out);
    /* A stream another engine holds: a stand-in whose sends go to the
     * owner (SIP_HO_SEND_FLOW; sip_transport.c). */
    if (!sip_transport_remote_source(o->flow, o->kind, &o->peer, &o->local, o->vhost, out))
        return 0;
    if (o->tls_subject)
        sip_source_set_tls_subject(out, o->tls_subject);
    return 1;
}
