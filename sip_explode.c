/* URI-list requests (sip_explode.h, docs/explode.md): reading an EXPLODE
 * (draft-camarillo-sipping-exploders-solution-00) or an RFC 5365 MESSAGE
 * into a job, and writing the request each target gets.  Bodies are cut
 * by sip_mime.c, lists read by sip_uri_list.c; URIs and the sipfrag
 * template are the message layer's. */
#include "sip_explode.h"

#include <string.h>

#include "apr_lib.h"
#include "apr_strings.h"

#include "sip_conf.h"
#include "sip_mime.h"

#define LIST_TYPE "application/resource-lists+xml"
#define FRAG_TYPE "message/sipfrag"
#define NO_LIST   "Missing or unresolvable list"

/* ---- which requests ---- */

sip_explode_kind_t sip_explode_kind(apr_pool_t *p, const sip_msg_t *req)
{
    const char *method = sip_msg_method(req);
    const apr_array_header_t *hdrs;
    int i, j;

    if (!method)
        return SIP_EXPLODE_NONE;
    if (strcmp(method, SIP_EXPLODE_METHOD) == 0)
        return SIP_EXPLODE_DRAFT;
    if (strcmp(method, "MESSAGE") != 0)
        return SIP_EXPLODE_NONE;
    /* RFC 5365 §5: the option tag in Require, maybe among others, maybe
     * in one of several Require headers (option tags compare as tokens) */
    hdrs = sip_msg_headers(req);
    for (i = 0; hdrs && i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        apr_array_header_t *tags;
        if (strcasecmp(h->name, "Require") != 0)
            continue;
        tags = apr_array_make(p, 2, sizeof(const char *));
        sip_header_split_list(p, h->value, tags);
        for (j = 0; j < tags->nelts; j++)
            if (strcasecmp(APR_ARRAY_IDX(tags, j, const char *), SIP_OPTION_LIST_MESSAGE) == 0)
                return SIP_EXPLODE_MESSAGE;
    }
    return SIP_EXPLODE_NONE;
}

/* ---- headers the generated requests may carry ---- */

enum hdr_source { FROM_TEMPLATE, FROM_MESSAGE, FROM_ENTRY };

static int name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp(name, *list) == 0)
            return 1;
    return 0;
}

/* A value that cannot end its line early: a %-decoded URI header or a
 * lone CR left in a received one would otherwise start a header of its
 * own in the requests we write. */
static int value_ok(const char *v)
{
    return v && !strpbrk(v, "\r\n");
}

/* RFC 3261 §19.1.5 (RFC 5363 §5.3 applies it to every URI-list service),
 * spec §2.8 and E8.3: the exploder, not the invoker, owns these. */
static const char *const never_passed[] = {
    "From", "To", "Call-ID", "CSeq", "Via", "Record-Route", "Route", "Max-Forwards",
    /* they would misstate the sender's location or capabilities */
    "Contact", "Accept", "Accept-Encoding", "Accept-Language", "Allow", "Allow-Events",
    "Organization", "Supported", "User-Agent",
    /* what the exploder computes or understands itself */
    "Content-Length", "Content-Type", "Content-ID", "MIME-Version", "Require", "Proxy-Require",
    /* credentials come from the request only, by realm (RFC 5365 §7.2) */
    "Authorization", "Proxy-Authorization",
    /* identities only the exploder could assert (RFC 5365 §7.2), and
     * signatures over headers it has changed */
    "P-Asserted-Identity", "P-Preferred-Identity", "Identity", "Identity-Info",
    NULL
};

/* They describe a body: accurate from the template, whose body goes out
 * as it is; from a URI or the top of a MESSAGE whose body is rebuilt they
 * would not be (§19.1.5: check the accuracy of descriptive headers). */
static const char *const body_describing[] = {
    "Content-Disposition", "Content-Encoding", "Content-Language", NULL
};

/* A URI cannot vouch for these either (§19.1.5); "body" is not a header
 * (RFC 5365 §7.3 lets a service drop it: done). */
static const char *const entry_unverifiable[] = {"Date", "Timestamp", "body", NULL};

static int header_passes(const sip_header_t *h, enum hdr_source src)
{
    if (!sip_is_token(h->name) || !value_ok(h->value) || name_in(h->name, never_passed))
        return 0;
    if (src != FROM_TEMPLATE && name_in(h->name, body_describing))
        return 0;
    return src != FROM_ENTRY || !name_in(h->name, entry_unverifiable);
}

