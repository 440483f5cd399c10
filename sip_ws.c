/* SIP over WebSocket (RFC 7118): the RFC 6455 opening handshake as seen by
 * a server, and the frame format.  No I/O: sip_transport.c reads and
 * writes, the httpd glue (sip_ws_upgrade.c) answers handshakes. */
#include "sip_ws.h"

#include <string.h>
#include <strings.h>

#include "apr_base64.h"
#include "apr_lib.h"
#include "apr_sha1.h"
#include "apr_strings.h"

int sip_ws_frame_parse(const char *buf, apr_size_t len, int need_mask,
                       apr_uint64_t max_payload, sip_ws_frame_t *f)
{
    const unsigned char *b = (const unsigned char *)buf;
    apr_size_t hl = 2;
    apr_uint64_t plen;
    int i;

    if (len < 2)
        return 0;
    memset(f, 0, sizeof(*f));
    f->fin = b[0] >> 7;
    f->opcode = b[0] & 0x0F;
    f->masked = b[1] >> 7;
    plen = b[1] & 0x7F;
    /* §5.2: RSV1-3 must be 0 without a negotiated extension (we offer none) */
    if (b[0] & 0x70)
        return -1002;
    switch (f->opcode) {
    case SIP_WS_CONT:
    case SIP_WS_TEXT:
    case SIP_WS_BINARY:
        break;
    case SIP_WS_CLOSE:
    case SIP_WS_PING:
    case SIP_WS_PONG:
        /* §5.5: control frames are whole and at most 125 bytes */
        if (!f->fin || plen > 125)
            return -1002;
        break;
    default:
        return -1002;   /* reserved opcodes */
    }
    /* §5.1: a server closes the connection on an unmasked client frame */
    if (need_mask && !f->masked)
        return -1002;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = ((apr_uint64_t)b[2] << 8) | b[3];
        hl = 4;
    }
    else if (plen == 127) {
        if (len < 10)
            return 0;
        /* §5.2: the most significant bit of a 64-bit length must be 0 */
        if (b[2] & 0x80)
            return -1002;
        plen = 0;
        for (i = 2; i < 10; i++)
            plen = (plen << 8) | b[i];
        hl = 10;
    }
    /* Known before the payload comes: refuse it without buffering any. */
    if (plen > max_payload)
        return -1009;
    if (f->masked)
        hl += 4;
    f->payload_len = plen;
    f->header_len = hl;
    if (len < hl || len - hl < plen)
        return 0;
    return 1;
}

void sip_ws_unmask(char *payload, apr_size_t len, const unsigned char mask[4])
{
    apr_size_t i;

    for (i = 0; i < len; i++)
        payload[i] ^= (char)mask[i & 3];
}

apr_size_t sip_ws_frame_header(unsigned char *hdr, int opcode, apr_uint64_t len)
{
    int i;

    hdr[0] = (unsigned char)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        hdr[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        hdr[1] = 126;
        hdr[2] = (unsigned char)(len >> 8);
        hdr[3] = (unsigned char)len;
        return 4;
    }
    hdr[1] = 127;
    for (i = 9; i >= 2; i--) {
        hdr[i] = (unsigned char)len;
        len >>= 8;
    }
    return 10;
}

/* ---- the opening handshake (§4.2.1) ---- */

typedef struct {
    const char *token;
    int found;
} token_search_t;

/* One header value: is 'token' one of its comma-separated elements? */
static int value_has_token(void *baton, const char *key, const char *value)
{
    token_search_t *t = baton;
    apr_size_t n = strlen(t->token);
    const char *s = value;

    (void)key;
    while (*s) {
        const char *end;
        apr_size_t len;

        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        end = s;
        while (*end && *end != ',')
            end++;
        len = (apr_size_t)(end - s);
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len == n && strncasecmp(s, t->token, n) == 0) {
            t->found = 1;
            return 0;
        }
        s = end;
    }
    return 1;
}

/* 'token' in any of the (possibly repeated) 'name' headers. */
static int header_has_token(apr_table_t *headers, const char *name, const char *token)
{
    token_search_t t = {token, 0};

    apr_table_do(value_has_token, &t, headers, name, NULL);
    return t.found;
}

