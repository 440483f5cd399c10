/* CPL scripts (RFC 3880) with libxml2: parse without DTDs or network,
 * then the built-in RFC 3880 schema, then the few rules the schema cannot
 * say (docs/cpl.md), then compile into the tree the interpreter walks
 * (sip_cpl_tree.h, sip_cpl_run.c).  Uploads are checked by the same
 * compile, so a stored script is one that runs. */
#include "sip_cpl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>

#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_tables.h"

#include "sip_cpl_mail.h"
#include "sip_cpl_tree.h"
#include "sip_message.h"
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
                            sip_str_printable(p, errs.first, CPL_WHY_MAX));
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
                                    sip_str_printable(p, key, CPL_WHY_MAX), n->line);
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
                                    sip_str_printable(p, ref ? (const char *)ref : "", CPL_WHY_MAX), m->line);
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
                                sip_str_printable(p, id ? (const char *)id : "", CPL_WHY_MAX));
            xmlFree(id);
        }
        return 0;
    }
    return 1;
}

/* The checks of sip_cpl_validate() (docs/cpl.md, in that order); on
 * success the parsed document, which the caller frees with xmlFreeDoc(). */
static xmlDocPtr cpl_parse(apr_pool_t *p, const char *body, apr_size_t len, const char **why)
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
        return NULL;
    }
    /* XML forbids NUL, and libxml2 would quietly stop reading at one,
     * storing whatever follows unchecked (so UTF-16 scripts are refused
     * too: send UTF-8). */
    if (memchr(body, '\0', len)) {
        *why = "CPL script contains a NUL byte (send it in UTF-8)";
        return NULL;
    }
    if (!sip_cpl_init(p, why))
        return NULL;
    ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        *why = "out of memory";
        return NULL;
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
                            sip_str_printable(p, e && e->message ? e->message : "no document", CPL_WHY_MAX));
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
                            sip_str_printable(p, apr_pstrndup(p, (const char *)root->name, 64), CPL_WHY_MAX),
                            sip_str_printable(p, apr_pstrndup(p, ns, 128), CPL_WHY_MAX));
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
                                     sip_str_printable(p, errs.first, CPL_WHY_MAX))
                      : "CPL schema validation failed (internal error)";
        goto out;
    }
    ok = cpl_rules(p, root, why) && cpl_attr_rules(p, root, why);
out:
    if (doc && !ok) {
        xmlFreeDoc(doc);
        doc = NULL;
    }
    xmlFreeParserCtxt(ctxt);
    return doc;
}

/* ---- compiling: the validated document into the tree of sip_cpl_tree.h ---- */

typedef struct {
    apr_pool_t *p;              /* the tree lives here */
    apr_pool_t *wp;             /* and *why here */
    const char *why;
    apr_hash_t *subaction;      /* id -> xmlNodePtr */
    apr_hash_t *compiled;       /* id -> cpl_node_t * (a compiled subaction) */
    int nodes;
} cpl_cc_t;

/* Subaction ids compiled to an empty node list (<subaction id="x"/>). */
static const cpl_node_t cpl_empty_subaction;

static int cc_fail(cpl_cc_t *cc, xmlNodePtr el, const char *fmt, ...)
{
    va_list ap;
    const char *msg;

    va_start(ap, fmt);
    msg = apr_pvsprintf(cc->wp, fmt, ap);
    va_end(ap);
    cc->why = apr_psprintf(cc->wp, "<%s> %s (line %d)", (const char *)el->name,
                           sip_str_printable(cc->wp, msg, CPL_WHY_MAX), el->line);
    return 0;
}

/* An unqualified attribute's value copied into the tree's pool, or NULL. */
static const char *cc_attr(cpl_cc_t *cc, xmlNodePtr el, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(el, (const xmlChar *)name);
    const char *s;

    if (!v)
        return NULL;
    s = apr_pstrdup(cc->p, (const char *)v);
    xmlFree(v);
    return s;
}

static xmlNodePtr cc_first_child(xmlNodePtr el)
{
    xmlNodePtr c;

    for (c = el->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE)
            return c;
    return NULL;
}

/* yes/no attributes (the schema allows nothing else) with their default */
static int cc_yes(cpl_cc_t *cc, xmlNodePtr el, const char *name, int dflt)
{
    const char *v = cc_attr(cc, el, name);
    return v ? !strcmp(v, "yes") : dflt;
}

