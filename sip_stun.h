/* STUN (RFC 5389) as RFC 5626 §8 uses it: a limited STUN server on the
 * UDP SIP sockets, answering the Binding requests that clients send as
 * keep-alives (RFC 5626 §4.4.2) with their address as seen from here.
 * Pure parsing and building; the transport layer demultiplexes and sends. */
#ifndef SIP_STUN_H
#define SIP_STUN_H

#include <sys/socket.h>
#include "apr.h"

#define SIP_STUN_MAGIC      0x2112A442u
#define SIP_STUN_HEADER     20
#define SIP_STUN_MAX_UNKNOWN 8      /* unknown attributes named in a 420 */
#define SIP_STUN_MAX_ANSWER 80      /* the largest answer built here */

typedef enum {
    SIP_STUN_NONE,      /* not STUN: SIP text (its first byte is never 0 or 1) */
    SIP_STUN_ANSWER,    /* a valid Binding request: answer it (sip_stun_answer) */
    SIP_STUN_DROP       /* STUN-looking but nothing to answer: 'why' says what */
} sip_stun_kind_t;

typedef struct sip_stun_req {
    unsigned char txid[12];
    int fingerprint;            /* the request had a (valid) FINGERPRINT */
    int n_unknown;              /* comprehension-required attributes not understood: 420 */
    apr_uint16_t unknown[SIP_STUN_MAX_UNKNOWN];
    const char *why;            /* SIP_STUN_DROP: a static reason for the log */
} sip_stun_req_t;

/* Classify a datagram received on a SIP UDP socket and, for a Binding
 * request, read what the answer needs (RFC 5389 §7.3). */
sip_stun_kind_t sip_stun_parse(const unsigned char *buf, apr_size_t len, sip_stun_req_t *req);

/* The answer to a request sip_stun_parse found answerable: a Binding
 * success response with XOR-MAPPED-ADDRESS of 'peer' (IPv4, IPv6; an
 * IPv4-mapped IPv6 address as IPv4), or 420 with UNKNOWN-ATTRIBUTES;
 * FINGERPRINT when the request had one.  Returns its length, 0 when 'cap'
 * is too small or the address family unknown. */
apr_size_t sip_stun_answer(const sip_stun_req_t *req, const struct sockaddr *peer,
                           unsigned char *out, apr_size_t cap);

/* The FINGERPRINT value of the 'len' bytes before it (CRC-32 xor 0x5354554e). */
apr_uint32_t sip_stun_fingerprint(const unsigned char *buf, apr_size_t len);

#endif
