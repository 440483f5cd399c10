/* Transport layer: bytes and addresses only (no SIP parsing beyond stream
 * framing).  UDP sockets are opened by the httpd parent and inherited; TCP
 * connections arrive from the MPM children as passed descriptors. */
#ifndef SIP_TRANSPORT_H
#define SIP_TRANSPORT_H

#include <sys/socket.h>
#include "apr_network_io.h"
#include "apr_tables.h"
#include "sip_event.h"

/* Transports (RFC 3261 §18, RFC 7118 for WebSocket).  TLS and WS(S) are
 * streams like TCP: a sip_tcp_conn_t with a TLS layer (sip_tls.c) and/or
 * WebSocket framing (sip_ws.c) on top. */
typedef enum { SIP_TP_UDP, SIP_TP_TCP, SIP_TP_TLS, SIP_TP_WS, SIP_TP_WSS, SIP_TP_COUNT } sip_tp_kind_t;

/* "UDP" "TCP" "TLS" "WS" "WSS": the Via transport token (§20.42, RFC 7118 §5). */
const char *sip_tp_via_name(sip_tp_kind_t k);
/* "udp" "tcp" "tls" "ws" "wss": the URI transport parameter (§19.1.1). */
const char *sip_tp_param(sip_tp_kind_t k);
/* Either spelling (case-insensitive) to a kind; -1 when unknown or NULL. */
int sip_tp_from_name(const char *name);
/* Everything but UDP is reliable (§17.1.1.2: no retransmission timers). */
#define sip_tp_reliable(k) ((k) != SIP_TP_UDP)
/* TLS and WSS are secure (sips:, RFC 3261 §26.2.2). */
#define sip_tp_secure(k) ((k) == SIP_TP_TLS || (k) == SIP_TP_WSS)

typedef struct sip_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
} sip_sockaddr_t;

typedef struct sip_udp sip_udp_t;
typedef struct sip_tcp_conn sip_tcp_conn_t;

/* Where a message came from, and so how to answer it. */
typedef struct sip_source {
    sip_tp_kind_t kind;
    sip_udp_t *udp;
    sip_tcp_conn_t *tcp;    /* a reference is held while a copy lives */
    sip_sockaddr_t peer;
    sip_sockaddr_t local;
    void *vhost;            /* server_rec of the SIP vhost, opaque here */
} sip_source_t;

/* Set when the stream can't be framed any further: the receiver answers
 * what it can and the connection is closed after the answer is flushed. */
#define SIP_TP_FRAMING_LOST 1

typedef void (*sip_tp_deliver_cb)(const char *buf, apr_size_t len, int flags,
                                  const sip_source_t *src);

typedef struct sip_tp_limits {
    apr_size_t max_header;          /* bytes before the blank line */
    apr_size_t max_body;
    apr_size_t max_line;            /* start line (LimitRequestLine) */
    apr_size_t max_field;           /* one header line (LimitRequestFieldSize) */
    apr_interval_time_t idle;       /* SipTcpIdleTimeout */
    apr_interval_time_t msg;        /* SipTcpMessageTimeout: a message begun must end */
    int ws_upgrade;                 /* SipWebSocket On for the vhost itself: a TCP/TLS
                                     * connection may start with a WebSocket upgrade */
} sip_tp_limits_t;

/* Fills the limits for a vhost; returns 0 when the vhost is not a SIP one. */
typedef int (*sip_tp_limits_cb)(void *vhost, sip_tp_limits_t *lim);

void sip_transport_init(sip_loop_t *loop, apr_pool_t *p, sip_tp_deliver_cb deliver,
                        sip_tp_limits_cb limits);

/* Engine-wide TCP connection limits (0: none).  At 'max_total' the longest
 * idle connection that no transaction holds is closed to make room; a
 * connection from an address (an IPv6 /64) that already has 'max_per_ip'
 * accepted ones is closed at once. */
void sip_transport_set_conn_limits(apr_size_t max_total, apr_size_t max_per_ip);

