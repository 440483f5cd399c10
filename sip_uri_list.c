/* URI lists (sip_uri_list.h): RFC 4826 resource lists with RFC 5364 copy
 * control read with libxml2 (no DTD, no entities, no network), merged
 * under RFC 3261 §19.1.4 URI equality, and the RFC 5365 §7.3
 * recipient-list-history body built with libxml2 so that it is escaped. */
#include "sip_uri_list.h"

#include <limits.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "sip_message.h"

#define UL_NS          "urn:ietf:params:xml:ns:resource-lists"
#define UL_CC_NS       "urn:ietf:params:xml:ns:copycontrol"
#define UL_CC_NS_MIXED "urn:ietf:params:xml:ns:copyControl"   /* RFC 5366's example */
#define UL_ANONYMOUS   "sip:anonymous@anonymous.invalid"      /* RFC 5364 §4 */
#define UL_MAX_DEPTH   32
#define UL_WHY_MAX     200

typedef struct {
    int dtd;                    /* a DOCTYPE was seen */
} ul_errs_t;

/* libxml2's default handlers write to stderr, which is the error log. */
static void ul_quiet(void *ud, const char *msg, ...)
{
}

/* A DOCTYPE is the door to entity expansion (billion laughs) and external
 * entities (XXE); a resource list needs none, so the parse stops at one. */
static void ul_refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext_id,
                          const xmlChar *sys_id)
{
    xmlParserCtxtPtr ctxt = ctx;

    ((ul_errs_t *)ctxt->_private)->dtd = 1;
    xmlStopParser(ctxt);
}

static const char *ul_ns(const xmlNode *n)
{
    return n->ns && n->ns->href ? (const char *)n->ns->href : NULL;
}

/* An element of the document's own vocabulary: 'name' in the root's
 * namespace (the RFC 4826 one, or none for the draft's documents);
 * extension elements of other namespaces are not. */
static int ul_is(const xmlNode *n, const char *name, const char *ns)
{
    const char *nns = ul_ns(n);

    if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, name))
        return 0;
    return ns ? nns && !strcmp(nns, ns) : !nns;
}

/* A copy-control attribute: in the RFC 5364 namespace (either spelling)
 * or, as drafts wrote them, in none. */
static const char *ul_cc_attr(apr_pool_t *p, const xmlNode *n, const char *name)
{
    const xmlAttr *a;

    for (a = n->properties; a; a = a->next) {
        const char *href = a->ns && a->ns->href ? (const char *)a->ns->href : NULL;
        xmlChar *v;
        const char *s;

        if (strcmp((const char *)a->name, name))
            continue;
        if (href && strcmp(href, UL_CC_NS) && strcmp(href, UL_CC_NS_MIXED))
            continue;
        v = xmlNodeListGetString(a->doc, a->children, 1);
        s = apr_pstrdup(p, v ? (const char *)v : "");
        xmlFree(v);
        return s;
    }
    return NULL;
}

static const char *ul_trim(apr_pool_t *p, const char *s)
{
    apr_size_t n;

    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    return apr_pstrmemdup(p, s, n);
}

typedef struct {
    apr_pool_t *p;
    const char *ns;
    int max;
    apr_array_header_t *out;
    const char **why;
} ul_walk_t;

static void ul_entry(ul_walk_t *w, const xmlNode *n)
{
    const xmlNode *c;
    sip_uri_list_entry_t *e;
    xmlChar *uri = xmlGetNoNsProp(n, (const xmlChar *)"uri");
    const char *u, *cc, *anon;

    if (!uri)
        return;
    u = ul_trim(w->p, (const char *)uri);
    xmlFree(uri);
    if (!*u)
        return;
    e = apr_array_push(w->out);
    memset(e, 0, sizeof(*e));
    e->uri = u;
    cc = ul_cc_attr(w->p, n, "copyControl");
    e->copy = !cc ? SIP_COPY_BCC : !strcmp(cc, "to") ? SIP_COPY_TO
              : !strcmp(cc, "cc") ? SIP_COPY_CC : SIP_COPY_BCC;
    anon = ul_cc_attr(w->p, n, "anonymize");
    e->anonymize = anon && (!strcmp(anon, "true") || !strcmp(anon, "1"));
    for (c = n->children; c; c = c->next)
        if (ul_is(c, "display-name", w->ns)) {
            xmlChar *d = xmlNodeGetContent(c);
            const char *s = d ? ul_trim(w->p, (const char *)d) : "";
            xmlFree(d);
            e->display = *s ? s : NULL;
            break;
        }
}

