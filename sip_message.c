#include "sip_message.h"
#include "sip_freelist.h"

#include "httpd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <osipparser2/osip_parser.h>
#include <osipparser2/osip_port.h>

#include "apr_strings.h"
#include "apr_escape.h"
#include "apr_lib.h"

struct sip_msg {
    apr_pool_t *pool;
    osip_message_t *m;          /* NULL until libosip2 accepted the message */
    char *raw;                  /* NUL-terminated copy */
    apr_size_t raw_len;
    const char *start_line;
    const char *method;         /* requests, from the start line */
    const char *uri;            /* requests, from the start line */
    const char *version;
    apr_array_header_t *hdrs;   /* sip_header_t */
    apr_array_header_t *spans;  /* raw_span_t, one per hdrs entry */
    const char *orig;           /* the text as received (parsed messages) */
    const char *body;
    apr_size_t body_len;
    int folded;                 /* a header field had continuation lines */
    int blank_line;             /* the header fields ended with an empty line */
    int routes_dropped;         /* Route values removed from the top ... */
    int routes_dropped_back;    /* ... and from the bottom (§16.4) */
    const char *via0;           /* the top Via value as stamped, or NULL */
    const char *via0_tail;      /* what follows it in its header field
                                 * (", next values"), or NULL if folded */
    const char *peer;           /* IP it came from, when the receiver noted it */
};

/* Where a header field lies in the raw text: from its name to the end of
 * its line terminator (continuation lines included). */
typedef struct raw_span {
    apr_size_t off, end;
} raw_span_t;

void sip_message_init(void)
{
    parser_init();
}

/* ---- libosip2's allocations in an engine ----
 * Its objects go to free lists (sip_freelist.h) on the engine's loop thread,
 * the only thread that parses and builds messages at a rate; another
 * thread's calls go to malloc() and free() as before.  Every block is a
 * plain malloc() block, so blocks may cross between the two. */
#if defined(__SANITIZE_ADDRESS__)
#define SIP_OSIP_FREELIST_OFF 1     /* ASan must see each free and reuse */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIP_OSIP_FREELIST_OFF 1
#endif
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#define SIP_OSIP_FREELIST_MAX (1024 * 1024)  /* bytes kept between bursts */

static sip_freelist_t osip_fl;
#ifndef SIP_OSIP_FREELIST_OFF
static pthread_t osip_fl_thread;

static void *osip_fl_malloc(size_t n)
{
    return pthread_equal(pthread_self(), osip_fl_thread) ? sip_freelist_get(&osip_fl, n)
                                                          : malloc(n);
}

static void *osip_fl_realloc(void *p, size_t n)
{
    return pthread_equal(pthread_self(), osip_fl_thread) ? sip_freelist_resize(&osip_fl, p, n)
                                                          : realloc(p, n);
}

static void osip_fl_free(void *p)
{
    if (pthread_equal(pthread_self(), osip_fl_thread))
        sip_freelist_put(&osip_fl, p);
    else
        free(p);
}
#endif

int sip_message_use_freelists(void)
{
#ifdef SIP_OSIP_FREELIST_OFF
    return 0;
#else
    /* memcheck must see each free and reuse; bench/icount counts
     * instructions under callgrind with the free lists, as they run */
    if (RUNNING_ON_VALGRIND && !getenv("SIP_FREELISTS_UNDER_VALGRIND"))
        return 0;
    if (osip_malloc_func == osip_fl_malloc)
        return 1;
    sip_freelist_init(&osip_fl, SIP_OSIP_FREELIST_MAX);
    osip_fl_thread = pthread_self();
    osip_set_allocators(osip_fl_malloc, osip_fl_realloc, osip_fl_free);
    return 1;
#endif
}

void sip_message_freelist_stats(unsigned long *hits, unsigned long *misses, apr_size_t *held)
{
    *hits = osip_fl.hits;
    *misses = osip_fl.misses;
    *held = osip_fl.held;
}

static apr_status_t osip_msg_cleanup(void *data)
{
    sip_msg_t *m = data;
    if (m->m)
        osip_message_free(m->m);
    m->m = NULL;
    return APR_SUCCESS;
}

static sip_msg_t *msg_new(apr_pool_t *p)
{
    sip_msg_t *m = apr_pcalloc(p, sizeof(*m));
    m->pool = p;
    m->hdrs = apr_array_make(p, 16, sizeof(sip_header_t));
    m->spans = apr_array_make(p, 16, sizeof(raw_span_t));
    apr_pool_cleanup_register(p, m, osip_msg_cleanup, apr_pool_cleanup_null);
    return m;
}

/* RFC 3261 §7.3.3 and the compact forms registered since. */
const char *sip_header_long_name(const char *name, apr_size_t len)
{
    static const char *const compact[26] = {
        ['a' - 'a'] = "Accept-Contact",  ['b' - 'a'] = "Referred-By",
        ['c' - 'a'] = "Content-Type",    ['d' - 'a'] = "Request-Disposition",
        ['e' - 'a'] = "Content-Encoding", ['f' - 'a'] = "From",
        ['i' - 'a'] = "Call-ID",         ['j' - 'a'] = "Reject-Contact",
        ['k' - 'a'] = "Supported",       ['l' - 'a'] = "Content-Length",
        ['m' - 'a'] = "Contact",         ['n' - 'a'] = "Identity-Info",
        ['o' - 'a'] = "Event",           ['r' - 'a'] = "Refer-To",
        ['s' - 'a'] = "Subject",         ['t' - 'a'] = "To",
        ['u' - 'a'] = "Allow-Events",    ['v' - 'a'] = "Via",
        ['x' - 'a'] = "Session-Expires", ['y' - 'a'] = "Identity",
    };
    int ch;

    if (len != 1)
        return NULL;
    ch = apr_tolower((unsigned char)name[0]);
    if (ch < 'a' || ch > 'z')
        return NULL;
    return compact[ch - 'a'];
}

static int is_token_char(int c)
{
    return apr_isalnum(c) || (c && strchr("-.!%*_+`'~", c));
}

/* Split the raw text into start line, unfolded headers and body, checking
 * the LimitRequest* limits on the way.  Returns 0 or a SIP status. */
static int split_raw(sip_msg_t *m, const sip_limits_t *lim, const char **reason)
{
    char *pos = m->raw, *end = m->raw + m->raw_len;
    sip_header_t *cur = NULL;
    int first = 1, nfields = 0, status = 0;

/* Keep reading after a limit is hit: the answer needs Via, From, To... */
#define REFUSE(code, why) do { if (!status) { status = (code); *reason = (why); } } while (0)
    while (pos < end) {
        char *nl = memchr(pos, '\n', (apr_size_t)(end - pos));
        char *eol = nl ? nl : end;
        apr_size_t len;

        if (eol > pos && eol[-1] == '\r')
            eol--;
        len = (apr_size_t)(eol - pos);
        *eol = '\0';
        if (first) {
            m->start_line = pos;
            first = 0;
            if (lim && len > (apr_size_t)lim->line)
                REFUSE(414, "Request-URI Too Long");
        }
        else if (len == 0) {
            m->blank_line = 1;
            m->body = nl ? nl + 1 : end;
            m->body_len = (apr_size_t)(end - m->body);
            return status;
        }
        else if (*pos == ' ' || *pos == '\t') {
            /* RFC 3261 §7.3.1: a continuation line folds into the last one */
            m->folded = 1;
            if (!cur)
                REFUSE(400, "Malformed Header");
            else {
                while (*pos == ' ' || *pos == '\t')
                    pos++;
                cur->value = apr_pstrcat(m->pool, cur->value, " ", pos, NULL);
                APR_ARRAY_IDX(m->spans, m->spans->nelts - 1, raw_span_t).end
                    = (apr_size_t)((nl ? nl + 1 : end) - m->raw);
                if (lim && strlen(cur->value) > (apr_size_t)lim->fieldsize)
                    REFUSE(400, "Header Field Too Long");
            }
        }
        else {
            char *colon = memchr(pos, ':', len), *name_end = colon, *v;
            const char *longname;
            int bad = !colon;

            if (lim && len > (apr_size_t)lim->fieldsize)
                REFUSE(400, "Header Field Too Long");
            if (lim && ++nfields > lim->fields)
                REFUSE(400, "Too Many Header Fields");
            while (!bad && name_end > pos && (name_end[-1] == ' ' || name_end[-1] == '\t'))
                name_end--;
            if (!bad && name_end == pos)
                bad = 1;
            for (v = pos; !bad && v < name_end; v++)
                if (!is_token_char((unsigned char)*v))
                    bad = 1;
            if (bad)
                REFUSE(400, "Malformed Header");
            else {
                *name_end = '\0';
                v = colon + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                raw_span_t *sp = apr_array_push(m->spans);
                sp->off = (apr_size_t)(pos - m->raw);
                sp->end = (apr_size_t)((nl ? nl + 1 : end) - m->raw);
                cur = apr_array_push(m->hdrs);
                longname = sip_header_long_name(pos, (apr_size_t)(name_end - pos));
                cur->name = longname ? longname : pos;
                cur->value = v;
            }
        }
        pos = nl ? nl + 1 : end;
    }
#undef REFUSE
    /* No blank line: a datagram may end right after its headers. */
    m->body = end;
    m->body_len = 0;
    return status;
}

const char *sip_msg_header(const sip_msg_t *m, const char *name)
{
    int i;
    for (i = 0; i < m->hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(m->hdrs, i, sip_header_t);
        if (strcasecmp(h->name, name) == 0)
            return h->value;
    }
    return NULL;
}

/* Next space-separated word of *s (NUL-terminated in place), or NULL. */
static char *next_word(char **s)
{
    char *w = *s, *e;

    while (*w == ' ')
        w++;
    if (!*w)
        return NULL;
    e = strchr(w, ' ');
    if (e) {
        *e = '\0';
        *s = e + 1;
    }
    else
        *s = w + strlen(w);
    return w;
}

static int parse_start_line(sip_msg_t *m)
{
    char *line = apr_pstrdup(m->pool, m->start_line), *rest = line;
    char *a = next_word(&rest), *b, *c;
    const char *s;

    if (!a)
        return -1;
    if (strncmp(a, "SIP/", 4) == 0) {
        m->version = a;
        return next_word(&rest) ? 1 : -1;   /* a response */
    }
    b = next_word(&rest);
    c = next_word(&rest);
    if (!b || !c || next_word(&rest) || strncasecmp(c, "SIP/", 4) != 0)
        return -1;
    for (s = a; *s; s++)
        if (!is_token_char((unsigned char)*s))
            return -1;
    m->method = a;
    m->uri = b;
    m->version = c;
    return 0;
}

static int has_header(const sip_msg_t *m, const char *name)
{
    return sip_msg_header(m, name) != NULL;
}

/* libosip2 splits multipart bodies with a MIME parser of its own, which
 * refuses legal ones (an empty part: a script removal in a REGISTER,
 * draft-lennox-sip-reg-payload §3.1).  Nothing here uses its parts (the
 * body is kept as received; sip_mime.c splits it): parse again with the
 * body as one opaque body, then give the message its real Content-Type.
 * 1 with *om replaced, or 0. */
static int parse_multipart_opaque(apr_pool_t *p, const sip_msg_t *m, const char *buf,
                                  osip_message_t **om)
{
    const char *ct = sip_msg_header(m, "Content-Type");
    apr_size_t head = (apr_size_t)(m->body - m->raw), i;
    osip_message_t *again;
    char *copy;

    if (!ct || strncasecmp(ct + strspn(ct, " \t"), "multipart/", 10) || !m->body_len)
        return 0;
    copy = apr_pstrmemdup(p, buf, head + m->body_len);
    /* the split header values point into m->raw; the same offsets in the
     * copy: blank out the type so that libosip2 leaves the body whole */
    for (i = 0; i < (apr_size_t)m->hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(m->hdrs, i, sip_header_t);
        if (!strcasecmp(h->name, "Content-Type") && h->value >= m->raw
            && h->value < m->raw + head) {
            apr_size_t off = (apr_size_t)(h->value - m->raw), n = strlen(h->value);
            memcpy(copy + off, "text", 4 < n ? 4 : n);  /* "multipart/x" -> "textipart/x" */
        }
    }
    if (osip_message_init(&again) != 0)
        return 0;
    if (osip_message_parse(again, copy, head + m->body_len) != 0) {
        osip_message_free(again);
        return 0;
    }
    if (again->content_type) {
        osip_content_type_free(again->content_type);
        again->content_type = NULL;
    }
    osip_message_set_content_type(again, ct);
    osip_message_free(*om);
    *om = again;
    return 1;
}