/* A positive number of seconds (xs:positiveInteger lets any size through). */
static int cc_seconds(cpl_cc_t *cc, xmlNodePtr el, const char *name, int dflt, int *out)
{
    const char *v = cc_attr(cc, el, name);
    char *end;
    long n;

    if (!v) {
        *out = dflt;
        return 1;
    }
    v += strspn(v, " \t\r\n");
    n = strtol(v, &end, 10);
    end += strspn(end, " \t\r\n");
    if (*end || n < 1 || n > 3600 || (!apr_isdigit(*v) && *v != '+'))
        return cc_fail(cc, el, "%s=\"%s\" is not a number of seconds from 1 to 3600", name,
                       v);
    *out = (int)n;
    return 1;
}

/* Is 'v' an address the interpreter can use: a URI with a scheme, and for
 * sip: and sips: one libosip2 parses (so URI comparison works on it)? */
static int cc_uri_ok(apr_pool_t *p, const char *v)
{
    const char *colon = strchr(v, ':');
    const char *c;

    if (!colon || colon == v)
        return 0;
    for (c = v; c < colon; c++)
        if (!apr_isalnum(*c) && *c != '+' && *c != '-' && *c != '.')
            return 0;
    for (c = v; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return 0;
    if (!strncasecmp(v, "sip:", 4) || !strncasecmp(v, "sips:", 5))
        return sip_uri_key(p, v) != NULL;
    return colon[1] != '\0';
}

/* A telephone number as CPL compares them (§4.1): digits, '+', '*', '#'
 * and letters, without the visual separators - . ( ) and blanks. */
static int cc_tel_ok(const char *v)
{
    int digits = 0;

    for (; *v; v++) {
        if (apr_isalnum(*v) || *v == '+' || *v == '*' || *v == '#')
            digits++;
        else if (!strchr("-.() ", *v))
            return 0;
    }
    return digits > 0;
}

/* RFC 3066 language-tag: 1*8ALPHA *("-" 1*8alphanum) */
static int cc_language_tag_ok(const char *v)
{
    int n = 0, first = 1;

    for (;; v++) {
        if (*v == '-' || !*v) {
            if (n < 1 || n > 8)
                return 0;
            if (!*v)
                return 1;
            n = 0;
            first = 0;
        } else if (apr_isalpha(*v) || (!first && apr_isdigit(*v))) {
            n++;
        } else {
            return 0;
        }
    }
}

/* Printable text for a reason phrase or a log line: control characters
 * (a &#10; in the attribute) are refused in a reason, blanked in a log. */
static int cc_has_ctl(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return 1;
    return 0;
}

static const char *cc_blank_ctl(apr_pool_t *p, const char *v)
{
    char *c, *out;

    if (!v)
        return NULL;
    out = apr_pstrdup(p, v);
    for (c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
    return out;
}

static int cc_node(cpl_cc_t *cc, xmlNodePtr container, const cpl_node_t **out);

static cpl_node_t *cc_new(cpl_cc_t *cc, xmlNodePtr el, cpl_kind_t kind)
{
    cpl_node_t *n = apr_pcalloc(cc->p, sizeof(*n));

    n->kind = kind;
    n->elem = apr_pstrdup(cc->p, (const char *)el->name);
    n->line = el->line;
    cc->nodes++;
    return n;
}

/* The attributes of one <time> for sip_cpl_time_compile(). */
static const char *const *cc_time_attrs(cpl_cc_t *cc, xmlNodePtr el)
{
    static const char *const names[] = {
        "dtstart", "dtend", "duration", "freq", "interval", "until", "count", "bysecond",
        "byminute", "byhour", "byday", "bymonthday", "byyearday", "byweekno", "bymonth",
        "wkst", "bysetpos", NULL
    };
    const char **attrs = apr_pcalloc(cc->p, sizeof(names) * 2);
    int i, k = 0;

    for (i = 0; names[i]; i++) {
        const char *v = cc_attr(cc, el, names[i]);
        if (v) {
            attrs[k++] = names[i];
            attrs[k++] = v;
        }
    }
    attrs[k] = NULL;
    return attrs;
}

/* One output of a switch: <address>, <string>, <language>, <time>,
 * <priority>, <not-present> or <otherwise>. */
static int cc_case(cpl_cc_t *cc, cpl_node_t *sw, xmlNodePtr el, cpl_case_t *c,
                   const char *tzid, const char *tzurl)
{
    const char *name = (const char *)el->name;

    c->line = el->line;
    if (!strcmp(name, "not-present"))
        c->kind = CPL_CASE_NOT_PRESENT;
    else if (!strcmp(name, "otherwise"))
        c->kind = CPL_CASE_OTHERWISE;
    else if (sw->kind == CPL_ADDRESS_SWITCH || sw->kind == CPL_STRING_SWITCH) {
        static const char *const ops[] = {"is", "contains", "subdomain-of"};
        int i, have = 0;
        for (i = 0; i < 3; i++) {
            const char *v = cc_attr(cc, el, ops[i]);
            if (v) {
                have++;
                c->op = CPL_OP_IS + i;
                c->value = v;
            }
        }
        if (have != 1 || (sw->kind == CPL_STRING_SWITCH && c->op == CPL_OP_SUBDOMAIN_OF))
            return cc_fail(cc, el, "needs exactly one of is, contains%s",
                           sw->kind == CPL_ADDRESS_SWITCH ? ", subdomain-of" : "");
        if (sw->kind == CPL_ADDRESS_SWITCH) {
            if (c->op == CPL_OP_CONTAINS && sw->subfield != CPL_SF_DISPLAY)
                return cc_fail(cc, el, "contains is for subfield=\"display\" only");
            if (c->op == CPL_OP_SUBDOMAIN_OF && sw->subfield != CPL_SF_HOST
                && sw->subfield != CPL_SF_TEL)
                return cc_fail(cc, el, "subdomain-of is for subfield=\"host\" or \"tel\" only");
            if (sw->subfield == CPL_SF_ADDRESS && !cc_uri_ok(cc->p, c->value))
                return cc_fail(cc, el, "is=\"%s\" is not a URI", c->value);
            if (sw->subfield == CPL_SF_PORT) {
                char *end;
                long port = strtol(c->value, &end, 10);
                if (!apr_isdigit(c->value[0]) || *end || port < 1 || port > 65535)
                    return cc_fail(cc, el, "is=\"%s\" is not a port number", c->value);
            }
            if (sw->subfield == CPL_SF_TEL && !cc_tel_ok(c->value))
                return cc_fail(cc, el, "\"%s\" is not a telephone number", c->value);
            if (sw->subfield == CPL_SF_HOST && !*c->value)
                return cc_fail(cc, el, "needs a host name");
        }
    } else if (sw->kind == CPL_LANGUAGE_SWITCH) {
        c->op = CPL_OP_MATCHES;
        c->value = cc_attr(cc, el, "matches");
        if (!c->value || !cc_language_tag_ok(c->value))
            return cc_fail(cc, el, "matches=\"%s\" is not a language tag (RFC 3066)",
                           c->value ? c->value : "");
    } else if (sw->kind == CPL_PRIORITY_SWITCH) {
        static const char *const ops[] = {"less", "greater", "equal"};
        int i, have = 0;
        for (i = 0; i < 3; i++) {
            const char *v = cc_attr(cc, el, ops[i]);
            if (v) {
                have++;
                c->op = CPL_OP_LESS + i;
                c->value = apr_pstrdup(cc->p, v + strspn(v, " \t"));
            }
        }
        if (have != 1)
            return cc_fail(cc, el, "needs exactly one of less, greater, equal");
        c->prio = cpl_priority_value(c->value);
        if (c->op != CPL_OP_EQUAL && c->prio == CPL_PRIO_OTHER)
            return cc_fail(cc, el, "\"%s\" is not emergency, urgent, normal or non-urgent",
                           c->value);
        if (c->op == CPL_OP_EQUAL && (!*c->value || cc_has_ctl(c->value)))
            return cc_fail(cc, el, "equal=\"%s\" is not a priority token", c->value);
    } else if (sw->kind == CPL_TIME_SWITCH) {
        const char *why = NULL;
        c->op = CPL_OP_TIME;
        c->time = sip_cpl_time_compile(cc->p, tzid, tzurl, cc_time_attrs(cc, el), &why);
        if (!c->time)
            return cc_fail(cc, el, "%s", why ? why : "cannot be compiled");
    }
    return cc_node(cc, el, &c->next);
}

static int cc_switch(cpl_cc_t *cc, xmlNodePtr el, cpl_node_t *n)
{
    const char *tzid = NULL, *tzurl = NULL;
    xmlNodePtr k;
    cpl_case_t *cases;
    int count = 0;

    if (n->kind == CPL_ADDRESS_SWITCH) {
        static const char *const fields[] = {"origin", "destination", "original-destination",
                                             NULL};
        static const char *const subfields[] = {"address-type", "user", "host", "port", "tel",
                                                "display", "password", "alias-type", NULL};
        const char *f = cc_attr(cc, el, "field"), *sf = cc_attr(cc, el, "subfield");
        int i;
        for (i = 0; fields[i] && f && strcmp(f, fields[i]); i++)
            ;
        if (!f || !fields[i])
            return cc_fail(cc, el, "field=\"%s\" is not origin, destination or "
                           "original-destination", f ? f : "");
        n->field = CPL_F_ORIGIN + i;
        if (sf) {
            for (i = 0; subfields[i] && strcmp(sf, subfields[i]); i++)
                ;
            if (!subfields[i])
                return cc_fail(cc, el, "subfield=\"%s\" is not one of RFC 3880 section 4.1",
                               sf);
            n->subfield = CPL_SF_ADDRESS_TYPE + i;
        }
    } else if (n->kind == CPL_STRING_SWITCH) {
        static const char *const fields[] = {"subject", "organization", "user-agent", "display",
                                             NULL};
        const char *f = cc_attr(cc, el, "field");
        int i;
        for (i = 0; fields[i] && f && strcmp(f, fields[i]); i++)
            ;
        if (!f || !fields[i])
            return cc_fail(cc, el, "field=\"%s\" is not a string field", f ? f : "");
        n->field = CPL_S_SUBJECT + i;
    } else if (n->kind == CPL_TIME_SWITCH) {
        tzid = cc_attr(cc, el, "tzid");
        tzurl = cc_attr(cc, el, "tzurl");
    }
    for (k = el->children; k; k = k->next)
        count += k->type == XML_ELEMENT_NODE;
    cases = apr_pcalloc(cc->p, (count ? count : 1) * sizeof(*cases));
    n->cases = cases;
    for (k = el->children; k; k = k->next) {
        if (k->type != XML_ELEMENT_NODE)
            continue;
        if (!cc_case(cc, n, k, &cases[n->ncases], tzid, tzurl))
            return 0;
        n->ncases++;
    }
    return 1;
}

/* The outputs of <lookup> or <proxy>: named children, each at most once. */
static int cc_outputs(cpl_cc_t *cc, xmlNodePtr el, cpl_node_t *n, const char *const *names)
{
    xmlNodePtr k;
    int i;

    for (k = el->children; k; k = k->next) {
        if (k->type != XML_ELEMENT_NODE)
            continue;
        for (i = 0; names[i] && strcmp((const char *)k->name, names[i]); i++)
            ;
        if (!names[i])
            return cc_fail(cc, k, "is not an output of <%s>", (const char *)el->name);
        if (n->has_out & (1u << i))
            return cc_fail(cc, k, "appears twice");
        n->has_out |= 1u << i;
        if (!cc_node(cc, k, &n->out[i]))
            return 0;
    }
    return 1;
}

static int cc_subaction(cpl_cc_t *cc, xmlNodePtr sub_el, const char *ref, const cpl_node_t **out)
{
    const cpl_node_t *done = apr_hash_get(cc->compiled, ref, APR_HASH_KEY_STRING);
    xmlNodePtr def;

    if (done) {
        *out = done == &cpl_empty_subaction ? NULL : done;
        return 1;
    }
    def = apr_hash_get(cc->subaction, ref, APR_HASH_KEY_STRING);
    if (!def)       /* cpl_rules() made sure this does not happen */
        return cc_fail(cc, sub_el, "ref=\"%s\" names no subaction", ref);
    /* no recursion (cpl_rules), so this ends; the depth of subactions
     * calling subactions is bounded by the element limit */
    if (!cc_node(cc, def, out))
        return 0;
    apr_hash_set(cc->compiled, ref, APR_HASH_KEY_STRING, *out ? *out : &cpl_empty_subaction);
    return 1;
}

static int cc_elem(cpl_cc_t *cc, xmlNodePtr el, const cpl_node_t **out)
{
    static const struct { const char *name; cpl_kind_t kind; } kinds[] = {
        {"address-switch", CPL_ADDRESS_SWITCH}, {"string-switch", CPL_STRING_SWITCH},
        {"language-switch", CPL_LANGUAGE_SWITCH}, {"time-switch", CPL_TIME_SWITCH},
        {"priority-switch", CPL_PRIORITY_SWITCH}, {"location", CPL_LOCATION},
        {"lookup", CPL_LOOKUP}, {"remove-location", CPL_REMOVE_LOCATION}, {"sub", CPL_SUB},
        {"proxy", CPL_PROXY}, {"redirect", CPL_REDIRECT}, {"reject", CPL_REJECT},
        {"log", CPL_LOG}, {"mail", CPL_MAIL},
    };
    cpl_node_t *n;
    unsigned i;

    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && !cpl_is(el, kinds[i].name); i++)
        ;
    if (i == sizeof(kinds) / sizeof(kinds[0]))
        return cc_fail(cc, el, "is not a CPL node");
    n = cc_new(cc, el, kinds[i].kind);
    *out = n;
    switch (n->kind) {
    case CPL_ADDRESS_SWITCH:
    case CPL_STRING_SWITCH:
    case CPL_LANGUAGE_SWITCH:
    case CPL_TIME_SWITCH:
    case CPL_PRIORITY_SWITCH:
        return cc_switch(cc, el, n);
    case CPL_LOCATION: {
        const char *prio = cc_attr(cc, el, "priority");
        n->url = cc_attr(cc, el, "url");
        if (!n->url || !cc_uri_ok(cc->p, n->url))
            return cc_fail(cc, el, "url=\"%s\" is not a URI", n->url ? n->url : "");
        /* somewhere a SIP server can send a call (tel: through a gateway
         * the host may know); not mailto:, http:, ... */
        if (strncasecmp(n->url, "sip:", 4) && strncasecmp(n->url, "sips:", 5)
            && strncasecmp(n->url, "tel:", 4))
            return cc_fail(cc, el, "url=\"%s\" is not a sip:, sips: or tel: URI", n->url);
        n->q1000 = 1000;
        if (prio) {
            char *end;
            double q;
            prio += strspn(prio, " \t\r\n");
            q = strtod(prio, &end);
            end += strspn(end, " \t\r\n");
            if (end == prio || *end || !(q >= 0.0 && q <= 1.0))
                return cc_fail(cc, el, "priority=\"%s\" is not from 0.0 to 1.0", prio);
            n->q1000 = (int)(q * 1000.0 + 0.5);
        }
        n->clear = cc_yes(cc, el, "clear", 0);
        return cc_node(cc, el, &n->next);
    }
    case CPL_LOOKUP: {
        static const char *const outs[] = {"success", "notfound", "failure", NULL};
        n->source = cc_attr(cc, el, "source");
        if (!n->source || !*n->source || cc_has_ctl(n->source))
            return cc_fail(cc, el, "needs a source");
        n->clear = cc_yes(cc, el, "clear", 0);
        return cc_seconds(cc, el, "timeout", 30, &n->timeout) && cc_outputs(cc, el, n, outs);
    }
    case CPL_REMOVE_LOCATION:
        n->url = cc_attr(cc, el, "location");
        if (n->url && !cc_uri_ok(cc->p, n->url))
            return cc_fail(cc, el, "location=\"%s\" is not a URI", n->url);
        return cc_node(cc, el, &n->next);
    case CPL_SUB:
        n->ref = cc_attr(cc, el, "ref");
        return cc_subaction(cc, el, n->ref ? n->ref : "", &n->next);
    case CPL_PROXY: {
        static const char *const outs[] = {"busy", "noanswer", "redirection", "failure",
                                           "default", NULL};
        const char *ord = cc_attr(cc, el, "ordering");
        n->recurse = cc_yes(cc, el, "recurse", 1);
        n->ordering = !ord || !strcmp(ord, "parallel") ? SIP_CPL_PARALLEL
                      : !strcmp(ord, "sequential") ? SIP_CPL_SEQUENTIAL : SIP_CPL_FIRST_ONLY;
        return cc_seconds(cc, el, "timeout", 20, &n->timeout) && cc_outputs(cc, el, n, outs);
    }
    case CPL_REDIRECT:
        n->permanent = cc_yes(cc, el, "permanent", 0);
        return 1;
    case CPL_REJECT: {
        static const struct { const char *name; int status; } names[] = {
            {"busy", 486}, {"notfound", 404}, {"reject", 603}, {"error", 500},
        };
        const char *st = cc_attr(cc, el, "status");
        for (i = 0; i < 4 && strcmp(st ? st : "", names[i].name); i++)
            ;
        if (i < 4)
            n->status = names[i].status;
        else if (st && strlen(st) == 3 && apr_isdigit(st[0]) && apr_isdigit(st[1])
                 && apr_isdigit(st[2]) && st[0] >= '4' && st[0] <= '6')
            n->status = atoi(st);
        else
            return cc_fail(cc, el, "status=\"%s\" is not busy, notfound, reject, error or "
                           "a number from 400 to 699", st ? st : "");
        n->reason = cc_attr(cc, el, "reason");
        if (n->reason && (cc_has_ctl(n->reason) || strlen(n->reason) > 200))
            return cc_fail(cc, el, "reason has a control character or is too long");
        return 1;
    }
    case CPL_LOG:
        n->name = cc_blank_ctl(cc->p, cc_attr(cc, el, "name"));
        n->comment = cc_blank_ctl(cc->p, cc_attr(cc, el, "comment"));
        return cc_node(cc, el, &n->next);
    case CPL_MAIL:
        n->url = cc_attr(cc, el, "url");
        if (!n->url || strncasecmp(n->url, "mailto:", 7) || cc_has_ctl(n->url))
            return cc_fail(cc, el, "url=\"%s\" is not a mailto: URL", n->url ? n->url : "");
        {
            /* the message it makes at call time, made once now (with a
             * stand-in sender) so a URL it cannot use is refused here */
            const char *why = NULL;
            if (!sip_cpl_mail_message(cc->wp, n->url, "cpl@invalid", NULL, &why))
                return cc_fail(cc, el, "url: %s", why ? why : "unusable mailto: URL");
        }
        return cc_node(cc, el, &n->next);
    }
    return cc_fail(cc, el, "is not a CPL node");
}

/* The node a container (top-level action, subaction, output) leads to:
 * its one child element (the schema allows at most one), or NULL. */
static int cc_node(cpl_cc_t *cc, xmlNodePtr container, const cpl_node_t **out)
{
    xmlNodePtr el = cc_first_child(container);

    *out = NULL;
    return el ? cc_elem(cc, el, out) : 1;
}

static sip_cpl_script_t *cpl_compile(apr_pool_t *p, apr_pool_t *wp, const char *body,
                                     apr_size_t len, const char *name, const char **why)
{
    xmlDocPtr doc = cpl_parse(wp, body, len, why);
    xmlNodePtr root, n;
    sip_cpl_script_t *sc;
    cpl_cc_t cc;
    int ok = 1;

    if (!doc)
        return NULL;
    memset(&cc, 0, sizeof(cc));
    cc.p = p;
    cc.wp = wp;
    cc.subaction = apr_hash_make(wp);
    cc.compiled = apr_hash_make(wp);
    sc = apr_pcalloc(p, sizeof(*sc));
    sc->name = apr_pstrdup(p, name ? name : "CPL script");
    root = xmlDocGetRootElement(doc);
    for (n = root->children; n; n = n->next)
        if (cpl_is(n, "subaction")) {
            xmlChar *id = xmlGetNoNsProp(n, (const xmlChar *)"id");
            apr_hash_set(cc.subaction, apr_pstrdup(wp, id ? (const char *)id : ""),
                         APR_HASH_KEY_STRING, n);
            xmlFree(id);
        }
    for (n = root->children; n && ok; n = n->next) {
        int dir = cpl_is(n, "incoming") ? SIP_CPL_INCOMING
                  : cpl_is(n, "outgoing") ? SIP_CPL_OUTGOING : -1;
        if (dir < 0)
            continue;
        sc->has[dir] = 1;
        ok = cc_node(&cc, n, &sc->top[dir]);
    }
    /* and the subactions nothing uses: every value is checked at upload */
    for (n = root->children; n && ok; n = n->next)
        if (cpl_is(n, "subaction")) {
            xmlChar *id = xmlGetNoNsProp(n, (const xmlChar *)"id");
            const cpl_node_t *unused;
            ok = cc_subaction(&cc, n, apr_pstrdup(wp, id ? (const char *)id : ""), &unused);
            xmlFree(id);
        }
    xmlFreeDoc(doc);
    if (!ok) {
        *why = cc.why;
        return NULL;
    }
    sc->nodes = cc.nodes;
    return sc;
}

sip_cpl_script_t *sip_cpl_compile(apr_pool_t *p, const char *body, apr_size_t len,
                                  const char *name, const char **why)
{
    return cpl_compile(p, p, body, len, name, why);
}

/* Uploads are checked by compiling: what is stored will run. */
int sip_cpl_validate(apr_pool_t *p, const char *body, apr_size_t len, const char **why)
{
    apr_pool_t *tmp;
    int ok;

    if (apr_pool_create(&tmp, p) != APR_SUCCESS) {
        *why = "out of memory";
        return 0;
    }
    ok = cpl_compile(tmp, p, body, len, NULL, why) != NULL;
    apr_pool_destroy(tmp);
    return ok;
}
