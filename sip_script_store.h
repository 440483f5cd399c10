/* Users' scripts uploaded in REGISTER bodies (draft-lennox-sip-reg-payload
 * §4.1, §5): at most one per (address-of-record, disposition type), kept
 * until replaced or removed, whatever happens to the bindings.
 *
 * Two stores, chosen with the location store (sip_location.h):
 *  - files under SipScriptStore, one directory per address-of-record (named
 *    by a hash, never by the AoR's text), one file per script holding its
 *    metadata and body, written to a temporary file and renamed;
 *  - with SipLocation dbd, the table sip_scripts of the same database, so a
 *    script uploaded on one node runs on every node sharing it.
 * The registrar changes scripts only through sip_location_register(), which
 * applies them together with the bindings, all or nothing. */
#ifndef SIP_SCRIPT_STORE_H
#define SIP_SCRIPT_STORE_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "apr_time.h"

/* Disposition types this server stores (§3.1); anything else gets 415. */
#define SIP_SCRIPT_SIP_CGI "sip-cgi"
#define SIP_SCRIPT_CPL     "script"

typedef struct sip_script {
    const char *aor;
    const char *type;           /* disposition type, lower case */
    const char *content_type;   /* media type as uploaded ("application/x-perl") */
    const char *body;           /* may be empty (an empty script is not "no script") */
    apr_size_t len;
    apr_time_t mtime;           /* modification time, a whole number of seconds */
} sip_script_t;

/* One change asked for by a REGISTER. */
typedef struct sip_script_op {
    const char *type;           /* disposition type, lower case */
    int remove;                 /* action=remove (else store) */
    const char *content_type;   /* store only */
    const char *body;
    apr_size_t len;
} sip_script_op_t;

/* SHA-1 of an AoR in hex: the name of its directories (store, working
 * directory), so no AoR text ever becomes a path. */
const char *sip_script_aor_hash(apr_pool_t *p, const char *aor);

/* ---- the file store (memory location store) ---- */

/* Parent, before the engine starts: the directory (made if missing and
 * given to 'uid' when not -1).  Returns APR_SUCCESS or why not. */
apr_status_t sip_script_store_prepare(apr_pool_t *p, const char *dir, long uid, long gid);

/* Engine: use 'dir' (NULL: no file store). */
void sip_script_store_open(const char *dir);

/* Every script of 'aor' (sip_script_t *), in 'p'; *out is an empty array
 * when there is none.  APR_SUCCESS or the I/O error (logged). */
apr_status_t sip_script_store_list(apr_pool_t *p, const char *aor, apr_array_header_t **out);

/* The script of one type, or *out NULL. */
apr_status_t sip_script_store_get(apr_pool_t *p, const char *aor, const char *type,
                                  sip_script_t **out);

/* Checks of a change against what is stored ('stored': sip_script_t *),
 * before anything is written: 413 when the user's scripts would exceed
 * max_total bytes (0 = no limit), else 412 when if_unmodified_since (0 = none) is
 * older than a stored script of a type the change touches (§3.3; no
 * stored script counts as unmodified); else 0. */
int sip_script_check(const apr_array_header_t *stored, const apr_array_header_t *ops,
                     apr_time_t if_unmodified_since, apr_size_t max_total);

/* The modification time of the scripts a change writes: 'now' in whole
 * seconds, but later than every stored script the change replaces. */
apr_time_t sip_script_next_mtime(const apr_array_header_t *stored, const apr_array_header_t *ops,
                                 apr_time_t now);

/* Apply the change to the file store with modification time 'now'
 * (truncated to seconds).  On failure (500) nothing is changed: every file
 * is written before any is renamed into place. */
int sip_script_store_apply(apr_pool_t *p, const char *aor, const apr_array_header_t *ops,
                           apr_time_t now);

/* ---- the database store: called by the location store's database
 * thread, inside the REGISTER's transaction ---- */
#include "apr_dbd.h"

int sip_script_db_schema(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h);
/* 0 with *out (sip_script_t *), or 500 */
int sip_script_db_list(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h, const char *aor,
                       apr_array_header_t **out);
/* 0, or 500 (then the caller's transaction must not commit) */
int sip_script_db_apply(apr_pool_t *p, const apr_dbd_driver_t *d, apr_dbd_t *h, const char *aor,
                        const apr_array_header_t *ops, apr_time_t now);

/* A stored modification time: 'now' cut to whole seconds (SIP-date has no
 * more), so a downloaded date re-sent in If-Unmodified-Since matches. */
apr_time_t sip_script_mtime(apr_time_t now);

#endif
