/* Running users' uploaded SIP-CGI scripts (draft-lennox-sip-reg-payload;
 * docs/security.md): uploaded code is untrusted, so it runs as
 * SipUploadUser through the setuid helper sip-suexec, inside a bubblewrap
 * sandbox, and only with an interpreter the administrator allows. */
#ifndef SIP_UPLOAD_H
#define SIP_UPLOAD_H

#include "apr_pools.h"
#include "apr_tables.h"

/* Upload-time check of a sip-cgi script: it must start with "#!" naming
 * one of 'allowed' (absolute paths, compared exactly) and at most one
 * argument.  Returns 1, or 0 with *why (for the 415 answer and the log).
 * On success *interp and *arg (NULL when none) say what to run. */
int sip_upload_interpreter_ok(apr_pool_t *p, const char *body, apr_size_t len,
                              const apr_array_header_t *allowed, const char **interp,
                              const char **arg, const char **why);

#endif