/* A request without body or folded lines, as split_raw already split it,
 * handed to libosip2 field by field: its own header parsers, given the
 * name and value its osip_message_parse would cut out (osip_clrncpy), but
 * without the copy of the text, the LWS pass and the line search over it,
 * a quarter of an OPTIONS.  Anything else, and any field libosip2 refuses,
 * goes through osip_message_parse as before (the parser of record decides
 * what is malformed).  0 when fed, else not (*om is then a fresh one). */
static int osip_feed(sip_msg_t *m, osip_message_t **om)
{
    osip_uri_t *u = NULL;
    int i;

    /* libosip2 refuses fields not ended by an empty line */
    if (m->folded || !m->blank_line || m->body_len || m->start_line != m->raw
        || strchr(m->start_line, '\r')
        || strlen(m->start_line) != strlen(m->method) + strlen(m->uri) + strlen(m->version) + 2)
        return -1;
    osip_message_set_method(*om, osip_strdup(m->method));
    osip_message_set_version(*om, osip_strdup(m->version));
    if (osip_uri_init(&u) != 0)
        goto again;
    osip_message_set_uri(*om, u);
    if (osip_uri_parse(u, m->uri) != 0)
        goto again;
    for (i = 0; i < m->spans->nelts; i++) {
        const raw_span_t *sp = &APR_ARRAY_IDX(m->spans, i, raw_span_t);
        const char *t = m->orig + sp->off, *colon = memchr(t, ':', sp->end - sp->off);
        apr_size_t end = sp->end - sp->off;
        char *name, *value = NULL;

        if (end > 0 && t[end - 1] == '\n')
            end--;
        if (end > 0 && t[end - 1] == '\r')
            end--;
        if (!colon || memchr(t, '\r', end))
            goto again;     /* a lone CR ends a line for libosip2 */
        name = apr_palloc(m->pool, (apr_size_t)(colon - t) + 1);
        osip_clrncpy(name, t, (apr_size_t)(colon - t));
        if (t + end > colon + 1) {      /* "Name:" alone has no value at all */
            apr_size_t n = (apr_size_t)(t + end - colon - 1);
            value = apr_palloc(m->pool, n + 1);
            osip_clrncpy(value, colon + 1, n);
        }
        if (osip_message_set_multiple_header(*om, name, value) != 0)
            goto again;
    }
    /* what osip_message_parse does for a message without body */
    if ((*om)->content_length && !(*om)->content_length->value) {
        osip_content_length_free((*om)->content_length);
        (*om)->content_length = NULL;
    }
    if (!(*om)->content_length)
        osip_message_set_content_length(*om, "0");
    return 0;
again:
    osip_message_free(*om);
    return osip_message_init(om) == 0 ? 1 : -2;
}

#define FAIL(code, why) do { err->status = (code); err->reason = (why); return APR_EGENERAL; } while (0)

apr_status_t sip_msg_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                           const sip_limits_t *lim, int datagram,
                           sip_msg_t **out, sip_msg_error_t *err)
{
    static const char *const mandatory[] = {"Via", "From", "To", "Call-ID", "CSeq", NULL};
    sip_msg_t *m = msg_new(p);
    const char *reason = NULL, *clen_hdr;
    int kind, status, i, fed;
    osip_message_t *om;

    *out = m;
    err->status = 0;
    err->reason = "unparsable";
    m->raw = apr_pstrmemdup(p, buf, len);
    m->raw_len = len;
    m->orig = apr_pstrmemdup(p, buf, len);

    status = split_raw(m, lim, &reason);
    kind = m->start_line ? parse_start_line(m) : -1;
    /* The transport keeps only the head of an over-long start line on a
     * stream, so it no longer parses: its length is what to answer. */
    if (kind < 0 && status == 414 && has_header(m, "CSeq"))
        FAIL(414, reason);
    if (kind < 0)
        FAIL((has_header(m, "Via") || !datagram) && has_header(m, "CSeq") ? 400 : 0,
             "Malformed Start Line");
    if (kind == 1) {
        /* Responses are never answered: anything wrong just drops them. */
        err->reason = "malformed response";
        if (status)
            return APR_EGENERAL;
    }
    else if (status)
        FAIL(status, reason);
    /* NUL is legal in a body only (split_raw put NULs in the copy). */
    if (kind == 0 && memchr(buf, '\0', (apr_size_t)(m->body - m->raw)))
        FAIL(400, "NUL In Header");

    for (i = 0; mandatory[i]; i++) {
        if (!has_header(m, mandatory[i])) {
            err->reason = apr_pstrcat(p, "Missing ", mandatory[i], " Header", NULL);
            err->status = kind == 0 ? 400 : 0;
            return APR_EGENERAL;
        }
    }
    if (kind == 0 && !has_header(m, "Max-Forwards"))
        FAIL(400, "Missing Max-Forwards Header");

    /* RFC 3261 §18.3: a datagram shorter than its Content-Length is bad;
     * extra octets after the body are ignored. */
    clen_hdr = sip_msg_header(m, "Content-Length");
    if (clen_hdr) {
        char *stop;
        apr_int64_t clen = apr_strtoi64(clen_hdr, &stop, 10);
        while (*stop == ' ' || *stop == '\t')
            stop++;
        if (*stop || clen < 0 || !apr_isdigit(clen_hdr[0]))
            FAIL(kind == 0 ? 400 : 0, "Bad Content-Length");
        if (lim && clen > lim->body)
            FAIL(kind == 0 ? 413 : 0, "Request Entity Too Large");
        if ((apr_uint64_t)clen > m->body_len)
            FAIL(kind == 0 ? 400 : 0, "Content-Length Mismatch");
        m->body_len = (apr_size_t)clen;
    }
    else if (!datagram && lim)
        /* RFC 3261 §18.3, §20.14: mandatory on a stream, which it frames.
         * (Texts of our own are parsed without limits, and have no
         * stream to frame.) */
        FAIL(kind == 0 ? 400 : 0, "Missing Content-Length");
    else if (!datagram)
        m->body_len = 0;
    if (lim && m->body_len > (apr_uint64_t)lim->body)
        FAIL(kind == 0 ? 413 : 0, "Request Entity Too Large");

    if (kind == 0 && strcmp(m->version, "SIP/2.0") != 0)
        FAIL(505, "Version Not Supported");
    /* RFC 3261 §8.2.2.1: a scheme we do not serve gets 416 even when
     * libosip2 could not read the rest of that URI */
    if (kind == 0) {
        apr_size_t n = strcspn(m->uri, ":");
        const char *c;
        int scheme_ok = m->uri[n] == ':' && n > 0 && apr_isalpha(m->uri[0]);
        for (c = m->uri; scheme_ok && c < m->uri + n; c++)
            if (!apr_isalnum(*c) && !strchr("+-.", *c))
                scheme_ok = 0;
        if (scheme_ok && !(n == 3 && !strncasecmp(m->uri, "sip", 3))
            && !(n == 4 && !strncasecmp(m->uri, "sips", 4)))
            FAIL(416, "Unsupported URI Scheme");
    }
    /* An escaped NUL survives no C string: refuse it rather than let the
     * URI change meaning on the way through. */
    if (kind == 0 && (strstr(m->uri, "%00")     /* no letter in it: strstr will do */
                      || (sip_msg_header(m, "To") && strstr(sip_msg_header(m, "To"), "%00"))
                      || (sip_msg_header(m, "From") && strstr(sip_msg_header(m, "From"), "%00"))))
        FAIL(400, "Escaped NUL In URI");

    /* libosip2 does the full grammar; give it only the message itself. */
    if (osip_message_init(&om) != 0)
        FAIL(0, "out of memory");
    fed = kind == 0 ? osip_feed(m, &om) : -1;
    if (fed == -2)
        FAIL(0, "out of memory");
    if (fed != 0 && osip_message_parse(om, buf, (size_t)((m->body - m->raw) + m->body_len)) != 0
        && !(kind == 0 && parse_multipart_opaque(p, m, buf, &om))) {
        osip_message_free(om);
        FAIL(kind == 0 ? 400 : 0, "Bad Request");
    }
    m->m = om;
    if (kind == 0) {
        osip_header_t *mf = NULL;
        char *stop;
        apr_int64_t n;

        if (!om->req_uri || !om->req_uri->scheme)
            FAIL(400, "Bad Request-URI");
        if (strcasecmp(om->req_uri->scheme, "sip") && strcasecmp(om->req_uri->scheme, "sips"))
            FAIL(416, "Unsupported URI Scheme");
        if (!om->req_uri->host)
            FAIL(400, "Bad Request-URI");
        if (!om->cseq || !om->cseq->number || !om->cseq->method)
            FAIL(400, "Bad CSeq");
        n = apr_strtoi64(om->cseq->number, &stop, 10);
        if (*stop || n < 0 || n > 0x7fffffffLL || !apr_isdigit(om->cseq->number[0]))
            FAIL(400, "Bad CSeq");
        /* §8.2.1 / §12.2.2: the CSeq method must match the request's. */
        if (strcmp(om->cseq->method, m->method) != 0)
            FAIL(400, "CSeq Method Mismatch");
        if (!om->from || !om->from->url || !om->to || !om->to->url)
            FAIL(400, "Bad From or To");
        if (!om->call_id || !om->call_id->number)
            FAIL(400, "Bad Call-ID");
        if (osip_message_get_max_forwards(om, 0, &mf) < 0 || !mf || !mf->hvalue)
            FAIL(400, "Bad Max-Forwards");
        n = apr_strtoi64(mf->hvalue, &stop, 10);
        if (*stop || n < 0 || n > 255 || !apr_isdigit(mf->hvalue[0]))
            FAIL(400, "Bad Max-Forwards");
        {
            osip_via_t *via = osip_list_get(&om->vias, 0);
            if (!via || !via->host || !via->protocol)
                FAIL(400, "Bad Via");
        }
    }
    else {
        if (!om->cseq || !om->call_id || !osip_list_get(&om->vias, 0))
            FAIL(0, "malformed response");
    }
    return APR_SUCCESS;
}

/* Is the method word of a raw CSeq value exactly ACK? */
static int cseq_is_ack(const char *cseq)
{
    const char *w = cseq + strspn(cseq, "0123456789 \t");
    return strncmp(w, "ACK", 3) == 0 && (w[3] == '\0' || w[3] == ' ' || w[3] == '\t');
}

/* Append "Name: value\r\n" for every raw header called 'name'. */
static void copy_raw(apr_array_header_t *out, const sip_msg_t *m, const char *name,
                     const char *to_tag)
{
    int i;
    for (i = 0; i < m->hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(m->hdrs, i, sip_header_t);
        if (strcasecmp(h->name, name) != 0)
            continue;
        *(const char **)apr_array_push(out) = name;
        *(const char **)apr_array_push(out) = ": ";
        *(const char **)apr_array_push(out) = h->value;
        if (to_tag && !ap_strcasestr(h->value, ";tag=")) {
            *(const char **)apr_array_push(out) = ";tag=";
            *(const char **)apr_array_push(out) = to_tag;
        }
        *(const char **)apr_array_push(out) = "\r\n";
        if (strcasecmp(name, "Via") != 0)
            return;     /* only Via may repeat */
    }
}

/* The start of every response we write (§8.2.6.2): status line, the
 * Vias (as stamped by libosip2, or the raw ones of a request that could
 * not be stamped), and From, To (tagged past 100), Call-ID and CSeq as the
 * request had them.  NULL if a stamped Via cannot be written. */
