/* SIP-CGI (RFC 3050): choosing the script for a request, building its
 * environment, running it without blocking the engine, and turning its
 * output into responses on the server transaction. */
#ifndef SIP_CGI_H
#define SIP_CGI_H

#include "httpd.h"
#include "sip_conf.h"
#include "sip_event.h"
#include "sip_transaction.h"

void sip_cgi_init(sip_loop_t *loop, apr_pool_t *p);

/* Is 'name' (already %-unescaped) acceptable as a script file name? */
int sip_cgi_name_ok(const char *name);

/* Find the script for a request: 0 with *path set, or 403/404 with *why. */
int sip_cgi_locate(apr_pool_t *p, const char *dir, const char *default_script,
                   const char *user, const char *host, const char **path, const char **why);

/* Run the script for a new server transaction (answers 500 itself when
 * the script cannot be started). */
void sip_cgi_run(sip_txn_t *txn, const char *path, server_rec *s);

/* Run a user's uploaded sip-cgi script (sip_upload.h) for a new server
 * transaction, as SipUploadUser through sip-suexec (and bubblewrap), with
 * 'interp' (and 'arg') from its checked #! line.  Everything else is as
 * for sip_cgi_run: the script's text is copied, so every run of this
 * transaction uses the same one. */
struct sip_script;
void sip_cgi_run_uploaded(sip_txn_t *txn, server_rec *s, const struct sip_script *script,
                          const char *interp, const char *arg);

/* Kill every running script (engine shutdown). */
void sip_cgi_shutdown(void);

apr_size_t sip_cgi_running(void);

/* Split script output into messages by the RFC 3050 §5.6 rules.  Skips
 * blank lines before a message (*skip), then returns 1 with *msg_len set
 * when a whole message is there, 0 when more output is needed, or -1 with
 * *why when the output is malformed.  Exposed for unit tests. */
int sip_cgi_split(const char *buf, apr_size_t len, int eof, apr_size_t *skip,
                  apr_size_t *msg_len, const char **why);

#endif
