/* What this server says it can do for an address of ours, in one place:
 * the Allow, Accept, Accept-Disposition and Supported headers of its own
 * OPTIONS answers (RFC 3261 §11.2), of 405 and 501 (§8.2.1, §21.5.2), and
 * the option tags a Require may name (§8.2.2.3).  Script uploads
 * (draft-lennox-sip-reg-payload §4.2) and the URI-list service (RFC 5365
 * §6: recipient-list-message; EXPLODE in Allow) add theirs when they are
 * on for the address. */
#ifndef SIP_OPTIONS_H
#define SIP_OPTIONS_H

#include "httpd.h"
#include "sip_conf.h"
#include "sip_message.h"

/* Is 'method' one the server recognises (RFC 3261, the IANA-registered
 * extensions, SipProxyMethods)?  Methods are case-sensitive. */
int sip_options_method_known(const sip_server_conf *c, const char *method);

/* The methods 'aor' (an address-of-record of ours, or NULL) accepts here,
 * comma-separated, for Allow. */
const char *sip_options_allow(apr_pool_t *p, server_rec *s, const char *aor);

/* The capability headers of an OPTIONS answer for 'aor': name, value,
 * ..., NULL. */
const char *const *sip_options_headers(apr_pool_t *p, server_rec *s, const char *aor);

/* The option tags of 'require' (a Require value, comma-separated) that
 * the server does not support for 'req' (for one of our domains), as an
 * Unsupported value; NULL when it supports them all. */
const char *sip_options_unsupported(apr_pool_t *p, server_rec *s, const sip_msg_t *req,
                                    const char *require);

#endif