static apr_array_header_t *response_head(apr_pool_t *p, const sip_msg_t *req, int status,
                                         const char *reason, const char *to_tag, int stamped)
{
    apr_array_header_t *parts = apr_array_make(p, 40, sizeof(const char *));
    osip_via_t *via;
    int i;

    *(const char **)apr_array_push(parts) = apr_psprintf(p, "SIP/2.0 %d %s\r\n", status, reason);
    if (!stamped)
        copy_raw(parts, req, "Via", NULL);
    else if (req->via0 && req->via0_tail) {
        /* §8.2.6.2: the request's Vias as received, the top one as
         * stamped (received, rport): no libosip2 serialisation needed */
        int first = 1;
        for (i = 0; i < req->hdrs->nelts; i++) {
            const sip_header_t *h = &APR_ARRAY_IDX(req->hdrs, i, sip_header_t);
            if (strcasecmp(h->name, "Via") != 0)
                continue;
            *(const char **)apr_array_push(parts) = "Via: ";
            if (first) {
                *(const char **)apr_array_push(parts) = req->via0;
                *(const char **)apr_array_push(parts) = req->via0_tail;
                first = 0;
            }
            else
                *(const char **)apr_array_push(parts) = h->value;
            *(const char **)apr_array_push(parts) = "\r\n";
        }
        stamped = 0;
    }
    for (i = 0; stamped && (via = osip_list_get(&req->m->vias, i)) != NULL; i++) {
        char *v = NULL;
        if (osip_via_to_str(via, &v) != 0)
            return NULL;
        *(const char **)apr_array_push(parts) = apr_pstrcat(p, "Via: ", v, "\r\n", NULL);
        osip_free(v);
    }
    copy_raw(parts, req, "From", NULL);
    copy_raw(parts, req, "To", status > 100 ? to_tag : NULL);
    copy_raw(parts, req, "Call-ID", NULL);
    copy_raw(parts, req, "CSeq", NULL);
    return parts;
}

const char *sip_msg_raw_error_response(apr_pool_t *p, const sip_msg_t *req, int status,
                                       const char *reason, const char *to_tag, int stream,
                                       apr_size_t *len)
{
    apr_array_header_t *parts;
    const char *text;
    const char *cseq = req ? sip_msg_header(req, "CSeq") : NULL;

    /* §17.1.1.3: ACK is never answered */
    if (!req || (req->method && strcmp(req->method, "ACK") == 0) || (cseq && cseq_is_ack(cseq)))
        return NULL;
    if (!stream && !has_header(req, "Via"))
        return NULL;    /* a datagram answer would have nowhere to go */
    parts = response_head(p, req, status, reason, to_tag, 0);
    *(const char **)apr_array_push(parts) = "Content-Length: 0\r\n\r\n";
    text = apr_array_pstrcat(p, parts, 0);
    *len = strlen(text);
    return text;
}

/* ---- the received text, for forwarding it with few changes ---- */

typedef struct raw_elem {
    apr_size_t start, end;
} raw_elem_t;

/* Bounds of the value of header 'i' in m->orig: after "Name:" and its
 * white space, before the line terminator and trailing white space. */
static void raw_value(const sip_msg_t *m, int i, apr_size_t *vs, apr_size_t *ve)
{
    const raw_span_t *sp = &APR_ARRAY_IDX(m->spans, i, raw_span_t);
    const char *t = m->orig;
    apr_size_t v = sp->off, e = sp->end;

    while (v < e && t[v] != ':')
        v++;
    if (v < e)
        v++;
    while (v < e && (t[v] == ' ' || t[v] == '\t'))
        v++;
    while (e > v && (t[e - 1] == '\n' || t[e - 1] == '\r' || t[e - 1] == ' ' || t[e - 1] == '\t'))
        e--;
    *vs = v;
    *ve = e;
}

/* The comma-separated values of a header (RFC 3261 §7.3.1), skipping
 * commas inside quoted strings and <...>. */
static apr_array_header_t *raw_elems(apr_pool_t *p, const sip_msg_t *m, int i)
{
    apr_array_header_t *out = apr_array_make(p, 4, sizeof(raw_elem_t));
    const char *t = m->orig;
    apr_size_t vs, ve, k, start;
    int quoted = 0, angle = 0;

    raw_value(m, i, &vs, &ve);
    start = vs;
    for (k = vs; k <= ve; k++) {
        char c = k < ve ? t[k] : ',';
        if (quoted && k < ve) {     /* an unclosed quote ends with the value */
            if (c == '\\' && k + 1 < ve)
                k++;
            else if (c == '"')
                quoted = 0;
            continue;
        }
        if (c == '"')
            quoted = 1;
        else if (c == '<')
            angle = 1;
        else if (c == '>')
            angle = 0;
        else if (c == ',' && (!angle || k == ve) && (!quoted || k == ve)) {
            apr_size_t a = start, b = k;
            while (a < b && strchr(" \t\r\n", t[a]))
                a++;
            while (b > a && strchr(" \t\r\n", t[b - 1]))
                b--;
            if (b > a) {
                raw_elem_t *el = apr_array_push(out);
                el->start = a;
                el->end = b;
            }
            start = k + 1;
        }
    }
    return out;
}

static int first_header(const sip_msg_t *m, const char *name)
{
    int i;
    for (i = 0; i < m->hdrs->nelts; i++)
        if (strcasecmp(APR_ARRAY_IDX(m->hdrs, i, sip_header_t).name, name) == 0)
            return i;
    return -1;
}

/* 'v' with the value of its parameter 'name' (after ';' and optional
 * white space, up to the next ';') set to 'value'; NULL when 'v' has no
 * such parameter. */
static const char *set_via_param(apr_pool_t *p, const char *v, const char *name, const char *value)
{
    apr_size_t len = strlen(name);
    const char *r;

    for (r = v; (r = ap_strcasestr(r, name)) != NULL; r += len) {
        const char *b = r, *a = r + len + strspn(r + len, " \t");
        while (b > v && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > v && b[-1] == ';' && (*a == '\0' || *a == ';' || *a == '='))
            break;
    }
    if (!r)
        return NULL;
    return apr_pstrcat(p, apr_pstrmemdup(p, v, (apr_size_t)(r - v)), name, "=", value,
                       r + len + strcspn(r + len, ";"), NULL);
}

/* The top Via value of the received text with rport filled in and
 * received set (RFC 3581), every other byte as it came. */
static const char *stamp_via_text(sip_msg_t *m, int rport, const char *received)
{
    apr_pool_t *p = m->pool;
    int i = m->orig ? first_header(m, "Via") : -1;
    apr_array_header_t *el;
    const raw_elem_t *e;
    const char *v, *r;

    if (i < 0 || !(el = raw_elems(p, m, i))->nelts)
        return NULL;
    e = &APR_ARRAY_IDX(el, 0, raw_elem_t);
    v = apr_pstrmemdup(p, m->orig + e->start, e->end - e->start);
    {
        apr_size_t vs, ve;

        raw_value(m, i, &vs, &ve);
        m->via0_tail = apr_pstrmemdup(p, m->orig + e->end, ve - e->end);
        if (strpbrk(m->via0_tail, "\r\n"))
            m->via0_tail = NULL;    /* folded: written from libosip2's values */
    }
    /* a value given by the client is replaced */
    if (rport && (r = set_via_param(p, v, "rport", apr_itoa(p, rport))))
        v = r;
    if (received)
        v = (r = set_via_param(p, v, "received", received)) ? r
            : apr_pstrcat(p, v, ";received=", received, NULL);
    return v;
}

void sip_msg_stamp_via(sip_msg_t *req, const sip_source_t *src, sip_sockaddr_t *resp_dest)
{
    osip_via_t *via = req->m ? osip_list_get(&req->m->vias, 0) : NULL;
    osip_generic_param_t *rport = NULL, *received = NULL;
    const char *ip = sip_sockaddr_ip(req->pool, &src->peer);
    int port = 5060;

    *resp_dest = src->peer;
    if (!via)
        return;
    osip_via_param_get_byname(via, "rport", &rport);
    osip_via_param_get_byname(via, "received", &received);
    /* RFC 3581 §4: with rport, always add received and fill in the port.
     * A received parameter the client sent is overwritten with the source
     * address (RFC 3261 §18.2.1): kept, it would send our responses, and
     * the proxied ones, to any host the client names. */
    if (received) {
        osip_free(received->gvalue);
        received->gvalue = osip_strdup(ip);
    }
    else if (rport || !via->host || strcmp(via->host, ip) != 0)
        osip_via_set_received(via, osip_strdup(ip));
    if (rport) {
        osip_free(rport->gvalue);
        rport->gvalue = osip_strdup(apr_itoa(req->pool, sip_sockaddr_port(&src->peer)));
    }
    osip_message_force_update(req->m);
    /* the same change in the text a proxy forwards (the rest as it came) */
    req->via0 = stamp_via_text(req, rport ? sip_sockaddr_port(&src->peer) : 0,
                               received || rport || !via->host || strcmp(via->host, ip) != 0
                               ? ip : NULL);
    if (src->kind == SIP_TP_WS || src->kind == SIP_TP_WSS)
        return;     /* RFC 7118 §5: only ever on the browser's own connection */
    /* §18.2.2: to received (or sent-by), at rport or the sent-by port.  On
     * TCP and TLS this is where a new connection goes when the request's
     * has closed: the sent-by port, or the transport's default; rport is
     * for unreliable transports only (RFC 3581 §4). */
    if (src->kind == SIP_TP_UDP && rport)
        return;     /* the source address and port, exactly */
    if (src->kind == SIP_TP_TLS)
        port = 5061;
    if (via->port)
        port = atoi(via->port);
    if (port <= 0 || port > 65535)
        port = 5060;
    if (sip_sockaddr_set(resp_dest, received ? received->gvalue : ip, port) != APR_SUCCESS)
        *resp_dest = src->peer;
}

int sip_msg_is_request(const sip_msg_t *m)
{
    return m->method != NULL;
}

const char *sip_msg_method(const sip_msg_t *m)
{
    return m->method;
}

/* Keep the start-line fields of a built or changed request in step. */
static void sync_start_line(sip_msg_t *m)
{
    char *u = NULL;

    if (!m->m || !MSG_IS_REQUEST(m->m))
        return;
    m->method = apr_pstrdup(m->pool, m->m->sip_method);
    m->version = apr_pstrdup(m->pool, m->m->sip_version ? m->m->sip_version : "SIP/2.0");
    if (m->m->req_uri && osip_uri_to_str(m->m->req_uri, &u) == 0) {
        m->uri = apr_pstrdup(m->pool, u);
        osip_free(u);
    }
}

const char *sip_msg_request_uri(const sip_msg_t *m)
{
    return m->uri;
}

const char *sip_msg_uri_user(const sip_msg_t *m)
{
    /* From the Request-URI as received: libosip2 has already unescaped its
     * copy, and a script name must be unescaped exactly once. */
    const char *user, *host;

    if (!m->uri || !sip_uri_user_host(m->pool, m->uri, &user, &host))
        return NULL;
    return user;
}

const char *sip_msg_uri_host(const sip_msg_t *m)
{
    return m->m && m->m->req_uri ? m->m->req_uri->host : NULL;
}

const char *sip_msg_version(const sip_msg_t *m)
{
    return m->version;
}

int sip_msg_status(const sip_msg_t *m)
{
    return m->m ? m->m->status_code : 0;
}

const char *sip_msg_reason(const sip_msg_t *m)
{
    return m->m ? m->m->reason_phrase : NULL;
}

const char *sip_status_reason(int status)
{
    const char *r = osip_message_get_reason(status);

    if (r && *r)
        return r;
    return status < 200 ? "Trying" : status < 300 ? "OK" : status < 400 ? "Redirect"
         : status < 500 ? "Request Failed" : status < 600 ? "Server Error" : "Global Failure";
}

const char *sip_msg_branch(const sip_msg_t *m)
{
    osip_via_t *via = m->m ? osip_list_get(&m->m->vias, 0) : NULL;
    osip_generic_param_t *b = NULL;

    if (!via || osip_via_param_get_byname(via, "branch", &b) < 0 || !b)
        return NULL;
    return b->gvalue;
}

const char *sip_msg_via_sent_by(const sip_msg_t *m)
{
    osip_via_t *via = m->m ? osip_list_get(&m->m->vias, 0) : NULL;
    if (!via)
        return "";
    return apr_pstrcat(m->pool, via->host, ":", via->port ? via->port : "5060", NULL);
}