/* RFC 4826 §3.1 <list>: entries and nested lists in document order. */
static int ul_list(ul_walk_t *w, const xmlNode *list, int depth)
{
    const xmlNode *c;

    if (depth > UL_MAX_DEPTH) {
        *w->why = apr_psprintf(w->p, "lists nested deeper than %d", UL_MAX_DEPTH);
        return -1;
    }
    for (c = list->children; c; c = c->next) {
        if (ul_is(c, "entry", w->ns)) {
            ul_entry(w, c);
            if (w->max > 0 && w->out->nelts > w->max) {
                *w->why = apr_psprintf(w->p, "more than %d entries", w->max);
                return SIP_URI_LIST_TOO_MANY;
            }
        }
        else if (ul_is(c, "list", w->ns)) {
            int rc = ul_list(w, c, depth + 1);
            if (rc)
                return rc;
        }
        /* <entry-ref>, <external> (RFC 5365 §7: MAY be dropped), <display-name>
         * and extensions: nothing to send to */
    }
    return 0;
}

int sip_uri_list_parse(apr_pool_t *p, const char *xml, apr_size_t len, int max,
                       apr_array_header_t **entries, const char **why)
{
    ul_errs_t errs = { 0 };
    xmlParserCtxtPtr ctxt;
    xmlDocPtr doc = NULL;
    const xmlNode *root, *c;
    const char *ns;
    ul_walk_t w;
    xmlGenericErrorFunc old_err;
    void *old_err_ctx;
    int rc = -1;

    *entries = NULL;
    *why = NULL;
    if (!xml || len == 0) {
        *why = "empty resource list";
        return -1;
    }
    if (len > (apr_size_t)INT_MAX) {
        *why = "resource list too large";
        return -1;
    }
    /* XML has no NUL, and libxml2 would stop reading at one unchecked. */
    if (memchr(xml, '\0', len)) {
        *why = "resource list contains a NUL byte";
        return -1;
    }
    xmlInitParser();
    ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        *why = "out of memory";
        return -1;
    }
    /* Encoding and I/O errors bypass the context's handlers and would be
     * written to the error log for every bad body a client sends. */
    old_err = xmlGenericError;
    old_err_ctx = xmlGenericErrorContext;
    xmlSetGenericErrorFunc(NULL, ul_quiet);
    ctxt->_private = &errs;
    ctxt->sax->internalSubset = ul_refuse_dtd;
    ctxt->sax->externalSubset = ul_refuse_dtd;
    ctxt->sax->error = ctxt->sax->warning = ul_quiet;
    ctxt->vctxt.error = ctxt->vctxt.warning = ul_quiet;
    /* NONET; no NOENT, DTDLOAD, DTDATTR or XINCLUDE; no HUGE, so libxml2
     * keeps its own depth and size limits. */
    doc = xmlCtxtReadMemory(ctxt, xml, (int)len, "resource-lists", NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlSetGenericErrorFunc(old_err_ctx, old_err);
    if (errs.dtd) {
        *why = "resource list has a DOCTYPE (DTDs and entities are not accepted)";
        goto out;
    }
    if (!doc || !ctxt->wellFormed) {
        xmlErrorPtr e = xmlCtxtGetLastError(ctxt);
        *why = apr_psprintf(p, "not well-formed XML (line %d): %s", e ? e->line : 0,
                            sip_str_printable(p, e && e->message ? e->message : "no document", UL_WHY_MAX));
        goto out;
    }
    root = xmlDocGetRootElement(doc);
    if (!root) {
        *why = "not well-formed XML: no root element";
        goto out;
    }
    ns = ul_ns(root);
    if (strcmp((const char *)root->name, "resource-lists") || (ns && strcmp(ns, UL_NS))) {
        *why = apr_psprintf(p, "the root element must be <resource-lists> in namespace " UL_NS
                            " or none (found <%s> in \"%s\")",
                            sip_str_printable(p, apr_pstrndup(p, (const char *)root->name, 64), UL_WHY_MAX),
                            sip_str_printable(p, apr_pstrndup(p, ns ? ns : "", 128), UL_WHY_MAX));
        goto out;
    }
    w.p = p;
    w.ns = ns;
    w.max = max;
    w.out = apr_array_make(p, 8, sizeof(sip_uri_list_entry_t));
    w.why = why;
    rc = 0;
    for (c = root->children; c && rc == 0; c = c->next)
        if (ul_is(c, "list", ns))
            rc = ul_list(&w, c, 1);
    if (rc == 0)
        *entries = w.out;
out:
    if (doc)
        xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    return rc;
}

