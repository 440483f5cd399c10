/* WebSocket framing in the engine (sip_transport.c over sip_ws.c): the
 * input, cut into reads of varying sizes (its first byte, whose top bit
 * says: start as a TCP connection of a vhost with SipWebSocket On, so
 * that the engine's own HTTP upgrade runs first), goes through a WS
 * connection on a socketpair as if read from a browser.  Checks: every
 * message delivered is NUL-terminated and within the size limit, and what
 * the engine writes back is a sequence of well-formed unmasked server
 * frames. */
#include "fuzz_common.h"

#include <sys/socket.h>

#define FUZZ_MAX_HEADER 300
#define FUZZ_MAX_BODY   200

static sip_loop_t *ws_loop;
static apr_pool_t *ws_pool;
static apr_size_t delivered;
/* The loop's timer heap is malloc'ed but pointed to only from pool memory,
 * which LeakSanitizer does not scan: keep a root for it here. */
static void *ws_loop_heap;

static void ws_deliver_cb(const char *buf, apr_size_t len, int flags, const sip_source_t *src)
{
    /* NUL-terminated, except what comes with a lost framing (TCP) */
    if ((!flags && buf[len] != '\0') || len > FUZZ_MAX_HEADER + FUZZ_MAX_BODY
        || (src->kind != SIP_TP_WS && src->kind != SIP_TP_TCP))
        abort();
    delivered++;
    /* the receiver may answer on the connection, as the engine does */
    if (len && buf[0] == 'A')
        sip_transport_send(src, NULL, buf, len);
}

static int ws_limits_cb(void *vhost, sip_tp_limits_t *lim)
{
    (void)vhost;
    lim->max_header = FUZZ_MAX_HEADER;
    lim->max_body = FUZZ_MAX_BODY;
    lim->max_line = 100;
    lim->max_field = 100;
    lim->idle = apr_time_from_sec(60);
    lim->msg = apr_time_from_sec(10);
    lim->ws_upgrade = 1;
    return 1;
}

/* What the engine wrote: whole server frames (an unfinished last one is
 * fine: the socket buffer may have cut it), after the 101 answer when
 * 'http' (any other answer ends the output). */
static void check_output(int fd, int http)
{
    static char out[1 << 18];
    apr_size_t len = 0, off = 0;
    ssize_t n;

    while (len < sizeof(out) && (n = recv(fd, out + len, sizeof(out) - len, MSG_DONTWAIT)) > 0)
        len += (apr_size_t)n;
    if (http) {
        const char *end = memmem(out, len, "\r\n\r\n", 4);
        if (len < 13 || memcmp(out, "HTTP/1.1 ", 9) != 0 || !end)
            abort();
        off = (apr_size_t)(end - out) + 4;
        if (memcmp(out + 9, "101 ", 4) != 0) {
            if (off != len)
                abort();    /* nothing after a refusal */
            return;
        }
    }
    while (off < len) {
        sip_ws_frame_t f;
        int r = sip_ws_frame_parse(out + off, len - off, 0, (apr_uint64_t)-1, &f);
        if (r < 0 || f.masked || !f.fin)
            abort();
        if (r == 0)
            break;
        off += f.header_len + (apr_size_t)f.payload_len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sip_handoff_t h;
    sip_tcp_conn_t *c;
    sip_tp_limits_t lim;
    int fds[2];
    apr_size_t off = 1, step;
    int mode;       /* 0: WS frames out; 1: an HTTP answer first; 2: SIP over TCP */

    fuzz_init();
    if (!ws_loop) {
        apr_pool_create(&ws_pool, NULL);
        if (sip_loop_create(&ws_loop, ws_pool) != APR_SUCCESS)
            abort();
        ws_loop_heap = ws_loop->heap;
        sip_transport_init(ws_loop, ws_pool, ws_deliver_cb, ws_limits_cb);
    }
    if (size < 1 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        return fuzz_done();
    step = (apr_size_t)(data[0] & 0x3F) + 1;
    memset(&h, 0, sizeof(h));
    h.kind = SIP_TP_WS;
    sip_sockaddr_set(&h.peer, "127.0.0.1", 5060);
    sip_sockaddr_set(&h.local, "127.0.0.1", 80);
    ws_limits_cb(NULL, &lim);
    /* a TCP stream that does not start with "GET " stays SIP over TCP */
    mode = !(data[0] & 0x80) ? 0 : size >= 5 && memcmp(data + 1, "GET ", 4) == 0 ? 1 : 2;
    c = tcp_new(fds[0], data[0] & 0x80 ? SIP_TP_TCP : SIP_TP_WS, NULL, &lim);
    c->peer = h.peer;
    c->local = h.local;
    c->refs++;      /* ours, so that c outlives its close for the loop below */
    while (off < size && !c->closed && !c->close_after_flush) {
        /* the read path of tcp_event, with reads of 'step' bytes */
        apr_size_t room = lim.max_header + lim.max_body + 1 + 14, n = size - off;

        if (n > step)
            n = step;
        if (c->in_cap < room && c->in_cap - c->in_len < n) {
            char *bigger = realloc(c->in, room + 1);
            if (!bigger)
                abort();
            c->in = bigger;
            c->in_cap = room;
        }
        if (n > c->in_cap - c->in_len)
            n = c->in_cap - c->in_len;
        if (!n)
            abort();    /* a frame within the limits always fits */
        memcpy(c->in + c->in_len, data + off, n);
        c->in_len += n;
        off += n;
        stream_process_input(c);
        if (mode == 1 && c->http_checked) {
            /* the answer to the upgrade, then frames */
            check_output(fds[1], 1);
            mode = c->kind == SIP_TP_WS ? 0 : 2;
        }
    }
    if (mode == 0)
        check_output(fds[1], 0);
    tcp_close(c, "fuzz input done");
    c->refs--;
    tcp_destroy_if_unused(c);
    destroy_doomed(ws_loop);
    close(fds[1]);
    {
        /* APR's epoll pollset recycles removed entries only in a poll */
        const apr_pollfd_t *res;
        apr_int32_t n;
        apr_pollset_poll(ws_loop->pollset, 0, &n, &res);
    }
    return fuzz_done();
}