const char *sip_msg_top_via(const sip_msg_t *m)
{
    osip_via_t *via = m->m ? osip_list_get(&m->m->vias, 0) : NULL;
    char *s = NULL;
    const char *r;

    if (!via || osip_via_to_str(via, &s) != 0)
        return "";
    r = apr_pstrdup(m->pool, s);
    osip_free(s);
    return r;
}

const char *sip_msg_call_id(const sip_msg_t *m)
{
    osip_call_id_t *c = m->m ? m->m->call_id : NULL;
    if (!c || !c->number)
        return "";
    return c->host ? apr_pstrcat(m->pool, c->number, "@", c->host, NULL) : c->number;
}

const char *sip_msg_cseq_number(const sip_msg_t *m)
{
    return m->m && m->m->cseq && m->m->cseq->number ? m->m->cseq->number : "";
}

const char *sip_msg_cseq_method(const sip_msg_t *m)
{
    return m->m && m->m->cseq && m->m->cseq->method ? m->m->cseq->method : "";
}

const char *sip_msg_from_tag(const sip_msg_t *m)
{
    osip_generic_param_t *t = NULL;
    if (!m->m || !m->m->from || osip_from_get_tag(m->m->from, &t) < 0 || !t)
        return NULL;
    return t->gvalue;
}

const char *sip_msg_to_tag(const sip_msg_t *m)
{
    osip_generic_param_t *t = NULL;
    if (!m->m || !m->m->to || osip_to_get_tag(m->m->to, &t) < 0 || !t)
        return NULL;
    return t->gvalue;
}

const apr_array_header_t *sip_msg_headers(const sip_msg_t *m)
{
    return m->hdrs;
}

const char *sip_msg_body(const sip_msg_t *m, apr_size_t *len)
{
    *len = m->body_len;
    return m->body_len ? m->body : NULL;
}

const char *sip_msg_content_type(const sip_msg_t *m)
{
    return sip_msg_header(m, "Content-Type");
}

/* ---- building responses ---- */

static void copy_dialog_headers(osip_message_t *r, const osip_message_t *req, int vias)
{
    if (vias) {
        osip_list_special_free(&r->vias, (void (*)(void *))osip_via_free);
        osip_list_clone(&req->vias, &r->vias, (int (*)(void *, void **))osip_via_clone);
    }
    if (!r->from && req->from)
        osip_from_clone(req->from, &r->from);
    if (!r->to && req->to)
        osip_to_clone(req->to, &r->to);
    if (!r->call_id && req->call_id)
        osip_call_id_clone(req->call_id, &r->call_id);
    if (!r->cseq && req->cseq)
        osip_cseq_clone(req->cseq, &r->cseq);
}

static void tag_to(osip_message_t *r, const char *to_tag)
{
    osip_generic_param_t *t = NULL;

    if (to_tag && r->to && r->status_code > 100 && (osip_to_get_tag(r->to, &t) < 0 || !t))
        osip_to_set_tag(r->to, osip_strdup(to_tag));
}

sip_msg_t *sip_msg_make_response(apr_pool_t *p, const sip_msg_t *req, int status,
                                 const char *reason, const char *to_tag)
{
    sip_msg_t *m = msg_new(p);
    osip_message_t *r;

    if (osip_message_init(&r) != 0)
        return NULL;
    m->m = r;
    osip_message_set_version(r, osip_strdup("SIP/2.0"));
    osip_message_set_status_code(r, status);
    osip_message_set_reason_phrase(r, osip_strdup(reason));
    copy_dialog_headers(r, req->m, 1);
    tag_to(r, to_tag);
    return m;
}

void sip_msg_add_header(sip_msg_t *m, const char *name, const char *value)
{
    osip_message_set_header(m->m, name, value);
    osip_message_force_update(m->m);
}

const char *sip_msg_response_text(apr_pool_t *p, const sip_msg_t *req, int status,
                                  const char *reason, const char *to_tag,
                                  const char *const *hdrs, const char *content_type,
                                  const char *body, apr_size_t body_len, apr_size_t *len)
{
    apr_array_header_t *parts;
    const char *text;

    if (!req->m || !(parts = response_head(p, req, status, reason, to_tag, 1)))
        return NULL;
    for (; hdrs && hdrs[0] && hdrs[1]; hdrs += 2)
        *(const char **)apr_array_push(parts) = apr_pstrcat(p, hdrs[0], ": ", hdrs[1], "\r\n",
                                                             NULL);
    if (body && body_len) {
        *(const char **)apr_array_push(parts) = apr_pstrcat(p, "Content-Type: ", content_type,
                                                             "\r\n", NULL);
        *(const char **)apr_array_push(parts) = apr_psprintf(p, "Content-Length: %" APR_SIZE_T_FMT
                                                             "\r\n\r\n", body_len);
    }
    else
        *(const char **)apr_array_push(parts) = "Content-Length: 0\r\n\r\n";
    text = apr_array_pstrcat(p, parts, 0);
    *len = strlen(text);
    if (body && body_len) {
        char *all = apr_palloc(p, *len + body_len);
        memcpy(all, text, *len);
        memcpy(all + *len, body, body_len);
        *len += body_len;
        text = all;
    }
    return text;
}

sip_msg_t *sip_msg_parse_script_response(apr_pool_t *p, const char *buf, apr_size_t len,
                                         const char **why)
{
    sip_msg_t *m = msg_new(p);
    osip_message_t *om;
    const char *hdr_end = NULL, *s;
    apr_size_t i, body_off = len;
    char *crlf, *o;

    /* RFC 3050 §6.1: scripts may end lines with LF; libosip2 wants CRLF. */
    for (s = buf; s < buf + len; s++) {
        const char *nl = memchr(s, '\n', (apr_size_t)(buf + len - s));
        if (!nl)
            break;
        if (nl == s || (nl == s + 1 && *s == '\r')) {
            hdr_end = s;
            body_off = (apr_size_t)(nl + 1 - buf);
            break;
        }
        s = nl;
    }
    o = crlf = apr_palloc(p, 2 * len + 3);
    for (i = 0; i < (hdr_end ? (apr_size_t)(hdr_end - buf) : len); i++) {
        if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
            *o++ = '\r';
        *o++ = buf[i];
    }
    if (!hdr_end && (o == crlf || o[-1] != '\n')) {
        *o++ = '\r';
        *o++ = '\n';
    }
    *o++ = '\r';
    *o++ = '\n';
    memcpy(o, buf + body_off, len - body_off);
    o += len - body_off;
    *o = '\0';

    if (osip_message_init(&om) != 0) {
        *why = "out of memory";
        return NULL;
    }
    if (osip_message_parse(om, crlf, (size_t)(o - crlf)) != 0) {
        osip_message_free(om);
        *why = "not a SIP message";
        return NULL;
    }
    m->m = om;
    if (MSG_IS_REQUEST(om)) {
        *why = "not a response";
        return NULL;
    }
    if (om->status_code < 100 || om->status_code > 699) {
        *why = "status code out of range";
        return NULL;
    }
    return m;
}

void sip_msg_complete_response(sip_msg_t *resp, const sip_msg_t *req, const char *to_tag)
{
    int i = 0;
    osip_header_t *h;

    /* RFC 3050 §5.6.2: CGI header fields never leave the server. */
    while ((h = osip_list_get(&resp->m->headers, i)) != NULL) {
        if (h->hname && strncasecmp(h->hname, "CGI-", 4) == 0) {
            osip_list_remove(&resp->m->headers, i);
            osip_header_free(h);
        }
        else
            i++;
    }
    copy_dialog_headers(resp->m, req->m, 1);
    tag_to(resp->m, to_tag);
    osip_message_force_update(resp->m);
}

const char *sip_msg_serialize(apr_pool_t *p, sip_msg_t *m, apr_size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    const char *r;

    if (!m->m || osip_message_to_str(m->m, &s, &n) != 0)
        return NULL;
    r = apr_pstrmemdup(p, s, n);
    osip_free(s);
    *len = n;
    return r;
}

/* ---- forwarding the received text (RFC 3261 §16.6, §16.7) ---- */

/* The realm="..." of a Digest credentials value, unquoted, or NULL. */
static const char *credentials_realm(apr_pool_t *p, const char *t, apr_size_t vs, apr_size_t ve)
{
    apr_size_t k = vs;

    /* skip the scheme, then walk auth-param = token "=" (token / quoted) */
    while (k < ve && !strchr(" \t", t[k]))
        k++;
    while (k < ve) {
        apr_size_t ns, ne;
        while (k < ve && strchr(" \t\r\n,", t[k]))
            k++;
        ns = k;
        while (k < ve && !strchr(" \t\r\n=,", t[k]))
            k++;
        ne = k;
        while (k < ve && strchr(" \t\r\n", t[k]))
            k++;
        if (k >= ve || t[k] != '=') {
            k++;
            continue;
        }
        k++;
        while (k < ve && strchr(" \t\r\n", t[k]))
            k++;
        if (k < ve && t[k] == '"') {
            apr_size_t qs = ++k;
            char *val, *o;
            while (k < ve && t[k] != '"')
                k += t[k] == '\\' && k + 1 < ve ? 2 : 1;
            if (ne - ns == 5 && !strncasecmp(t + ns, "realm", 5)) {
                apr_size_t j;
                o = val = apr_palloc(p, k - qs + 1);
                for (j = qs; j < k && j < ve; j++) {
                    if (t[j] == '\\' && j + 1 < k)
                        j++;
                    *o++ = t[j];
                }
                *o = '\0';
                return val;
            }
            k++;
        }
        else {
            apr_size_t ts = k;
            while (k < ve && !strchr(" \t\r\n,", t[k]))
                k++;
            if (ne - ns == 5 && !strncasecmp(t + ns, "realm", 5))
                return apr_pstrmemdup(p, t + ts, k - ts);
        }
    }
    return NULL;
}

#define EMIT(s) (*(const char **)apr_array_push(out) = (s))
#define EMIT_RAW(a, b) EMIT(apr_pstrmemdup(p, m->orig + (a), (apr_size_t)((b) - (a))))

/* "Name:" and the white space after it, as the header was written. */
static void emit_prefix(apr_pool_t *p, apr_array_header_t *out, const sip_msg_t *m, int i)
{
    apr_size_t vs, ve;

    raw_value(m, i, &vs, &ve);
    EMIT_RAW(APR_ARRAY_IDX(m->spans, i, raw_span_t).off, vs);
}

/* The line terminator the header was written with. */
static const char *line_end(const sip_msg_t *m, int i)
{
    const raw_span_t *sp = &APR_ARRAY_IDX(m->spans, i, raw_span_t);

    if (sp->end > sp->off && m->orig[sp->end - 1] == '\n')
        return sp->end - 1 > sp->off && m->orig[sp->end - 2] == '\r' ? "\r\n" : "\n";
    return "\r\n";
}

const char *sip_msg_relay_text(apr_pool_t *p, const sip_msg_t *resp, apr_size_t *len)
{
    sip_wire_edit_t e;

    memset(&e, 0, sizeof(e));
    e.pop_via = 1;
    return sip_msg_wire_text(p, resp, &e, len);
}

