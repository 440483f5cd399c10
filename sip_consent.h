/* Consent to URI-list fan-out (RFC 5363 §5.2, RFC 5360): a service may
 * send a request only to a target that agreed in advance to get requests
 * from it.  This is the administrator-kept opt-in list RFC 5363 allows in
 * place of the whole RFC 5360 permission machinery (docs/explode.md says
 * what is left): SipExplodeConsentFile, one rule per line:
 *
 *     # target               invokers it accepts (none, or *: any authenticated user)
 *     sip:bob@example.org    alice sip:carol@example.org
 *     sip:*@example.org      *
 *
 * A target pattern is a SIP address-of-record whose user and host may use
 * the shell wildcards * and ? (host compared case-insensitively); an
 * invoker is an authenticated user name, an address-of-record pattern
 * like the targets', or *.  Pure: loaded at configuration time. */
#ifndef SIP_CONSENT_H
#define SIP_CONSENT_H

#include "apr_pools.h"

typedef struct sip_consent sip_consent_t;

/* Load 'path'.  NULL with *why ("path:line: reason") when it cannot be
 * read or a line is malformed (apachectl -t shows it). */
sip_consent_t *sip_consent_load(apr_pool_t *p, const char *path, const char **why);
/* The same from text (tests, fuzzing); 'name' is used in *why. */
sip_consent_t *sip_consent_parse(apr_pool_t *p, const char *name, const char *text,
                                 const char **why);

/* Has 'target' (a SIP or SIPS URI) agreed to requests exploded for the
 * invoker authenticated as 'user' whose address-of-record is 'aor'?
 * 'c' may be NULL (nobody has). */
int sip_consent_allows(const sip_consent_t *c, apr_pool_t *p, const char *target,
                       const char *user, const char *aor);

#endif
