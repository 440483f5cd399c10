/* Counters for mod_status (/server-status): what the SIP engines are
 * doing now and have done since httpd started.
 *
 * The counters live in an anonymous shared memory segment that the httpd
 * parent creates once (in the process pool, so totals survive graceful
 * restarts); the engines and the MPM children inherit it when they are
 * forked.  The segment holds one sip_stats_t per engine (SIP_ENGINES_MAX
 * slots, SipEngines used): each engine writes only its own slot through
 * 'sip_stats' (the parent only into a dead engine's slot, while no engine
 * runs there), so there are no locks: an increment is a plain memory
 * write.  Two engines never share a slot: on a restart the parent waits
 * for the old one to exit (APR_KILL_AFTER_TIMEOUT) before it forks the
 * next.  The MPM children only read, and show the sums.  Until the segment
 * is attached, 'sip_stats' points at a private zeroed struct, so every
 * layer (and the unit tests) can count without checking. */
#ifndef SIP_STATS_H
#define SIP_STATS_H

#include "apr_pools.h"
#include "apr_time.h"

/* One FastCGI pool (sip_fcgi_pool.c): its address or program, and what
 * it is doing. */
#define SIP_STATS_FCGI 8
typedef struct sip_stats_fcgi {
    char name[112];             /* "" = slot unused */
    apr_uint32_t workers;       /* processes (SipFastCGI) or open connections (Connect) */
    apr_uint32_t busy;          /* requests being answered */
    apr_uint32_t queued;        /* requests waiting for a worker */
    apr_uint32_t pad;
    apr_uint64_t restarts;      /* workers that died unasked and were replaced */
    apr_uint64_t requests;      /* requests accepted */
} sip_stats_fcgi_t;

/* "Now" values: the engine keeps them equal to its own counts, and they
 * start again from zero with each engine. */
typedef struct sip_stats_gauges {
    apr_uint64_t txns;          /* server transactions */
    apr_uint64_t ctxns;         /* client transactions */
    apr_uint64_t scripts;       /* script processes running */
    apr_uint64_t bindings;      /* registrations in the memory location store */
    apr_uint64_t tcp;           /* open SIP TCP connections */
    apr_uint64_t ws;            /* open WebSocket connections (WS and WSS; counted in tcp too) */
    apr_uint64_t tls;           /* of those, TLS ones (sip_tls.c) */
    apr_uint64_t proxies;       /* requests whose proxying state is held (sip_proxy.c) */
} sip_stats_gauges_t;

