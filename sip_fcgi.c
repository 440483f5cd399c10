/* FastCGI records (FastCGI specification 1.0, §3 and §5): what the engine
 * sends for a SIP-CGI run and the parsing of what a worker answers.  Pure:
 * no I/O here (sip_fcgi_pool.c does it). */
#include "sip_fcgi.h"

#include <string.h>

#include "apr_strings.h"

#define FCGI_PAD(n) ((8 - ((n) & 7)) & 7)

static void put_header(unsigned char *b, int type, apr_uint16_t id, apr_size_t clen,
                       apr_size_t pad)
{
    b[AP_FCGI_HDR_VERSION_OFFSET] = AP_FCGI_VERSION_1;
    b[AP_FCGI_HDR_TYPE_OFFSET] = (unsigned char)type;
    b[AP_FCGI_HDR_REQUEST_ID_B1_OFFSET] = (unsigned char)(id >> 8);
    b[AP_FCGI_HDR_REQUEST_ID_B0_OFFSET] = (unsigned char)id;
    b[AP_FCGI_HDR_CONTENT_LEN_B1_OFFSET] = (unsigned char)(clen >> 8);
    b[AP_FCGI_HDR_CONTENT_LEN_B0_OFFSET] = (unsigned char)clen;
    b[AP_FCGI_HDR_PADDING_LEN_OFFSET] = (unsigned char)pad;
    b[AP_FCGI_HDR_RESERVED_OFFSET] = 0;
}

/* §3.4: lengths below 128 take one byte, others four with the top bit set. */
static apr_size_t put_len(unsigned char *out, apr_size_t n)
{
    if (n < 128) {
        if (out)
            out[0] = (unsigned char)n;
        return 1;
    }
    if (out) {
        out[0] = (unsigned char)(0x80 | ((n >> 24) & 0x7f));
        out[1] = (unsigned char)(n >> 16);
        out[2] = (unsigned char)(n >> 8);
        out[3] = (unsigned char)n;
    }
    return 4;
}

apr_size_t sip_fcgi_encode_pair(unsigned char *out, const char *name, apr_size_t nlen,
                                const char *value, apr_size_t vlen)
{
    apr_size_t n = put_len(out, nlen);

    n += put_len(out ? out + n : NULL, vlen);
    if (out) {
        memcpy(out + n, name, nlen);
        memcpy(out + n + nlen, value, vlen);
    }
    return n + nlen + vlen;
}

/* 'data' as records of 'type', at most 65535 bytes each, then the empty
 * record that ends the stream (§3.3). */
static unsigned char *put_stream(unsigned char *o, int type, apr_uint16_t id,
                                 const unsigned char *data, apr_size_t len)
{
    while (len) {
        apr_size_t c = len > AP_FCGI_MAX_CONTENT_LEN ? AP_FCGI_MAX_CONTENT_LEN : len;
        apr_size_t pad = FCGI_PAD(c);
        put_header(o, type, id, c, pad);
        memcpy(o + AP_FCGI_HEADER_LEN, data, c);
        memset(o + AP_FCGI_HEADER_LEN + c, 0, pad);
        o += AP_FCGI_HEADER_LEN + c + pad;
        data += c;
        len -= c;
    }
    put_header(o, type, id, 0, 0);
    return o + AP_FCGI_HEADER_LEN;
}

static apr_size_t stream_size(apr_size_t len)
{
    apr_size_t full = len / AP_FCGI_MAX_CONTENT_LEN, rest = len % AP_FCGI_MAX_CONTENT_LEN;
    return full * (AP_FCGI_HEADER_LEN + AP_FCGI_MAX_CONTENT_LEN + FCGI_PAD(AP_FCGI_MAX_CONTENT_LEN))
           + (rest ? AP_FCGI_HEADER_LEN + rest + FCGI_PAD(rest) : 0) + AP_FCGI_HEADER_LEN;
}

