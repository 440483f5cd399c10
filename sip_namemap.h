/* Name mapping (issue 15 item 2; seed 002 §5.2; docs/routing.md): the
 * name dialled in the Request-URI ("John.Q.Public", "jpublic", "john")
 * mapped to a canonical user id, case-insensitively and after
 * %-decoding, from the source SipNameMap names:
 *
 *   SipNameMap file <path>       lines "user First [Middle] Last" (the
 *                                 forms of §5.2 are derived from them)
 *   SipNameMap dbm <type>:<path>  key: a form in lower case, value: users
 *   SipNameMap dbd <SQL>          mod_dbd prepared query, one %s: the form
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

#endif