static void push_header(apr_array_header_t *a, const char *name, const char *value)
{
    sip_header_t *h = apr_array_push(a);
    h->name = name;
    h->value = value;
}

/* ---- body parts ---- */

/* The media type of a part (lower case, no parameters): text/plain when
 * it has no Content-Type (RFC 2045 §5.2), NULL when it is malformed. */
static const char *part_type(apr_pool_t *p, const sip_mime_part_t *part)
{
    const char *ct = sip_mime_part_header(part, "Content-Type"), *type = NULL;

    if (!ct)
        return "text/plain";
    return sip_mime_content_type(p, ct, &type, NULL) == 0 ? type : NULL;
}

/* Content-Disposition type of a part (lower case) and handling, or NULL. */
static const char *part_disposition(apr_pool_t *p, const sip_mime_part_t *part,
                                    const char **handling)
{
    const char *cd = sip_mime_part_header(part, "Content-Disposition");
    sip_disposition_t d;

    if (handling)
        *handling = NULL;
    if (!cd || sip_mime_disposition_parse(p, cd, &d) != 0)
        return NULL;
    if (handling)
        *handling = d.handling;
    return d.type;
}

/* RFC 2392 §2: "cid:" off, %hh decoded, then <> around: the Content-ID a
 * cid: URL names; NULL for "cid:" alone or an escaped NUL. */
static const char *cid_msg_id(apr_pool_t *p, const char *url)
{
    const char *s = url + 4;
    char *out = apr_palloc(p, strlen(s) + 3), *o = out;

    if (!*s)
        return NULL;
    *o++ = '<';
    for (; *s; s++) {
        if (s[0] == '%' && apr_isxdigit(s[1]) && apr_isxdigit(s[2])) {
            char hex[3] = {s[1], s[2], '\0'};
            char c = (char)strtol(hex, NULL, 16);
            if (!c)
                return NULL;
            *o++ = c;
            s += 2;
        }
        else
            *o++ = *s;
    }
    *o++ = '>';
    *o = '\0';
    return out;
}

static int content_id_is(const sip_mime_part_t *part, const char *msg_id)
{
    const char *id = sip_mime_part_header(part, "Content-ID");
    apr_size_t n;

    if (!id)
        return 0;
    id += strspn(id, " \t");
    n = strlen(id);
    while (n && (id[n - 1] == ' ' || id[n - 1] == '\t'))
        n--;
    return n == strlen(msg_id) && memcmp(id, msg_id, n) == 0;
}

/* The whole body as one part, with the request's own MIME headers (the
 * SIP Content-ID header of the uri-list drafts names it). */
static sip_mime_part_t *whole_body(apr_pool_t *p, const sip_msg_t *req)
{
    static const char *const mime[] = {
        "Content-Type", "Content-ID", "Content-Disposition", "Content-Encoding",
        "Content-Language", NULL
    };
    sip_mime_part_t *w = apr_pcalloc(p, sizeof(*w));
    int i;

    w->headers = apr_array_make(p, 4, sizeof(sip_header_t));
    for (i = 0; mime[i]; i++) {
        const char *v = sip_msg_header(req, mime[i]);
        if (v)
            push_header(w->headers, mime[i], v);
    }
    w->body = sip_msg_body(req, &w->len);
    return w;
}

/* The address an entry must not have (EX-13: the service itself): user
 * and host (lower case), whatever the scheme, port or parameters. */
static const char *address_key(apr_pool_t *p, const char *uri)
{
    sip_uri_parts_t u;

    if (!sip_uri_parts(p, sip_uri_escape_params(p, uri), &u) || !u.host
        || (strcmp(u.scheme, "sip") && strcmp(u.scheme, "sips")))
        return NULL;
    return apr_pstrcat(p, u.user ? u.user : "", "@", sip_str_lower(p, u.host), NULL);
}