/* Serve an inherited, bound UDP socket. */
apr_status_t sip_udp_serve(apr_socket_t *sock, void *vhost);
/* Send for 'vhost' through the socket served for 'same_as' (name-based
 * vhosts on one address). */
void sip_udp_alias(void *vhost, void *same_as);
/* Open (in the parent) a UDP socket bound to 'sa'. */
apr_status_t sip_udp_open(apr_socket_t **sock, apr_sockaddr_t *sa, apr_pool_t *p);
/* The same, joining a SO_REUSEPORT group when 'reuseport' (SipEngines). */
apr_status_t sip_udp_open_shared(apr_socket_t **sock, apr_sockaddr_t *sa, apr_pool_t *p,
                                 int reuseport);

/* Descriptor passing between MPM children and the engine.  One datagram
 * per connection: this header (plus the descriptor). */
typedef struct sip_handoff {
    void *vhost;                /* server_rec */
    sip_tp_kind_t kind;         /* TCP or TLS: a ProtocolSip listener's connection, nothing
                                 * read yet (TLS: no handshake yet, the engine does it).
                                 * WS or WSS: httpd has answered the upgrade (101) already */
    int relayed;                /* the descriptor is the engine's end of a socketpair an MPM
                                 * child relays (WSS decrypted by mod_ssl): the addresses
                                 * below are the client's, not the socketpair's */
    sip_sockaddr_t peer, local; /* set when 'relayed' */
    char tls_subject[512];      /* relayed WSS with a client certificate: SSL_CLIENT_S_DN */
    apr_size_t early_len;       /* bytes httpd read past the upgrade request, to be */
    char early[1024];           /* processed before anything read from the descriptor */
} sip_handoff_t;

apr_status_t sip_fdpass_pair(int fds[2]);
apr_status_t sip_fdpass_send(int chan, int fd, const sip_handoff_t *h);
/* Serve the receiving end: each received descriptor becomes a connection. */
apr_status_t sip_fdpass_serve(int chan);

/* Send bytes back to 'src' (same connection for TCP, 'dest' for UDP). */
apr_status_t sip_transport_send(const sip_source_t *src, const sip_sockaddr_t *dest,
                                const char *buf, apr_size_t len);

/* Send to 'dest' over 'kind' on behalf of 'vhost': UDP from the vhost's
 * socket, TCP/TLS on an existing connection of that kind to 'dest' or a
 * new one (TLS: 'tls_host', when not NULL, is the name the server's
 * certificate must match), WS/WSS only on an existing connection.  'used'
 * (optional) receives the source to reuse for that peer; it is held. */
apr_status_t sip_transport_send_to(sip_tp_kind_t kind, void *vhost, const sip_sockaddr_t *dest,
                                   const char *buf, apr_size_t len, sip_source_t *used);
apr_status_t sip_transport_send_tls(void *vhost, const sip_sockaddr_t *dest, const char *tls_host,
                                    const char *buf, apr_size_t len, sip_source_t *used);

/* The TLS client certificate's subject (RFC 2253 form, as mod_ssl's
 * SSL_CLIENT_S_DN) of the connection 'src' came on, or NULL. */
const char *sip_source_tls_subject(apr_pool_t *p, const sip_source_t *src);
/* Several engines: the subject the engine holding the connection saw, for
 * the stand-in 'src' (the first one given is kept; nothing for others). */
void sip_source_set_tls_subject(sip_source_t *src, const char *subject);
/* mod_ssl's variables (HTTPS, SSL_PROTOCOL, SSL_CIPHER, SSL_CLIENT_S_DN,
 * SSL_CLIENT_VERIFY...) for a message that came over TLS or WSS, into
 * 'env'; nothing for other transports or a connection already closed. */
void sip_source_tls_env(apr_pool_t *p, const sip_source_t *src, apr_table_t *env);

/* The port this vhost's SIP over TLS is reached at (sip_tls_port), 0
 * when no virtual host serves TLS: for Via and Record-Route on TLS. */
int sip_transport_tls_port(void *vhost);

