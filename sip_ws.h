/* SIP over WebSocket (RFC 7118): the RFC 6455 opening handshake and
 * framing.  Pure functions (no I/O) for the parser and the fuzz target;
 * the engine's connection code in sip_transport.c drives them. */
#ifndef SIP_WS_H
#define SIP_WS_H

#include "apr_pools.h"
#include "apr_tables.h"

/* Opcodes (RFC 6455 §5.2). */
#define SIP_WS_CONT   0x0
#define SIP_WS_TEXT   0x1
#define SIP_WS_BINARY 0x2
#define SIP_WS_CLOSE  0x8
#define SIP_WS_PING   0x9
#define SIP_WS_PONG   0xA

typedef struct sip_ws_frame {
    int fin;
    int opcode;
    int masked;
    apr_uint64_t payload_len;
    apr_size_t header_len;          /* payload starts at buf + header_len */
} sip_ws_frame_t;

/* Parse one frame header at 'buf'.  Returns 1 when the whole frame
 * (header and payload) is in 'len' bytes, 0 when more bytes are needed,
 * or a negative RFC 6455 §7.4.1 close code: -1002 protocol error (RSV
 * bits, bad opcode, fragmented or long control frame, unmasked client
 * frame when 'need_mask'), -1009 payload above 'max_payload'. */
int sip_ws_frame_parse(const char *buf, apr_size_t len, int need_mask,
                       apr_uint64_t max_payload, sip_ws_frame_t *f);

/* Unmask a payload in place (§5.3); 'mask' is the 4 key bytes. */
void sip_ws_unmask(char *payload, apr_size_t len, const unsigned char mask[4]);

/* A server frame header (unmasked, FIN set) for 'len' payload bytes into
 * 'hdr' (at least 10 bytes); returns its length. */
apr_size_t sip_ws_frame_header(unsigned char *hdr, int opcode, apr_uint64_t len);

/* The opening handshake (§4.2.1), as seen by the server.  'headers' are
 * the request's (httpd's headers_in, or the engine's own parse).  Returns
 * NULL when acceptable and fills *accept (the Sec-WebSocket-Accept
 * value); else the reason, and *status the HTTP status to answer (400,
 * 426 with Sec-WebSocket-Version: 13, or 400 when "sip" is not among the
 * offered subprotocols, RFC 7118 §4.1). */
const char *sip_ws_handshake_check(apr_pool_t *p, const char *method, apr_table_t *headers,
                                   const char **accept, int *status);

/* The Sec-WebSocket-Accept value for a key (§4.2.2 step 5.4). */
const char *sip_ws_accept_key(apr_pool_t *p, const char *key);

/* The engine's own upgrade on a SIP port: an HTTP/1.1 request head at
 * 'buf' (at most SIP_WS_MAX_REQUEST bytes).  Returns 1 and fills the
 * method, the path, the headers and *consumed (the head's length, blank
 * line included) when it is whole; 0 when more bytes are needed; -1 when
 * it is not an HTTP/1.1 request head or is longer than the limit (answer
 * 400 and close). */
#define SIP_WS_MAX_REQUEST 8192
int sip_ws_http_request_parse(apr_pool_t *p, const char *buf, apr_size_t len, const char **method,
                              const char **path, apr_table_t **headers, apr_size_t *consumed);

#endif
