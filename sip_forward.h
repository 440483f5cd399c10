/* Per-user forwarding files like sendmail's .forward (issue 15 item 4;
 * seed 002 §7; docs/routing.md).
 *
 *   SipForwardFile <template>    where a user's file is: "~/.sipforward"
 *                                (the home directory of the system user
 *                                named like the Request-URI's user) or a
 *                                path with %u for the user
 *
 * The file holds forwarding addresses (one per line: the call is proxied
 * to all of them in parallel) or one "|program" line (the program runs as
 * a SIP-CGI script, as the file's owner through sip-suexec).  A file
 * that anyone but its owner (or root) can write, or whose directory can,
 * is refused: logged, and the step goes on as if there were none. */
#ifndef SIP_FORWARD_H
#define SIP_FORWARD_H

#include "httpd.h"
#include "sip_dispatch.h"
#include "sip_transaction.h"

/* The forwarding step (sip_dispatch.h), after the scripts and before the
 * registrar: an INVITE, MESSAGE or OPTIONS for a user with a usable file
 * is forwarded; anything else goes on. */
sip_step_t sip_forward_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume,
                            void *baton);

#endif