const char *sip_msg_wire_text(apr_pool_t *p, const sip_msg_t *m, const sip_wire_edit_t *e,
                              apr_size_t *len)
{
    apr_array_header_t *out = apr_array_make(p, 64, sizeof(const char *));
    int i, nroutes = 0, route_k = 0, first_via = -1, last_via = -1, last_route = -1;
    int rr_done = 0, via_done = 0, mf_done = 0, have_cl = 0, have_rr = 0;
    int drop_front, drop_back;

    if (!m->orig)
        return NULL;
    drop_front = m->routes_dropped + e->route_drop;
    drop_back = m->routes_dropped_back;
    for (i = 0; i < m->hdrs->nelts; i++) {
        const char *name = APR_ARRAY_IDX(m->hdrs, i, sip_header_t).name;
        if (!strcasecmp(name, "Via")) {
            if (first_via < 0)
                first_via = i;
            last_via = i;
        }
        else if (!strcasecmp(name, "Route")) {
            nroutes += raw_elems(p, m, i)->nelts;
            last_route = i;
        }
        else if (!strcasecmp(name, "Record-Route"))
            have_rr = 1;
    }

    /* start line: a new Request-URI (§16.6 step 2) or status, else as is */
    if (m->method && e->request_uri)
        EMIT(apr_pstrcat(p, m->method, " ", e->request_uri, " ", m->version, "\r\n", NULL));
    else if (!m->method && e->status)
        EMIT(apr_psprintf(p, "SIP/2.0 %d %s\r\n", e->status, e->reason ? e->reason : ""));
    else
        EMIT(apr_pstrcat(p, m->start_line, "\r\n", NULL));

    for (i = 0; i < m->hdrs->nelts; i++) {
        const char *name = APR_ARRAY_IDX(m->hdrs, i, sip_header_t).name;
        const raw_span_t *sp = &APR_ARRAY_IDX(m->spans, i, raw_span_t);
        apr_size_t vs, ve;

        /* §16.6 step 4: our Record-Route on top of the others */
        if (!rr_done && e->record_route && !strcasecmp(name, "Record-Route")) {
            const char *const *rr;
            rr_done = 1;
            for (rr = e->record_route; *rr; rr++)
                EMIT(apr_pstrcat(p, "Record-Route: ", *rr, "\r\n", NULL));
        }
        if (i == first_via) {
            apr_array_header_t *el = raw_elems(p, m, i);
            /* §16.6 step 8: our Via before the received ones */
            if (e->via)
                EMIT(apr_pstrcat(p, "Via: ", e->via, "\r\n", NULL));
            via_done = 1;
            if (e->pop_via || m->via0) {
                const raw_elem_t *e0 = &APR_ARRAY_IDX(el, 0, raw_elem_t);
                raw_value(m, i, &vs, &ve);
                if (e->pop_via) {
                    /* §16.7 step 3: the top Via value was ours */
                    if (el->nelts > 1) {
                        emit_prefix(p, out, m, i);
                        EMIT_RAW(APR_ARRAY_IDX(el, 1, raw_elem_t).start, sp->end);
                    }
                }
                else {
                    emit_prefix(p, out, m, i);
                    EMIT(m->via0);
                    EMIT_RAW(e0->end, sp->end);
                }
                goto next;
            }
        }
        if (!strcasecmp(name, "Max-Forwards") && !mf_done && e->max_forwards) {
            /* §16.6 step 3: decrement in place */
            const char *v = APR_ARRAY_IDX(m->hdrs, i, sip_header_t).value;
            int n = atoi(v);
            mf_done = 1;
            raw_value(m, i, &vs, &ve);
            emit_prefix(p, out, m, i);
            EMIT(apr_psprintf(p, "%d", n > 0 ? n - 1 : 0));
            EMIT_RAW(ve, sp->end);
            goto next;
        }
        if (!strcasecmp(name, "Route")) {
            /* §16.4 / §16.6 step 6: only the removed values go, the
             * others keep their text */
            apr_array_header_t *el = raw_elems(p, m, i);
            int a = 0, b = el->nelts;
            if (route_k < drop_front)
                a = drop_front - route_k < b ? drop_front - route_k : b;
            if (route_k + b > nroutes - drop_back)
                b = nroutes - drop_back - route_k > a ? nroutes - drop_back - route_k : a;
            route_k += el->nelts;
            if (a == 0 && b == el->nelts)
                EMIT_RAW(sp->off, sp->end);
            else if (b > a) {
                emit_prefix(p, out, m, i);
                EMIT_RAW(APR_ARRAY_IDX(el, a, raw_elem_t).start,
                         APR_ARRAY_IDX(el, b - 1, raw_elem_t).end);
                EMIT(line_end(m, i));
            }
            if (i == last_route && e->route_append)
                EMIT(apr_pstrcat(p, "Route: ", e->route_append, "\r\n", NULL));
            goto next;
        }
        if (e->realm && (!strcasecmp(name, "Authorization")
                         || !strcasecmp(name, "Proxy-Authorization"))) {
            /* RFC 3261 §22.3: credentials for our realm stop here */
            const char *r;
            raw_value(m, i, &vs, &ve);
            r = credentials_realm(p, m->orig, vs, ve);
            if (r && !strcmp(r, e->realm))
                goto next;
        }
        if (!strcasecmp(name, "Content-Length"))
            have_cl = 1;
        EMIT_RAW(sp->off, sp->end);
    next:
        if (i == last_via && e->record_route && !have_rr && !rr_done) {
            const char *const *rr;
            rr_done = 1;
            for (rr = e->record_route; *rr; rr++)
                EMIT(apr_pstrcat(p, "Record-Route: ", *rr, "\r\n", NULL));
        }
    }
    if (!via_done && e->via)
        EMIT(apr_pstrcat(p, "Via: ", e->via, "\r\n", NULL));
    if (e->record_route && !rr_done) {
        const char *const *rr;
        for (rr = e->record_route; *rr; rr++)
            EMIT(apr_pstrcat(p, "Record-Route: ", *rr, "\r\n", NULL));
    }
    if (m->method && e->max_forwards && !mf_done)
        EMIT("Max-Forwards: 70\r\n");
    if (e->route_append && last_route < 0)
        EMIT(apr_pstrcat(p, "Route: ", e->route_append, "\r\n", NULL));
    if (e->extra)
        EMIT(e->extra);
    /* a stream needs the length (§18.3); a datagram may have left it out */
    if (!have_cl)
        EMIT(apr_psprintf(p, "Content-Length: %" APR_SIZE_T_FMT "\r\n", m->body_len));
    EMIT("\r\n");
    return sip_text_with_body(p, apr_array_pstrcat(p, out, 0), m->body, m->body_len, len);
}
#undef EMIT_RAW
#undef EMIT

const char *sip_msg_raw_headers(apr_pool_t *p, const sip_msg_t *m, const char *name)
{
    const char *acc = "";
    int i;

    if (!m->orig)
        return acc;
    for (i = 0; i < m->hdrs->nelts; i++) {
        const raw_span_t *sp = &APR_ARRAY_IDX(m->spans, i, raw_span_t);
        if (strcasecmp(APR_ARRAY_IDX(m->hdrs, i, sip_header_t).name, name) == 0)
            acc = apr_pstrcat(p, acc, apr_pstrmemdup(p, m->orig + sp->off, sp->end - sp->off),
                              NULL);
    }
    return acc;
}

int sip_msg_routes_removed(const sip_msg_t *m)
{
    return m->routes_dropped;
}

/* The value number 'idx' over every header called 'name', as written. */
static const char *raw_value_n(apr_pool_t *p, const sip_msg_t *m, const char *name, int idx)
{
    int i;

    if (!m->orig)
        return NULL;
    for (i = 0; i < m->hdrs->nelts; i++) {
        apr_array_header_t *el;
        if (strcasecmp(APR_ARRAY_IDX(m->hdrs, i, sip_header_t).name, name) != 0)
            continue;
        el = raw_elems(p, m, i);
        if (idx < el->nelts) {
            const raw_elem_t *e = &APR_ARRAY_IDX(el, idx, raw_elem_t);
            return apr_pstrmemdup(p, m->orig + e->start, e->end - e->start);
        }
        idx -= el->nelts;
    }
    return NULL;
}

const char *sip_msg_removed_route(apr_pool_t *p, const sip_msg_t *m, int idx)
{
    if (idx < 0 || idx >= m->routes_dropped)
        return NULL;
    return raw_value_n(p, m, "Route", idx);
}

const char *sip_msg_top_record_route(apr_pool_t *p, const sip_msg_t *m)
{
    return raw_value_n(p, m, "Record-Route", 0);
}

/* ---- proxying ---- */

static int uri_info_of(apr_pool_t *p, osip_uri_t *u, sip_uri_info_t *out)
{
    osip_uri_param_t *prm = NULL;

    memset(out, 0, sizeof(*out));
    if (!u->host || !u->scheme || (strcasecmp(u->scheme, "sip") && strcasecmp(u->scheme, "sips")))
        return 0;
    out->host = apr_pstrdup(p, u->host);
    out->port = u->port ? atoi(u->port) : 0;
    out->secure = !strcasecmp(u->scheme, "sips");
    if (osip_uri_uparam_get_byname(u, "transport", &prm) == 0 && prm && prm->gvalue) {
        out->tcp = strcasecmp(prm->gvalue, "tcp") == 0;
        out->transport = apr_pstrdup(p, prm->gvalue);
    }
    prm = NULL;
    out->lr = osip_uri_uparam_get_byname(u, "lr", &prm) == 0 && prm;
    prm = NULL;
    if (osip_uri_uparam_get_byname(u, "maddr", &prm) == 0 && prm && prm->gvalue)
        out->maddr = apr_pstrdup(p, prm->gvalue);
    return 1;
}

int sip_uri_info(apr_pool_t *p, const char *uri, sip_uri_info_t *out)
{
    osip_uri_t *u = NULL;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    if (osip_uri_init(&u) != 0)
        return 0;
    if (osip_uri_parse(u, uri) == 0)
        ok = uri_info_of(p, u, out);
    osip_uri_free(u);
    return ok;
}

int sip_msg_uri_info(apr_pool_t *p, const sip_msg_t *req, sip_uri_info_t *out)
{
    /* the Request-URI libosip2 parsed from the same text (kept in step by
     * sip_msg_set_request_uri) */
    if (!req->m || !req->m->req_uri) {
        memset(out, 0, sizeof(*out));
        return 0;
    }
    return uri_info_of(p, req->m->req_uri, out);
}

sip_msg_t *sip_msg_clone(apr_pool_t *p, const sip_msg_t *m)
{
    sip_msg_t *c = msg_new(p);

    if (!m->m || osip_message_clone(m->m, &c->m) != 0)
        return NULL;
    sync_start_line(c);
    return c;   /* raw headers and body stay with the original */
}

int sip_msg_max_forwards(const sip_msg_t *m)
{
    osip_header_t *mf = NULL;
    if (!m->m || osip_message_get_max_forwards(m->m, 0, &mf) < 0 || !mf || !mf->hvalue)
        return -1;
    return atoi(mf->hvalue);
}

static apr_status_t osip_uri_cleanup(void *data)
{
    osip_uri_free(data);
    return APR_SUCCESS;
}

apr_status_t sip_msg_set_request_uri(sip_msg_t *m, const char *uri)
{
    osip_uri_t *u = NULL;

    if (osip_uri_init(&u) != 0)
        return APR_ENOMEM;
    if (osip_uri_parse(u, uri) != 0) {
        osip_uri_free(u);
        return APR_EINVAL;
    }
    /* the old one lives as long as the message: callers may still hold
     * its host (sip_msg_uri_host) from before a retarget */
    if (m->m->req_uri)
        apr_pool_cleanup_register(m->pool, m->m->req_uri, osip_uri_cleanup,
                                  apr_pool_cleanup_null);
    m->m->req_uri = u;
    osip_message_force_update(m->m);
    sync_start_line(m);
    return APR_SUCCESS;
}

apr_status_t sip_msg_push_via(sip_msg_t *m, const char *via)
{
    osip_via_t *v = NULL;

    if (osip_via_init(&v) != 0)
        return APR_ENOMEM;
    if (osip_via_parse(v, via) != 0) {
        osip_via_free(v);
        return APR_EINVAL;
    }
    osip_list_add(&m->m->vias, v, 0);
    osip_message_force_update(m->m);
    return APR_SUCCESS;
}

void sip_msg_pop_via(sip_msg_t *m)
{
    osip_via_t *v = osip_list_get(&m->m->vias, 0);
    if (v) {
        osip_list_remove(&m->m->vias, 0);
        osip_via_free(v);
        osip_message_force_update(m->m);
    }
}

int sip_msg_via_count(const sip_msg_t *m)
{
    return m->m ? osip_list_size(&m->m->vias) : 0;
}

