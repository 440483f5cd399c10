/* Name mapping (issue 15 item 2; seed 002 §5.2; docs/routing.md): the
 * name dialled in the Request-URI ("John.Q.Public", "jpublic", "john")
 * mapped to a canonical user id, case-insensitively and after
 * %-decoding, from the source SipNameMap names:
 *
 *   SipNameMap file <path>       lines "user First [Middle] Last" (the
 *                                 forms of §5.2 are derived from them)
 *   SipNameMap dbm <type>:<path>  key: a form in lower case, value: users
 *   SipNameMap dbd <SQL>          mod_dbd prepared query, one %s: the name
 *                                 in lower case; each row's first column
 *                                 holds users (worked by a thread; cached)
 *   SipNameMap program <cmd>      a resident mapper: one name per line
 *                                 in, candidate users per line out; started
 *                                 once, answers cached (SipNameMapCacheTTL)
 *   SipNameMapMultiple 300|404    several candidates: 300 with a Contact
 *                                 per candidate (default), or 404
 *
 * A name that is already a user's id, or that maps to nothing, goes on
 * unchanged. */
#ifndef SIP_NAMEMAP_H
#define SIP_NAMEMAP_H

#include "httpd.h"
#include "apr_tables.h"
#include "sip_conf.h"
#include "sip_dispatch.h"
#include "sip_transaction.h"

/* The names one person answers to (§5.2's table: U, F, L, FL forms),
 * lower case: for "jqp", "John", "Q", "Public": jqp, john, public,
 * j.q.public, john.q.public, john_public, johnpublic, jpublic,
 * johnqpublic, ...  'middle' may be NULL. */
apr_array_header_t *sip_namemap_forms(apr_pool_t *p, const char *user, const char *first,
                                      const char *middle, const char *last);

/* The name-mapping step (sip_dispatch.h): one candidate retargets the
 * transaction (sip_txn_retarget) and goes on; several answer 300 or 404
 * (SipNameMapMultiple); none goes on unchanged. */
sip_step_t sip_namemap_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume,
                            void *baton);

/* ---- configuration (mod_sip.c's thin handlers call these) ---- */

typedef struct sip_namemap sip_namemap_t;

/* One of the directives above ('directive' is its name, a1/a2 its
 * arguments, a2 NULL for the one-argument ones) of server 's' into 'c';
 * relative paths are taken from 'root' (ServerRoot).  NULL, or why it is
 * refused: a "file:line: reason" for a bad line of a SipNameMap file, so
 * apachectl -t names it; the file is read now, so a graceful restart reads
 * it again.  dbd prepares its query with mod_dbd's ap_dbd_prepare now. */
const char *sip_namemap_directive(apr_pool_t *p, server_rec *s, sip_server_conf *c,
                                  const char *directive, const char *a1, const char *a2,
                                  const char *root);

/* The same for the text of a SipNameMap file called 'name' (tests). */
sip_namemap_t *sip_namemap_parse_file(apr_pool_t *p, const char *name, const char *text,
                                      const char **why);

/* The candidate users of 'name' (already %-decoded; any case) from a file
 * or dbm map: an array of const char *, empty when none; NULL with *why
 * when the source cannot be read (or is a program). */
apr_array_header_t *sip_namemap_lookup(sip_namemap_t *m, apr_pool_t *p, const char *name,
                                       const char **why);

/* ---- the engine ---- */

/* Start the mapper of every SipNameMap program (once per engine; a graceful
 * restart starts a new engine, so new mappers), and stop them at exit. */
void sip_namemap_init(sip_loop_t *loop, apr_pool_t *p, server_rec *main_server);
void sip_namemap_shutdown(void);

/* The mapper's answers, kept 'ttl' each; at most 'max' stored between two
 * clearings, so memory stays bounded whatever names are dialled. */
typedef struct sip_namemap_cache sip_namemap_cache_t;
sip_namemap_cache_t *sip_namemap_cache_create(apr_pool_t *p, apr_size_t max);
void sip_namemap_cache_put(sip_namemap_cache_t *c, const char *name, const char *answer,
                           apr_time_t now, apr_interval_time_t ttl);
/* 1 and the users (as sip_namemap_lookup) when 'name' has an answer still
 * fresh at 'now'; 0 otherwise. */
int sip_namemap_cache_get(sip_namemap_cache_t *c, apr_pool_t *p, const char *name,
                          apr_time_t now, apr_array_header_t **users);

#endif
