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

/* The file name of SipDirectory's script for user@host (user still
 * %-escaped) with 'suffix' ("" or ".cpl") appended: 0 with *name, 403 with
 * *why when the name is unsafe (a request for it must run nothing, not even
 * a default), 404 when no user or no file could have such a name. */
int sip_cgi_user_file(apr_pool_t *p, const char *user, const char *host, const char *suffix,
                      const char **name, const char **why);

/* The file 'name' in SipDirectory 'dir': 0 with *path (resolved, inside
 * 'dir' even through symlinks, a regular file, executable when 'exec',
 * else readable), 404 when absent, 403 with *why when it must not be used. */
int sip_cgi_locate_file(apr_pool_t *p, const char *dir, const char *name, int exec,
                        const char **path, const char **why);

/* What SipDirectory looked like when a lookup in it was answered: the
 * lookup cache of sip_cgi_locate_file keeps an answer while the directory
 * is the same one with the same mtime and ctime, for at most
 * SIP_CGI_LOOKUP_TTL, and never when the directory had changed within
 * SIP_CGI_LOOKUP_RACY of the check (file times come from a coarse clock). */
typedef struct {
    apr_uint64_t dev, ino;
    apr_int64_t mtime_ns, ctime_ns;
} sip_cgi_dirstamp_t;
#define SIP_CGI_LOOKUP_TTL apr_time_from_sec(1)
#define SIP_CGI_LOOKUP_RACY apr_time_from_msec(20)
struct stat;
void sip_cgi_dirstamp(const struct stat *st, sip_cgi_dirstamp_t *out);
/* May an answer taken at 'checked' with the directory as 'then' be given
 * again at 'now', the directory being 'dir'? */
int sip_cgi_lookup_fresh(const sip_cgi_dirstamp_t *then, apr_time_t checked,
                         const sip_cgi_dirstamp_t *dir, apr_time_t now);

/* Find the SIP-CGI script for a request (user@host, else the default):
 * 0 with *path set, or 403/404 with *why. */
int sip_cgi_locate(apr_pool_t *p, const char *dir, const char *default_script,
                   const char *user, const char *host, const char **path, const char **why);

/* Run the script for a new server transaction (answers 500 itself when
 * the script cannot be started). */
void sip_cgi_run(sip_txn_t *txn, const char *path, server_rec *s);
/* The same, but when the script leaves the request to the server (no
 * final response, no proxying: RFC 3050 §5.6.1.6), 'then' runs instead of
 * the default handling, once, with the transaction no longer the
 * script's: a rule that runs a script goes on with the next rule. */
void sip_cgi_run_then(sip_txn_t *txn, const char *path, server_rec *s, void (*then)(void *),
                      void *baton);
/* The same with arguments after the script's name (NULL-ended): a
 * forwarding file's "|program args" (sip_forward.h). */
void sip_cgi_run_args(sip_txn_t *txn, const char *path, const char *const *args, server_rec *s);

/* The same for a forwarding file owned by another user than httpd's: the
 * setuid helper (SipUploadSuexec) in --owner mode reads the "|program"
 * line of 'file' (SipForwardFile 'tmpl') itself, checks it and runs it as
 * 'uid' (at least 'min_uid'); 'program' only names it in log lines.  The
 * helper's refusals reach the error log through the script's stderr. */
void sip_cgi_run_owner(sip_txn_t *txn, server_rec *s, const char *file, const char *tmpl,
                       long uid, long min_uid, const char *program);

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