/* §4.1: the key is 16 random bytes, base64-encoded (24 characters). */
static int key_ok(const char *key)
{
    unsigned char raw[32];
    apr_size_t i, n = key ? strlen(key) : 0;

    if (n != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (i = 0; i < 22; i++)
        if (!apr_isalnum(key[i]) && key[i] != '+' && key[i] != '/')
            return 0;
    if (apr_base64_decode_len(key) > (int)sizeof(raw) + 1)
        return 0;
    return apr_base64_decode_binary(raw, key) == 16;
}

const char *sip_ws_accept_key(apr_pool_t *p, const char *key)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";  /* §1.3 */
    unsigned char digest[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t c;
    char *out;

    if (!key)
        return NULL;
    apr_sha1_init(&c);
    apr_sha1_update_binary(&c, (const unsigned char *)key, (unsigned int)strlen(key));
    apr_sha1_update_binary(&c, (const unsigned char *)guid, sizeof(guid) - 1);
    apr_sha1_final(digest, &c);
    out = apr_palloc(p, apr_base64_encode_len(sizeof(digest)));
    apr_base64_encode_binary(out, digest, sizeof(digest));
    return out;
}

const char *sip_ws_handshake_check(apr_pool_t *p, const char *method, apr_table_t *headers,
                                   const char **accept, int *status)
{
    const char *version = apr_table_get(headers, "Sec-WebSocket-Version");
    const char *key = apr_table_get(headers, "Sec-WebSocket-Key");

    *accept = NULL;
    *status = 400;
    if (!method || strcmp(method, "GET") != 0)
        return "the opening handshake must be a GET request";
    if (!header_has_token(headers, "Upgrade", "websocket"))
        return "no Upgrade: websocket";
    if (!header_has_token(headers, "Connection", "Upgrade"))
        return "no Connection: Upgrade";
    /* §4.2.2: any other version is answered 426 with the one we speak */
    if (!version || strcmp(version, "13") != 0) {
        *status = 426;
        return "Sec-WebSocket-Version is not 13";
    }
    if (!key_ok(key))
        return "no valid Sec-WebSocket-Key";
    /* RFC 7118 §4.1: the client offers "sip"; nothing else is spoken here */
    if (!header_has_token(headers, "Sec-WebSocket-Protocol", "sip"))
        return "the client does not offer the \"sip\" subprotocol";
    *status = 101;
    *accept = sip_ws_accept_key(p, key);
    return NULL;
}

/* ---- an HTTP/1.1 request head, for the engine's own upgrades ---- */

static int is_tchar(char ch)
{
    /* RFC 9110 §5.6.2 token characters */
    return apr_isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

int sip_ws_http_request_parse(apr_pool_t *p, const char *buf, apr_size_t len, const char **method,
                              const char **path, apr_table_t **headers, apr_size_t *consumed)
{
    const char *end = NULL, *line, *eol, *sp1, *sp2;
    apr_size_t i, scan = len < SIP_WS_MAX_REQUEST ? len : SIP_WS_MAX_REQUEST;
    apr_table_t *t;

    for (i = 0; i + 3 < scan && !end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            end = buf + i + 2;  /* the blank line's CRLF starts here */
    if (!end)
        return len >= SIP_WS_MAX_REQUEST ? -1 : 0;
    /* no NUL, and no bare LF (a line ends with CRLF only) */
    for (line = buf; line < end; line++)
        if (*line == '\0' || (*line == '\n' && (line == buf || line[-1] != '\r')))
            return -1;
    /* request line: METHOD SP request-target SP HTTP/1.1 */
    eol = memchr(buf, '\r', (apr_size_t)(end - buf));
    sp1 = memchr(buf, ' ', (apr_size_t)(eol - buf));
    if (!sp1 || sp1 == buf)
        return -1;
    for (line = buf; line < sp1; line++)
        if (!is_tchar(*line))
            return -1;
    sp2 = memchr(sp1 + 1, ' ', (apr_size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1 || sp1[1] != '/' || (apr_size_t)(eol - sp2 - 1) != 8
        || memcmp(sp2 + 1, "HTTP/1.1", 8) != 0)
        return -1;
    for (line = sp1 + 1; line < sp2; line++)
        if ((unsigned char)*line <= ' ' || *line == 0x7f)
            return -1;
    *method = apr_pstrmemdup(p, buf, (apr_size_t)(sp1 - buf));
    *path = apr_pstrmemdup(p, sp1 + 1, (apr_size_t)(sp2 - sp1 - 1));
    t = apr_table_make(p, 12);
    for (line = eol + 2; line < end; line = eol + 2) {
        const char *colon, *v, *ve;

        eol = memchr(line, '\r', (apr_size_t)(end - line));
        if (!eol || eol[1] != '\n')
            return -1;
        colon = memchr(line, ':', (apr_size_t)(eol - line));
        if (!colon || colon == line)
            return -1;      /* also refuses obsolete line folding */
        for (v = line; v < colon; v++)
            if (!is_tchar(*v))
                return -1;
        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
            ;
        for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
            ;
        apr_table_addn(t, apr_pstrmemdup(p, line, (apr_size_t)(colon - line)),
                       apr_pstrmemdup(p, v, (apr_size_t)(ve - v)));
    }
    *headers = t;
    *consumed = (apr_size_t)(end - buf) + 2;
    return 1;
}
