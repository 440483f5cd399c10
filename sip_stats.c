#include "sip_stats.h"
#include "sip_handover.h"

#include <stddef.h>
#include <string.h>

#include "apr_shm.h"
#include "apr_escape.h"
#include "apr_strings.h"
#include "apr_tables.h"

/* Counts go here until the shared segment is attached (and for good in
 * the unit tests). */
static sip_stats_t unattached;
sip_stats_t *sip_stats = &unattached;
static sip_stats_t *slots;      /* the segment: SIP_ENGINES_MAX of them */

#define SHM_KEY "mod_sip_stats"

apr_status_t sip_stats_attach(apr_pool_t *pp)
{
    apr_shm_t *shm = NULL;
    sip_stats_t *st;
    apr_status_t rv;
    int i;

    apr_pool_userdata_get((void **)&shm, SHM_KEY, pp);
    if (shm) {
        st = apr_shm_baseaddr_get(shm);
        if (apr_shm_size_get(shm) >= SIP_ENGINES_MAX * sizeof(*st)
            && st->magic == SIP_STATS_MAGIC && st->size == sizeof(*st)) {
            slots = sip_stats = st;
            return APR_SUCCESS;
        }
        /* Another build's layout (module replaced, then graceful): start
         * afresh rather than show its numbers under our names. */
    }
    rv = apr_shm_create(&shm, SIP_ENGINES_MAX * sizeof(*st), NULL, pp);
    if (rv != APR_SUCCESS)
        return rv;
    st = apr_shm_baseaddr_get(shm);
    memset(st, 0, SIP_ENGINES_MAX * sizeof(*st));
    for (i = 0; i < SIP_ENGINES_MAX; i++) {
        st[i].magic = SIP_STATS_MAGIC;
        st[i].size = sizeof(*st);
    }
    apr_pool_userdata_set(shm, SHM_KEY, apr_pool_cleanup_null, pp);
    slots = sip_stats = st;
    return APR_SUCCESS;
}

sip_stats_t *sip_stats_slot(int engine)
{
    if (!slots || engine < 0 || engine >= SIP_ENGINES_MAX)
        return sip_stats;
    return &slots[engine];
}

void sip_stats_use_slot(int engine)
{
    sip_stats = sip_stats_slot(engine);
}

void sip_stats_sum(sip_stats_t *out, int count)
{
    /* The counters are apr_uint64_t runs between these members. */
    static const struct { apr_size_t from, to; } runs[] = {
        {offsetof(sip_stats_t, now), offsetof(sip_stats_t, fcgi)},
        {offsetof(sip_stats_t, stun_bindings), sizeof(sip_stats_t)},
    };
    apr_uint64_t restarts = 0, bindings = 0;
    int e, f, g;
    apr_size_t r, o;

    memset(out, 0, sizeof(*out));
    for (e = 0; e < (count < 1 ? 1 : count); e++) {
        const sip_stats_t *st = sip_stats_slot(e);

        if (e == 0) {
            out->magic = st->magic;
            out->size = st->size;
            out->engine_pid = st->engine_pid;
            out->engine_start = st->engine_start;
        }
        restarts += st->engine_starts ? st->engine_starts - 1 : 0;
        out->engine_deaths += st->engine_deaths;
        if (st->now.bindings > bindings)
            bindings = st->now.bindings;
        for (r = 0; r < sizeof(runs) / sizeof(runs[0]); r++)
            for (o = runs[r].from; o + sizeof(apr_uint64_t) <= runs[r].to;
                 o += sizeof(apr_uint64_t))
                *(apr_uint64_t *)((char *)out + o) += *(const apr_uint64_t *)((const char *)st + o);
        for (f = 0; f < SIP_STATS_FCGI && st->fcgi[f].name[0]; f++) {
            const sip_stats_fcgi_t *in = &st->fcgi[f];

            for (g = 0; g < SIP_STATS_FCGI && out->fcgi[g].name[0]
                        && strcmp(out->fcgi[g].name, in->name) != 0; g++)
                ;
            if (g == SIP_STATS_FCGI)
                continue;
            memcpy(out->fcgi[g].name, in->name, sizeof(in->name));
            out->fcgi[g].workers += in->workers;
            out->fcgi[g].busy += in->busy;
            out->fcgi[g].queued += in->queued;
            out->fcgi[g].restarts += in->restarts;
            out->fcgi[g].requests += in->requests;
        }
    }
    out->engine_starts = restarts + 1;
    /* Every engine holds the whole location table (its own AoRs and the
     * replicas of the others'), so a binding is counted once: the fullest
     * engine's count, which a restarted engine still replaying is not. */
    out->now.bindings = bindings;
}

