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

/* Engine, for a new server transaction for one of our users (the
 * routing steps, sip_dispatch.c): the address-of-record whose uploaded
 * scripts apply (SipScriptUpload On for it; never for a REGISTER), or NULL. */
const char *sip_upload_applies(apr_pool_t *p, sip_txn_t *txn, server_rec *s);

/* Run the user's uploaded sip-cgi script (the one stored when the request
 * arrived: RP-34), or answer 500 when it cannot run here. */
struct sip_script;
void sip_upload_run_cgi(sip_txn_t *txn, server_rec *s, const struct sip_script *cgi);

/* 500, with a rate-limited log line: the user may have a script ('what':
 * "SIP-CGI", "CPL") that cannot run, and running another handler instead
 * could bypass what the user asked for. */
void sip_upload_fail_closed(sip_txn_t *txn, server_rec *s, const char *aor, const char *what,
                            const char *why);

#endif