char *sip_fcgi_encode_request(apr_pool_t *p, apr_uint16_t id, int keep, const char *const *envp,
                              const char *body, apr_size_t blen, apr_size_t *len)
{
    apr_size_t plen = 0, total;
    unsigned char *params, *o, *buf;
    int i;

    for (i = 0; envp && envp[i]; i++) {
        const char *eq = strchr(envp[i], '=');
        if (!eq)
            return NULL;
        plen += sip_fcgi_encode_pair(NULL, envp[i], (apr_size_t)(eq - envp[i]), eq + 1,
                                     strlen(eq + 1));
    }
    params = apr_palloc(p, plen ? plen : 1);
    o = params;
    for (i = 0; envp && envp[i]; i++) {
        const char *eq = strchr(envp[i], '=');
        o += sip_fcgi_encode_pair(o, envp[i], (apr_size_t)(eq - envp[i]), eq + 1,
                                  strlen(eq + 1));
    }
    total = AP_FCGI_HEADER_LEN + 8 + stream_size(plen) + stream_size(blen);
    buf = apr_palloc(p, total);
    put_header(buf, AP_FCGI_BEGIN_REQUEST, id, 8, 0);
    memset(buf + AP_FCGI_HEADER_LEN, 0, 8);
    buf[AP_FCGI_HEADER_LEN + AP_FCGI_BRB_ROLEB1_OFFSET] = 0;
    buf[AP_FCGI_HEADER_LEN + AP_FCGI_BRB_ROLEB0_OFFSET] = AP_FCGI_RESPONDER;
    buf[AP_FCGI_HEADER_LEN + AP_FCGI_BRB_FLAGS_OFFSET] = keep ? AP_FCGI_KEEP_CONN : 0;
    o = put_stream(buf + AP_FCGI_HEADER_LEN + 8, AP_FCGI_PARAMS, id, params, plen);
    o = put_stream(o, AP_FCGI_STDIN, id, (const unsigned char *)body, blen);
    *len = (apr_size_t)(o - buf);
    return (char *)buf;
}

void sip_fcgi_encode_abort(unsigned char out[AP_FCGI_HEADER_LEN], apr_uint16_t id)
{
    put_header(out, AP_FCGI_ABORT_REQUEST, id, 0, 0);
}

static int get_len(const unsigned char *b, apr_size_t len, apr_size_t *pos, apr_size_t *n)
{
    if (*pos >= len)
        return -1;
    if (b[*pos] < 128) {
        *n = b[(*pos)++];
        return 0;
    }
    if (len - *pos < 4)
        return -1;
    *n = ((apr_size_t)(b[*pos] & 0x7f) << 24) | ((apr_size_t)b[*pos + 1] << 16)
         | ((apr_size_t)b[*pos + 2] << 8) | b[*pos + 3];
    *pos += 4;
    return 0;
}

int sip_fcgi_decode_params(apr_pool_t *p, const unsigned char *buf, apr_size_t len,
                           apr_table_t *t, const char **why)
{
    apr_size_t pos = 0;

    while (pos < len) {
        apr_size_t nl, vl;
        if (get_len(buf, len, &pos, &nl) || get_len(buf, len, &pos, &vl)) {
            *why = "truncated length";
            return -1;
        }
        if (nl > len - pos || vl > len - pos - nl) {
            *why = "pair longer than the record";
            return -1;
        }
        apr_table_addn(t, apr_pstrmemdup(p, (const char *)buf + pos, nl),
                       apr_pstrmemdup(p, (const char *)buf + pos + nl, vl));
        pos += nl + vl;
    }
    return 0;
}

void sip_fcgi_parser_init(sip_fcgi_parser_t *ps, apr_uint16_t id, apr_size_t max_stderr,
                          sip_fcgi_data_cb on_stdout, sip_fcgi_data_cb on_stderr, void *baton)
{
    memset(ps, 0, sizeof(*ps));
    ps->id = id;
    ps->max_stderr = max_stderr;
    ps->on_stdout = on_stdout;
    ps->on_stderr = on_stderr;
    ps->baton = baton;
}

/* A record header is complete: check it before reading its content. */
static int start_record(sip_fcgi_parser_t *ps, const char **why)
{
    const unsigned char *h = ps->hdr;
    apr_uint16_t id = (apr_uint16_t)((h[AP_FCGI_HDR_REQUEST_ID_B1_OFFSET] << 8)
                                     | h[AP_FCGI_HDR_REQUEST_ID_B0_OFFSET]);
    apr_size_t clen = ((apr_size_t)h[AP_FCGI_HDR_CONTENT_LEN_B1_OFFSET] << 8)
                      | h[AP_FCGI_HDR_CONTENT_LEN_B0_OFFSET];
    int type = h[AP_FCGI_HDR_TYPE_OFFSET];

    if (h[AP_FCGI_HDR_VERSION_OFFSET] != AP_FCGI_VERSION_1) {
        *why = "not a FastCGI version 1 record";
        return -1;
    }
    /* We send no management records, so none may come (§4). */
    if (id != ps->id) {
        *why = id == 0 ? "unexpected management record" : "record for another request";
        return -1;
    }
    switch (type) {
    case AP_FCGI_STDOUT:
        if (ps->stdout_closed && clen) {
            *why = "STDOUT after its end";
            return -1;
        }
        if (!clen)
            ps->stdout_closed = 1;
        break;
    case AP_FCGI_STDERR:
        if (clen > ps->max_stderr - ps->err_total) {
            *why = "too much STDERR";
            return -1;
        }
        ps->err_total += clen;
        break;
    case AP_FCGI_END_REQUEST:
        if (clen != 8) {
            *why = "END_REQUEST body is not 8 bytes";
            return -1;
        }
        ps->end_len = 0;
        break;
    default:
        *why = "unexpected record type";
        return -1;
    }
    ps->type = type;
    ps->content_left = clen;
    ps->padding_left = h[AP_FCGI_HDR_PADDING_LEN_OFFSET];
    ps->hlen = 0;
    return 0;
}