void sip_stats_engine_started(apr_uint64_t pid, apr_time_t when)
{
    memset(&sip_stats->now, 0, sizeof(sip_stats->now));
    sip_stats->engine_pid = pid;
    sip_stats->engine_start = when;
    sip_stats->engine_starts++;
}

void sip_stats_engine_died(sip_stats_t *st)
{
    /* Nothing the dead engine held is there any more. */
    memset(&st->now, 0, sizeof(st->now));
    st->engine_pid = 0;
    st->engine_deaths++;
}

void sip_stats_fcgi_reset(void)
{
    memset(sip_stats->fcgi, 0, sizeof(sip_stats->fcgi));
}

sip_stats_fcgi_t *sip_stats_fcgi_slot(const char *name)
{
    int i;

    for (i = 0; i < SIP_STATS_FCGI; i++) {
        sip_stats_fcgi_t *f = &sip_stats->fcgi[i];
        if (!f->name[0]) {
            apr_cpystrn(f->name, name, sizeof(f->name));
            return f;
        }
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

/* FastCGI pools: one line (auto) or row each. */
static void format_fcgi(apr_pool_t *p, const sip_stats_t *st, int html,
                        apr_array_header_t *out)
{
    int i;

    for (i = 0; i < SIP_STATS_FCGI && st->fcgi[i].name[0]; i++) {
        const sip_stats_fcgi_t *f = &st->fcgi[i];
        const char *n = html ? apr_pescape_entity(p, f->name, 0) : f->name;
        *(const char **)apr_array_push(out) = html
            ? apr_psprintf(p, "<p>FastCGI %s: %u workers, %u busy, %u queued, %"
                           APR_UINT64_T_FMT " restarts, %" APR_UINT64_T_FMT " requests</p>\n",
                           n, f->workers, f->busy, f->queued, f->restarts, f->requests)
            : apr_psprintf(p, "SipFastCGIPool: %s workers=%u busy=%u queued=%u restarts=%"
                           APR_UINT64_T_FMT " requests=%" APR_UINT64_T_FMT "\n",
                           n, f->workers, f->busy, f->queued, f->restarts, f->requests);
    }
}

/* ---- rendering ---- */

typedef struct {
    const char *key;    /* NULL: 'label' heads a group */
    const char *label;
    apr_uint64_t v;
} stat_row_t;

const char *sip_stats_format(apr_pool_t *p, const sip_stats_t *st, apr_time_t now, int flags)
{
    apr_uint64_t uptime = st->engine_pid && now > st->engine_start
                          ? (apr_uint64_t)apr_time_sec(now - st->engine_start) : 0;
    const stat_row_t rows[] = {
        {NULL, "Engine", 0},
        {"SipEnginePid", "Engine process id", st->engine_pid},
        {"SipEngineUptime", "Engine uptime (seconds)", uptime},
        {"SipEngineRestarts", "Engine restarts (graceful or after a crash)",
         st->engine_starts ? st->engine_starts - 1 : 0},
        {"SipEngineCrashes", "Engines that died and were restarted", st->engine_deaths},
        {NULL, "Transactions", 0},
        {"SipTransactionsNow", "Server transactions now", st->now.txns},
        {"SipTransactionsTotal", "Server transactions total", st->txns},
        {"SipClientTransactionsNow", "Client transactions now", st->now.ctxns},
        {"SipClientTransactionsTotal", "Client transactions total", st->ctxns},
        {"SipClientTransactionTimeouts", "Client transactions timed out", st->ctxn_timeouts},
        {"SipProxyStatesNow", "Proxied requests whose state is held now (an answered call's "
         "is let go at once)", st->now.proxies},
        {NULL, "Final responses of server transactions", 0},
        {"SipResponses2xx", "2xx", st->finals[0]},
        {"SipResponses3xx", "3xx", st->finals[1]},
        {"SipResponses4xx", "4xx", st->finals[2]},
        {"SipResponses5xx", "5xx", st->finals[3]},
        {"SipResponses6xx", "6xx", st->finals[4]},
        {NULL, "SIP-CGI scripts", 0},
        {"SipScriptsRunning", "Scripts running now", st->now.scripts},
        {"SipScriptsTotal", "Scripts started", st->scripts},
        {"SipScriptsFailed", "Scripts failed (the four below)",
         st->script_timeouts + st->script_crashes + st->script_bad_output
         + st->script_start_failures},
        {"SipScriptTimeouts", "Timed out (SipScriptTimeout)", st->script_timeouts},
        {"SipScriptCrashes", "Crashed (signal, or non-zero exit without output)",
         st->script_crashes},
        {"SipScriptBadOutput", "Bad output (malformed, or above SipScriptMaxOutput)",
         st->script_bad_output},
        {"SipScriptStartFailures", "Could not be started", st->script_start_failures},
        {"SipScriptsRefused", "Not started: SipMaxScripts reached (503)", st->scripts_refused},
        {NULL, "CPL scripts", 0},
        {"SipCplRuns", "CPL scripts run", st->cpl_runs},
        {"SipCplFailures", "Failed at run time, or invalid and skipped", st->cpl_failures},
        {"SipCplProxies", "Proxy actions", st->cpl_proxies},
        {"SipCplMails", "Mails sent (SipCplMail)", st->cpl_mails},
        {"SipCplMailsRefused", "Mails not sent (SipCplMail Off, rate limit, start failure)",
         st->cpl_mails_refused},
        {NULL, "URI-list services (EXPLODE, RFC 5365)", 0},
        {"SipExplosions", "Explosions accepted and fanned out", st->explosions},
        {"SipExplodeRequests", "Requests sent for them (per target, or per registered "
         "contact)", st->explode_requests},
        {"SipExplodeRefused", "Refused by policy (limits, SipExplodeRate, methods, bad lists)",
         st->explode_refused},
        {"SipExplodeConsentRefused", "Refused with 470: a target had not consented",
         st->explode_consent},
        {NULL, "Registrar", 0},
        {"SipRegistrationsNow", "Registered contacts now (memory store)", st->now.bindings},
        {"SipRegistersAccepted", "REGISTER requests accepted (200)", st->registers_ok},
        {"SipLocationBatches", "Transactions of REGISTER changes committed (SipLocation dbd)",
         st->loc_batches},
        {"SipLocationBatchChanges", "Changes they held (per transaction: group commit)",
         st->loc_batch_changes},
        {"SipLocationBatchMicroseconds", "Their time, first statement to commit, in microseconds",
         st->loc_batch_us},
        {"SipFlowsDead", "Requests for a user answered 480 at once: every device's "
         "connection (flow) was closed", st->flows_dead},
        {NULL, "Digest authentication", 0},
        {"SipAuthReplays", "Credentials refused as replays (a nonce-count that did not grow, "
         "at any engine)", st->auth_replays},
        {"SipNonceTableFull", "Credentials challenged again (stale) for want of room in the "
         "nonce-count table (SipNonceCounts)", st->nonce_table_full},
        {NULL, "Transport", 0},
        {"SipUdpMessagesIn", "UDP messages received", st->msgs_in[0]},
        {"SipUdpMessagesOut", "UDP messages sent", st->msgs_out[0]},
        {"SipTcpMessagesIn", "TCP messages received", st->msgs_in[1]},
        {"SipTcpMessagesOut", "TCP messages sent", st->msgs_out[1]},
        {"SipTcpConnectionsNow", "TCP connections open now", st->now.tcp},
        {"SipTcpConnectionsTotal", "TCP connections total", st->tcp_conns},
        {"SipTcpConnectionsRefused", "TCP connections refused (per-address limit, or none "
         "idle to close at SipTcpMaxConnections)", st->tcp_refused},
        {"SipTcpConnectionsEvicted", "Idle TCP connections closed for SipTcpMaxConnections",
         st->tcp_evicted},
        {"SipTcpMessageTimeouts", "TCP connections closed by SipTcpMessageTimeout",
         st->tcp_msg_timeouts},
        {"SipWsMessagesIn", "WebSocket (ws) messages received", st->msgs_in[3]},
        {"SipWsMessagesOut", "WebSocket (ws) messages sent", st->msgs_out[3]},
        {"SipWssMessagesIn", "Secure WebSocket (wss) messages received", st->msgs_in[4]},
        {"SipWssMessagesOut", "Secure WebSocket (wss) messages sent", st->msgs_out[4]},
        {"SipWsConnectionsNow", "WebSocket connections open now (ws and wss)", st->now.ws},
        {"SipWsConnectionsTotal", "WebSocket connections total", st->ws_conns},
        {"SipWsProtocolErrors", "WebSocket connections closed for a protocol error or a "
         "size limit", st->ws_errors},
        {"SipTlsMessagesIn", "TLS messages received", st->msgs_in[2]},
        {"SipTlsMessagesOut", "TLS messages sent", st->msgs_out[2]},
        {"SipTlsConnectionsNow", "TLS connections open now (counted in TCP too)", st->now.tls},
        {"SipTlsConnectionsTotal", "TLS connections total", st->tls_conns},
        {"SipTlsHandshakeFailures", "TLS handshakes that failed", st->tls_handshake_failures},
        {"SipBadMessages", "Unparsable messages (answered 4xx or dropped)", st->bad_msgs},
        {"SipSendErrors", "Messages that could not be sent", st->send_errors},
        {"SipStunBindings", "STUN Binding requests answered on the UDP ports (RFC 5626 "
         "keep-alives)", st->stun_bindings},
        {"SipStunDropped", "Other STUN-looking datagrams on the UDP ports, dropped",
         st->stun_dropped},
        {NULL, "DNS", 0},
        {"SipDnsQueries", "DNS queries sent", st->dns_queries},
        {"SipDnsCacheHits", "DNS lookups answered from the cache or joined to one under way",
         st->dns_cache_hits},
        {"SipDnsTimeouts", "DNS queries no server answered (SipDNSTimeout, SipDNSTries)",
         st->dns_timeouts},
        {"SipDnsFailures", "DNS queries that failed (SERVFAIL, refused, malformed)",
         st->dns_failures},
        {NULL, "Hand-over between engines (SipEngines)", 0},
        {"SipHandoverSent", "Messages handed to another engine", st->ho_sent},
        {"SipHandoverReceived", "Messages received from another engine", st->ho_received},
        {"SipHandoverDropped", "Hand-overs dropped (the other engine's channel was full)",
         st->ho_dropped},
    };
    apr_array_header_t *out = apr_array_make(p, 64, sizeof(const char *));
    int html = !(flags & SIP_STATS_AUTO), table = !(flags & SIP_STATS_NOTABLE);
    apr_size_t i;

#define EMIT(s) (*(const char **)apr_array_push(out) = (s))
    if (html) {
        EMIT("<hr /><h2>mod_sip</h2>\n");
        if (st->engine_pid) {
            char date[APR_RFC822_DATE_LEN];
            apr_rfc822_date(date, st->engine_start);
            EMIT(apr_psprintf(p, "<p>SIP engine %" APR_UINT64_T_FMT " started %s</p>\n",
                              st->engine_pid, date));
        }
        else
            EMIT("<p>No SIP engine is running.</p>\n");
        if (table)
            EMIT("<table>\n");
    }
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const stat_row_t *r = &rows[i];

        if (!html) {
            if (r->key)
                EMIT(apr_psprintf(p, "%s: %" APR_UINT64_T_FMT "\n", r->key, r->v));
        }
        else if (!r->key && table)
            EMIT(apr_psprintf(p, "<tr><th colspan=\"2\" align=\"left\">%s</th></tr>\n",
                              r->label));
        else if (!r->key)
            EMIT(apr_psprintf(p, "%s<h3>%s</h3>\n<dl>\n", i ? "</dl>\n" : "", r->label));
        else if (table)
            EMIT(apr_psprintf(p, "<tr><td title=\"%s\">%s</td><td align=\"right\">%"
                              APR_UINT64_T_FMT "</td></tr>\n", r->key, r->label, r->v));
        else
            EMIT(apr_psprintf(p, "<dt title=\"%s\">%s</dt><dd>%" APR_UINT64_T_FMT "</dd>\n",
                              r->key, r->label, r->v));
    }
    if (html)
        EMIT(table ? "</table>\n" : "</dl>\n");
    format_fcgi(p, st, html, out);
#undef EMIT
    return apr_array_pstrcat(p, out, '\0');
}

const char *sip_stats_format_engines(apr_pool_t *p, int count, apr_time_t now, int flags)
{
    apr_array_header_t *out = apr_array_make(p, 8, sizeof(const char *));
    int e, k;

    for (e = 0; e < count && e < SIP_ENGINES_MAX; e++) {
        const sip_stats_t *st = sip_stats_slot(e);
        apr_uint64_t in = 0, up = st->engine_pid && now > st->engine_start
                                  ? (apr_uint64_t)apr_time_sec(now - st->engine_start) : 0;

        for (k = 0; k < 5; k++)
            in += st->msgs_in[k];
        if (flags & SIP_STATS_AUTO)
            *(const char **)apr_array_push(out) = apr_psprintf(
                p, "SipEngine%dPid: %" APR_UINT64_T_FMT "\nSipEngine%dUptime: %"
                APR_UINT64_T_FMT "\nSipEngine%dMessagesIn: %" APR_UINT64_T_FMT
                "\nSipEngine%dTransactionsTotal: %" APR_UINT64_T_FMT "\n", e, st->engine_pid,
                e, up, e, in, e, st->txns);
        else
            *(const char **)apr_array_push(out) = apr_psprintf(
                p, "<p>SIP engine %d: process %" APR_UINT64_T_FMT ", up %" APR_UINT64_T_FMT
                " s, %" APR_UINT64_T_FMT " messages in, %" APR_UINT64_T_FMT
                " server transactions</p>\n", e, st->engine_pid, up, in, st->txns);
    }
    return apr_array_pstrcat(p, out, '\0');
}
