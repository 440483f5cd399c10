/* The mod_dbd location store (sip_location_dbd.c): what it shares with the
 * memory store in sip_location.c, its directives (mod_sip.c) and the drop
 * of a cached AoR (the replica code).  Everyone else uses sip_location.h. */
#ifndef SIP_LOCATION_DBD_H
#define SIP_LOCATION_DBD_H

#include "sip_location.h"

/* sip_location.c: check one REGISTER against its AoR's bindings (500, 403
 * or 0; *added = bindings created less removed), and the best-q-first
 * order of bindings (qsort over sip_binding_t *). */
int sip_location_reg_check(apr_pool_t *p, const apr_array_header_t *existing,
                           const sip_reg_change_t *chg, long *added);
int sip_location_by_q(const void *a, const void *b);

/* sip_location_dbd.c: is SipLocation dbd in use (sip_location_use_dbd
 * called); start its thread in the engine; the three asynchronous calls
 * of sip_location.h, answered from the event loop. */
int sip_location_dbd_on(void);
apr_status_t sip_location_dbd_start(sip_loop_t *loop, apr_pool_t *p);
void sip_location_dbd_register(apr_pool_t *p, const sip_reg_change_t *chg, int announce,
                               sip_location_reg_cb cb, void *baton);
void sip_location_dbd_fetch_scripts(apr_pool_t *p, const char *aor, sip_location_scripts_cb cb,
                                    void *baton);
void sip_location_dbd_fetch(apr_pool_t *p, const char *aor, sip_location_cb cb, void *baton);

/* Another engine changed 'aor': forget what the cache holds of it (and let
 * no read already under way put it back).  The engine's loop only; a no-op
 * when SipLocation dbd is not in use. */
void sip_location_dbd_invalidate(const char *aor);
/* Several engines (the replica code): the flows of 'chg', stored by the
 * AoR's home engine, kept here too (flows live in memory, not in the
 * database); "star" forgets the AoR's. */
void sip_location_dbd_flows(apr_pool_t *p, const sip_reg_change_t *chg);

/* sip_location.c, several engines: the state of an AoR a change left
 * ('announce' above) as replica lines added to 'lines', and those of a
 * batch sent to the other engines at once, before the answers go. */
void sip_location_dbd_announce(apr_pool_t *p, apr_array_header_t *lines, const char *aor,
                               const apr_array_header_t *current);
void sip_location_dbd_announce_send(apr_pool_t *p, const apr_array_header_t *lines);

/* SipLocationBatch (changes per transaction), SipLocationNotify (the
 * PostgreSQL channel, or "off" -> ""), SipLocationCacheTTL (seconds or
 * NNNms -> ms): parse 'arg' of directive 'name' into its field; NULL or
 * the error. */
#define SIP_LOC_DEFAULT_BATCH 256
#define SIP_LOC_DEFAULT_CHANNEL "sip_location"
#define SIP_LOC_CACHE_MAX 100000    /* AoRs in the cache; beyond, it starts afresh */
const char *sip_location_dbd_directive(const char *name, const char *arg, int *batch,
                                       const char **notify, int *ttl_ms);

#endif