int sip_fcgi_parse(sip_fcgi_parser_t *ps, const char *buf, apr_size_t len, apr_size_t *used,
                   const char **why)
{
    apr_size_t pos = 0;

    *used = 0;
    if (ps->ended) {
        *why = "data after END_REQUEST";
        return -1;
    }
    while (pos < len) {
        if (!ps->type) {
            apr_size_t n = AP_FCGI_HEADER_LEN - ps->hlen;
            if (n > len - pos)
                n = len - pos;
            memcpy(ps->hdr + ps->hlen, buf + pos, n);
            ps->hlen += n;
            pos += n;
            if (ps->hlen < AP_FCGI_HEADER_LEN)
                break;
            if (start_record(ps, why) < 0)
                return -1;
        }
        if (ps->content_left) {
            apr_size_t n = ps->content_left < len - pos ? ps->content_left : len - pos;
            if (!n)
                break;      /* the header ended the piece */
            if (ps->type == AP_FCGI_STDOUT && ps->on_stdout)
                ps->on_stdout(ps->baton, buf + pos, n);
            else if (ps->type == AP_FCGI_STDERR && ps->on_stderr)
                ps->on_stderr(ps->baton, buf + pos, n);
            else if (ps->type == AP_FCGI_END_REQUEST) {
                memcpy(ps->end + ps->end_len, buf + pos, n);
                ps->end_len += n;
            }
            ps->content_left -= n;
            pos += n;
            if (ps->content_left)
                break;
        }
        if (ps->padding_left) {
            apr_size_t n = ps->padding_left < len - pos ? ps->padding_left : len - pos;
            ps->padding_left -= n;
            pos += n;
            if (ps->padding_left)
                break;
        }
        if (ps->type == AP_FCGI_END_REQUEST) {
            ps->app_status = ((apr_uint32_t)ps->end[0] << 24) | ((apr_uint32_t)ps->end[1] << 16)
                             | ((apr_uint32_t)ps->end[2] << 8) | ps->end[3];
            ps->protocol_status = ps->end[4];
            ps->ended = 1;
            ps->type = 0;
            *used = pos;
            return 1;
        }
        ps->type = 0;
    }
    *used = pos;
    return 0;
}

/* ---- several requests on one connection (FCGI_MPXS_CONNS) ---- */

void sip_fcgi_demux_init(sip_fcgi_demux_t *d, sip_fcgi_parser_t *(*lookup)(void *, apr_uint16_t),
                         int (*on_mgmt)(void *, int, const unsigned char *, apr_size_t),
                         int (*after)(void *, sip_fcgi_parser_t *, int), void *baton)
{
    memset(d, 0, sizeof(*d));
    d->lookup = lookup;
    d->on_mgmt = on_mgmt;
    d->after = after;
    d->baton = baton;
}

/* The header in d->hdr is complete: find whose record it is. */
static int demux_header(sip_fcgi_demux_t *d, const char **why)
{
    const unsigned char *h = d->hdr;
    apr_uint16_t id = (apr_uint16_t)((h[AP_FCGI_HDR_REQUEST_ID_B1_OFFSET] << 8)
                                     | h[AP_FCGI_HDR_REQUEST_ID_B0_OFFSET]);
    apr_size_t clen = ((apr_size_t)h[AP_FCGI_HDR_CONTENT_LEN_B1_OFFSET] << 8)
                      | h[AP_FCGI_HDR_CONTENT_LEN_B0_OFFSET];
    apr_size_t used;

    d->hlen = 0;
    if (h[AP_FCGI_HDR_VERSION_OFFSET] != AP_FCGI_VERSION_1) {
        *why = "not a FastCGI version 1 record";
        return -1;
    }
    d->rec_left = clen + h[AP_FCGI_HDR_PADDING_LEN_OFFSET];
    if (id == 0) {
        if (clen > SIP_FCGI_MGMT_MAX) {
            *why = "management record too long";
            return -1;
        }
        d->cur = NULL;
        d->mtype = h[AP_FCGI_HDR_TYPE_OFFSET];
        d->mclen = clen;
        d->mlen = 0;
        return 0;
    }
    d->cur = d->lookup(d->baton, id);
    if (!d->cur) {
        *why = "record for another request";
        return -1;
    }
    /* the request's own parser checks the rest (type, STDERR limit, END) */
    return sip_fcgi_parse(d->cur, (const char *)h, AP_FCGI_HEADER_LEN, &used, why) < 0 ? -1 : 0;
}

