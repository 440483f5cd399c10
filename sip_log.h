/* Logging helpers: the module index for ap_log_* and libosip2's trace hook,
 * and rate-limited log lines for whatever a remote sender can trigger. */
#ifndef SIP_LOG_H
#define SIP_LOG_H

#include "httpd.h"
#include "http_log.h"
#include "http_main.h"    /* ap_server_conf */
#include "util_cfgtree.h"

#ifdef APLOG_USE_MODULE
APLOG_USE_MODULE(sip);
/* Whether any access log can be written (sip_request_log builds nothing
 * otherwise): 0 when the log_transaction hooks in 'hooks' (an array of
 * ap_LINK_log_transaction_t) are only mod_logio's and mod_log_config's and
 * no CustomLog, TransferLog or CookieLog stands in 'conftree'. */
int sip_log_access_wanted(const apr_array_header_t *hooks, const ap_directive_t *conftree);

#endif

/* Route libosip2's traces (which default to stdout) into the error log. */
void sip_log_init_osip(server_rec *s);

/* ---- rate-limited lines ----
 *
 * A line that a remote sender can cause (a refused request, a bad message,
 * a connection over a limit) must not let that sender fill the error log.
 * For one kind of line (one sip_log_rate_t), at most 'burst' lines per
 * source and per 'kind' (e.g. the status code) go through in each interval,
 * and at most 10 x burst in all.  The first line held back says so once;
 * the next line let through for that source says how many were held back.
 * The state is a fixed table, so spoofed UDP sources cannot grow memory;
 * sources that collide in it share a slot (the newcomer takes it over).
 *
 * Declare one per kind of line, statically:
 *     static sip_log_rate_t refusals = SIP_LOG_RATE_INIT("refusals");
 *     sip_log_limited(&refusals, ip, 403, APLOG_NOTICE, s, "sip: 403 ...", ...);
 * The engine is single-threaded; an MPM child using one would need a lock.
 */
#define SIP_LOG_RATE_SLOTS 256

typedef struct sip_log_rate_slot {
    char source[48];            /* INET6_ADDRSTRLEN + 2 */
    int kind;
    apr_time_t start;           /* of this source's current interval */
    unsigned lines;             /* let through in it */
    unsigned held;              /* held back in it */
    unsigned held_before;       /* held back in an earlier one, not yet reported */
} sip_log_rate_slot_t;

typedef struct sip_log_rate {
    const char *what;           /* "refused requests": named in the notices */
    apr_time_t start;           /* interval of the all-sources cap */
    unsigned lines, held, held_before;
    sip_log_rate_slot_t slot[SIP_LOG_RATE_SLOTS];
} sip_log_rate_t;

#define SIP_LOG_RATE_INIT(name) { .what = (name) }

/* SipLogRateLimit: lines per source and kind per interval (0: no limit). */
void sip_log_rate_setup(int burst, apr_interval_time_t interval);

/* Log like ap_log_error() unless 'rate' holds the line back for 'source'
 * (an address as text) and 'kind'.  Returns 1 when the line was written. */
#define sip_log_limited(rate, source, kind, level, s, ...) \
    sip_log_limited_(APLOG_MARK, (rate), (source), (kind), (level), (s), __VA_ARGS__)
int sip_log_limited_(const char *file, int line, int module_index, sip_log_rate_t *rate,
                     const char *source, int kind, int level, const server_rec *s,
                     const char *fmt, ...) __attribute__((format(printf, 9, 10)));

/* Whether any access log can be written (sip_request_log builds nothing
 * otherwise): 0 when the log_transaction hooks in 'hooks' (an array of
 * ap_LINK_log_transaction_t) are only mod_logio's and mod_log_config's and
 * no CustomLog, TransferLog or CookieLog stands in 'conftree'. */
int sip_log_access_wanted(const apr_array_header_t *hooks, const ap_directive_t *conftree);

#endif
