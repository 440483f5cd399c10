/* Upload-time validation of CPL scripts (RFC 3880) with libxml2: parse
 * without DTDs or network, then the built-in RFC 3880 schema, then the
 * few rules the schema cannot say (docs/cpl.md). */
#include "sip_cpl.h"

#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>

#include "apr_hash.h"
#include "apr_strings.h"
#include "apr_tables.h"

#include "sip_cpl_xsd.h"        /* sip_cpl_xsd[]: conf/cpl.xsd, made by the Makefile */

#define CPL_NS "urn:ietf:params:xml:ns:cpl"
#define CPL_WHY_MAX 200

/* Parsed once per process; the engine is single-threaded. */
static xmlSchemaPtr cpl_schema;

/* The first error libxml2 reports, for *why; the rest are noise. */
typedef struct {
    char first[CPL_WHY_MAX + 1];
    int line;
    int dtd;                    /* a DOCTYPE was seen */
} cpl_errs_t;

/* *why is sent in a reason phrase or a text/plain body and logged: keep
 * it printable ASCII and short whatever names the uploader chose. */
static const char *cpl_clean(apr_pool_t *p, const char *s)
{
    char *out = apr_pstrndup(p, s ? s : "", CPL_WHY_MAX), *c;
    apr_size_t n;

    for (c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = (*c == '\n' || *c == '\r' || *c == '\t') ? ' ' : '?';
    n = strlen(out);
    while (n && out[n - 1] == ' ')
        out[--n] = '\0';
    return out;
}

static void cpl_err(void *ud, xmlErrorPtr e)
{
    cpl_errs_t *errs = ud;

    if (errs->first[0] || !e || !e->message)
        return;
    apr_cpystrn(errs->first, e->message, sizeof(errs->first));
    errs->line = e->line;
}

/* libxml2's default handlers write to stderr, which is the error log. */
static void cpl_quiet(void *ud, const char *msg, ...)
{
}

/* A DOCTYPE is the door to entity expansion (billion laughs) and to
 * external entities (XXE): CPL needs none, so the parse stops at one. */
static void cpl_refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext_id,
                           const xmlChar *sys_id)
{
    xmlParserCtxtPtr ctxt = ctx;

    ((cpl_errs_t *)ctxt->_private)->dtd = 1;
    xmlStopParser(ctxt);
}

int sip_cpl_init(apr_pool_t *p, const char **why)
{
    xmlSchemaParserCtxtPtr pctxt;
    cpl_errs_t errs = { "", 0, 0 };

    if (cpl_schema)
        return 1;
    xmlInitParser();
    pctxt = xmlSchemaNewMemParserCtxt(sip_cpl_xsd, (int)sizeof(sip_cpl_xsd) - 1);
    if (!pctxt) {
        *why = "CPL schema: out of memory";
        return 0;
    }
    xmlSchemaSetParserStructuredErrors(pctxt, cpl_err, &errs);
    cpl_schema = xmlSchemaParse(pctxt);
    xmlSchemaFreeParserCtxt(pctxt);
    if (!cpl_schema) {
        *why = apr_psprintf(p, "the built-in CPL schema does not compile: %s",
                            cpl_clean(p, errs.first));
        return 0;
    }
    return 1;
}

static int cpl_is(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href
           && !strcmp((const char *)n->ns->href, CPL_NS)
           && !strcmp((const char *)n->name, name);
}

/* Depth-first step over the element tree without recursion (the depth is
 * the attacker's choice). */
static xmlNodePtr cpl_next(xmlNodePtr n, xmlNodePtr top, int *depth)
{
    if (n->children) {
        ++*depth;
        return n->children;
    }
    while (n != top && !n->next) {
        n = n->parent;
        --*depth;
    }
    return n == top ? NULL : n->next;
}

static int cpl_limits(apr_pool_t *p, xmlNodePtr root, const char **why)
{
    int depth = 1, nodes = 0;
    xmlNodePtr n;

    for (n = root; n; n = cpl_next(n, root, &depth)) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (depth > SIP_CPL_MAX_DEPTH) {
            *why = apr_psprintf(p, "CPL script nested deeper than %d elements (line %d)",
                                SIP_CPL_MAX_DEPTH, n->line);
            return 0;
        }
        if (++nodes > SIP_CPL_MAX_NODES) {
            *why = apr_psprintf(p, "CPL script has more than %d elements", SIP_CPL_MAX_NODES);
            return 0;
        }
    }
    return 1;
}

static int cpl_has(xmlNodePtr n, const char *attr)
{
    return xmlHasNsProp(n, (const xmlChar *)attr, NULL) != NULL;
}

/* The schema's annotations, which it cannot enforce itself (RFC 3880
 * §4.1, §4.4, §4.5): an <address> or <priority> has exactly one of its
 * match attributes, a <time> exactly one of dtend and duration; "contains"
 * compares display names only, "subdomain-of" hosts and telephone numbers
 * only. */
