/* STUN Binding for RFC 5626 keep-alives: see sip_stun.h. */
#include <string.h>
#include <netinet/in.h>

#include "sip_stun.h"

#define STUN_BINDING_REQUEST    0x0001
#define STUN_BINDING_SUCCESS    0x0101
#define STUN_BINDING_ERROR      0x0111

#define ATTR_MESSAGE_INTEGRITY  0x0008
#define ATTR_ERROR_CODE         0x0009
#define ATTR_UNKNOWN_ATTRIBUTES 0x000A
#define ATTR_XOR_MAPPED_ADDRESS 0x0020
#define ATTR_FINGERPRINT        0x8028
#define FINGERPRINT_XOR         0x5354554eu

static apr_uint16_t get16(const unsigned char *p)
{
    return (apr_uint16_t)(p[0] << 8 | p[1]);
}

static apr_uint32_t get32(const unsigned char *p)
{
    return (apr_uint32_t)p[0] << 24 | (apr_uint32_t)p[1] << 16 | (apr_uint32_t)p[2] << 8 | p[3];
}

static void put16(unsigned char *p, apr_uint32_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, apr_uint32_t v)
{
    put16(p, v >> 16);
    put16(p + 2, v);
}

apr_uint32_t sip_stun_fingerprint(const unsigned char *buf, apr_size_t len)
{
    apr_uint32_t crc = 0xFFFFFFFFu;
    apr_size_t i;
    int k;

    /* CRC-32 of ISO/IEC 13239 (as zlib), bitwise: answers are tiny */
    for (i = 0; i < len; i++) {
        crc ^= buf[i];
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc ^ FINGERPRINT_XOR;
}

/* Attributes RFC 5389 (and ICE's connectivity checks, which are Binding
 * requests too) define in the comprehension-required range: known, and
 * of no use here, so ignored rather than refused with 420. */
static int attr_known(apr_uint16_t type)
{
    switch (type) {
    case 0x0001:    /* MAPPED-ADDRESS */
    case 0x0006:    /* USERNAME */
    case ATTR_MESSAGE_INTEGRITY:
    case ATTR_ERROR_CODE:
    case ATTR_UNKNOWN_ATTRIBUTES:
    case 0x0014:    /* REALM */
    case 0x0015:    /* NONCE */
    case ATTR_XOR_MAPPED_ADDRESS:
    case 0x0024:    /* PRIORITY (RFC 8445) */
    case 0x0025:    /* USE-CANDIDATE */
        return 1;
    default:
        return type >= 0x8000;      /* comprehension-optional */
    }
}

sip_stun_kind_t sip_stun_parse(const unsigned char *buf, apr_size_t len, sip_stun_req_t *req)
{
    apr_size_t off, mlen;
    apr_uint16_t type;
    int after_integrity = 0;

    memset(req, 0, sizeof(*req));
    /* RFC 5626 §4.4.2: the first octet of a STUN Binding message is 0 or
     * 1, never that of SIP text (nor of the CRs and LFs of CRLF pings) */
    if (!len || buf[0] > 0x01)
        return SIP_STUN_NONE;
    req->why = "malformed STUN header";
    if (len < SIP_STUN_HEADER || get32(buf + 4) != SIP_STUN_MAGIC)
        return SIP_STUN_DROP;
    mlen = get16(buf + 2);
    if ((mlen & 3) || mlen != len - SIP_STUN_HEADER)
        return SIP_STUN_DROP;
    type = get16(buf);
    memcpy(req->txid, buf + 8, sizeof(req->txid));
    for (off = SIP_STUN_HEADER; off < len;) {
        apr_uint16_t at, alen;

        req->why = "malformed STUN attribute";
        if (len - off < 4)
            return SIP_STUN_DROP;
        at = get16(buf + off);
        alen = get16(buf + off + 2);
        if (len - off - 4 < (apr_size_t)((alen + 3) & ~3u))
            return SIP_STUN_DROP;
        if (at == ATTR_FINGERPRINT) {
            /* §15.5: last, over everything before it */
            req->why = "bad STUN FINGERPRINT";
            if (alen != 4 || off + 8 != len
                || get32(buf + off + 4) != sip_stun_fingerprint(buf, off))
                return SIP_STUN_DROP;
            req->fingerprint = 1;
        }
        else if (at == ATTR_MESSAGE_INTEGRITY)
            after_integrity = 1;    /* §15.4: what follows it, but FINGERPRINT, is ignored */
        else if (!after_integrity && !attr_known(at) && req->n_unknown < SIP_STUN_MAX_UNKNOWN)
            req->unknown[req->n_unknown++] = at;
        off += 4 + ((alen + 3u) & ~3u);
    }
    /* §7.3: a request of another method is answered 400 by a full STUN
     * server; RFC 5626 §8 needs only Binding, and indications and
     * responses get no answer at all */
    if (type != STUN_BINDING_REQUEST) {
        req->why = (type & 0x0110) == 0x0010 ? "STUN indication"
                   : (type & 0x0100) ? "STUN response" : "STUN request of another method";
        return SIP_STUN_DROP;
    }
    /* RFC 5626 §8 uses no credentials: MESSAGE-INTEGRITY is not checked,
     * and the answer carries none */
    req->why = NULL;
    return SIP_STUN_ANSWER;
}

static apr_size_t put_attr(unsigned char *out, apr_size_t off, apr_uint16_t type,
                           const unsigned char *val, apr_size_t len)
{
    put16(out + off, type);
    put16(out + off + 2, (apr_uint32_t)len);
    memcpy(out + off + 4, val, len);
    memset(out + off + 4 + len, 0, ((len + 3) & ~(apr_size_t)3) - len);
    return off + 4 + ((len + 3) & ~(apr_size_t)3);
}

apr_size_t sip_stun_answer(const sip_stun_req_t *req, const struct sockaddr *peer,
                           unsigned char *out, apr_size_t cap)
{
    unsigned char val[20], key[16];
    apr_size_t off = SIP_STUN_HEADER, n = 0;
    int i;

    if (cap < SIP_STUN_MAX_ANSWER)
        return 0;
    put16(out, req->n_unknown ? STUN_BINDING_ERROR : STUN_BINDING_SUCCESS);
    put32(out + 4, SIP_STUN_MAGIC);
    memcpy(out + 8, req->txid, sizeof(req->txid));
    if (req->n_unknown) {
        /* §7.3.1: 420 (Unknown Attribute), naming them (§15.6, §15.9) */
        static const char reason[] = "Unknown Attribute";
        unsigned char ec[4 + sizeof(reason) - 1], ua[2 * SIP_STUN_MAX_UNKNOWN];

        memcpy(ec, "\0\0\4\24", 4);     /* class 4, number 20 */
        memcpy(ec + 4, reason, sizeof(reason) - 1);
        off = put_attr(out, off, ATTR_ERROR_CODE, ec, sizeof(ec));
        for (i = 0; i < req->n_unknown; i++)
            put16(ua + 2 * i, req->unknown[i]);
        off = put_attr(out, off, ATTR_UNKNOWN_ATTRIBUTES, ua, 2 * (apr_size_t)req->n_unknown);
    }
    else {
        /* §15.2: the port xor the cookie's top half, the address xor the
         * cookie (IPv4) or the cookie and the transaction id (IPv6) */
        const unsigned char *addr;
        apr_uint16_t port;

        put32(key, SIP_STUN_MAGIC);
        memcpy(key + 4, req->txid, sizeof(req->txid));
        if (peer->sa_family == AF_INET) {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)peer;
            addr = (const unsigned char *)&s4->sin_addr;
            port = ntohs(s4->sin_port);
            n = 4;
        }
        else if (peer->sa_family == AF_INET6) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)peer;
            addr = (const unsigned char *)&s6->sin6_addr;
            port = ntohs(s6->sin6_port);
            n = 16;
            if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
                addr += 12;     /* a dual-stack socket's IPv4 client */
                n = 4;
            }
        }
        else
            return 0;
        val[0] = 0;
        val[1] = n == 4 ? 0x01 : 0x02;
        put16(val + 2, port ^ (SIP_STUN_MAGIC >> 16));
        for (i = 0; i < (int)n; i++)
            val[4 + i] = addr[i] ^ key[i];
        off = put_attr(out, off, ATTR_XOR_MAPPED_ADDRESS, val, 4 + n);
    }
    if (req->fingerprint) {
        /* the length in the header counts FINGERPRINT itself (§15.5) */
        put16(out + 2, (apr_uint32_t)(off + 8 - SIP_STUN_HEADER));
        put32(val, sip_stun_fingerprint(out, off));
        off = put_attr(out, off, ATTR_FINGERPRINT, val, 4);
    }
    put16(out + 2, (apr_uint32_t)(off - SIP_STUN_HEADER));
    return off;
}