/* ---- merging (RFC 5363 §4.1) ---- */

/* The URI without its ?headers part (RFC 3261 §19.1.1): the first '?'
 * after the '@' (a user part may hold '?', a host or parameter may not;
 * an unescaped '@' is in neither the user part nor the headers). */
static const char *ul_without_headers(apr_pool_t *p, const char *uri)
{
    const char *at = strchr(uri, '@');
    const char *q = strchr(at ? at : uri, '?');

    return q ? apr_pstrmemdup(p, uri, (apr_size_t)(q - uri)) : uri;
}

/* Equal keys <=> the same recipient: the §19.1.4 key of a SIP or SIPS URI,
 * else (other schemes, or a SIP URI that does not parse) the exact text. */
static const char *ul_key(apr_pool_t *p, const char *uri)
{
    if (!strncasecmp(uri, "sip:", 4) || !strncasecmp(uri, "sips:", 5)) {
        const char *k = sip_uri_key(p, ul_without_headers(p, uri));
        if (k)
            return apr_pstrcat(p, "S", k, NULL);
    }
    return apr_pstrcat(p, "X", uri, NULL);
}

apr_array_header_t *sip_uri_list_merge(apr_pool_t *p, const apr_array_header_t *entries)
{
    apr_array_header_t *out = apr_array_make(p, entries && entries->nelts ? entries->nelts : 1,
                                             sizeof(sip_uri_list_entry_t));
    apr_hash_t *seen = apr_hash_make(p);
    apr_pool_t *tmp;
    int i;

    if (!entries)
        return out;
    apr_pool_create(&tmp, p);
    for (i = 0; i < entries->nelts; i++) {
        const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(entries, i, sip_uri_list_entry_t);
        const char *key;
        int *at;

        if (!e->uri)
            continue;
        key = ul_key(tmp, e->uri);
        at = apr_hash_get(seen, key, APR_HASH_KEY_STRING);
        if (at) {
            sip_uri_list_entry_t *m = &APR_ARRAY_IDX(out, *at, sip_uri_list_entry_t);
            if (e->copy > m->copy)      /* RFC 5364 §4: to > cc > bcc */
                m->copy = e->copy;
            m->anonymize |= e->anonymize;
            continue;
        }
        at = apr_palloc(tmp, sizeof(*at));
        *at = out->nelts;
        APR_ARRAY_PUSH(out, sip_uri_list_entry_t) = *e;
        apr_hash_set(seen, key, APR_HASH_KEY_STRING, at);
    }
    apr_pool_destroy(tmp);
    return out;
}

/* ---- the recipient-list-history body (RFC 5365 §7.3, RFC 5364 §4) ---- */

/* A URI is ASCII: any other byte (or a control character, which XML 1.0
 * cannot carry) is %-escaped, so the body stays well-formed whatever the
 * caller put in. */
