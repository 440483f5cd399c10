/* Lists (issue 15 item 3; seed 002 §5.1 ListExpansion/ListProxy;
 * docs/routing.md): an address that names a list of members.
 *
 *   SipList <name> <member> ...   a list (name: user, or user@host)
 *   SipListFile <path>            lines "name member ..."
 *   SipListMode redirect|proxy    what a call to a list does: 300 with a
 *                                 Contact per member (the seed's default),
 *                                 or proxy to all members in parallel
 *
 * A request carrying "Call-Disposition: all" is answered with the list
 * (300, a Contact per member) whatever SipListMode says. */
#ifndef SIP_LISTS_H
#define SIP_LISTS_H

#include "httpd.h"
#include "sip_dispatch.h"
#include "sip_transaction.h"

/* The list-expansion step (sip_dispatch.h): INVITE, OPTIONS, MESSAGE
 * to a list are redirected or proxied; anything else goes on. */
sip_step_t sip_lists_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume,
                          void *baton);

#endif