int sip_msg_via_info(apr_pool_t *p, const sip_msg_t *m, int idx, const char **host, int *port,
                     const char **received, int *rport, int *tcp, const char **branch)
{
    osip_via_t *v = m->m ? osip_list_get(&m->m->vias, idx) : NULL;
    osip_generic_param_t *g = NULL;

    if (!v || !v->host)
        return 0;
    *host = apr_pstrdup(p, v->host);
    *port = v->port ? atoi(v->port) : 0;
    *received = NULL;
    *rport = 0;
    *branch = NULL;
    if (osip_via_param_get_byname(v, "received", &g) == 0 && g && g->gvalue)
        *received = apr_pstrdup(p, g->gvalue);
    g = NULL;
    if (osip_via_param_get_byname(v, "rport", &g) == 0 && g && g->gvalue)
        *rport = atoi(g->gvalue);
    g = NULL;
    if (osip_via_param_get_byname(v, "branch", &g) == 0 && g && g->gvalue)
        *branch = apr_pstrdup(p, g->gvalue);
    *tcp = v->protocol && strcasecmp(v->protocol, "UDP") != 0;
    return 1;
}

int sip_msg_route_count(const sip_msg_t *m)
{
    return m->m ? osip_list_size(&m->m->routes) : 0;
}

const char *sip_msg_route_uri(apr_pool_t *p, const sip_msg_t *m, int idx)
{
    osip_route_t *r = osip_list_get(&m->m->routes, idx);
    char *s = NULL;
    const char *out;

    if (!r || !r->url || osip_uri_to_str(r->url, &s) != 0)
        return NULL;
    out = apr_pstrdup(p, s);
    osip_free(s);
    return out;
}

void sip_msg_remove_route(sip_msg_t *m, int idx)
{
    osip_route_t *r = osip_list_get(&m->m->routes, idx);
    if (r) {
        /* remembered for the text forwarded (sip_msg_wire_text) */
        if (idx == 0)
            m->routes_dropped++;
        else if (idx == osip_list_size(&m->m->routes) - 1)
            m->routes_dropped_back++;
        osip_list_remove(&m->m->routes, idx);
        osip_route_free(r);
        osip_message_force_update(m->m);
    }
}

/* Start a request of 'method' that shares 'req''s Request-URI, top Via,
 * From, Call-ID, CSeq number and Route set (§9.1, §17.1.1.3). */
static sip_msg_t *derived_request(apr_pool_t *p, const sip_msg_t *req, const char *method)
{
    sip_msg_t *m = msg_new(p);
    osip_message_t *r;
    osip_via_t *via = osip_list_get(&req->m->vias, 0), *v2 = NULL;

    if (osip_message_init(&r) != 0)
        return NULL;
    m->m = r;
    osip_message_set_method(r, osip_strdup(method));
    osip_message_set_version(r, osip_strdup("SIP/2.0"));
    osip_uri_clone(req->m->req_uri, &r->req_uri);
    if (via && osip_via_clone(via, &v2) == 0)
        osip_list_add(&r->vias, v2, 0);
    osip_from_clone(req->m->from, &r->from);
    osip_to_clone(req->m->to, &r->to);
    osip_call_id_clone(req->m->call_id, &r->call_id);
    osip_cseq_clone(req->m->cseq, &r->cseq);
    osip_free(r->cseq->method);
    r->cseq->method = osip_strdup(method);
    osip_list_clone(&req->m->routes, &r->routes, (int (*)(void *, void **))osip_from_clone);
    osip_message_set_max_forwards(r, "70");
    osip_message_force_update(r);
    sync_start_line(m);
    return m;
}

sip_msg_t *sip_msg_make_cancel(apr_pool_t *p, const sip_msg_t *req)
{
    return derived_request(p, req, "CANCEL");
}

sip_msg_t *sip_msg_make_ack(apr_pool_t *p, const sip_msg_t *req, const sip_msg_t *resp)
{
    sip_msg_t *m = derived_request(p, req, "ACK");

    /* The To of the ACK is the To of the response (with its tag). */
    if (m && resp->m->to) {
        osip_to_free(m->m->to);
        m->m->to = NULL;
        osip_to_clone(resp->m->to, &m->m->to);
        osip_message_force_update(m->m);
    }
    return m;
}

/* ---- SIP-CGI script output ---- */

sip_msg_t *sip_msg_parse_block(apr_pool_t *p, const char *buf, apr_size_t len)
{
    sip_msg_t *m = msg_new(p);
    const char *reason = NULL, *s, *end = buf + len;

    /* RFC 3050 §5.6: script output has no continuation lines; refuse them
     * rather than guess what the script meant. */
    for (s = buf; s < end; s++) {
        const char *nl = memchr(s, '\n', (apr_size_t)(end - s));
        if (!nl || nl + 1 >= end)
            break;
        if (nl[1] == '\n' || (nl[1] == '\r' && nl + 2 < end && nl[2] == '\n'))
            break;      /* end of the header block */
        if (nl[1] == ' ' || nl[1] == '\t')
            return NULL;
        s = nl;
    }

    m->raw = apr_pstrmemdup(p, buf, len);
    m->raw_len = len;
    if (split_raw(m, NULL, &reason) != 0 || !m->start_line)
        return NULL;
    return m;
}

const char *sip_msg_start_line(const sip_msg_t *m)
{
    return m->start_line;
}

int sip_msg_has_header(const sip_msg_t *m, const char *name)
{
    return sip_msg_header(m, name) != NULL;
}

/* Is 'name' listed in any CGI-Remove header of the block? */
static int block_removes(const sip_msg_t *block, const char *name)
{
    int i;

    for (i = 0; i < block->hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(block->hdrs, i, sip_header_t);
        const char *v = h->value;
        if (strcasecmp(h->name, "CGI-Remove") != 0)
            continue;
        while (*v) {
            apr_size_t n;
            const char *longname;
            v += strspn(v, " \t,");
            n = strcspn(v, " \t,");
            if (!n)
                break;
            longname = sip_header_long_name(v, n);
            if ((longname && strcasecmp(longname, name) == 0)
                || (strlen(name) == n && strncasecmp(v, name, n) == 0))
                return 1;
            v += n;
        }
    }
    return 0;
}

const char *sip_msg_merge_text(apr_pool_t *p, const char *text, apr_size_t len,
                               const sip_msg_t *block, apr_size_t *out_len)
{
    sip_msg_t *base = msg_new(p);
    const char *reason = NULL, *body;
    apr_array_header_t *out = apr_array_make(p, 64, sizeof(const char *));
    apr_size_t body_len;
    int i, inserted = 0, drop_body = 0, new_body = 0;
    const char *bcl = block ? sip_msg_header(block, "Content-Length") : NULL;
    const char *text_out;

#define EMIT(s) (*(const char **)apr_array_push(out) = (s))
    base->raw = apr_pstrmemdup(p, text, len);
    base->raw_len = len;
    if (split_raw(base, NULL, &reason) != 0 || !base->start_line)
        return NULL;
    body = base->body;
    body_len = base->body_len;
    if (block) {
        if (block->body_len || sip_msg_header(block, "Content-Type")) {
            new_body = 1;
            body = block->body;
            body_len = block->body_len;
        }
        else if (bcl && atoi(bcl) == 0)
            drop_body = 1;
    }
    /* the original body length may be padded by the serializer */
    if (!new_body && !drop_body) {
        const char *cl = sip_msg_header(base, "Content-Length");
        if (cl && (apr_size_t)atoi(cl) < body_len)
            body_len = (apr_size_t)atoi(cl);
    }
    EMIT(base->start_line);
    EMIT("\r\n");
    for (i = 0; i <= base->hdrs->nelts; i++) {
        const sip_header_t *h = i < base->hdrs->nelts
                                ? &APR_ARRAY_IDX(base->hdrs, i, sip_header_t) : NULL;
        if (block && !inserted && (!h || strcasecmp(h->name, "Via") != 0)) {
            int j;
            inserted = 1;
            for (j = 0; j < block->hdrs->nelts; j++) {
                const sip_header_t *bh = &APR_ARRAY_IDX(block->hdrs, j, sip_header_t);
                if (strncasecmp(bh->name, "CGI-", 4) == 0 || !strcasecmp(bh->name, "Via")
                    || !strcasecmp(bh->name, "Content-Length"))
                    continue;
                EMIT(bh->name);
                EMIT(": ");
                EMIT(bh->value);
                EMIT("\r\n");
            }
        }
        if (!h)
            break;
        if (!strcasecmp(h->name, "Content-Length") || strncasecmp(h->name, "CGI-", 4) == 0)
            continue;
        if (block && strcasecmp(h->name, "Via") != 0
            && (sip_msg_header(block, h->name) || block_removes(block, h->name)))
            continue;
        if (drop_body && !strcasecmp(h->name, "Content-Type"))
            continue;
        {
            /* the original line as it was written (name, folding) */
            const raw_span_t *sp = &APR_ARRAY_IDX(base->spans, i, raw_span_t);
            EMIT(apr_pstrmemdup(p, text + sp->off, sp->end - sp->off));
        }
    }
    if (drop_body)
        body_len = 0;
    EMIT(apr_psprintf(p, "Content-Length: %" APR_SIZE_T_FMT "\r\n\r\n", body_len));
#undef EMIT
    text_out = apr_array_pstrcat(p, out, 0);
    return sip_text_with_body(p, text_out, body, body_len, out_len);
}

sip_msg_t *sip_msg_dup(apr_pool_t *p, sip_msg_t *m)
{
    apr_size_t len = 0;
    const char *text;
    sip_msg_t *out = NULL;
    sip_msg_error_t err;

    /* a received response is never changed: its own text, not libosip2's */
    if (m->orig && !m->method)
        text = sip_msg_wire_text(p, m, &(sip_wire_edit_t){0}, &len);
    else
        text = sip_msg_serialize(p, m, &len);

    if (!text || sip_msg_parse(p, text, len, NULL, 1, &out, &err) != APR_SUCCESS)
        return NULL;
    return out;
}

void sip_msg_set_peer(sip_msg_t *m, const char *ip)
{
    m->peer = ip;
}

const char *sip_msg_peer(const sip_msg_t *m)
{
    return m->peer;
}

apr_size_t sip_msg_length(const sip_msg_t *m)
{
    return m->raw_len;
}

/* Split a header value at the commas between its elements (not the ones
 * inside quotes or <...>), each trimmed, empty ones left out. */
void sip_header_split_list(apr_pool_t *p, const char *v, apr_array_header_t *out)
{
    const char *start = v;
    int quoted = 0, angle = 0;

    for (;; v++) {
        if (*v == '"' && (v == start || v[-1] != '\\'))
            quoted = !quoted;
        else if (!quoted && *v == '<')
            angle = 1;
        else if (!quoted && *v == '>')
            angle = 0;
        if (*v == '\0' || (*v == ',' && !quoted && !angle)) {
            const char *s = start + strspn(start, " \t");
            apr_size_t n = (apr_size_t)(v - s);
            while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
                n--;
            if (n)
                *(const char **)apr_array_push(out) = apr_pstrmemdup(p, s, n);
            if (!*v)
                break;
            start = v + 1;
        }
    }
}

const char *sip_header_uri(apr_pool_t *p, const char *value, const char **params)
{
    const char *lt = strchr(value, '<'), *gt;

    if (lt && (gt = strchr(lt, '>'))) {
        if (params)
            *params = apr_pstrdup(p, gt + 1 + strspn(gt + 1, " \t"));
        return apr_pstrmemdup(p, lt + 1, (apr_size_t)(gt - lt - 1));
    }
    /* addr-spec form: parameters after ';' belong to the header (§20) */
    {
        const char *start = value + strspn(value, " \t");
        apr_size_t n = strcspn(start, ";");
        if (params)
            *params = apr_pstrdup(p, start + n);
        while (n && (start[n - 1] == ' ' || start[n - 1] == '\t'))
            n--;
        return apr_pstrmemdup(p, start, n);
    }
}

const char *sip_msg_aor(apr_pool_t *p, const sip_msg_t *req)
{
    const char *to = sip_msg_header(req, "To");

    /* RFC 3261 §10.3: a REGISTER is about its To address-of-record */
    return sip_uri_aor(p, strcmp(sip_msg_method(req), "REGISTER") == 0 && to
                          ? sip_header_uri(p, to, NULL) : sip_msg_request_uri(req));
}

