#include "sip_cpl.h"

#include <string.h>

#include "apr_strings.h"
#include "apr_xml.h"

#define CPL_NS "urn:ietf:params:xml:ns:cpl"

int sip_cpl_validate(apr_pool_t *p, const char *body, apr_size_t len, const char **why)
{
    apr_xml_parser *parser = apr_xml_parser_create(p);
    apr_xml_doc *doc = NULL;
    const char *ns;
    char err[200];

    if (apr_xml_parser_feed(parser, body, len) != APR_SUCCESS
        || apr_xml_parser_done(parser, &doc) != APR_SUCCESS || !doc || !doc->root) {
        apr_xml_parser_geterror(parser, err, sizeof(err));
        *why = apr_psprintf(p, "not well-formed XML: %s", err);
        return 0;
    }
    ns = doc->root->ns >= 0 ? APR_XML_GET_URI_ITEM(doc->namespaces, doc->root->ns) : "";
    if (strcmp(doc->root->name, "cpl") || strcmp(ns, CPL_NS)) {
        *why = apr_psprintf(p, "the root element must be <cpl> in namespace " CPL_NS
                            " (found <%.64s> in \"%.128s\")", doc->root->name, ns);
        return 0;
    }
    return 1;
}