static int cpl_attr_rules(apr_pool_t *p, xmlNodePtr root, const char **why)
{
    int depth = 0, k;
    xmlNodePtr n;
    static const struct { const char *el, *a[3]; } one_of[] = {
        { "address", { "is", "contains", "subdomain-of" } },
        { "priority", { "less", "greater", "equal" } },
        { "time", { "dtend", "duration", NULL } },
    };

    for (n = root; n; n = cpl_next(n, root, &depth)) {
        for (k = 0; k < 3; k++) {
            int have = 0, i;
            if (!cpl_is(n, one_of[k].el))
                continue;
            for (i = 0; i < 3 && one_of[k].a[i]; i++)
                have += cpl_has(n, one_of[k].a[i]);
            if (have != 1) {
                *why = apr_psprintf(p, "<%s> needs exactly one of %s, %s%s%s (line %d)",
                                    one_of[k].el, one_of[k].a[0], one_of[k].a[1],
                                    one_of[k].a[2] ? ", " : "",
                                    one_of[k].a[2] ? one_of[k].a[2] : "",
                                    n->line);
                return 0;
            }
        }
        if (cpl_is(n, "address") && n->parent && n->parent->type == XML_ELEMENT_NODE) {
            xmlChar *sub = xmlGetNoNsProp(n->parent, (const xmlChar *)"subfield");
            const char *sf = sub ? (const char *)sub : "";
            int bad_contains = cpl_has(n, "contains") && strcmp(sf, "display");
            int bad_subdomain = cpl_has(n, "subdomain-of")
                                && strcmp(sf, "host") && strcmp(sf, "tel");
            xmlFree(sub);
            if (bad_contains || bad_subdomain) {
                *why = apr_psprintf(p, "<address %s> is for subfield=\"%s\" only (line %d)",
                                    bad_contains ? "contains" : "subdomain-of",
                                    bad_contains ? "display" : "host\" or \"tel", n->line);
                return 0;
            }
        }
    }
    return 1;
}

/* RFC 3880 §2.1, §8 and the schema's annotation: a top-level action at
 * most once; subaction ids unique; every <sub ref> names a subaction, and
 * following references never comes back to where it started (no
 * recursion).  The schema has already fixed where each element may be. */
static int cpl_rules(apr_pool_t *p, xmlNodePtr root, const char **why)
{
    apr_hash_t *ids = apr_hash_make(p);
    apr_array_header_t *subs = apr_array_make(p, 8, sizeof(xmlNodePtr));
    int seen_in = 0, seen_out = 0, i, nsub, depth = 0, left;
    int *refs_to, *done;
    apr_array_header_t **edges;
    xmlNodePtr n;

    for (n = root->children; n; n = n->next) {
        if (cpl_is(n, "incoming") && seen_in++) {
            *why = apr_psprintf(p, "<incoming> appears more than once (line %d)", n->line);
            return 0;
        }
        if (cpl_is(n, "outgoing") && seen_out++) {
            *why = apr_psprintf(p, "<outgoing> appears more than once (line %d)", n->line);
            return 0;
        }
        if (cpl_is(n, "subaction") && (seen_in || seen_out)) {
            /* the schema's sequence says so, but libxml2 2.9 lets a
             * subaction follow the substitution group toplevelaction */
            *why = apr_psprintf(p, "<subaction> after a top-level action (line %d): "
                                "subactions come first", n->line);
            return 0;
        }
        if (cpl_is(n, "subaction")) {
            xmlChar *id = xmlGetNoNsProp(n, (const xmlChar *)"id");
            const char *key = apr_pstrdup(p, id ? (const char *)id : "");
            xmlFree(id);
            if (apr_hash_get(ids, key, APR_HASH_KEY_STRING)) {
                *why = apr_psprintf(p, "subaction id \"%s\" defined twice (line %d)",
                                    cpl_clean(p, key), n->line);
                return 0;
            }
            apr_hash_set(ids, key, APR_HASH_KEY_STRING, (void *)(apr_uintptr_t)(subs->nelts + 1));
            APR_ARRAY_PUSH(subs, xmlNodePtr) = n;
        }
    }
    nsub = subs->nelts;
    edges = apr_pcalloc(p, (nsub + 1) * sizeof(*edges));
    refs_to = apr_pcalloc(p, (nsub + 1) * sizeof(int));
    done = apr_pcalloc(p, (nsub + 1) * sizeof(int));
    /* every <sub>, wherever it is; from which subaction (0: a top-level action) */
    for (n = root->children; n; n = n->next) {
        xmlNodePtr m;
        int from = 0;

        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (cpl_is(n, "subaction")) {
            xmlChar *id = xmlGetNoNsProp(n, (const xmlChar *)"id");
            from = (int)(apr_uintptr_t)apr_hash_get(ids, id ? (const char *)id : "",
                                                   APR_HASH_KEY_STRING);
            xmlFree(id);
        }
        depth = 0;
        for (m = n; m; m = cpl_next(m, n, &depth)) {
            xmlChar *ref;
            int to;

            if (!cpl_is(m, "sub"))
                continue;
            ref = xmlGetNoNsProp(m, (const xmlChar *)"ref");
            to = (int)(apr_uintptr_t)apr_hash_get(ids, ref ? (const char *)ref : "",
                                                 APR_HASH_KEY_STRING);
            if (!to) {
                *why = apr_psprintf(p, "<sub ref=\"%s\"> names no subaction (line %d)",
                                    cpl_clean(p, ref ? (const char *)ref : ""), m->line);
                xmlFree(ref);
                return 0;
            }
            xmlFree(ref);
            if (from) {
                if (!edges[from])
                    edges[from] = apr_array_make(p, 2, sizeof(int));
                APR_ARRAY_PUSH(edges[from], int) = to;
                refs_to[to]++;
            }
        }
    }
    /* Kahn: peel off subactions nobody (left) refers to; what remains
     * after that lies on a cycle. */
    left = nsub;
    for (;;) {
        int progress = 0;
        for (i = 1; i <= nsub; i++) {
            int k;
            if (done[i] || refs_to[i])
                continue;
            done[i] = 1;
            left--;
            progress = 1;
            for (k = 0; edges[i] && k < edges[i]->nelts; k++)
                refs_to[APR_ARRAY_IDX(edges[i], k, int)]--;
        }
        if (!progress)
            break;
    }
    if (left) {
        for (i = 1; i <= nsub && done[i]; i++)
            ;
        {
            xmlChar *id = xmlGetNoNsProp(APR_ARRAY_IDX(subs, i - 1, xmlNodePtr),
                                         (const xmlChar *)"id");
            *why = apr_psprintf(p, "subaction \"%s\" refers to itself through <sub> "
                                "(recursion, RFC 3880 section 8)",
                                cpl_clean(p, id ? (const char *)id : ""));
            xmlFree(id);
        }
        return 0;
    }
    return 1;
}