static int method_allowed(const sip_explode_limits_t *lim, const char *method)
{
    static const char *const refused[] = {
        /* E5: no second-level explosion; no registration on someone's
         * behalf; ACK and CANCEL start no transaction of their own */
        SIP_EXPLODE_METHOD, "REGISTER", "ACK", "CANCEL", NULL
    };
    int i;

    for (i = 0; refused[i]; i++)
        if (strcmp(method, refused[i]) == 0)
            return 0;
    if (!lim || !lim->methods)
        return strcmp(method, "MESSAGE") == 0;
    for (i = 0; i < lim->methods->nelts; i++)
        if (strcmp(method, APR_ARRAY_IDX(lim->methods, i, const char *)) == 0)
            return 1;
    return 0;
}

/* ---- reading the request ---- */

#define REFUSE(code, r, w) do { *reason = (r); *why = (w); return (code); } while (0)

/* The list parts: the one list= names by cid: (EXPLODE), else every
 * recipient-list part (RFC 5363 §4.1).  0, or a status. */
static int find_lists(apr_pool_t *p, const sip_msg_t *req, sip_explode_kind_t kind,
                      const apr_array_header_t *parts, const sip_mime_part_t *whole,
                      int multipart, apr_array_header_t *lists, const char **reason,
                      const char **why)
{
    const char *list = kind == SIP_EXPLODE_DRAFT
                       ? sip_uri_param(p, sip_msg_request_uri(req), "list") : NULL;
    int i;

    if (list) {
        const char *msg_id;
        if (!*list)
            REFUSE(400, NO_LIST, "list parameter without a value");
        /* E3: a list fetched from elsewhere (http:, XCAP) would make us
         * fetch what any invoker names (SSRF) */
        if (strncasecmp(list, "cid:", 4) != 0)
            REFUSE(403, "External lists not allowed",
                   apr_psprintf(p, "list=%s names no body part (cid:)", list));
        if (!(msg_id = cid_msg_id(p, list)))
            REFUSE(400, NO_LIST, apr_psprintf(p, "list=%s is not a Content-ID", list));
        for (i = 0; multipart && i < parts->nelts; i++) {
            const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
            if (content_id_is(part, msg_id)) {
                *(const sip_mime_part_t **)apr_array_push(lists) = part;
                return 0;
            }
        }
        if (content_id_is(whole, msg_id)) {
            *(const sip_mime_part_t **)apr_array_push(lists) = whole;
            return 0;
        }
        REFUSE(400, NO_LIST, apr_psprintf(p, "no body part has Content-ID %s", msg_id));
    }
    for (i = 0; i < parts->nelts; i++) {
        const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
        const char *type = part_disposition(p, part, NULL);
        if (type && strcmp(type, "recipient-list") == 0)
            *(const sip_mime_part_t **)apr_array_push(lists) = part;
    }
    if (!lists->nelts)
        REFUSE(400, NO_LIST, kind == SIP_EXPLODE_DRAFT
                             ? "no list parameter and no recipient-list body part"
                             : "no recipient-list body part");
    return 0;
}

/* Every entry of every list part, merged; the service's own address and
 * entries that are lists themselves set aside (EX-12, EX-13). */
