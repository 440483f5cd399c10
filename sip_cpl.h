/* Call Processing Language scripts (RFC 3880). */
#ifndef SIP_CPL_H
#define SIP_CPL_H

#include "apr_pools.h"

/* Upload-time validation of a CPL script (RFC 3880 §2; the IANA template
 * of application/cpl+xml expects problems to show at upload): well-formed
 * XML whose root is <cpl> in the namespace urn:ietf:params:xml:ns:cpl.
 * Returns 1, or 0 with *why (a short text for the 400 answer and the log). */
int sip_cpl_validate(apr_pool_t *p, const char *body, apr_size_t len, const char **why);

#endif
