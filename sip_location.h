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
} sip_binding_t;

/* Open the store; 'journal_fd' is a read/write descriptor opened by the
 * httpd parent (or -1 for memory only).  Replays and compacts it. */
apr_status_t sip_location_init(sip_loop_t *loop, apr_pool_t *p, int journal_fd);

/* Parent, before the engine starts: the most bindings the memory store
 * keeps (SipMaxBindings; 0 = no limit), and the longest lifetime any vhost
 * grants (the largest SipMaxExpires), to which a journal line promising
 * more is cut on replay. */
void sip_location_configure(apr_size_t max_bindings, long max_lifetime_sec);

/* ---- the asynchronous interface (the registrar uses only this) ---- */

/* One REGISTER's worth of changes (RFC 3261 §10.3 steps 6-8). */
typedef struct sip_reg_change {
    const char *aor;
    const char *call_id;
    apr_uint32_t cseq;
    int star;                       /* "Contact: *": remove every binding */
    int max_contacts;               /* SipMaxContacts: more bindings after the change -> 403 */
    apr_array_header_t *bindings;   /* sip_binding_t; expires 0 removes */
} sip_reg_change_t;

/* status 0, 500 (out of order), 403 (the AoR would have more than
 * max_contacts bindings) or 503 (the memory store holds SipMaxBindings);
 * nothing is changed unless it is 0; 'current' holds the bindings after the
 * change (sip_binding_t *, best q first), or NULL for a fetch of an AoR
 * never registered.  Everything is allocated in the caller's pool, which
 * must live until the call; the call may come at once (memory store) or
 * later from the event loop (database store). */
typedef void (*sip_location_cb)(void *baton, int status, apr_array_header_t *current);

void sip_location_register(apr_pool_t *p, const sip_reg_change_t *chg, sip_location_cb cb,
                           void *baton);
void sip_location_fetch(apr_pool_t *p, const char *aor, sip_location_cb cb, void *baton);

/* Keep bindings in a database through mod_dbd (DBDriver/DBDParams of
 * 's'), shared by every server using it, instead of memory + journal.
 * Called in the engine before sip_location_init. */
void sip_location_use_dbd(server_rec *s);

/* ---- the memory store ---- */

/* Current bindings of 'aor' (sip_binding_t *), best q first; NULL when the
 * AoR was never registered, an empty array when it has expired. */
apr_array_header_t *sip_location_lookup(apr_pool_t *p, const char *aor);

/* Add or refresh one binding (expires 0 removes it). */
void sip_location_set(const sip_binding_t *b);
void sip_location_remove(const char *aor, const char *contact);
void sip_location_remove_all(const char *aor);

apr_size_t sip_location_count(void);

#endif
