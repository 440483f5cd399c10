/* Location service (RFC 3261 §10): bindings of addresses-of-record to
 * contacts, with their own expiry, q, Call-ID and CSeq.  Kept in the
 * engine's memory and written through to a journal file, so that an
 * engine restart (graceful restart, crash) loses no registration. */
#ifndef SIP_LOCATION_H
#define SIP_LOCATION_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "apr_time.h"
#include "sip_event.h"
#include "httpd.h"

typedef struct sip_binding {
    const char *aor;
    const char *contact;    /* the Contact URI, as registered */
    const char *params;     /* other contact parameters (";+sip.instance=..."), or "" */
    const char *call_id;
    apr_uint32_t cseq;
    apr_time_t expires;     /* absolute */
    int q1000;              /* q * 1000 */
    const char *path;       /* RFC 3327 Path, or NULL */
    const char *display;    /* display-name of the Contact as written ("\"Bob\"", Bob), or NULL */
    const char *key;        /* sip_uri_key of 'contact', or NULL (the store works it out) */
    int transport;          /* sip_tp_kind_t the REGISTER came over (kept across restarts) */
    apr_uint64_t flow;      /* its connection (sip_transport_flow_source) while the engine
                             * runs; 0 for UDP, and after a restart (a flow does not survive) */
    const char *received;   /* "ip:port" the REGISTER came from (its source address; RFC
                             * 3581; IPv6 as "[addr]:port"), kept across restarts; NULL
                             * when unknown */
    const char *instance;   /* RFC 5626 +sip.instance value as written (with <> and
                             * quotes removed), or NULL */
    int reg_id;             /* RFC 5626 reg-id, 0 when none (or no instance: §6 says
                             * ignore it) */
} sip_binding_t;

/* Open the store; 'journal_fd' is a read/write descriptor opened by the
 * httpd parent (or -1 for memory only).  Replays and compacts it. */
apr_status_t sip_location_init(sip_loop_t *loop, apr_pool_t *p, int journal_fd);

/* Parent, before the engine starts: the most bindings the memory store
 * keeps (SipMaxBindings; 0 = no limit), and the longest lifetime any vhost
 * grants (the largest SipMaxExpires), to which a journal line promising
 * more is cut on replay. */
void sip_location_configure(apr_size_t max_bindings, long max_lifetime_sec);
/* SipLocationCompact: the journal is rewritten once it holds more than
 * this many lines and four times the bindings (default 10000).  Returns
 * an error message or NULL.  _reset: back to the default (each reading
 * of the configuration). */
const char *sip_location_set_compact(const char *arg);

/* Several engines: a replica text (sip_location_replica_text, or a SYNC
 * batch starting with 'mark' when not NULL) cut at line ends into pieces
 * of at most 'max' bytes that fit one hand-over datagram; a piece that
 * starts inside an AoR starts with "C aor", and each starts with 'mark'
 * when the text did.  Applied in order they give the whole state. */
#define SIP_LOCATION_REPLICA_PIECE 16000
apr_array_header_t *sip_location_replica_pieces(apr_pool_t *p, const char *text,
                                                const char *mark, apr_size_t max);
void sip_location_compact_reset(void);

/* ---- the asynchronous interface (the registrar uses only this) ---- */

/* One REGISTER's worth of changes (RFC 3261 §10.3 steps 6-8). */
typedef struct sip_reg_change {
    const char *aor;
    const char *call_id;
    apr_uint32_t cseq;
    int star;                       /* "Contact: *": remove every binding */
    int max_contacts;               /* SipMaxContacts: more bindings after the change -> 403 */
    apr_array_header_t *bindings;   /* sip_binding_t; expires 0 removes */

    /* draft-lennox-sip-reg-payload §4.1: script changes made with the
     * bindings, all or nothing (sip_script_store.h) */
    const apr_array_header_t *script_ops;   /* sip_script_op_t, or NULL */
    apr_time_t if_unmodified_since;         /* 0 = none; else 412 when a script an op
                                               touches is newer (§3.3) */
    apr_size_t max_script_total;            /* SipScriptUploadMaxTotal: 413 beyond; 0 = none */
    int want_scripts;                       /* report the AoR's scripts after the change */
} sip_reg_change_t;

/* status 0, 500 (out of order), 403 (the AoR would have more than
 * max_contacts bindings) or 503 (the memory store holds SipMaxBindings);
 * nothing is changed unless it is 0; 'current' holds the bindings after the
 * change (sip_binding_t *, best q first), or NULL for a fetch of an AoR
 * never registered.  Everything is allocated in the caller's pool, which
 * must live until the call; the call may come at once (memory store) or
 * later from the event loop (database store). */
typedef void (*sip_location_cb)(void *baton, int status, apr_array_header_t *current);

/* The answer to a register: as sip_location_cb, plus the AoR's scripts
 * after the change (sip_script_t *) when chg->want_scripts, else NULL.
 * status may also be 412 or 413 (sip_script_check), and then nothing is
 * changed either. */
typedef void (*sip_location_reg_cb)(void *baton, int status, apr_array_header_t *current,
                                    apr_array_header_t *scripts);