static const char *ul_uri_text(apr_pool_t *p, const char *uri)
{
    const unsigned char *s;
    char *out, *o;

    for (s = (const unsigned char *)uri; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            break;
    if (!*s)
        return uri;
    out = o = apr_palloc(p, strlen(uri) * 3 + 1);
    for (s = (const unsigned char *)uri; *s; s++) {
        if (*s < 0x21 || *s > 0x7e)
            o += apr_snprintf(o, 4, "%%%02X", *s);
        else
            *o++ = (char)*s;
    }
    *o = '\0';
    return out;
}

/* A display name goes in only when XML can carry it: valid UTF-8 without
 * the control characters XML 1.0 forbids. */
static int ul_xml_text_ok(const char *s)
{
    const unsigned char *c;

    if (!xmlCheckUTF8((const xmlChar *)s))
        return 0;
    for (c = (const unsigned char *)s; *c; c++)
        if (*c < 0x20 && *c != '\t' && *c != '\n' && *c != '\r')
            return 0;
    return 1;
}

static void ul_history_entry(xmlNodePtr list, xmlNsPtr rl, xmlNsPtr cp, apr_pool_t *p,
                             const char *uri, const char *display, sip_copy_control_t copy,
                             int count)
{
    xmlNodePtr e = xmlNewChild(list, rl, (const xmlChar *)"entry", NULL);

    xmlNewProp(e, (const xmlChar *)"uri", (const xmlChar *)ul_uri_text(p, uri));
    xmlNewNsProp(e, cp, (const xmlChar *)"copyControl",
                 (const xmlChar *)(copy == SIP_COPY_TO ? "to" : "cc"));
    if (count) {
        xmlNewNsProp(e, cp, (const xmlChar *)"anonymize", (const xmlChar *)"true");
        xmlNewNsProp(e, cp, (const xmlChar *)"count",
                     (const xmlChar *)apr_itoa(p, count));
    }
    /* xmlNewTextChild escapes the text (xmlNewChild would read entities) */
    if (display && ul_xml_text_ok(display))
        xmlNewTextChild(e, rl, (const xmlChar *)"display-name", (const xmlChar *)display);
}

const char *sip_uri_list_history(apr_pool_t *p, const apr_array_header_t *entries,
                                 apr_size_t *len)
{
    static const sip_copy_control_t kinds[] = { SIP_COPY_TO, SIP_COPY_CC };
    xmlDocPtr doc;
    xmlNodePtr root, list;
    xmlNsPtr rl, cp;
    xmlChar *buf = NULL;
    int size = 0, i, k, shown = 0;
    const char *out = NULL;

    if (len)
        *len = 0;
    if (!entries)
        return NULL;
    for (i = 0; i < entries->nelts && !shown; i++) {
        const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(entries, i, sip_uri_list_entry_t);
        shown = e->uri && e->copy != SIP_COPY_BCC;
    }
    if (!shown)
        return NULL;
    xmlInitParser();
    doc = xmlNewDoc((const xmlChar *)"1.0");
    root = xmlNewDocNode(doc, NULL, (const xmlChar *)"resource-lists", NULL);
    xmlDocSetRootElement(doc, root);
    rl = xmlNewNs(root, (const xmlChar *)UL_NS, NULL);
    cp = xmlNewNs(root, (const xmlChar *)UL_CC_NS, (const xmlChar *)"cp");
    xmlSetNs(root, rl);
    list = xmlNewChild(root, rl, (const xmlChar *)"list", NULL);
    /* As RFC 5365 §7.3's example: the to entries, then one anonymous entry
     * counting the anonymized ones, then the same for cc. */
    for (k = 0; k < 2; k++) {
        int anonymous = 0;
        for (i = 0; i < entries->nelts; i++) {
            const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(entries, i, sip_uri_list_entry_t);
            if (!e->uri || e->copy != kinds[k])
                continue;
            if (e->anonymize)
                anonymous++;
            else
                ul_history_entry(list, rl, cp, p, e->uri, e->display, e->copy, 0);
        }
        if (anonymous)
            ul_history_entry(list, rl, cp, p, UL_ANONYMOUS, NULL, kinds[k], anonymous);
    }
    xmlDocDumpFormatMemoryEnc(doc, &buf, &size, "UTF-8", 1);
    if (buf && size > 0) {
        out = apr_pstrmemdup(p, (const char *)buf, (apr_size_t)size);
        if (len)
            *len = (apr_size_t)size;
    }
    xmlFree(buf);
    xmlFreeDoc(doc);
    return out;
}
