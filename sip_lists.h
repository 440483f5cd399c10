/* Lists (issue 15 item 3; seed 002 §5.1 ListExpansion/ListProxy;
 * docs/routing.md): an address that names a list of members.
 *
 *   SipList <name> <member> ...   a list (name: user, or user@host)
 *   SipListFile <path>            lines "name member ..."
 *   SipListMode redirect|proxy    what a call to a list does: 300 with a
 *                                 Contact per member (the seed's default),
 *                                 or proxy to all members in parallel
 *   SipListMaxMembers <n>         members a list may have (default 100),
 *                                 checked when the configuration is read
 *
 * A request carrying "Call-Disposition: all" is answered with the list
 * (300, a Contact per member) whatever SipListMode says.
 *
 * A name "user" is that user at any host the vhost answers for; a name
 * "user@host" only at that host.  Users compare case-insensitively after
 * %-decoding (seed §5.2), hosts case-insensitively.  A member is a sip: or
 * sips: URI, "user@host" (a sip: URI), or a bare user: that user at the
 * Request-URI's host.  Members are not expanded again: a member that is
 * itself a list (or the list itself) is, when proxying, looked up in the
 * location service like any user of ours (so it reaches nobody unless it
 * registered), and when redirecting is handed to the caller as it is. */
#ifndef SIP_LISTS_H
#define SIP_LISTS_H

#include "httpd.h"
#include "sip_dispatch.h"
#include "sip_transaction.h"

#define SIP_DEFAULT_LIST_MAX_MEMBERS 100
#define SIP_LIST_MODE_REDIRECT 0
#define SIP_LIST_MODE_PROXY    1

typedef struct sip_lists sip_lists_t;

/* ---- configuration (pure; mod_sip.c's handlers call these) ---- */

/* Add list 'name' with 'n' members to '*lists' (made when NULL); 'where'
 * ("file:line") is kept for later messages.  NULL, or why not. */
const char *sip_lists_add(apr_pool_t *p, sip_lists_t **lists, const char *name, int n,
                          const char *const *members, const char *where);
/* The lines of a SipListFile ("name member ...", '#' comments, blank
 * lines); 'name' prefixes every message ("name:line: why"). */
const char *sip_lists_parse(apr_pool_t *p, sip_lists_t **lists, const char *name,
                            const char *text);
/* The same from the file 'path' (read at configuration time). */
const char *sip_lists_load(apr_pool_t *p, sip_lists_t **lists, const char *path);
/* A vhost's lists: the main server's and its own (its own win on a name). */
sip_lists_t *sip_lists_merge(apr_pool_t *p, const sip_lists_t *base, const sip_lists_t *add);
/* NULL when every list has at most 'max' members, else why (with where
 * the list was defined). */
const char *sip_lists_check(apr_pool_t *p, const sip_lists_t *lists, int max);

/* ---- lookup ---- */

/* The members of the list the Request-URI user 'user' (still %-escaped)
 * at 'host' names, as written in the configuration, or NULL. */
const apr_array_header_t *sip_lists_find(apr_pool_t *p, const sip_lists_t *lists,
                                         const char *user, const char *host);
/* A member as a URI for a request to 'request_uri' (a bare user gets its
 * scheme, host and port), or NULL. */
const char *sip_lists_member_uri(apr_pool_t *p, const char *member, const char *request_uri);
/* A member or forwarding address as written ("sip:...", "sips:...",
 * "user@host", or a bare user): the form kept, or NULL with *why. */
const char *sip_lists_member_parse(apr_pool_t *p, const char *member, const char **why);
/* Does a Call-Disposition value (a comma list of tokens) say "all"? */
int sip_lists_disposition_all(const char *value);

/* ---- the steps ---- */

/* The list-expansion step (sip_dispatch.h): INVITE, OPTIONS, MESSAGE
 * to a list are redirected or proxied; anything else goes on. */
sip_step_t sip_lists_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume,
                          void *baton);

/* Proxy the request of 'txn' to every URI of 'uris' in parallel (also
 * used by sip_forward.c).  A URI of one of our users is looked up in the
 * location service first and its bindings (at most SipMaxBranches, best
 * first) are forked to instead: a request sent to ourselves would come
 * back with spent credentials and a second Record-Route.  Duplicates go
 * once; users with no binding are left out (logged); at most
 * SipListMaxMembers branches in all (the rest left out, logged); nothing
 * left: 480.
 * 'what' names the caller in log lines ("list sales"). */
void sip_lists_fork(sip_txn_t *txn, server_rec *s, const apr_array_header_t *uris,
                    const char *what);

#endif