/* sip_msg_scan_register_aor: characters taken as they are in a user part
 * (RFC 3261 §25.1 unreserved and user-unreserved minus ";?/": '%'
 * escapes, ':' passwords, ';' and '?' are left to the parser) and in a
 * host name (IP addresses in brackets too). */
static int scan_user_char(int c)
{
    return apr_isalnum(c) || (c && strchr("-_.!~*'()&=+$,", c));
}

static int scan_host_char(int c)
{
    return apr_isalnum(c) || c == '-' || c == '.';
}

const char *sip_msg_scan_register_aor(apr_pool_t *p, const char *buf, apr_size_t len)
{
    const char *end = buf + len, *l, *v, *vend, *u, *user, *host;
    apr_size_t user_len, host_len;
    int sips = 0, angle = 0;
    char *aor, *c;

    if (len < 9 || memcmp(buf, "REGISTER ", 9) != 0)
        return NULL;
    /* the header lines: the first To or t */
    for (l = memchr(buf, '\n', len); l && ++l < end; l = memchr(l, '\n', (apr_size_t)(end - l))) {
        const char *n = l;
        if (l[-2] != '\r')
            return NULL;                        /* a bare LF: the parser's to judge */
        if (*l == '\r' || *l == '\n')
            return NULL;                        /* the blank line: no To */
        if (*n == 'T' || *n == 't') {
            n++;
            if (n < end && (*n == 'o' || *n == 'O'))
                n++;
            while (n < end && (*n == ' ' || *n == '\t'))
                n++;
            if (n < end && *n == ':')
                break;
        }
    }
    if (!l || l >= end)
        return NULL;
    v = memchr(l, ':', (apr_size_t)(end - l)) + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    vend = memchr(v, '\r', (apr_size_t)(end - v));
    /* a folded value (continuation lines) is the parser's */
    if (!vend || vend + 2 >= end || vend[1] != '\n' || vend[2] == ' ' || vend[2] == '\t'
        || memchr(v, '\n', (apr_size_t)(vend - v)))
        return NULL;
    if (memchr(buf, '\0', (apr_size_t)(vend - buf)))
        return NULL;                            /* text the parser would cut */
    /* name-addr with a token display name, or addr-spec */
    u = v;
    if (memchr(v, '<', (apr_size_t)(vend - v))) {
        while (u < vend && *u != '<') {
            if (*u == '"')
                return NULL;
            u++;
        }
        u++;
        angle = 1;
    }
    if (vend - u > 5 && !strncasecmp(u, "sips:", 5)) {
        sips = 1;
        u += 5;
    }
    else if (vend - u > 4 && !strncasecmp(u, "sip:", 4))
        u += 4;
    else
        return NULL;
    for (user = u; u < vend && scan_user_char((unsigned char)*u); u++)
        ;
    if (u == user || u >= vend || *u != '@')
        return NULL;
    user_len = (apr_size_t)(u - user);
    for (host = ++u; u < vend && scan_host_char((unsigned char)*u); u++)
        ;
    if (u == host)
        return NULL;
    host_len = (apr_size_t)(u - host);
    if (u < vend && *u == ':') {                /* a port: digits */
        const char *d = ++u;
        while (u < vend && apr_isdigit(*u))
            u++;
        if (u == d)
            return NULL;
    }
    if (angle ? (u >= vend || (*u != '>' && *u != ';'))
              : (u < vend && *u != ';'))
        return NULL;
    aor = apr_pstrcat(p, sips ? "sips:" : "sip:", apr_pstrmemdup(p, user, user_len), "@",
                      apr_pstrmemdup(p, host, host_len), NULL);
    for (c = strchr(aor, '@'); *c; c++)
        *c = (char)apr_tolower((unsigned char)*c);
    return aor;
}

static const char *aor_of(apr_pool_t *p, const osip_uri_t *u)
{
    char *host, *c;

    if (!u->username || !*u->username || !u->host || !*u->host)
        return NULL;
    host = apr_pstrdup(p, u->host);
    for (c = host; *c; c++)
        *c = apr_tolower(*c);
    return apr_pstrcat(p, u->scheme && !strcasecmp(u->scheme, "sips") ? "sips:" : "sip:",
                       u->username, "@", host, NULL);
}

const char *sip_uri_aor(apr_pool_t *p, const char *uri)
{
    osip_uri_t *u = NULL;
    const char *aor = NULL;

    if (!uri)
        return NULL;
    if (strchr(uri, '<'))
        uri = sip_header_uri(p, uri, NULL);
    if (osip_uri_init(&u) != 0)
        return NULL;
    if (osip_uri_parse(u, uri) == 0)
        aor = aor_of(p, u);
    osip_uri_free(u);
    return aor;
}

const char *sip_msg_uri_aor(apr_pool_t *p, const sip_msg_t *req)
{
    if (!req->m || !req->m->req_uri || !req->uri || strchr(req->uri, '<'))
        return sip_uri_aor(p, req->uri);    /* as its text says */
    return aor_of(p, req->m->req_uri);
}

static const char *uparam(osip_uri_t *u, const char *name)
{
    osip_uri_param_t *prm = NULL;
    if (osip_uri_uparam_get_byname(u, (char *)name, &prm) == 0 && prm)
        return prm->gvalue ? prm->gvalue : "";
    return NULL;
}

int sip_uri_equal(const char *a, const char *b)
{
    static const char *const significant[] = {"transport", "user", "ttl", "method", "maddr", NULL};
    osip_uri_t *x = NULL, *y = NULL;
    int eq = 0, i;

    if (osip_uri_init(&x) || osip_uri_init(&y))
        goto out;
    if (osip_uri_parse(x, a) || osip_uri_parse(y, b))
        goto out;
#define STR_EQ(s, t, cmp) ((!(s) && !(t)) || ((s) && (t) && cmp((s), (t)) == 0))
    if (!STR_EQ(x->scheme, y->scheme, strcasecmp) || !STR_EQ(x->username, y->username, strcmp)
        || !STR_EQ(x->password, y->password, strcmp) || !STR_EQ(x->host, y->host, strcasecmp)
        || !STR_EQ(x->port, y->port, strcmp))
        goto out;
    for (i = 0; significant[i]; i++) {
        const char *px = uparam(x, significant[i]), *py = uparam(y, significant[i]);
        if (!STR_EQ(px, py, strcasecmp))
            goto out;
    }
#undef STR_EQ
    eq = 1;
out:
    if (x)
        osip_uri_free(x);
    if (y)
        osip_uri_free(y);
    return eq;
}

char *sip_text_with_body(apr_pool_t *p, const char *head, const char *body,
                         apr_size_t body_len, apr_size_t *len)
{
    apr_size_t hl = strlen(head);
    char *all = apr_palloc(p, hl + body_len + 1);

    memcpy(all, head, hl);
    if (body_len)
        memcpy(all + hl, body, body_len);
    all[hl + body_len] = '\0';
    *len = hl + body_len;
    return all;
}

int sip_is_token(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!is_token_char((unsigned char)*s))
            return 0;
    return 1;
}

