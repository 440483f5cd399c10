/* Per-user forwarding files like sendmail's .forward (issue 15 item 4;
 * seed 002 §7; docs/routing.md).
 *
 *   SipForwardFile <template>    where a user's file is: "~/.sipforward"
 *                                (the home directory of the system user
 *                                named like the Request-URI's user) or a
 *                                path with %u for the user
 *
 * The file holds forwarding addresses (one or more per line, separated
 * by blanks or commas, '#' comments: the call is proxied to all of them in
 * parallel, sip_lists_fork) or one "|program args" line (the program runs
 * as a SIP-CGI script for the transaction).
 *
 * Safety, as sendmail's (checked on every request; the file is small and
 * local, so stat and read do not hold up the engine):
 *   - the user name must be a safe file name (sip_cgi_name_ok, no "..");
 *   - the file is refused when it is a symlink, not a regular file, larger
 *     than 64 KiB, writable by group or others, or owned by someone else
 *     than its rightful owner: for "~/" the user; for a %u template root,
 *     httpd's user, or the system user named like the Request-URI user;
 *   - a file with more addresses than SipListMaxMembers is refused;
 *   - its directory is refused when writable by group or others, or owned
 *     by anyone but root or the file's owner;
 *   - "|program" runs as the file's owner: as httpd for a file of httpd's
 *     own (non-root) user; through sip-suexec --owner (sip_cgi_run_owner)
 *     as the owner for a file of anyone else but root, once the checks of
 *     sip_fwd_owner.h pass here (the helper makes them again, as root):
 *     uid at least SipForwardMinUid, the file exactly where
 *     SipForwardFile puts that user's, the program an absolute path to a
 *     regular file of the owner or root, no symlink, not setuid, writable
 *     by nobody else, in a directory nobody else may write; a file of
 *     root's never runs one.  Arguments are split at blanks (no shell).
 * A refused file is logged (rate-limited) and the step goes on as if
 * there were none. */
#ifndef SIP_FORWARD_H
#define SIP_FORWARD_H

#include "httpd.h"
#include "sip_conf.h"
#include "sip_dispatch.h"
#include "sip_transaction.h"
#include "sip_fwd_owner.h"

#include <sys/types.h>

#define SIP_FORWARD_MAX_SIZE SIP_FWD_OWNER_MAX_SIZE

/* A forwarding file as read. */
typedef struct sip_forward {
    const char *const *argv;            /* "|program": program and arguments, NULL-ended */
    apr_array_header_t *addresses;      /* else: const char *, as sip_lists_member_parse */
    uid_t owner;
} sip_forward_t;

/* The path of 'user''s file (%-decoded) under 'tmpl'; *owner_uid and
 * *home_form say whose it must be (~ form: the user's uid; %u form:
 * *owner_uid is the uid of a system user of that name, or -1).  NULL with
 * *why for an unsafe name, or a "~/" template and no such system user. */
const char *sip_forward_path(apr_pool_t *p, const char *tmpl, const char *user,
                             long *owner_uid, int *home_form, const char **why);

/* Read 'path' under the safety rules above: 'owners' (n of them) are the
 * uids the file may belong to; its directory must belong to root or the
 * file's owner.  0 with *out; -1 when there is no such file; 1 with *why
 * when it is refused. */
int sip_forward_read(apr_pool_t *p, const char *path, const long *owners, int n,
                     sip_forward_t **out, const char **why);

/* The contents of a forwarding file: NULL with *why when malformed. */
sip_forward_t *sip_forward_parse(apr_pool_t *p, const char *text, apr_size_t len,
                                 const char **why);

/* SipForwardMinUid: NULL with *out, or the configuration error. */
const char *sip_forward_min_uid_parse(const char *arg, long *out);
/* The lowest uid a "|program" runs as (SipForwardMinUid, 1000 unset). */
long sip_forward_min_uid(const sip_server_conf *conf);

/* The forwarding step (sip_dispatch.h), after the scripts and before the
 * registrar: an INVITE, MESSAGE or OPTIONS for a user with a usable file
 * is forwarded; anything else goes on. */
sip_step_t sip_forward_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume,
                            void *baton);

#endif