/* The address this vhost is reached at (for Via and Record-Route). */
int sip_transport_local_addr(void *vhost, sip_sockaddr_t *out);
/* Is ip:port one of our own SIP addresses? */
int sip_transport_is_local(const char *ip, int port);

/* Told when a TCP connection closes, so users of it can fail over. */
typedef void (*sip_tp_closed_cb)(sip_tcp_conn_t *c);
void sip_transport_on_close(sip_tp_closed_cb cb);

/* Can 'src' still be answered on: UDP always, a stream while its
 * connection is open and not closing. */
int sip_source_is_open(const sip_source_t *src);

/* Keep/let go of the connection in a copied source. */
void sip_source_hold(sip_source_t *src);
void sip_source_release(sip_source_t *src);

/* Close after pending output (used after errors that lose framing). */
void sip_tcp_close_after_flush(sip_tcp_conn_t *c);

/* Frame one message at the start of a stream buffer.  Returns 1 and sets
 * *msg_len when a whole message is there, 0 when more bytes are needed,
 * -1 when the header exceeds max_header (*msg_len = header bytes seen),
 * -2 when Content-Length is unusable or above max_body and -3 when it is
 * missing (RFC 3261 §18.3, §20.14: mandatory on streams) (*msg_len =
 * header length in both).  Exposed for unit tests. */
int sip_stream_frame(const char *buf, apr_size_t len, apr_size_t max_header,
                     apr_size_t max_body, apr_size_t *msg_len);

/* Formatting and comparison helpers. */
const char *sip_sockaddr_ip(apr_pool_t *p, const sip_sockaddr_t *a);
int sip_sockaddr_port(const sip_sockaddr_t *a);
apr_status_t sip_sockaddr_set(sip_sockaddr_t *a, const char *ip, int port);

/* Flows (RFC 5626 §5.3, RFC 7118 §5): the connection 'src' came on as an
 * id that stays valid while it is open (0 for UDP or a closed one), and
 * back: 1 and a held source ('out', sip_source_release it) when that
 * connection is still open, 0 when it is gone. */
apr_uint64_t sip_source_flow_id(const sip_source_t *src);
int sip_transport_flow_source(apr_uint64_t id, sip_source_t *out);

/* Several engines (sip_handover.h): a flow id names its engine.  Another
 * engine's flow is a stand-in whose sends go to the owner
 * (SIP_HO_SEND_FLOW); sip_transport_flow_source returns it while it is
 * not known closed.  sip_transport_remote_source: the same for a message
 * handed over from that flow, with the addresses the owner saw (0 when
 * closed, or 'kind' is not the flow's). */
int sip_transport_remote_source(apr_uint64_t id, sip_tp_kind_t kind, const sip_sockaddr_t *peer,
                                const sip_sockaddr_t *local, void *vhost, sip_source_t *out);
/* The owner: send on our flow 'id' for another engine (APR_ECONNABORTED
 * when it is closed or not ours). */
apr_status_t sip_transport_flow_send(apr_uint64_t id, const char *buf, apr_size_t len);
/* Another engine's flow 'id' closed (SIP_HO_FLOW_CLOSED): its stand-in
 * is closed, and client transactions on it fail over. */
void sip_transport_remote_closed(apr_uint64_t id);
/* This engine's flow generation (random per start, never 0), and a
 * peer's as it announces it (SYNC, REPLICA: the origin's cookie): a new
 * one means the peer restarted, and its old generation's flows are gone. */
apr_uint32_t sip_transport_flow_generation(void);
void sip_transport_peer_generation(int engine, apr_uint32_t gen);
/* Our UDP socket bound to 'local' (several engines each hold one of the
 * same SO_REUSEPORT group) as a source for 'vhost' (peer left unset):
 * 1, or 0 when we serve no such address. */
int sip_transport_udp_source(const sip_sockaddr_t *local, void *vhost, sip_source_t *out);

/* Counters for logs and tests. */
apr_size_t sip_tcp_open_count(void);

#endif
