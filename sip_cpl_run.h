/* Running CPL scripts (RFC 3880): the interpreter.  Pure logic over a
 * compiled script (sip_cpl.h) and a received request (sip_message.h): it
 * walks switches and location modifiers itself, and asks its host (the
 * engine glue, sip_cpl_exec.c, or a unit test) for everything that takes
 * time or touches the outside: lookups, proxying, answers, log, mail.
 * A run is a small state machine: sip_cpl_run_start() walks until the
 * script ends or waits for the host (lookup, proxy), and the host's
 * *_done() call resumes it.  Nothing here blocks or does I/O. */
#ifndef SIP_CPL_RUN_H
#define SIP_CPL_RUN_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "apr_time.h"
#include "sip_message.h"

typedef struct sip_cpl_script sip_cpl_script_t;     /* sip_cpl.h */
typedef struct sip_cpl_run sip_cpl_run_t;

/* Which top-level action runs (RFC 3880 §2.3): <incoming> for calls to
 * the script's owner, <outgoing> for calls the owner places. */
typedef enum { SIP_CPL_INCOMING = 0, SIP_CPL_OUTGOING = 1 } sip_cpl_dir_t;

/* One member of the location set (RFC 3880 §5). */
typedef struct sip_cpl_location {
    const char *uri;
    int q1000;                  /* priority * 1000 (0..1000); 1000 when none given */
} sip_cpl_location_t;

typedef enum {
    SIP_CPL_PARALLEL = 0,
    SIP_CPL_SEQUENTIAL,
    SIP_CPL_FIRST_ONLY
} sip_cpl_ordering_t;

/* What a <proxy> asks of the host (RFC 3880 §6.1). */
typedef struct sip_cpl_proxy_req {
    const apr_array_header_t *locations;    /* sip_cpl_location_t, best priority first,
                                               never empty */
    int timeout_sec;                        /* default 20 */
    int recurse;                            /* follow 3xx Contacts (default yes) */
    sip_cpl_ordering_t ordering;
} sip_cpl_proxy_req_t;

/* How a proxy attempt ended when no 2xx came (RFC 3880 §6.1 outputs). */
typedef enum {
    SIP_CPL_PX_BUSY = 1,        /* 486 or 600 was the best response */
    SIP_CPL_PX_NOANSWER,        /* timeout, or 408/480 (no final response in time) */
    SIP_CPL_PX_REDIRECTION,     /* a 3xx was the best response (recurse="no") */
    SIP_CPL_PX_FAILURE          /* any other final response */
} sip_cpl_px_result_t;

typedef enum {
    SIP_CPL_LOOKUP_SUCCESS = 1,
    SIP_CPL_LOOKUP_NOTFOUND,
    SIP_CPL_LOOKUP_FAILURE
} sip_cpl_lookup_result_t;

/* How a run ended (the host's end() callback). */
typedef enum {
    /* A signalling action answered (reject, redirect, a proxy that got a
     * 2xx, which the host already sent upstream): nothing more to do. */
    SIP_CPL_END_ANSWERED = 1,
    /* A proxy ended without 2xx and the script has no output for that
     * result: the host sends the best response it received upstream
     * (RFC 3880 §10). */
    SIP_CPL_END_PROXY_RESPONSE,
    /* The script ended without a signalling action (§10): the host proxies
     * to 'locations' when it is not empty, else it goes on as if there had
     * been no script (for <incoming>: the next routing step; for
     * <outgoing>: the call proceeds to its destination). */
    SIP_CPL_END_DEFAULT,
    /* A run-time failure (an unknown lookup source is not one: it takes
     * the failure output): the host logs 'why' naming the script and
     * 'node', counts it, and falls back to the default handling as
     * SIP_CPL_END_DEFAULT with an empty location set. */
    SIP_CPL_END_FAILED
} sip_cpl_end_t;

/* The host: everything slow or external.  Calls that take time (lookup,
 * proxy) are answered later with sip_cpl_lookup_done() or
 * sip_cpl_proxy_done(), maybe before they return (a memory store).
 * 'baton' is the host's own. */
typedef struct sip_cpl_host {
    /* <lookup source=...> (§5.2): source "registration" means the
     * registrar's bindings of the script's owner (the host knows it).  Any
     * other source the host does not support: answer FAILURE at once. */
    void (*lookup)(void *baton, sip_cpl_run_t *run, const char *source, int timeout_sec);
    /* <proxy> (§6.1): fork to the locations; on a 2xx, send it upstream and
     * answer SIP_CPL_PX success through sip_cpl_proxy_done(run, 0, ...);
     * otherwise keep the best response and report how it ended. */
    void (*proxy)(void *baton, sip_cpl_run_t *run, const sip_cpl_proxy_req_t *req);
    /* <redirect> (§6.2): 302 (301 when permanent) with the locations as
     * Contacts, q from their priority. */
    void (*redirect)(void *baton, const apr_array_header_t *locations, int permanent);
    /* <reject> (§6.3): the status as a number (the names busy=486,
     * notfound=404, reject=603, error=500 already mapped) and the reason
     * phrase (NULL: the usual one). */
    void (*reject)(void *baton, int status, const char *reason);
    /* <log name comment> (§7.2): name NULL means the default log. */
    void (*log)(void *baton, const char *name, const char *comment);
    /* <mail url> (§7.1): never blocks; failures are the host's to log. */
    void (*mail)(void *baton, const char *url);
    /* The run is over; 'locations' is the location set then
     * (sip_cpl_location_t, maybe empty); for SIP_CPL_END_FAILED, 'node'
     * names the element ("proxy", "time-switch", ...) and 'why' says what
     * went wrong.  The run must not be used after this. */
    void (*end)(void *baton, sip_cpl_end_t how, const apr_array_header_t *locations,
                const char *node, const char *why);
} sip_cpl_host_t;

/* 1 when the script has the top-level action 'dir'. */
int sip_cpl_script_has(const sip_cpl_script_t *sc, sip_cpl_dir_t dir);

/* Start running the <incoming> or <outgoing> part of 'sc' for 'req' (which
 * must outlive the run) at time 'now' (time-switch; a test passes a fixed
 * clock).  'owner' is the script owner's address-of-record.  Everything
 * is allocated in 'p'.  Walks until the script ends (host->end) or waits
 * for the host.  The recursion limit of §8 (sub) and a limit on nodes
 * visited hold whatever the script (it was validated at compile time). */
sip_cpl_run_t *sip_cpl_run_start(apr_pool_t *p, const sip_cpl_script_t *sc, sip_cpl_dir_t dir,
                                 const sip_msg_t *req, const char *owner, apr_time_t now,
                                 const sip_cpl_host_t *host, void *baton);

/* Answer to host->lookup: 'locations' (sip_cpl_location_t) for SUCCESS. */
void sip_cpl_lookup_done(sip_cpl_run_t *run, sip_cpl_lookup_result_t result,
                         const apr_array_header_t *locations);

/* Answer to host->proxy: 'result' 0 when a 2xx went upstream (the run ends
 * as SIP_CPL_END_ANSWERED), else how it failed; 'status' the best final
 * status; 'contacts' the Contact URIs of the best 3xx (REDIRECTION). */
void sip_cpl_proxy_done(sip_cpl_run_t *run, int result, int status,
                        const apr_array_header_t *contacts);

/* The host gives up on a waiting run (the caller cancelled): no callback
 * follows. */
void sip_cpl_run_abort(sip_cpl_run_t *run);

/* The script's name for log lines (sip_cpl_compile's 'name'). */
const char *sip_cpl_run_script_name(const sip_cpl_run_t *run);

#endif
