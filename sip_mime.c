#include "sip_mime.h"

#include <string.h>

#include "apr_date.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_general.h"

#include <osipparser2/osip_parser.h>
#include <osipparser2/headers/osip_content_disposition.h>

static void mime_lower_in_place(char *c)
{
    for (; *c; c++)
        *c = (char)apr_tolower(*c);
}

static const char *mime_lower(apr_pool_t *p, const char *s)
{
    char *c = apr_pstrdup(p, s);
    mime_lower_in_place(c);
    return c;
}

static const char *mime_trim(apr_pool_t *p, const char *s, apr_size_t n)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return apr_pstrmemdup(p, s, n);
}

/* A quoted-string's content (RFC 3261 §25.1: \x stands for x); a token
 * stays as it is.  NULL when a quote is left open. */
static const char *mime_unquote(apr_pool_t *p, const char *v)
{
    apr_size_t n = strlen(v);
    char *out, *o;
    const char *s;

    if (n == 0 || v[0] != '"')
        return v;
    if (n < 2 || v[n - 1] != '"')
        return NULL;
    o = out = apr_palloc(p, n);
    for (s = v + 1; s < v + n - 1; s++) {
        if (*s == '\\' && s + 1 < v + n - 1)
            s++;
        else if (*s == '"')
            return NULL;
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* ---- Content-Disposition ---- */

int sip_mime_disposition_parse(apr_pool_t *p, const char *value, sip_disposition_t *out)
{
    osip_content_disposition_t *cd = NULL;
    osip_generic_param_t *gp;
    int pos = 0, rc = -1;

    memset(out, 0, sizeof(*out));
    out->params = apr_table_make(p, 4);
    if (!value || osip_content_disposition_init(&cd) != 0)
        return -1;
    /* libosip2 splits "type *(; name[=value])", quotes kept */
    if (osip_content_disposition_parse(cd, value) != 0 || !cd->element)
        goto done;
    out->type = mime_lower(p, mime_trim(p, cd->element, strlen(cd->element)));
    if (!sip_is_token(out->type))
        goto done;
    while ((gp = osip_list_get(&cd->gen_params, pos++)) != NULL) {
        const char *name = gp->gname ? mime_lower(p, gp->gname) : NULL;
        const char *v = gp->gvalue ? mime_unquote(p, gp->gvalue) : "";
        if (!sip_is_token(name) || !v || apr_table_get(out->params, name))
            goto done;
        if (gp->gvalue && gp->gvalue[0] != '"' && !sip_is_token(v))
            goto done;
        apr_table_setn(out->params, name, apr_pstrdup(p, v));
    }
    out->action = apr_table_get(out->params, "action");
    if (out->action)
        out->action = mime_lower(p, out->action);
    out->handling = apr_table_get(out->params, "handling");
    if (out->handling)
        out->handling = mime_lower(p, out->handling);
    if (apr_table_get(out->params, "modification-date")) {
        out->has_mdate = 1;
        out->mdate = sip_mime_date_parse(apr_table_get(out->params, "modification-date"));
    }
    rc = 0;
done:
    osip_content_disposition_free(cd);
    return rc;
}

/* ---- Content-Type ---- */

int sip_mime_content_type(apr_pool_t *p, const char *value, const char **type,
                          const char **boundary)
{
    osip_content_type_t *ct = NULL;
    osip_generic_param_t *gp;
    int pos = 0, rc = -1;

    *type = NULL;
    if (boundary)
        *boundary = NULL;
    if (!value || osip_content_type_init(&ct) != 0)
        return -1;
    if (osip_content_type_parse(ct, value) != 0 || !ct->type || !ct->subtype)
        goto done;
    {
        const char *t = mime_lower(p, mime_trim(p, ct->type, strlen(ct->type)));
        const char *st = mime_lower(p, mime_trim(p, ct->subtype, strlen(ct->subtype)));
        if (!sip_is_token(t) || !sip_is_token(st))
            goto done;
        *type = apr_pstrcat(p, t, "/", st, NULL);
    }
    while (boundary && (gp = osip_list_get(&ct->gen_params, pos++)) != NULL)
        if (gp->gname && !strcasecmp(gp->gname, "boundary") && gp->gvalue)
            *boundary = mime_unquote(p, apr_pstrdup(p, gp->gvalue));
    rc = 0;
done:
    osip_content_type_free(ct);
    return rc;
}

/* ---- SIP-date ---- */

apr_time_t sip_mime_date_parse(const char *s)
{
    char buf[64];
    apr_size_t n;
    apr_time_t t;

    if (!s)
        return 0;
    s += strspn(s, " \t\"");
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '"'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    /* RFC 1123 (and the older forms HTTP tolerates); APR_DATE_BAD is 0 */
    t = apr_date_parse_rfc(buf);
    return t > 0 ? t : 0;
}

const char *sip_mime_date_format(apr_pool_t *p, apr_time_t t)
{
    char *d = apr_palloc(p, APR_RFC822_DATE_LEN);
    apr_rfc822_date(d, t);
    return d;
}

/* ---- Accept, Accept-Disposition ---- */

/* Split at the commas outside quotes. */
static void mime_split_list(apr_pool_t *p, const char *v, apr_array_header_t *out)
{
    const char *start = v;
    int quoted = 0;

    for (;; v++) {
        if (*v == '"' && (v == start || v[-1] != '\\'))
            quoted = !quoted;
        if (*v == '\0' || (*v == ',' && !quoted)) {
            const char *e = mime_trim(p, start, (apr_size_t)(v - start));
            if (*e)
                *(const char **)apr_array_push(out) = e;
            if (!*v)
                break;
            start = v + 1;
        }
    }
}

/* q=... as thousandths: -1 when not a mime_qvalue (RFC 3261 §25.1) */
static int mime_qvalue(const char *params)
{
    const char *q = params;

    while ((q = strchr(q, ';')) != NULL) {
        q++;
        q += strspn(q, " \t");
        if ((q[0] == 'q' || q[0] == 'Q') && (q[1] == '=' || q[1] == ' ' || q[1] == '\t')) {
            const char *v = q + 1 + strspn(q + 1, " \t");
            char buf[8];
            apr_size_t n;
            if (*v != '=')
                continue;
            v++;
            v += strspn(v, " \t");
            n = strcspn(v, " \t;");
            if (n == 0 || n >= sizeof(buf))
                return -1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return sip_qvalue_parse(buf);
        }
    }
    return 1000;
}

int sip_mime_list_parse(apr_pool_t *p, const apr_array_header_t *hdrs, const char *name,
                        int media, sip_mime_list_t *out)
{
    apr_array_header_t *elems = apr_array_make(p, 4, sizeof(const char *));
    int i, rc = 0;

    out->present = 0;
    out->ranges = apr_array_make(p, 4, sizeof(sip_mime_range_t));
    for (i = 0; hdrs && i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        if (strcasecmp(h->name, name) == 0) {
            out->present = 1;
            mime_split_list(p, h->value, elems);
        }
    }
    for (i = 0; i < elems->nelts; i++) {
        const char *e = APR_ARRAY_IDX(elems, i, const char *);
        apr_size_t n = strcspn(e, ";");
        const char *v = mime_lower(p, mime_trim(p, e, n));
        sip_mime_range_t *r;
        int q = media ? mime_qvalue(e + n) : 1000;

        if (media) {
            const char *slash = strchr(v, '/');
            if (q < 0 || !slash || !sip_is_token(apr_pstrmemdup(p, v, (apr_size_t)(slash - v)))
                || !sip_is_token(slash + 1) || (!strcmp(v, "*/*") ? 0 : v[0] == '*')) {
                rc = -1;
                continue;
            }
        }
        else if (strcmp(v, "*") && !sip_is_token(v)) {
            rc = -1;
            continue;
        }
        r = apr_array_push(out->ranges);
        r->value = v;
        r->q1000 = q;
    }
    return rc;
}

/* How specifically 'range' matches 'type': 3 exactly, 2 by "type/ *", 1 by
 * "* / *" (spaces for the comment's sake), 0 not at all. */
static int mime_media_match(const char *range, const char *type)
{
    const char *rs = strchr(range, '/'), *ts = strchr(type, '/');

    if (!rs || !ts)
        return 0;
    if (!strcmp(range, "*/*"))
        return 1;
    if (rs - range != ts - type || strncmp(range, type, (apr_size_t)(rs - range)))
        return 0;
    if (!strcmp(rs + 1, "*"))
        return 2;
    return !strcmp(rs + 1, ts + 1) ? 3 : 0;
}

/* q of the most specific range of 'accept' that matches, or -1 */
static int mime_media_q(const sip_mime_list_t *accept, const char *media_type)
{
    int i, best = 0, q = -1;

    for (i = 0; i < accept->ranges->nelts; i++) {
        const sip_mime_range_t *r = &APR_ARRAY_IDX(accept->ranges, i, sip_mime_range_t);
        int m = mime_media_match(r->value, media_type);
        if (m > best) {
            best = m;
            q = r->q1000;
        }
    }
    return q;
}

int sip_mime_accepts_type(const sip_mime_list_t *accept, const char *media_type)
{
    char buf[256];
    apr_size_t n;

    if (!accept || !accept->present)
        return 1;
    if (!media_type)
        return 0;
    /* parameters of the type ("; charset=...") do not take part */
    n = strcspn(media_type, "; \t");
    if (n >= sizeof(buf))
        return 0;
    memcpy(buf, media_type, n);
    buf[n] = '\0';
    mime_lower_in_place(buf);
    return mime_media_q(accept, buf) > 0;
}

int sip_mime_names_type(const sip_mime_list_t *accept, const char *media_type)
{
    return accept && accept->present && sip_mime_accepts_type(accept, media_type);
}

int sip_mime_accepts_disposition(const sip_mime_list_t *ad, const char *type)
{
    int i;

    if (!ad || !ad->present)
        return 1;
    for (i = 0; type && i < ad->ranges->nelts; i++) {
        const char *v = APR_ARRAY_IDX(ad->ranges, i, sip_mime_range_t).value;
        if (!strcmp(v, "*") || !strcasecmp(v, type))
            return 1;
    }
    return 0;
}

/* ---- multipart/mixed ---- */

/* RFC 2046 §5.1.1 bchars, 1 to 70 of them, not ending in a space */
static int mime_boundary_ok(const char *b)
{
    apr_size_t n = b ? strlen(b) : 0;
    const char *s;

    if (n == 0 || n > 70 || b[n - 1] == ' ')
        return 0;
    for (s = b; *s; s++)
        if (!apr_isalnum(*s) && !strchr("'()+_,-./:=? ", *s))
            return 0;
    return 1;
}

/* Is there a delimiter line ("--boundary", then "--" for the close one,
 * then blanks and the line end) at 'at'?  Returns 1 (part follows) or 2
 * (close delimiter) with *next at the start of the next line, else 0. */
static int mime_delimiter_at(const char *at, const char *end, const char *boundary, apr_size_t blen,
                        const char **next)
{
    const char *s = at + 2 + blen;
    int close = 0;

    if ((apr_size_t)(end - at) < 2 + blen || at[0] != '-' || at[1] != '-'
        || memcmp(at + 2, boundary, blen) != 0)
        return 0;
    if (end - s >= 2 && s[0] == '-' && s[1] == '-') {
        close = 1;
        s += 2;
    }
    while (s < end && (*s == ' ' || *s == '\t'))    /* transport padding */
        s++;
    if (s == end && close) {
        *next = s;
        return 2;
    }
    if (s < end && *s == '\n')
        s++;
    else if (end - s >= 2 && s[0] == '\r' && s[1] == '\n')
        s += 2;
    else
        return 0;
    *next = s;
    return close ? 2 : 1;
}

/* The next delimiter from 'from': a line start (after CRLF or LF) holding
 * one.  *line is where the line break before it begins (the part ends
 * there). */
static int mime_find_delimiter(const char *from, const char *end, const char *boundary,
                          apr_size_t blen, const char **line, const char **next)
{
    const char *s = from;

    while (s < end) {
        const char *nl = memchr(s, '\n', (apr_size_t)(end - s));
        int kind;
        if (!nl)
            return 0;
        if ((kind = mime_delimiter_at(nl + 1, end, boundary, blen, next)) != 0) {
            *line = nl > from && nl[-1] == '\r' ? nl - 1 : nl;
            return kind;
        }
        s = nl + 1;
    }
    return 0;
}

static int mime_parse_part_headers(apr_pool_t *p, const char *s, const char *end,
                              sip_mime_part_t *part)
{
    sip_header_t *cur = NULL;

    part->headers = apr_array_make(p, 4, sizeof(sip_header_t));
    while (s < end) {
        const char *nl = memchr(s, '\n', (apr_size_t)(end - s));
        const char *eol = nl ? nl : end;
        apr_size_t len;

        if (eol > s && eol[-1] == '\r')
            eol--;
        len = (apr_size_t)(eol - s);
        if (len == 0) {             /* the blank line: the body follows */
            part->body = nl ? nl + 1 : end;
            part->len = (apr_size_t)(end - part->body);
            return 0;
        }
        if (*s == ' ' || *s == '\t') {
            if (!cur)
                return -1;
            cur->value = apr_pstrcat(p, cur->value, " ", mime_trim(p, s, len), NULL);
        }
        else {
            const char *colon = memchr(s, ':', len);
            const char *name, *longname;
            if (!colon)
                return -1;
            name = mime_trim(p, s, (apr_size_t)(colon - s));
            if (!sip_is_token(name))
                return -1;
            longname = sip_header_long_name(name, strlen(name));
            cur = apr_array_push(part->headers);
            cur->name = longname ? longname : name;
            cur->value = mime_trim(p, colon + 1, (apr_size_t)(eol - colon - 1));
        }
        s = nl ? nl + 1 : end;
    }
    /* headers without the blank line: an empty body */
    part->body = end;
    part->len = 0;
    return 0;
}

int sip_mime_multipart_split(apr_pool_t *p, const char *body, apr_size_t len,
                             const char *boundary, apr_array_header_t **parts, const char **why)
{
    const char *end = body + len, *next = NULL, *line, *s;
    apr_size_t blen;
    int kind;

    *parts = apr_array_make(p, 2, sizeof(sip_mime_part_t));
    if (!mime_boundary_ok(boundary)) {
        *why = "multipart body without a valid boundary parameter";
        return -1;
    }
    blen = strlen(boundary);
    /* the first delimiter may open the body; anything before is preamble */
    kind = body ? mime_delimiter_at(body, end, boundary, blen, &next) : 0;
    if (!kind && body)
        kind = mime_find_delimiter(body, end, boundary, blen, &line, &next);
    if (!kind) {
        *why = "multipart body without its boundary delimiter";
        return -1;
    }
    while (kind == 1) {
        sip_mime_part_t *part = apr_array_push(*parts);
        s = next;
        /* an empty part may be followed at once by the next delimiter */
        if ((kind = mime_delimiter_at(s, end, boundary, blen, &next)) != 0)
            line = s;
        else
            kind = mime_find_delimiter(s, end, boundary, blen, &line, &next);
        if (!kind) {
            *why = "multipart body without its close delimiter";
            return -1;
        }
        if (mime_parse_part_headers(p, s, line, part) != 0) {
            *why = "malformed header in a body part";
            return -1;
        }
    }
    return 0;
}

const char *sip_mime_part_header(const sip_mime_part_t *part, const char *name)
{
    int i;

    for (i = 0; part->headers && i < part->headers->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(part->headers, i, sip_header_t);
        if (strcasecmp(h->name, name) == 0)
            return h->value;
    }
    return NULL;
}

static int mime_occurs(const char *hay, apr_size_t n, const char *needle)
{
    apr_size_t k = strlen(needle);
    const char *s = hay, *end = hay + n;

    while (s && (apr_size_t)(end - s) >= k) {
        s = memchr(s, needle[0], (apr_size_t)(end - s) - k + 1);
        if (!s)
            return 0;
        if (memcmp(s, needle, k) == 0)
            return 1;
        s++;
    }
    return 0;
}

const char *sip_mime_multipart_build(apr_pool_t *p, const apr_array_header_t *parts,
                                     const char **boundary, apr_size_t *len)
{
    apr_array_header_t *heads = apr_array_make(p, parts->nelts, sizeof(const char *));
    const char *b = NULL;
    apr_size_t total = 0;
    char *out, *o;
    int i, j, tries;

    for (i = 0; i < parts->nelts; i++) {
        const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
        const char *h = "";
        for (j = 0; part->headers && j < part->headers->nelts; j++) {
            const sip_header_t *hd = &APR_ARRAY_IDX(part->headers, j, sip_header_t);
            h = apr_pstrcat(p, h, hd->name, ": ", hd->value, "\r\n", NULL);
        }
        *(const char **)apr_array_push(heads) = h;
    }
    /* RFC 2046 §5.1.1: the boundary must not occur in any part */
    for (tries = 0; tries < 100; tries++) {
        unsigned char rnd[12];
        int clash = 0;
        if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS)
            memcpy(rnd, &tries, sizeof(tries));
        b = apr_psprintf(p, "mod_sip-%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
                         rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], rnd[8], rnd[9],
                         rnd[10], rnd[11]);
        for (i = 0; i < parts->nelts && !clash; i++) {
            const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
            const char *h = APR_ARRAY_IDX(heads, i, const char *);
            clash = mime_occurs(part->body, part->len, b) || mime_occurs(h, strlen(h), b);
        }
        if (!clash)
            break;
    }
    for (i = 0; i < parts->nelts; i++)
        total += strlen(b) + 4 + strlen(APR_ARRAY_IDX(heads, i, const char *)) + 2
                 + APR_ARRAY_IDX(parts, i, sip_mime_part_t).len + 2;
    total += strlen(b) + 6;
    o = out = apr_palloc(p, total + 1);
    for (i = 0; i < parts->nelts; i++) {
        const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
        const char *h = APR_ARRAY_IDX(heads, i, const char *);
        o += sprintf(o, "--%s\r\n%s\r\n", b, h);
        if (part->len)
            memcpy(o, part->body, part->len);
        o += part->len;
        memcpy(o, "\r\n", 2);
        o += 2;
    }
    o += sprintf(o, "--%s--\r\n", b);
    *len = (apr_size_t)(o - out);
    *boundary = b;
    return out;
}
