/* URI-list requests (docs/explode.md): the EXPLODE method of
 * draft-camarillo-sipping-exploders-solution-00 (a list= cid: reference in
 * the Request-URI, a message/sipfrag template) and RFC 5365's MESSAGE with
 * "Require: recipient-list-message" (a recipient-list body part).  Reads
 * one into a job and writes the request each target gets.  Pure: the
 * policy (authentication, consent, limits) and the sending are the
 * engine's (sip_explode_run.c). */
#ifndef SIP_EXPLODE_H
#define SIP_EXPLODE_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "sip_message.h"
#include "sip_uri_list.h"

typedef enum {
    SIP_EXPLODE_NONE = 0,       /* not a URI-list request */
    SIP_EXPLODE_DRAFT,          /* EXPLODE */
    SIP_EXPLODE_MESSAGE         /* MESSAGE, Require: recipient-list-message (RFC 5365) */
} sip_explode_kind_t;

#define SIP_EXPLODE_METHOD     "EXPLODE"
#define SIP_OPTION_LIST_MESSAGE "recipient-list-message"

/* What 'req' asks for, from its method and Require header alone. */
sip_explode_kind_t sip_explode_kind(apr_pool_t *p, const sip_msg_t *req);

typedef struct sip_explode_limits {
    int max_targets;                    /* SipExplodeMaxTargets: more entries (before
                                           merging) -> 403 */
    const apr_array_header_t *methods;  /* SipExplodeMethods (const char *); NULL = MESSAGE */
    const char *realm;                  /* our digest realm, or NULL: credentials for it
                                           are not passed on (RFC 5365 §7.2, EX-22) */
} sip_explode_limits_t;

typedef struct sip_explode_job {
    sip_explode_kind_t kind;
    const char *method;                 /* of the requests sent (the template's; MESSAGE) */
    apr_array_header_t *targets;        /* sip_uri_list_entry_t: merged, recursion dropped */
    apr_array_header_t *dropped;        /* const char *: entries dropped as recursion (an
                                           entry with its own list= parameter, or the
                                           service's own address; EX-13), for the log */
    const char *from;                   /* the invoker's From without its tag */
    apr_array_header_t *headers;        /* sip_header_t every request carries: the template's
                                           (EXPLODE) or the MESSAGE's own end-to-end ones,
                                           after the RFC 3261 §19.1.5 filter; credentials
                                           for other realms */
    const char *content_type;           /* the body every request carries, or NULL: */
    const char *body;                   /* RFC 5365 §7.3: without the list part, a single */
    apr_size_t body_len;                /* part unwrapped, a history part added */
} sip_explode_job_t;

/* Read a URI-list request (EX-1 ... EX-6, EX-11 ... EX-13, EX-16).
 * EXPLODE: the list= parameter of the Request-URI (raw or %-escaped,
 * EX-2) names by cid: (RFC 2392) a part of a multipart/mixed body, or the
 * whole body through a top-level Content-ID; without list=, the
 * recipient-list parts (RFC 5363 §4.1: several form one list).  The
 * template is the part with Content-Disposition: template, a
 * message/sipfrag request (RFC 3420).  MESSAGE: the recipient-list parts
 * and the rest of the body.
 * Returns 0 with *job, or the status to answer with *reason (the reason
 * phrase) and *why (for the log): 400 (no or unresolvable list, no or bad
 * template, malformed XML or sipfrag, an empty list), 415 (a list or
 * template of a type not understood; *accept then says what is), 403 (a
 * template method SipExplodeMethods does not allow, or more than
 * max_targets entries). */
int sip_explode_parse(apr_pool_t *p, const sip_msg_t *req, const sip_explode_limits_t *lim,
                      sip_explode_job_t **job, const char **reason, const char **why,
                      const char **accept);

/* The request 'target' gets (EX-17 ... EX-23), without Via (the sender
 * adds its own with the branch): request line with 'request_uri' (a
 * registered contact of a user of ours), or, when NULL, the target formed
 * by RFC 3261 §19.1.5 (its transport, maddr, ttl, user and unknown
 * parameters kept, method and headers taken out); From = the invoker's
 * with tag 'from_tag'; To = the target without its headers; Call-ID
 * 'call_id'; "CSeq: 1 <method>"; "Max-Forwards: 70"; the job's headers,
 * then the target's own ?headers that pass the §19.1.5 filter replacing
 * the template's of the same name (EX-18); the body with Content-Type and
 * Content-Length. */
const char *sip_explode_request(apr_pool_t *p, const sip_explode_job_t *job,
                                const sip_uri_list_entry_t *target, const char *request_uri,
                                const char *call_id, const char *from_tag, apr_size_t *len);

#endif