void sip_location_register(apr_pool_t *p, const sip_reg_change_t *chg, sip_location_reg_cb cb,
                           void *baton);

/* The scripts of 'aor' (sip_script_t *; an empty array when none); status
 * 0 or 500. */
typedef void (*sip_location_scripts_cb)(void *baton, int status, apr_array_header_t *scripts);
void sip_location_fetch_scripts(apr_pool_t *p, const char *aor, sip_location_scripts_cb cb,
                                void *baton);
void sip_location_fetch(apr_pool_t *p, const char *aor, sip_location_cb cb, void *baton);

/* Keep bindings in a database through mod_dbd (DBDriver/DBDParams of
 * 's'), shared by every server using it, instead of memory + journal.
 * Called in the engine before sip_location_init. */
void sip_location_use_dbd(server_rec *s);
/* Is the mod_dbd store in use? */
int sip_location_is_dbd(void);

/* ---- the memory store ---- */

/* Current bindings of 'aor' (sip_binding_t *), best q first; NULL when the
 * AoR was never registered, an empty array when it has expired. */
apr_array_header_t *sip_location_lookup(apr_pool_t *p, const char *aor);

/* Add or refresh one binding (expires 0 removes it). */
void sip_location_set(const sip_binding_t *b);
void sip_location_remove(const char *aor, const char *contact);
void sip_location_remove_all(const char *aor);

apr_size_t sip_location_count(void);

/* ---- replicas (several engines; memory store only) ----
 * The home engine of an AoR sends its state after each change
 * (SIP_HO_REPLICA): "A aor" and a B line per binding, the journal's
 * format with the flow as a fifteenth field.  The others apply it
 * without journaling. */
const char *sip_location_replica_text(apr_pool_t *p, const char *aor);
void sip_location_replica_apply(const char *text, apr_size_t len);
/* Every AoR this engine is home of (const char *), for a SIP_HO_SYNC. */
apr_array_header_t *sip_location_homed_aors(apr_pool_t *p);
/* A restarted home engine got its bindings back from the journal, which
 * keeps no flow: the AoRs homed at 'home' (const char *), sent to it by
 * a peer; at the home, an AoR it knows takes only the flows, into the
 * same registrations (Call-ID and CSeq); one it does not know (no journal,
 * SipLocationFile none) takes the peer's whole copy. */
apr_array_header_t *sip_location_flow_aors(apr_pool_t *p, int home);
void sip_location_replica_flows(const char *text, apr_size_t len);

/* ---- flows (RFC 5626 §5.3, RFC 7118 §5) ---- */

/* How a binding is reached: over its connection, at its Contact, or not
 * at all.  'flow_open' says whether b->flow names an open connection.
 * WS/WSS: only over the flow (the Contact host is made up, RFC 7118 §5).
 * TLS: over the flow, nothing once it closed (reconnecting to a Contact
 * with a client certificate the phone never had would fail anyway).
 * TCP: over the flow when the Contact says tcp or nothing, else at the
 * Contact; once it closed, at the Contact unless it has ;ob (RFC 5626
 * §5.4: the UA said it can only be reached over its flows).  UDP: at the
 * Contact, unless that names a WebSocket transport. */
/* SIP_REACH_SOURCE: at b->received, the address the REGISTER came from
 * (a Contact behind NAT that names an address we cannot reach). */
typedef enum { SIP_REACH_CONTACT, SIP_REACH_FLOW, SIP_REACH_NONE, SIP_REACH_SOURCE } sip_reach_t;
sip_reach_t sip_binding_reach(apr_pool_t *p, const sip_binding_t *b, int flow_open);

/* NAT handling (SipNatRouting, docs/nat.md).  AUTO is sip_binding_reach:
 * a UDP binding goes to its source when its Contact is a private,
 * loopback, link-local or CGNAT address literal other than the source, or
 * has ;ob, or is an outbound flow (+sip.instance and reg-id); a connection
 * whose flow closed is not used when its Contact is such an address.
 * ALWAYS: every UDP binding at its source, no connection redialled.  OFF:
 * as before NAT handling (the Contact, ;ob on TCP excepted).  A binding
 * registered through proxies (Path, RFC 3327) is reached through them:
 * CONTACT, whatever the mode. */
enum { SIP_NAT_AUTO, SIP_NAT_ALWAYS, SIP_NAT_OFF };
sip_reach_t sip_binding_reach_mode(apr_pool_t *p, const sip_binding_t *b, int flow_open,
                                   int nat_mode);
/* Is 'host' (an address literal, IPv6 with or without brackets) private
 * (RFC 1918, RFC 4193), loopback, link-local, CGNAT (RFC 6598) or
 * unspecified: an address a Contact behind NAT names?  0 for names. */
int sip_addr_is_private(const char *host);

/* What names a binding (RFC 5626 §6): (AoR, +sip.instance, reg-id) when
 * it has an instance, else its Contact URI as §19.1.4 compares it. */
const char *sip_binding_identity(apr_pool_t *p, const sip_binding_t *b);

#endif
