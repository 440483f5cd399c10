/* The highest digest nonce-count seen per nonce (RFC 2617 §3.2.2.1,
 * RFC 7616 §3.4): a credential whose nonce-count does not grow is a
 * replay.  The table is shared by every engine and outlives an engine's
 * restart: the parent maps it (anonymous shared memory in its process
 * pool, as sip_stats.c) before the engines are forked, so a request
 * accepted at one engine cannot be replayed at another, nor at an engine
 * restarted since (docs/architecture.md, "Several engines").
 *
 * Slots are keyed by a 64-bit hash of the nonce and grouped in buckets of
 * SIP_NONCE_BUCKET; a nonce lives in one of its two buckets (a new one in
 * the emptier), each guarded by a process-shared robust mutex (an engine
 * killed while holding it does not block the others: EOWNERDEAD).  A slot whose nonce has gone
 * stale is free for another: a stale nonce is refused before its count
 * is looked at.  With one engine (or none: unit tests, fuzzers) it is the
 * same table, in memory only one process uses. */
#ifndef SIP_NONCE_H
#define SIP_NONCE_H

#include "apr_pools.h"
#include "apr_time.h"

#define SIP_NONCE_BUCKET 16
/* SipNonceCounts: slots (nonces whose counts are remembered at once) */
#define SIP_NONCE_DEFAULT_SLOTS 262144
#define SIP_NONCE_MIN_SLOTS SIP_NONCE_BUCKET
#define SIP_NONCE_MAX_SLOTS 16777216

typedef enum {
    SIP_NC_FRESH,   /* higher than any count seen for the nonce: recorded */
    SIP_NC_REPLAY,  /* equal to or lower than one seen: refuse */
    SIP_NC_FULL     /* a new nonce and no free slot in its buckets: refuse,
                     * rather than forget a live nonce's count */
} sip_nc_verdict_t;

/* Find (across graceful restarts) or make the table of 'slots' slots
 * (rounded up to whole buckets) in pool 'pp'; it is the one
 * sip_nonce_count uses from now on, until 'pp' is destroyed.  A table of
 * another size in 'pp' is replaced, its live counts copied.  Parent:
 * before forking the engines, in the process pool.  This process stops
 * using the table when 'life' is cleared: pconf in httpd (the module's
 * code is unloaded with it, before the process pool ends), or 'pp'. */
apr_status_t sip_nonce_attach(apr_pool_t *pp, apr_pool_t *life, apr_size_t slots);

/* Whether a table is attached (the parent's, or one made at engine start
 * when there is none). */
int sip_nonce_attached(void);

/* Slots of the attached table (0 when none). */
apr_size_t sip_nonce_slots(void);

/* Check and record nonce-count 'nc' of 'nonce', whose nonce goes stale at
 * 'stale_at'; 'now' decides which slots are free.  Without a table every
 * count is SIP_NC_FULL (refused). */
sip_nc_verdict_t sip_nonce_count(const char *nonce, apr_uint64_t nc, apr_time_t stale_at,
                                 apr_time_t now);

/* SipNonceCounts: NULL, or what is wrong with 'arg'. */
const char *sip_nonce_parse_slots(const char *arg, long *slots);

#endif