int sip_cpl_validate(apr_pool_t *p, const char *body, apr_size_t len, const char **why)
{
    cpl_errs_t errs = { "", 0, 0 };
    xmlParserCtxtPtr ctxt;
    xmlSchemaValidCtxtPtr vctxt;
    xmlDocPtr doc;
    xmlNodePtr root;
    const char *ns;
    int rc, ok = 0;

    if (len > SIP_CPL_MAX_BYTES) {
        *why = apr_psprintf(p, "CPL script larger than %d bytes", SIP_CPL_MAX_BYTES);
        return 0;
    }
    /* XML forbids NUL, and libxml2 would quietly stop reading at one,
     * storing whatever follows unchecked (so UTF-16 scripts are refused
     * too: send UTF-8). */
    if (memchr(body, '\0', len)) {
        *why = "CPL script contains a NUL byte (send it in UTF-8)";
        return 0;
    }
    if (!sip_cpl_init(p, why))
        return 0;
    ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        *why = "out of memory";
        return 0;
    }
    ctxt->_private = &errs;
    ctxt->sax->internalSubset = cpl_refuse_dtd;
    ctxt->sax->externalSubset = cpl_refuse_dtd;
    ctxt->sax->error = ctxt->sax->warning = cpl_quiet;
    ctxt->vctxt.error = ctxt->vctxt.warning = cpl_quiet;
    /* NONET: never fetch anything; no DTDLOAD, DTDATTR, NOENT or XINCLUDE,
     * and without HUGE libxml2 keeps its own depth and text-size limits. */
    doc = xmlCtxtReadMemory(ctxt, body, (int)len, "cpl", NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (errs.dtd) {
        *why = "CPL script has a DOCTYPE (DTDs and entities are not accepted)";
        goto out;
    }
    if (!doc || !ctxt->wellFormed) {
        xmlErrorPtr e = xmlCtxtGetLastError(ctxt);
        *why = apr_psprintf(p, "not well-formed XML (line %d): %s", e ? e->line : 0,
                            cpl_clean(p, e && e->message ? e->message : "no document"));
        goto out;
    }
    root = xmlDocGetRootElement(doc);
    if (!root) {
        *why = "not well-formed XML: no root element";
        goto out;
    }
    ns = root->ns && root->ns->href ? (const char *)root->ns->href : "";
    if (strcmp((const char *)root->name, "cpl") || strcmp(ns, CPL_NS)) {
        *why = apr_psprintf(p, "the root element must be <cpl> in namespace " CPL_NS
                            " (found <%s> in \"%s\")",
                            cpl_clean(p, apr_pstrndup(p, (const char *)root->name, 64)),
                            cpl_clean(p, apr_pstrndup(p, ns, 128)));
        goto out;
    }
    if (!cpl_limits(p, root, why))
        goto out;
    vctxt = xmlSchemaNewValidCtxt(cpl_schema);
    if (!vctxt) {
        *why = "out of memory";
        goto out;
    }
    xmlSchemaSetValidStructuredErrors(vctxt, cpl_err, &errs);
    rc = xmlSchemaValidateDoc(vctxt, doc);
    xmlSchemaFreeValidCtxt(vctxt);
    if (rc != 0) {
        *why = rc > 0 ? apr_psprintf(p, "not a valid CPL script (line %d): %s", errs.line,
                                     cpl_clean(p, errs.first))
                      : "CPL schema validation failed (internal error)";
        goto out;
    }
    ok = cpl_rules(p, root, why) && cpl_attr_rules(p, root, why);
out:
    if (doc)
        xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    return ok;
}