static int read_targets(apr_pool_t *p, const sip_msg_t *req, const sip_explode_limits_t *lim,
                        const apr_array_header_t *lists, sip_explode_job_t *job,
                        const char **reason, const char **why, const char **accept)
{
    int max = lim && lim->max_targets > 0 ? lim->max_targets : SIP_DEFAULT_EXPLODE_MAX_TARGETS;
    apr_array_header_t *all = apr_array_make(p, 8, sizeof(sip_uri_list_entry_t)), *merged;
    const char *self = address_key(p, sip_msg_request_uri(req));
    int i, j;

    for (i = 0; i < lists->nelts; i++) {
        const sip_mime_part_t *part = APR_ARRAY_IDX(lists, i, const sip_mime_part_t *);
        const char *type = part_type(p, part), *w = NULL;
        apr_array_header_t *entries = NULL;
        int rc;

        if (!type || strcmp(type, LIST_TYPE) != 0) {
            *accept = LIST_TYPE;
            REFUSE(415, "Unsupported Media Type",
                   apr_psprintf(p, "a URI list of type %s", type ? type : "(malformed)"));
        }
        rc = sip_uri_list_parse(p, part->body ? part->body : "", part->len, max, &entries, &w);
        if (rc == SIP_URI_LIST_TOO_MANY)
            REFUSE(403, "Too Many Recipients",
                   apr_psprintf(p, "more than %d entries (SipExplodeMaxTargets)", max));
        if (rc != 0)
            REFUSE(400, "Malformed URI List", w ? w : "the URI list does not parse");
        for (j = 0; j < entries->nelts; j++)
            *(sip_uri_list_entry_t *)apr_array_push(all)
                = APR_ARRAY_IDX(entries, j, sip_uri_list_entry_t);
        if (all->nelts > max)
            REFUSE(403, "Too Many Recipients",
                   apr_psprintf(p, "more than %d entries (SipExplodeMaxTargets)", max));
    }
    merged = sip_uri_list_merge(p, all);
    job->targets = apr_array_make(p, merged->nelts, sizeof(sip_uri_list_entry_t));
    job->dropped = apr_array_make(p, 2, sizeof(const char *));
    for (i = 0; i < merged->nelts; i++) {
        const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(merged, i, sip_uri_list_entry_t);
        const char *key;
        if (!sip_uri_request_form(p, e->uri))
            REFUSE(400, "Bad URI In List",
                   apr_psprintf(p, "entry %s is no SIP or SIPS URI we can send to", e->uri));
        key = address_key(p, e->uri);
        /* the service's own address, or its host with no user: both come
         * back to this server, which is no recipient (EX-13) */
        if (sip_uri_param(p, e->uri, "list")
            || (self && key && (strcmp(self, key) == 0
                                || (*key == '@' && strcmp(strchr(self, '@'), key) == 0))))
            *(const char **)apr_array_push(job->dropped) = e->uri;
        else
            *(sip_uri_list_entry_t *)apr_array_push(job->targets) = *e;
    }
    if (!job->targets->nelts)
        REFUSE(400, "Empty List", job->dropped->nelts ? "every entry was dropped as recursion"
                                                      : "the URI list has no entry");
    return 0;
}

/* EXPLODE: method, headers and body from the template part (EX-5). */
static int read_template(apr_pool_t *p, const apr_array_header_t *parts, int multipart,
                         sip_explode_job_t *job, const char **reason, const char **why,
                         const char **accept)
{
    const sip_mime_part_t *tpl = NULL;
    const char *type, *handling, *w = NULL;
    const apr_array_header_t *hdrs;
    sip_msg_t *frag;
    int i;

    for (i = 0; multipart && i < parts->nelts; i++) {
        const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
        const char *d = part_disposition(p, part, NULL);
        if (d && strcmp(d, "template") == 0) {
            if (tpl)
                REFUSE(400, "Bad Template", "more than one template part");
            tpl = part;
        }
    }
    if (!tpl)
        REFUSE(400, "Missing Template", "no body part with Content-Disposition: template");
    type = part_type(p, tpl);
    part_disposition(p, tpl, &handling);
    if (!type || strcmp(type, FRAG_TYPE) != 0) {
        /* RFC 3261 §20.11: handling=required (the default) -> 415 */
        if (handling && strcmp(handling, "optional") == 0)
            REFUSE(400, "Missing Template", "the only template is optional and not understood");
        *accept = FRAG_TYPE;
        REFUSE(415, "Unsupported Media Type",
               apr_psprintf(p, "a template of type %s", type ? type : "(malformed)"));
    }
    if (!(frag = sip_msg_parse_frag(p, tpl->body ? tpl->body : "", tpl->len, &w)))
        REFUSE(400, "Bad Template", w);
    job->method = sip_msg_method(frag);
    hdrs = sip_msg_headers(frag);
    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        if (header_passes(h, FROM_TEMPLATE))
            push_header(job->headers, h->name, h->value);
    }
    job->body = sip_msg_body(frag, &job->body_len);
    job->content_type = sip_msg_header(frag, "Content-Type");
    if (job->content_type && !value_ok(job->content_type))
        REFUSE(400, "Bad Template", "malformed Content-Type in the template");
    if (job->body_len && !job->content_type)
        REFUSE(400, "Bad Template", "a template body without Content-Type");
    return 0;
}

/* RFC 5365 §7.3: the MESSAGE's body without its list parts (one part
 * left goes unwrapped), and the recipient-list-history part added. */