const char *sip_str_printable(apr_pool_t *p, const char *s, apr_size_t max)
{
    char *out = apr_pstrndup(p, s ? s : "", max), *c;
    apr_size_t n;

    for (c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = (*c == '\n' || *c == '\r' || *c == '\t') ? ' ' : '?';
    n = strlen(out);
    while (n && out[n - 1] == ' ')
        out[--n] = '\0';
    return out;
}

const char *sip_str_lower(apr_pool_t *p, const char *s)
{
    char *c = apr_pstrdup(p, s), *d;
    for (d = c; *d; d++)
        *d = apr_tolower(*d);
    return c;
}

/* Same components as sip_uri_equal, case-folded where it compares them
 * case-insensitively, each marked present or absent and separated by a
 * byte no URI holds: equal keys <=> equal URIs.  A binding is then found
 * by hashing instead of comparing with every binding of its AoR. */
const char *sip_uri_key(apr_pool_t *p, const char *uri)
{
    static const char *const significant[] = {"transport", "user", "ttl", "method", "maddr", NULL};
    osip_uri_t *u = NULL;
    const char *key = NULL;
    int i;

    if (!uri || osip_uri_init(&u))
        return NULL;
    if (osip_uri_parse(u, uri) == 0) {
#define PART(v, fold) (v) ? "+" : "-", (v) ? ((fold) ? sip_str_lower(p, (v)) : (v)) : "", "\x01"
        key = apr_pstrcat(p, PART(u->scheme, 1), PART(u->username, 0), PART(u->password, 0),
                          PART(u->host, 1), PART(u->port, 0), NULL);
        for (i = 0; significant[i]; i++) {
            const char *v = uparam(u, significant[i]);
            key = apr_pstrcat(p, key, PART(v, 1), NULL);
        }
#undef PART
    }
    osip_uri_free(u);
    return key;
}

/* RFC 3261 §20.10 qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ),
 * as thousandths; -1 when 's' is not one (nan, 2, -0.5, 0.1234, ...). */
int sip_qvalue_parse(const char *s)
{
    int v = 0, digits = 0;

    if (!s || (s[0] != '0' && s[0] != '1'))
        return -1;
    v = (s[0] - '0') * 1000;
    s++;
    if (*s == '.') {
        int scale = 100;
        for (s++; apr_isdigit(*s) && digits < 3; s++, digits++, scale /= 10)
            v += (*s - '0') * scale;
    }
    if (*s || v > 1000)
        return -1;
    return v;
}

int sip_uri_user_host(apr_pool_t *p, const char *uri, const char **user, const char **host)
{
    const char *colon = strchr(uri, ':'), *end, *at, *h;

    if (!colon)
        return 0;
    end = colon + 1 + strcspn(colon + 1, ";?>");
    at = memchr(colon + 1, '@', (apr_size_t)(end - colon - 1));
    if (!at)
        return 0;
    h = at + 1;
    *user = apr_pstrmemdup(p, colon + 1, strcspn(colon + 1, ":@"));
    *host = apr_pstrmemdup(p, h, strcspn(h, ":;?>"));
    return **user && **host;
}

static const char *unquote(apr_pool_t *p, const char *s)
{
    apr_size_t n;

    if (!s)
        return NULL;
    n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"')
        return apr_pstrmemdup(p, s + 1, n - 2);
    return apr_pstrdup(p, s);
}

/* The Digest credentials of one header list: 2 when they are for 'realm',
 * 1 for another realm, 0 for none. */
static int credentials_in(apr_pool_t *p, const osip_list_t *list, const char *realm,
                          sip_credentials_t *c)
{
    int i, found = 0;

    for (i = 0; i < osip_list_size(list); i++) {
        osip_authorization_t *a = osip_list_get(list, i);
        const char *r;
        if (!a || !a->auth_type || strcasecmp(a->auth_type, "Digest") != 0)
            continue;
        r = unquote(p, a->realm);
        if (found && (!realm || !r || strcmp(r, realm) != 0))
            continue;   /* §22.4: prefer the credentials for our realm */
        c->username = unquote(p, a->username);
        c->realm = r;
        c->nonce = unquote(p, a->nonce);
        c->uri = unquote(p, a->uri);
        c->response = unquote(p, a->response);
        c->algorithm = unquote(p, a->algorithm);
        c->cnonce = unquote(p, a->cnonce);
        c->qop = unquote(p, a->message_qop);
        c->nc = unquote(p, a->nonce_count);
        c->opaque = unquote(p, a->opaque);
        found = 1;
        if (realm && r && strcmp(r, realm) == 0)
            return 2;
    }
    return found;
}

int sip_msg_credentials(apr_pool_t *p, const sip_msg_t *m, int proxy, const char *realm,
                        sip_credentials_t *c)
{
    const osip_list_t *want, *other;
    sip_credentials_t alt;
    int found;

    if (!m->m)
        return 0;
    want = proxy ? &m->m->proxy_authorizations : &m->m->authorizations;
    other = proxy ? &m->m->authorizations : &m->m->proxy_authorizations;
    found = credentials_in(p, want, realm, c);
    /* Many phones answer a 401 with Proxy-Authorization or a 407 with
     * Authorization: for our own realm either header will do. */
    if (found < 2 && realm) {
        memset(&alt, 0, sizeof(alt));
        if (credentials_in(p, other, realm, &alt) == 2) {
            *c = alt;
            return 1;
        }
    }
    return found != 0;
}

int sip_uri_parts(apr_pool_t *p, const char *uri, sip_uri_parts_t *out)
{
    const char *colon = uri ? strchr(uri, ':') : NULL;
    osip_uri_t *u = NULL;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    if (!colon || colon == uri)
        return 0;
    out->scheme = sip_str_lower(p, apr_pstrmemdup(p, uri, (apr_size_t)(colon - uri)));
    if (strcmp(out->scheme, "sip") && strcmp(out->scheme, "sips")) {
        out->opaque = apr_pstrdup(p, colon + 1);
        return 1;
    }
    if (osip_uri_init(&u) != 0)
        return 0;
    if (osip_uri_parse(u, uri) == 0 && u->host) {
        const char *up = uparam(u, "user");
        out->user = u->username ? apr_pstrdup(p, u->username) : NULL;
        out->password = u->password ? apr_pstrdup(p, u->password) : NULL;
        out->host = apr_pstrdup(p, u->host);
        out->port = u->port && *u->port ? apr_pstrdup(p, u->port) : NULL;
        out->user_phone = up && !strcasecmp(up, "phone");
        ok = 1;
    }
    osip_uri_free(u);
    return ok;
}

const char *sip_header_display(apr_pool_t *p, const char *value)
{
    osip_from_t *f = NULL;
    const char *out = NULL;

    if (!value || osip_from_init(&f) != 0)
        return NULL;
    if (osip_from_parse(f, value) == 0 && f->displayname && *f->displayname) {
        const char *d = f->displayname;
        apr_size_t n = strlen(d);
        if (n >= 2 && d[0] == '"' && d[n - 1] == '"') {
            /* quoted-string: drop the quotes, resolve quoted-pairs */
            char *o = apr_palloc(p, n), *w = o;
            apr_size_t i;
            for (i = 1; i < n - 1; i++) {
                if (d[i] == '\\' && i + 1 < n - 1)
                    i++;
                *w++ = d[i];
            }
            *w = '\0';
            out = *o ? o : NULL;        /* "" is no name */
        } else {
            out = apr_pstrdup(p, d);
        }
    }
    osip_from_free(f);
    return out;
}

/* ---- URI lists (EXPLODE draft, RFC 5363) ---- */

const char *sip_uri_escape_params(apr_pool_t *p, const char *uri)
{
    const char *colon = uri ? strchr(uri, ':') : NULL, *rest, *at, *semi, *from, *s;
    char *out, *o;
    apr_size_t n = 0;

    if (!colon || !(at = strchr(rest = colon + 1, '@')))
        return uri;
    /* The userinfo ends at the first '@' (a user may hold ';', RFC 3261
     * §25.1 user-unreserved), unless a parameter before it has a ':' in
     * its value: "sip:host;list=cid:a@b" has no userinfo at all (a user
     * with a password after a ';' is the rarer reading). */
    semi = memchr(rest, ';', (apr_size_t)(at - rest));
    from = semi && memchr(semi, ':', (apr_size_t)(at - semi)) ? semi : at + 1;
    for (s = from; *s; s++)
        n += *s == '@';
    if (!n)
        return uri;
    o = out = apr_palloc(p, strlen(uri) + 2 * n + 1);
    memcpy(o, uri, (apr_size_t)(from - uri));
    o += from - uri;
    for (s = from; *s; s++) {
        if (*s == '@') {
            memcpy(o, "%40", 3);
            o += 3;
        }
        else
            *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* A SIP or SIPS URI parsed by libosip2 (stray '@' escaped first), or NULL. */
static osip_uri_t *parse_sip_uri(apr_pool_t *p, const char *uri)
{
    osip_uri_t *u = NULL;

    if (!uri || osip_uri_init(&u) != 0)
        return NULL;
    if (osip_uri_parse(u, sip_uri_escape_params(p, uri)) != 0 || !u->scheme || !u->host
        || !*u->host || (strcasecmp(u->scheme, "sip") && strcasecmp(u->scheme, "sips"))) {
        osip_uri_free(u);
        return NULL;
    }
    return u;
}

const char *sip_uri_param(apr_pool_t *p, const char *uri, const char *name)
{
    osip_uri_t *u = parse_sip_uri(p, uri);
    const char *v;

    if (!u)
        return NULL;
    v = uparam(u, name);        /* libosip2 has %-decoded it */
    v = v ? apr_pstrdup(p, v) : NULL;
    osip_uri_free(u);
    return v;
}

/* The text of 'u', or NULL when it holds what no Request-URI or header
 * value may: controls, space (a decoded host keeps them), <, > or ". */
static const char *uri_text(apr_pool_t *p, osip_uri_t *u)
{
    char *s = NULL;
    const char *r, *c;

    if (osip_uri_to_str(u, &s) != 0 || !s)
        return NULL;
    r = apr_pstrdup(p, s);
    osip_free(s);
    for (c = r; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f || strchr("<>\"", *c))
            return NULL;
    return r;
}

static void clear_uri_list(osip_list_t *l)
{
    osip_uri_param_t *prm;

    while ((prm = osip_list_get(l, 0)) != NULL) {
        osip_list_remove(l, 0);
        osip_uri_param_free(prm);
    }
}

int sip_uri_headers(apr_pool_t *p, const char *uri, apr_array_header_t **hdrs, const char **bare)
{
    osip_uri_t *u = parse_sip_uri(p, uri);
    osip_uri_param_t *prm;
    int pos = 0;

    *hdrs = apr_array_make(p, 2, sizeof(sip_header_t));
    if (bare)
        *bare = NULL;
    if (!u)
        return -1;
    while ((prm = osip_list_get(&u->url_headers, pos++)) != NULL) {
        sip_header_t *h;
        const char *longname;
        if (!prm->gname || !*prm->gname)
            continue;
        longname = sip_header_long_name(prm->gname, strlen(prm->gname));
        h = apr_array_push(*hdrs);
        h->name = longname ? longname : apr_pstrdup(p, prm->gname);
        h->value = apr_pstrdup(p, prm->gvalue ? prm->gvalue : "");   /* %-decoded */
    }
    clear_uri_list(&u->url_headers);
    if (bare && !(*bare = uri_text(p, u))) {
        osip_uri_free(u);
        return -1;
    }
    osip_uri_free(u);
    return 0;
}

const char *sip_uri_request_form(apr_pool_t *p, const char *uri)
{
    osip_uri_t *u = parse_sip_uri(p, uri);
    osip_uri_param_t *prm;
    const char *r;
    int pos = 0;

    if (!u)
        return NULL;
    /* RFC 3261 §19.1.5: transport, maddr, ttl, user and unknown
     * parameters stay; method and the headers never go into it */
    while ((prm = osip_list_get(&u->url_params, pos)) != NULL) {
        if (prm->gname && !strcasecmp(prm->gname, "method")) {
            osip_list_remove(&u->url_params, pos);
            osip_uri_param_free(prm);
        }
        else
            pos++;
    }
    clear_uri_list(&u->url_headers);
    r = uri_text(p, u);
    osip_uri_free(u);
    return r;
}

sip_msg_t *sip_msg_parse_frag(apr_pool_t *p, const char *buf, apr_size_t len, const char **why)
{
    sip_msg_t *m = msg_new(p);
    const char *reason = NULL, *clen;
    int kind;

    m->raw = apr_pstrmemdup(p, buf, len);
    m->raw_len = len;
    if (split_raw(m, NULL, &reason) != 0) {
        *why = "malformed header in the message/sipfrag";
        return NULL;
    }
    /* a NUL would cut a header short: legal in the body only */
    if (memchr(buf, '\0', (apr_size_t)(m->body - m->raw))) {
        *why = "NUL in the header of the message/sipfrag";
        return NULL;
    }
    kind = m->start_line ? parse_start_line(m) : -1;
    if (kind != 0 || strcmp(m->version, "SIP/2.0") != 0) {
        *why = kind == 1 ? "message/sipfrag with a status line, not a request line"
                         : "message/sipfrag without a valid request line";
        return NULL;
    }
    /* RFC 3420 §2: the fragment's own Content-Length says where its body
     * ends (what follows, e.g. the part's line break, is not part of it) */
    if ((clen = sip_msg_header(m, "Content-Length")) != NULL) {
        char *stop;
        apr_int64_t n = apr_strtoi64(clen, &stop, 10);
        while (*stop == ' ' || *stop == '\t')
            stop++;
        if (*stop || n < 0 || !apr_isdigit(clen[0]) || (apr_uint64_t)n > m->body_len) {
            *why = "bad Content-Length in the message/sipfrag";
            return NULL;
        }
        m->body_len = (apr_size_t)n;
    }
    return m;
}

const char *sip_credentials_realm(apr_pool_t *p, const char *value)
{
    return value ? credentials_realm(p, value, 0, strlen(value)) : NULL;
}

/* The end of a name-addr's "<...>" or an addr-spec (the first ';'), past
 * a quoted display name; NULL when a '<' is not closed. */
static const char *addr_end(const char *v, int *angle)
{
    const char *s;
    int quoted = 0;

    *angle = 0;
    for (s = v; *s; s++) {
        if (quoted) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                quoted = 0;
        }
        else if (*s == '"')
            quoted = 1;
        else if (*s == '<') {
            const char *gt = strchr(s, '>');
            *angle = 1;
            return gt ? gt + 1 : NULL;
        }
    }
    return v + strcspn(v, ";");
}

const char *sip_header_drop_param(apr_pool_t *p, const char *value, const char *name)
{
    const char *end, *s, *out;
    apr_size_t nlen = strlen(name);
    int angle;

    if (!value || !(end = addr_end(value, &angle)))
        return NULL;
    if (angle)
        out = apr_pstrmemdup(p, value, (apr_size_t)(end - value));
    else {
        /* addr-spec: the parameters after it are the header's (§20) */
        const char *a = value + strspn(value, " \t");
        apr_size_t n = (apr_size_t)(end - a);
        while (n && (a[n - 1] == ' ' || a[n - 1] == '\t'))
            n--;
        out = apr_pstrcat(p, "<", apr_pstrmemdup(p, a, n), ">", NULL);
    }
    /* header params: ';' outside quotes separates them */
    for (s = end; *s;) {
        const char *start, *e;
        int quoted = 0;
        apr_size_t k;
        s += strspn(s, " \t");
        if (*s != ';')
            break;      /* trailing garbage: left out */
        start = ++s;
        for (e = s; *e && (quoted || *e != ';'); e++) {
            if (quoted && *e == '\\' && e[1])
                e++;
            else if (*e == '"')
                quoted = !quoted;
        }
        s = e;
        start += strspn(start, " \t");
        k = strcspn(start, "= \t;");
        if (start + k > e)
            k = (apr_size_t)(e - start);
        if (k == 0 || (k == nlen && !strncasecmp(start, name, nlen)))
            continue;
        {
            apr_size_t n = (apr_size_t)(e - start);
            while (n && (start[n - 1] == ' ' || start[n - 1] == '\t'))
                n--;
            out = apr_pstrcat(p, out, ";", apr_pstrmemdup(p, start, n), NULL);
        }
    }
    return out;
}

/* ---- name mapping (sip_namemap) ---- */

const char *sip_uri_user_decoded(apr_pool_t *p, const char *user)
{
    /* RFC 3261 §19.1.2: a user part may escape any character; a bad escape
     * or %00 names nobody */
    return user ? apr_punescape_url(p, user, NULL, NULL, 0) : NULL;
}

const char *sip_uri_with_user(apr_pool_t *p, const char *uri, const char *user, int bare)
{
    osip_uri_t *u = parse_sip_uri(p, uri);
    const char *r;

    if (!u || !user || !*user) {
        if (u)
            osip_uri_free(u);
        return NULL;
    }
    osip_free(u->username);
    u->username = osip_strdup(user);        /* escaped again by osip_uri_to_str */
    osip_free(u->password);
    u->password = NULL;
    if (bare) {
        clear_uri_list(&u->url_params);
        clear_uri_list(&u->url_headers);
    }
    r = uri_text(p, u);
    osip_uri_free(u);
    return r;
}
