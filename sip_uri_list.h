/* URI lists for URI-list services (the EXPLODE draft and RFC 5363):
 * RFC 4826 resource lists with RFC 5364 copy control, read with libxml2,
 * merged under SIP URI comparison, and the recipient-list-history body
 * RFC 5365 §7.3 sends along.  Pure: no engine state. */
#ifndef SIP_URI_LIST_H
#define SIP_URI_LIST_H

#include "apr_pools.h"
#include "apr_tables.h"

/* RFC 5364 §4 copyControl, in precedence order (a duplicate keeps the
 * highest); an entry without the attribute is bcc. */
typedef enum {
    SIP_COPY_BCC = 0,
    SIP_COPY_CC = 1,
    SIP_COPY_TO = 2
} sip_copy_control_t;

typedef struct sip_uri_list_entry {
    const char *uri;            /* the uri attribute as written (it may carry ?headers) */
    const char *display;        /* <display-name>, or NULL */
    sip_copy_control_t copy;
    int anonymize;              /* RFC 5364 anonymize="true" */
} sip_uri_list_entry_t;

#define SIP_URI_LIST_TOO_MANY (-2)

/* Read an application/resource-lists+xml document (RFC 4826 §3.1):
 * nested <list>s flattened in document order; <entry-ref> and <external>
 * ignored (RFC 5365 §7 lets a service drop them); <entry> without uri
 * skipped; documents in the RFC 4826 namespace and in none (the draft's
 * example) both accepted, copy control in its namespace (either spelling,
 * "copycontrol" or RFC 5366's "copyControl").  No DTD, no external
 * entities, no network.  Stops as soon as more than 'max' entries are
 * seen (max > 0).  Returns 0 with *entries (sip_uri_list_entry_t), -1
 * with *why when the document is not well-formed or not a resource list,
 * SIP_URI_LIST_TOO_MANY when it holds more than 'max' entries. */
int sip_uri_list_parse(apr_pool_t *p, const char *xml, apr_size_t len, int max,
                       apr_array_header_t **entries, const char **why);

/* RFC 5363 §4.1: one entry per recipient.  Entries whose URIs (without
 * their ?headers part) are equal under RFC 3261 §19.1.4 are merged: the
 * first one's position, URI and display name, the highest copyControl,
 * anonymize if any asked for it.  Entries that are not SIP or SIPS URIs
 * are kept once each by exact string. */
apr_array_header_t *sip_uri_list_merge(apr_pool_t *p, const apr_array_header_t *entries);

/* The recipient-list-history body (RFC 5365 §7.3, RFC 5364 §4): a
 * resource list of the to and cc entries (bcc left out), each with its
 * copyControl; anonymized entries become sip:anonymous@anonymous.invalid
 * with count= the number of them.  NULL when no entry is to or cc. */
const char *sip_uri_list_history(apr_pool_t *p, const apr_array_header_t *entries,
                                 apr_size_t *len);

#endif