int sip_fcgi_demux(sip_fcgi_demux_t *d, const char *buf, apr_size_t len, const char **why)
{
    apr_size_t pos = 0;

    while (pos < len) {
        int header_only = 0;
        if (!d->rec_left) {
            apr_size_t n = AP_FCGI_HEADER_LEN - d->hlen;
            if (n > len - pos)
                n = len - pos;
            memcpy(d->hdr + d->hlen, buf + pos, n);
            d->hlen += n;
            pos += n;
            if (d->hlen < AP_FCGI_HEADER_LEN)
                break;
            if (demux_header(d, why) < 0)
                return -1;
            header_only = !d->rec_left;
        }
        if (!d->cur) {
            /* a management record: gathered whole, then handed over */
            apr_size_t n = d->rec_left < len - pos ? d->rec_left : len - pos;
            apr_size_t c = d->mclen - d->mlen < n ? d->mclen - d->mlen : n;
            memcpy(d->mgmt + d->mlen, buf + pos, c);
            d->mlen += c;
            d->rec_left -= n;
            pos += n;
            if (!d->rec_left && d->on_mgmt(d->baton, d->mtype, d->mgmt, d->mlen)) {
                *why = "unexpected management record";
                return -1;
            }
            continue;
        }
        {
            apr_size_t n = d->rec_left < len - pos ? d->rec_left : len - pos, used = 0;
            int r = 0;
            if (n) {
                r = sip_fcgi_parse(d->cur, buf + pos, n, &used, why);
                if (r < 0)
                    return -1;
                d->rec_left -= n;
                pos += n;
            }
            if ((n || header_only) && d->after(d->baton, d->cur, r == 1))
                return 1;
            if (r == 1)
                d->cur = NULL;  /* the request is over: 'after' may have freed its parser */
        }
    }
    return 0;
}

apr_size_t sip_fcgi_encode_get_values(unsigned char *out)
{
    static const char *const names[] = {"FCGI_MPXS_CONNS", "FCGI_MAX_REQS"};
    apr_size_t n = 0, pad;
    int i;

    for (i = 0; i < 2; i++)
        n += sip_fcgi_encode_pair(out + AP_FCGI_HEADER_LEN + n, names[i], strlen(names[i]), "",
                                  0);
    pad = FCGI_PAD(n);
    put_header(out, AP_FCGI_GET_VALUES, 0, n, pad);
    memset(out + AP_FCGI_HEADER_LEN + n, 0, pad);
    return AP_FCGI_HEADER_LEN + n + pad;
}

int sip_fcgi_parse_values(const unsigned char *buf, apr_size_t len, int *mpxs, int *max_reqs,
                          const char **why)
{
    apr_size_t pos = 0;

    *mpxs = 0;
    *max_reqs = 0;
    while (pos < len) {
        apr_size_t nl, vl;
        const char *name, *val;
        if (get_len(buf, len, &pos, &nl) || get_len(buf, len, &pos, &vl)) {
            *why = "truncated length";
            return -1;
        }
        if (nl > len - pos || vl > len - pos - nl) {
            *why = "pair longer than the record";
            return -1;
        }
        name = (const char *)buf + pos;
        val = name + nl;
        if (nl == 15 && !memcmp(name, "FCGI_MPXS_CONNS", 15))
            *mpxs = vl == 1 && val[0] == '1';
        else if (nl == 13 && !memcmp(name, "FCGI_MAX_REQS", 13)) {
            apr_size_t i;
            int v = 0;
            for (i = 0; i < vl && i < 6 && val[i] >= '0' && val[i] <= '9'; i++)
                v = v * 10 + (val[i] - '0');
            *max_reqs = i == vl ? v : 0;
        }
        pos += nl + vl;
    }
    return 0;
}

void sip_fcgi_set_id(char *buf, apr_size_t len, apr_uint16_t id)
{
    unsigned char *b = (unsigned char *)buf;
    apr_size_t pos = 0;

    while (len - pos >= AP_FCGI_HEADER_LEN) {
        unsigned char *h = b + pos;
        h[AP_FCGI_HDR_REQUEST_ID_B1_OFFSET] = (unsigned char)(id >> 8);
        h[AP_FCGI_HDR_REQUEST_ID_B0_OFFSET] = (unsigned char)id;
        pos += AP_FCGI_HEADER_LEN + (((apr_size_t)h[AP_FCGI_HDR_CONTENT_LEN_B1_OFFSET] << 8)
                                     | h[AP_FCGI_HDR_CONTENT_LEN_B0_OFFSET])
               + h[AP_FCGI_HDR_PADDING_LEN_OFFSET];
    }
}
