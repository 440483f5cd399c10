/* SIP over WebSocket on HTTP and HTTPS vhosts (RFC 7118, RFC 6455 §4):
 * httpd has parsed the upgrade request (so access control, authentication
 * and logging apply to it); this handler checks the opening handshake,
 * answers 101 through httpd's filters and gives the connection to the
 * engine.  httpd glue: with mod_sip.c and sip_request.c the only code
 * touching request_rec.  See docs/websocket.md. */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "util_filter.h"
#include "apr_portable.h"
#include "apr_strings.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sip_engine.h"
#include "sip_request.h"
#include "sip_transport.h"
#include "sip_ws.h"
#include "sip_ws_upgrade.h"

extern module AP_MODULE_DECLARE_DATA sip_module;

#define RELAY_POLL_MS 60000     /* the engine's idle timeout ends a silent relay */

static void addr_copy(sip_sockaddr_t *out, const apr_sockaddr_t *a)
{
    memset(out, 0, sizeof(*out));
    if (!a || (apr_size_t)a->salen > sizeof(out->ss))
        return;
    memcpy(&out->ss, &a->sa, a->salen);
    out->len = a->salen;
}

/* What httpd already read past the upgrade request (a client that sent
 * frames before seeing our 101): a non-blocking speculative read, so
 * nothing is consumed that the engine would miss.  The count, or -1 when
 * it does not fit in the handoff header. */
static apr_ssize_t early_bytes(conn_rec *c, apr_pool_t *p, sip_handoff_t *h)
{
    apr_bucket_brigade *bb = apr_brigade_create(p, c->bucket_alloc);
    char buf[sizeof(h->early) + 1];
    apr_size_t len = sizeof(buf);
    apr_status_t rv;

    rv = ap_get_brigade(c->input_filters, bb, AP_MODE_SPECULATIVE, APR_NONBLOCK_READ,
                        sizeof(buf));
    if (rv != APR_SUCCESS || apr_brigade_flatten(bb, buf, &len) != APR_SUCCESS)
        len = 0;
    apr_brigade_destroy(bb);
    if (len > sizeof(h->early))
        return -1;
    memcpy(h->early, buf, len);
    h->early_len = len;
    return (apr_ssize_t)len;
}

static int write_all(int fd, const char *buf, apr_size_t len, int timeout_ms)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            struct pollfd pw = {fd, POLLOUT, 0};
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN || poll(&pw, 1, timeout_ms) <= 0)
                return -1;
            continue;
        }
        buf += n;
        len -= (apr_size_t)n;
    }
    return 0;
}

/* WSS: mod_ssl holds the TLS session in this process, so the decrypted
 * bytes go to and from the engine through a socketpair until either side
 * closes.  This holds the worker thread (docs/websocket.md). */
static void relay(request_rec *r, int fd)
{
    conn_rec *c = r->connection;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    apr_os_sock_t cfd = -1;
    int write_ms = (int)apr_time_as_msec(r->server->timeout);
    char buf[16384];

    apr_os_sock_get(&cfd, ap_get_conn_socket(c));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    /* As mod_proxy's tunnels do: RequestReadTimeout's body limit would
     * cut an idle WebSocket, and the coalescing filter would hold back
     * small frames. */
    ap_remove_input_filter_byhandle(c->input_filters, "reqtimeout");
    ap_remove_output_filter_byhandle(c->output_filters, "SSL/TLS Coalescing Filter");
    for (;;) {
        int moved = 0;
        apr_size_t len = sizeof(buf);
        apr_status_t rv;
        ssize_t n;

        /* client -> engine (mod_ssl may hold decrypted bytes the socket
         * no longer shows: read before polling) */
        rv = ap_get_brigade(c->input_filters, bb, AP_MODE_READBYTES, APR_NONBLOCK_READ,
                            sizeof(buf));
        if (rv == APR_SUCCESS) {
            int eos = !APR_BRIGADE_EMPTY(bb) && APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(bb));
            if (apr_brigade_flatten(bb, buf, &len) != APR_SUCCESS)
                break;
            apr_brigade_cleanup(bb);
            if (len && write_all(fd, buf, len, write_ms) != 0)
                break;
            if (eos)
                break;
            moved = len > 0;
        }
        else if (!APR_STATUS_IS_EAGAIN(rv))
            break;      /* EOF or error */
        /* engine -> client */
        n = read(fd, buf, sizeof(buf));
        if (n == 0)
            break;
        if (n > 0) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(buf, (apr_size_t)n,
                                                                   c->bucket_alloc));
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
            rv = ap_pass_brigade(c->output_filters, bb);
            apr_brigade_cleanup(bb);
            if (rv != APR_SUCCESS)
                break;
            moved = 1;
        }
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            break;
        if (!moved) {
            struct pollfd pfd[2] = {{cfd, POLLIN, 0}, {fd, POLLIN, 0}};
            if (poll(pfd, 2, RELAY_POLL_MS) < 0 && errno != EINTR)
                break;
        }
    }
    apr_brigade_destroy(bb);
}

