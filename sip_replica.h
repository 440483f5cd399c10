/* Registrations and flows across engines (issue 19, docs/architecture.md
 * "Several engines"): the REGISTER hand-over to an AoR's home engine, the
 * location replicas every engine keeps, the start-up SYNC, and sends on
 * flows another engine holds.  With one engine every function here is a
 * no-op. */
#ifndef SIP_REPLICA_H
#define SIP_REPLICA_H

#include "apr_pools.h"
#include "sip_event.h"
#include "sip_message.h"
#include "sip_transport.h"

/* Engine, after the location store and the hand-over channel started:
 * handle REPLICA, SYNC, SEND_FLOW and FLOW_CLOSED, and ask every peer for
 * the bindings homed there (SIP_HO_SYNC). */
void sip_replica_start(sip_loop_t *loop, apr_pool_t *p);

/* A request just parsed, before any transaction: 1 when it is a REGISTER
 * for an AoR homed at another engine and was handed to it raw
 * (SIP_HO_DELIVER with where it came from); the caller then drops it.
 * The home engine alone applies REGISTERs of an AoR (RFC 3261 §10.3: the
 * Call-ID and CSeq rules need one writer), and answers the origin. */
/* The same before any parse (sip_msg_scan_register_aor), for a UDP
 * datagram: a REGISTER plainly for an AoR homed elsewhere is handed over
 * unparsed, marked SIP_HO_UNCHECKED: its home parses it (and answers a bad
 * one), and hands it on once more should the parse find another home.
 * 0: parse it here. */
int sip_registrar_handover_raw(apr_pool_t *p, const char *buf, apr_size_t len,
                               const sip_source_t *src);
int sip_registrar_handover(apr_pool_t *p, const sip_msg_t *msg, const char *buf, apr_size_t len,
                           const sip_source_t *src);

/* The AoR a REGISTER changes, as the registrar names it (To, RFC 3261
 * §10.3 step 5), or NULL. */
const char *sip_replica_register_aor(apr_pool_t *p, const sip_msg_t *msg);

#endif
