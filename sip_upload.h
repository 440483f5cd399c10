/* Running users' uploaded SIP-CGI scripts (draft-lennox-sip-reg-payload;
 * docs/security.md): uploaded code is untrusted, so it runs as
 * SipUploadUser through the setuid helper sip-suexec, inside a bubblewrap
 * sandbox, and only with an interpreter the administrator allows. */
#ifndef SIP_UPLOAD_H
#define SIP_UPLOAD_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "httpd.h"
#include "sip_conf.h"
#include "sip_transaction.h"

/* Upload-time check of a sip-cgi script: it must start with "#!" naming
 * one of 'allowed' (absolute paths, compared exactly) and at most one
 * argument.  Returns 1, or 0 with *why (for the 415 answer and the log).
 * On success *interp and *arg (NULL when none) say what to run. */
int sip_upload_interpreter_ok(apr_pool_t *p, const char *body, apr_size_t len,
                              const apr_array_header_t *allowed, const char **interp,
                              const char **arg, const char **why);

/* ---- running them (issue 12 item 6; docs/security.md "Uploaded scripts") ---- */

/* Where the script and the user's working directory appear in the sandbox. */
#define SIP_UPLOAD_SANDBOX_SCRIPT "/sip-cgi/script"
#define SIP_UPLOAD_SANDBOX_WORK   "/work"
/* sip-suexec refuses users below this uid (system accounts) */
#define SIP_UPLOAD_UID_MIN 100

/* Parent, as root, at start-up: can uploaded scripts run (SipUploadUser
 * exists and is neither root nor httpd's user or group, the helper is
 * setuid root and runnable by httpd's group, bubblewrap is there when the
 * sandbox is On, and an empty script runs that way)?  Makes
 * SipUploadWorkDir (SipUploadUser's, 0700).  Logs why not, once. */
int sip_upload_check_runnable(apr_pool_t *p, server_rec *s, const sip_upload_conf_t *c,
                              long httpd_uid, long httpd_gid);

/* The working directory of 'aor' below 'base' (named by a hash). */
const char *sip_upload_workdir(apr_pool_t *p, const char *base, const char *aor);

/* The command line that starts an uploaded script: the helper, the user,
 * the working directory, the limits ("SOFT:HARD" or NULL for none: CPU
 * seconds, address space bytes, processes), then bwrap with its options
 * (sandbox On) and the interpreter with the script: the script's text is
 * expected on descriptor 3. */
char **sip_upload_argv(apr_pool_t *p, const sip_upload_conf_t *c, const char *workdir,
                       const char *const limits[3], const char *interp, const char *arg);

/* Engine, for a new server transaction for one of our users: when
 * SipScriptUpload applies to its address-of-record (the Request-URI, or a
 * REGISTER's To), returns 1 and takes the transaction: the user's uploaded
 * sip-cgi script runs (the one stored when the request arrived: RP-34), or
 * 500 when it exists but cannot run, or 'next' is called (maybe later,
 * the store may be a database) when the user has none.  Otherwise 0. */
typedef void (*sip_upload_next_fn)(sip_txn_t *txn, server_rec *s);
int sip_upload_route(sip_txn_t *txn, server_rec *s, sip_upload_next_fn next);

#endif
