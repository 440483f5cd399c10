/* The one place that decides what handles a new request for one of our
 * users (docs/architecture.md "Routing a request for a user of ours"):
 * an ordered list of steps, the same on every node:
 *   a. the user's uploaded SIP-CGI script (SipScriptUpload)
 *   b. the user's uploaded CPL script
 *   c. SipDirectory's user@host SIP-CGI script
 *   d. SipDirectory's user@host.cpl
 *   e. the default SIP-CGI script (SipDefaultScript)
 *   f. the default CPL script (SipCplDefaultScript)
 *   g. default handling (sip_relay_default_request: registrar, location
 *      service, OPTIONS, 404)
 * Before a (issue 15, docs/routing.md "Routing without scripts"):
 *   0a. list expansion (SipList: an address that names a list)
 *   0b. name mapping (SipNameMap: a dialled name to a canonical user; the
 *       Request-URI is rewritten, later steps see the canonical user)
 *   0c. rules (SipRule in the vhost / <Location> / <If>, SipRuleFile)
 * and between f and g:
 *   f2. per-user forwarding (SipForwardFile, like sendmail's .forward)
 * Each step is one function that finishes the transaction, passes it to
 * the next step, or waits (a store that answers later) and resumes.  The
 * CPL steps apply to an INVITE outside a dialog only (RFC 3880 §2.3: a
 * script decides where a call goes, not what happens inside one); other
 * methods pass them.  Uploaded scripts need one store fetch for a and b.
 *
 * Before that, an INVITE placed by one of our users, digest-authenticated
 * as that user, runs the <outgoing> part of the user's CPL script
 * (RFC 3880 §2.3) before it is forwarded onward or routed to the callee. */
#ifndef SIP_DISPATCH_H
#define SIP_DISPATCH_H

#include "httpd.h"
#include "sip_transaction.h"

/* What a step of its own concern (sip_lists, sip_namemap, sip_rules,
 * sip_forward) answers: the transaction goes on to the next step, it is
 * finished (answered, proxied, or handed to a script), or the step waits
 * (a lookup that answers later).  A waiting step attaches itself to the
 * transaction (sip_txn_attach: a CANCEL is answered 487 meanwhile, and its
 * 'ended' drops the lookup's interest, so nothing runs on a freed
 * transaction) and, when the lookup is over without having finished the
 * transaction, calls 'resume' exactly once: that detaches it and runs the
 * next step. */
typedef enum { SIP_STEP_NEXT, SIP_STEP_DONE, SIP_STEP_WAIT } sip_step_t;
typedef void (*sip_step_resume_fn)(void *baton);

/* A new, authenticated request for one of our users: the steps above. */
void sip_dispatch_request(sip_txn_t *txn, server_rec *s);

/* What happens to 'txn' once the caller's <outgoing> script (if any) lets
 * the call proceed: forward it onward, or sip_dispatch_request. */
typedef void (*sip_dispatch_cont_fn)(sip_txn_t *txn, server_rec *s);

/* An INVITE outside a dialog whose From is one of our users and which was
 * digest-authenticated as that user: run the <outgoing> part of the
 * user's CPL script (the uploaded one, else SipDirectory's user@host.cpl,
 * else the default CPL script), then 'cont' unless the script answered.
 * Anything else goes to 'cont' at once. */
void sip_dispatch_outgoing(sip_txn_t *txn, server_rec *s, sip_dispatch_cont_fn cont);

#endif