typedef struct sip_stats {
    apr_uint32_t magic;         /* SIP_STATS_MAGIC and the struct size, so a */
    apr_uint32_t size;          /* segment left by another build is not reused */

    apr_uint64_t engine_pid;    /* 0 while no engine runs */
    apr_time_t engine_start;
    apr_uint64_t engine_starts; /* the first start and every restart */
    apr_uint64_t engine_deaths; /* engines that died and were restarted (parent) */

    sip_stats_gauges_t now;

    apr_uint64_t txns;          /* server transactions created */
    apr_uint64_t ctxns;         /* client transactions created */
    apr_uint64_t ctxn_timeouts; /* client transactions ended by timer B or F */
    apr_uint64_t finals[5];     /* first final response of a server transaction, 2xx..6xx */

    apr_uint64_t scripts;               /* script processes started */
    apr_uint64_t script_timeouts;       /* killed after SipScriptTimeout */
    apr_uint64_t script_crashes;        /* killed by a signal, or non-zero exit without action */
    apr_uint64_t script_bad_output;     /* malformed output or above SipScriptMaxOutput */
    apr_uint64_t script_start_failures; /* could not be started */
    apr_uint64_t scripts_refused;       /* not started: SipMaxScripts reached (503) */

    apr_uint64_t registers_ok;  /* REGISTERs the registrar answered 200 */

    /* CPL (sip_cpl_exec.c) */
    apr_uint64_t cpl_runs;          /* scripts started (incoming and outgoing parts) */
    apr_uint64_t cpl_failures;      /* run-time failures, and invalid scripts skipped */
    apr_uint64_t cpl_proxies;       /* <proxy> actions carried out */
    apr_uint64_t cpl_mails;         /* <mail> actions handed to SipCplMail */
    apr_uint64_t cpl_mails_refused; /* <mail> not sent: Off, rate limit, or failed to start */
    /* URI-list services (sip_explode_run.c) */
    apr_uint64_t explosions;        /* URI-list requests accepted and fanned out */
    apr_uint64_t explode_requests;  /* requests sent for them (one per target or contact) */
    apr_uint64_t explode_refused;   /* refused by policy: limits, rate, methods, bad lists */
    apr_uint64_t explode_consent;   /* refused with 470: a target had not consented */

    apr_uint64_t msgs_in[5];    /* by sip_tp_kind_t: UDP, TCP, TLS, WS, WSS */
    apr_uint64_t msgs_out[5];
    apr_uint64_t tcp_conns;     /* TCP connections accepted or opened */
    apr_uint64_t bad_msgs;      /* unparsable messages (answered 4xx or dropped) */
    apr_uint64_t send_errors;   /* messages the transport failed to send */

    apr_uint64_t tcp_refused;   /* TCP connections closed at once: per-address limit, or
                                 * SipTcpMaxConnections with none idle to close */
    apr_uint64_t tcp_evicted;   /* idle TCP connections closed for SipTcpMaxConnections */
    apr_uint64_t tcp_msg_timeouts; /* closed: a message not whole within SipTcpMessageTimeout */

    apr_uint64_t flows_dead;    /* requests for a user answered 480 at once: every binding's
                                 * connection (flow) was closed (RFC 5626 §5.3) */

    /* WebSocket (sip_transport.c, sip_ws_upgrade.c) */
    apr_uint64_t ws_conns;      /* WebSocket connections served (WS and WSS) */
    apr_uint64_t ws_errors;     /* closed for a protocol error or a size limit (1002, 1009) */
    /* TLS (sip_tls.c): connections accepted or opened, and those whose
     * handshake failed */
    apr_uint64_t tls_conns;
    apr_uint64_t tls_handshake_failures;
    /* FastCGI pools (issue 18): the first SIP_STATS_FCGI of the configuration */
    sip_stats_fcgi_t fcgi[SIP_STATS_FCGI];
    /* STUN on the UDP SIP ports (RFC 5626 §8, sip_stun.c) */
    apr_uint64_t stun_bindings; /* Binding requests answered */
    apr_uint64_t stun_dropped;  /* other STUN-looking datagrams, dropped */
    /* DNS (sip_dns.c, issue 17) */
    apr_uint64_t dns_queries;       /* queries sent to a DNS server */
    apr_uint64_t dns_cache_hits;    /* lookups answered from the cache (or joined to one in flight) */
    apr_uint64_t dns_timeouts;      /* queries no server answered in time */
    apr_uint64_t dns_failures;      /* queries refused, SERVFAIL, malformed */
    /* the hand-over channel between engines (sip_handover.c, issue 19) */
    apr_uint64_t ho_sent;           /* datagrams sent to another engine */
    apr_uint64_t ho_received;       /* datagrams received from another engine */
    apr_uint64_t ho_dropped;        /* not sent: the receiver's channel was full (or too big) */
    /* the mod_dbd location store (sip_location_dbd.c): group commit */
    apr_uint64_t loc_batches;       /* transactions of REGISTER changes committed */
    apr_uint64_t loc_batch_changes; /* the changes they held */
    apr_uint64_t loc_batch_us;      /* their time, from the first statement to the commit */
    /* digest authentication (sip_auth.c, sip_nonce.c) */
    apr_uint64_t auth_replays;      /* credentials refused: their nonce-count did not grow */
    apr_uint64_t nonce_table_full;  /* refused (stale=true): no room for a new nonce's count */
} sip_stats_t;

#define SIP_STATS_MAGIC 0x53495053u     /* "SIPS" */

extern sip_stats_t *sip_stats;

/* Parent (post_config): find or create the segment in 'process_pool' and
 * point sip_stats at its first slot. */
apr_status_t sip_stats_attach(apr_pool_t *process_pool);

/* Engine 'engine's slot (the one private struct while unattached), and
 * the engine process pointing sip_stats at its own, right after fork. */
sip_stats_t *sip_stats_slot(int engine);
void sip_stats_use_slot(int engine);

/* The first 'count' slots added up into 'out': every count summed, FastCGI
 * pools of one name merged; the pid and start are engine 0's,
 * engine_starts counts every engine's restarts (plus one: a graceful
 * restart of N engines is N), and now.bindings is the largest engine's
 * (each holds every binding, its own and the replicas). */
void sip_stats_sum(sip_stats_t *out, int count);

/* Engine, at start-up: a new engine, with its "now" values at zero. */
void sip_stats_engine_started(apr_uint64_t pid, apr_time_t when);

/* Parent: the engine of slot 'st' died; it is being restarted. */
void sip_stats_engine_died(sip_stats_t *st);

/* The counters as text: "SipName: value" lines (SIP_STATS_AUTO, for
 * /server-status?auto) or an HTML section, with a table unless
 * SIP_STATS_NOTABLE. */
#define SIP_STATS_AUTO    1
#define SIP_STATS_NOTABLE 2
/* Engine: FastCGI pools start again with each engine; a pool's slot by
 * its name (NULL when the table is full). */
void sip_stats_fcgi_reset(void);
sip_stats_fcgi_t *sip_stats_fcgi_slot(const char *name);

const char *sip_stats_format(apr_pool_t *p, const sip_stats_t *st, apr_time_t now, int flags);
/* One line (auto: SipEngine<n>Pid, ...Uptime, ...MessagesIn,
 * ...TransactionsTotal) or paragraph per engine of the first 'count'. */
const char *sip_stats_format_engines(apr_pool_t *p, int count, apr_time_t now, int flags);

#endif