static int ws_handler(request_rec *r)
{
    conn_rec *c = r->connection;
    sip_dir_conf *d = r->per_dir_config ? ap_get_module_config(r->per_dir_config, &sip_module)
                                        : NULL;
    const char *why, *accept = NULL, *subject;
    int status, fds[2] = {-1, -1}, tls;
    apr_os_sock_t fd;
    sip_handoff_t h;
    apr_status_t rv;

    if (!d || d->websocket != 1 || r->main || !apr_table_get(r->headers_in, "Upgrade"))
        return DECLINED;
    why = sip_ws_handshake_check(r->pool, r->method, r->headers_in, &accept, &status);
    if (!why && (r->proto_num < HTTP_VERSION(1, 1) || c->master)) {
        /* HTTP/2 has no Upgrade (RFC 8441 extended CONNECT is not served) */
        why = "the upgrade needs HTTP/1.1";
        status = HTTP_BAD_REQUEST;
    }
    if (why) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_sip: WebSocket upgrade refused (%d): %s", status, why);
        if (status == HTTP_UPGRADE_REQUIRED) {
            apr_table_setn(r->err_headers_out, "Sec-WebSocket-Version", "13");
            apr_table_setn(r->err_headers_out, "Upgrade", "websocket");
        }
        return status;
    }
    if (apr_os_sock_get(&fd, ap_get_conn_socket(c)) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;

    memset(&h, 0, sizeof(h));
    /* The vhost the upgrade came to is the SIP vhost of its messages. */
    h.vhost = r->server;
    tls = ap_ssl_conn_is_ssl(c);
    if (!tls) {
        h.kind = SIP_TP_WS;
        if (early_bytes(c, r->pool, &h) < 0) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "mod_sip: WebSocket upgrade refused: "
                          "more than %d bytes sent before the answer",
                          (int)sizeof(h.early));
            return HTTP_BAD_REQUEST;
        }
    }
    else {
        /* the engine gets its end before the 101: a failure can still be
         * answered 503 */
        h.kind = SIP_TP_WSS;
        h.relayed = 1;
        addr_copy(&h.peer, c->client_addr);
        addr_copy(&h.local, c->local_addr);
        subject = ap_ssl_var_lookup(r->pool, r->server, c, r, "SSL_CLIENT_S_DN");
        if (subject && *subject)
            apr_cpystrn(h.tls_subject, subject, sizeof(h.tls_subject));
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
            rv = errno;
        else {
            rv = sip_engine_handoff(fds[0], &h);
            close(fds[0]);
        }
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                          "mod_sip: cannot hand the WebSocket connection to the SIP engine");
            if (fds[1] >= 0)
                close(fds[1]);
            return HTTP_SERVICE_UNAVAILABLE;
        }
    }
    r->status = HTTP_SWITCHING_PROTOCOLS;
    apr_table_setn(r->headers_out, "Upgrade", "websocket");
    apr_table_setn(r->headers_out, "Connection", "Upgrade");
    apr_table_setn(r->headers_out, "Sec-WebSocket-Accept", accept);
    apr_table_setn(r->headers_out, "Sec-WebSocket-Protocol", "sip");
    ap_send_interim_response(r, 1);
    c->keepalive = AP_CONN_CLOSE;
    if (tls) {
        relay(r, fds[1]);
        close(fds[1]);
    }
    else {
        /* Plain: the descriptor goes to the engine only now, after the
         * 101 is out, since frames the client sent early are answered at
         * once.  A failure now can only close the connection. */
        rv = sip_engine_handoff(fd, &h);
        if (rv != APR_SUCCESS)
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                          "mod_sip: cannot hand the WebSocket connection to the SIP engine");
    }
    /* httpd neither reads nor writes this connection any more (plain: the
     * engine has its own descriptor; closing ours does not shut it down) */
    c->aborted = 1;
    return OK;
}

int sip_ws_upgrade_vhost_on(server_rec *s)
{
    sip_dir_conf *d = s->lookup_defaults ? ap_get_module_config(s->lookup_defaults, &sip_module)
                                         : NULL;

    return d && d->websocket == 1;
}

void sip_ws_upgrade_register_hooks(apr_pool_t *p)
{
    (void)p;
    /* first: no content handler must serve the <Location> instead */
    ap_hook_handler(ws_handler, NULL, NULL, APR_HOOK_FIRST);
}