static void message_body(apr_pool_t *p, const apr_array_header_t *parts, int multipart,
                         const apr_array_header_t *lists, sip_explode_job_t *job)
{
    apr_array_header_t *out = apr_array_make(p, parts->nelts + 1, sizeof(sip_mime_part_t));
    const char *history;
    apr_size_t hlen = 0;
    int i, j;

    for (i = 0; multipart && i < parts->nelts; i++) {
        const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
        int is_list = 0;
        for (j = 0; j < lists->nelts; j++)
            is_list |= APR_ARRAY_IDX(lists, j, const sip_mime_part_t *) == part;
        if (!is_list)
            *(sip_mime_part_t *)apr_array_push(out) = *part;
    }
    if ((history = sip_uri_list_history(p, job->targets, &hlen)) != NULL) {
        sip_mime_part_t *h = apr_array_push(out);
        h->headers = apr_array_make(p, 2, sizeof(sip_header_t));
        push_header(h->headers, "Content-Type", LIST_TYPE);
        push_header(h->headers, "Content-Disposition", "recipient-list-history; handling=optional");
        h->body = history;
        h->len = hlen;
    }
    job->content_type = NULL;
    job->body = NULL;
    job->body_len = 0;
    if (out->nelts == 1) {
        /* a part's own MIME headers become the request's */
        const sip_mime_part_t *part = &APR_ARRAY_IDX(out, 0, sip_mime_part_t);
        const char *ct = sip_mime_part_header(part, "Content-Type");
        job->content_type = ct && value_ok(ct) ? ct : "text/plain";
        for (i = 0; part->headers && i < part->headers->nelts; i++) {
            const sip_header_t *h = &APR_ARRAY_IDX(part->headers, i, sip_header_t);
            if (name_in(h->name, body_describing) && value_ok(h->value))
                push_header(job->headers, h->name, h->value);
        }
        job->body = part->body;
        job->body_len = part->len;
    }
    else if (out->nelts > 1) {
        const char *boundary = NULL;
        job->body = sip_mime_multipart_build(p, out, &boundary, &job->body_len);
        job->content_type = apr_pstrcat(p, "multipart/mixed;boundary=", boundary, NULL);
    }
}

int sip_explode_parse(apr_pool_t *p, const sip_msg_t *req, const sip_explode_limits_t *lim,
                      sip_explode_job_t **job, const char **reason, const char **why,
                      const char **accept)
{
    sip_explode_kind_t kind = sip_explode_kind(p, req);
    const char *ctype = sip_msg_content_type(req), *type = NULL, *boundary = NULL, *w = NULL;
    const apr_array_header_t *hdrs;
    apr_array_header_t *parts, *lists = apr_array_make(p, 2, sizeof(const sip_mime_part_t *));
    sip_mime_part_t *whole = whole_body(p, req);
    sip_explode_job_t *j;
    int multipart = 0, rc, i;

    *job = NULL;
    *accept = NULL;
    *reason = NULL;
    *why = NULL;
    if (kind == SIP_EXPLODE_NONE)
        REFUSE(400, "Bad Request", "not a URI-list request");
    if (!whole->len)
        REFUSE(400, NO_LIST, "the request has no body");
    if (!ctype || sip_mime_content_type(p, ctype, &type, &boundary) != 0)
        REFUSE(400, "Bad Content-Type", "a body without a valid Content-Type");
    if (strncmp(type, "multipart/", 10) == 0) {
        if (sip_mime_multipart_split(p, whole->body, whole->len, boundary, &parts, &w) != 0)
            REFUSE(400, "Malformed Multipart Body", w);
        multipart = 1;
    }
    else {
        parts = apr_array_make(p, 1, sizeof(sip_mime_part_t));
        *(sip_mime_part_t *)apr_array_push(parts) = *whole;
    }

    j = apr_pcalloc(p, sizeof(*j));
    j->kind = kind;
    j->headers = apr_array_make(p, 8, sizeof(sip_header_t));
    if ((rc = find_lists(p, req, kind, parts, whole, multipart, lists, reason, why)) != 0)
        return rc;
    if ((rc = read_targets(p, req, lim, lists, j, reason, why, accept)) != 0)
        return rc;
    if (kind == SIP_EXPLODE_DRAFT) {
        if ((rc = read_template(p, parts, multipart, j, reason, why, accept)) != 0)
            return rc;
    }
    else {
        /* RFC 5365 §7.3: only MESSAGE goes out; its own end-to-end headers */
        j->method = "MESSAGE";
        hdrs = sip_msg_headers(req);
        for (i = 0; i < hdrs->nelts; i++) {
            const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
            if (header_passes(h, FROM_MESSAGE))
                push_header(j->headers, h->name, h->value);
        }
    }
    if (!method_allowed(lim, j->method))
        REFUSE(403, "Method Not Allowed For Explosion",
               apr_psprintf(p, "%s requests are not exploded (SipExplodeMethods)", j->method));
    if (kind == SIP_EXPLODE_MESSAGE)
        message_body(p, parts, multipart, lists, j);

    /* RFC 5365 §7.2: credentials for another realm go on unchanged, ours
     * never (they would let the next hop act as the invoker here) */
    hdrs = sip_msg_headers(req);
    for (i = 0; i < hdrs->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(hdrs, i, sip_header_t);
        const char *realm;
        if (strcasecmp(h->name, "Authorization") && strcasecmp(h->name, "Proxy-Authorization"))
            continue;
        realm = sip_credentials_realm(p, h->value);
        if (realm && (!lim || !lim->realm || strcmp(realm, lim->realm) != 0) && value_ok(h->value))
            push_header(j->headers, h->name, h->value);
    }

    j->from = sip_header_drop_param(p, sip_msg_header(req, "From"), "tag");
    if (!j->from || !value_ok(j->from))
        REFUSE(400, "Bad From", "the From header does not parse");
    *job = j;
    return 0;
}

/* ---- writing one request ---- */

static int uri_ok(const char *u)
{
    const char *c;

    if (!u || !*u)
        return 0;
    for (c = u; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f || strchr("<>\"", *c))
            return 0;
    return 1;
}

const char *sip_explode_request(apr_pool_t *p, const sip_explode_job_t *job,
                                const sip_uri_list_entry_t *target, const char *request_uri,
                                const char *call_id, const char *from_tag, apr_size_t *len)
{
    apr_array_header_t *out = apr_array_make(p, 32, sizeof(const char *));
    apr_array_header_t *entry_hdrs = NULL, *own = apr_array_make(p, 4, sizeof(sip_header_t));
    const char *to = sip_uri_request_form(p, target->uri);
    int i;

    *len = 0;
    if (!to || !job->method || !job->from)
        return NULL;
    if (!request_uri)
        request_uri = to;   /* EX-20: the template's Request-URI never goes out */
    if (!uri_ok(request_uri))
        return NULL;
    /* EX-18, EX-19: the entry's ?headers that pass the filter */
    if (sip_uri_headers(p, target->uri, &entry_hdrs, NULL) == 0) {
        for (i = 0; i < entry_hdrs->nelts; i++) {
            const sip_header_t *h = &APR_ARRAY_IDX(entry_hdrs, i, sip_header_t);
            if (header_passes(h, FROM_ENTRY))
                push_header(own, h->name, h->value);
        }
    }

#define EMIT(...) (*(const char **)apr_array_push(out) = apr_pstrcat(p, __VA_ARGS__, NULL))
    EMIT(job->method, " ", request_uri, " SIP/2.0\r\n");
    EMIT("From: ", job->from, ";tag=", from_tag, "\r\n");
    EMIT("To: <", to, ">\r\n");
    EMIT("Call-ID: ", call_id, "\r\n");
    EMIT("CSeq: 1 ", job->method, "\r\n");
    EMIT("Max-Forwards: 70\r\n");
    for (i = 0; job->headers && i < job->headers->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(job->headers, i, sip_header_t);
        int j, replaced = 0;
        for (j = 0; j < own->nelts && !replaced; j++)
            replaced = strcasecmp(h->name, APR_ARRAY_IDX(own, j, sip_header_t).name) == 0;
        if (!replaced)
            EMIT(h->name, ": ", h->value, "\r\n");
    }
    for (i = 0; i < own->nelts; i++) {
        const sip_header_t *h = &APR_ARRAY_IDX(own, i, sip_header_t);
        EMIT(h->name, ": ", h->value, "\r\n");
    }
    if (job->content_type)
        EMIT("Content-Type: ", job->content_type, "\r\n");
    EMIT("Content-Length: ", apr_psprintf(p, "%" APR_SIZE_T_FMT, job->body_len), "\r\n\r\n");
#undef EMIT

    return sip_text_with_body(p, apr_array_pstrcat(p, out, 0), job->body, job->body_len, len);
}
