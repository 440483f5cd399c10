/* Registrations and flows across engines (sip_replica.h). */
#include <string.h>

#include "apr_strings.h"
#include "sip_replica.h"
#include "sip_handover.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_stats.h"

/* An answer to a SYNC in progress: the AoRs homed here, sent a batch at
 * a time.  Each batch is the AoRs' state when it is sent, so that a
 * REPLICA broadcast after it can only be newer (the channel to one engine
 * keeps order). */
typedef struct sync_job {
    struct sync_job *next;
    apr_pool_t *pool;
    int to;
    apr_array_header_t *aors;
    int at;
    int flows;              /* from here on: AoRs homed at 'to' (FLOWS_MARK batches) */
    int piece;              /* pieces of the batch at 'at' already sent */
    sip_timer_t timer;
} sync_job_t;

#define SYNC_BATCH 16000            /* bytes of records per datagram */
#define SYNC_RETRY apr_time_from_msec(20)
/* First line of a batch of AoRs homed at the receiver: it takes their
 * flows, or a whole AoR its journal did not give back */
#define FLOWS_MARK "F\tflows\n"

static sip_loop_t *rep_loop;
static apr_pool_t *rep_pool;
static sync_job_t *jobs;
static int use_replicas = 1;

static void origin_self(sip_ho_origin_t *o)
{
    memset(o, 0, sizeof(*o));
    o->engine = sip_engine_self();
    o->cookie = sip_transport_flow_generation();
}

static void sync_job_end(sync_job_t *j)
{
    sync_job_t **pp;

    for (pp = &jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    sip_timer_cancel(rep_loop, &j->timer);
    apr_pool_destroy(j->pool);
}

static void sync_send_batch(void *baton)
{
    sync_job_t *j = baton;
    apr_pool_t *p;
    sip_ho_origin_t o;
    int end = j->at;
    const char *text = "";
    apr_size_t len = 0;
    apr_array_header_t *pieces;

    apr_pool_create(&p, j->pool);
    if (end >= j->flows && end < j->aors->nelts) {
        text = FLOWS_MARK;
        len = strlen(text);
    }
    while (end < j->aors->nelts && len < SYNC_BATCH && (end >= j->flows) == (j->at >= j->flows)) {
        const char *t = sip_location_replica_text(p, APR_ARRAY_IDX(j->aors, end, const char *));
        text = apr_pstrcat(p, text, t, NULL);
        len += strlen(t);
        end++;
    }
    origin_self(&o);
    /* an AoR larger than a datagram goes in pieces; after a full channel
     * the batch is made again and its pieces already sent are skipped */
    pieces = sip_location_replica_pieces(p, text, FLOWS_MARK, SIP_LOCATION_REPLICA_PIECE);
    for (; j->piece < pieces->nelts; j->piece++) {
        const char *t = APR_ARRAY_IDX(pieces, j->piece, const char *);
        /* an empty batch still tells the peer our flow generation */
        if (sip_handover_send(j->to, SIP_HO_REPLICA, &o, t, strlen(t)) == APR_EAGAIN) {
            apr_pool_destroy(p);
            sip_timer_set(rep_loop, &j->timer, SYNC_RETRY, sync_send_batch, j); /* full */
            return;
        }
    }
    apr_pool_destroy(p);
    j->piece = 0;
    j->at = end;
    if (j->at >= j->aors->nelts) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, ap_server_conf, "sip engine %d: %d AoRs sent "
                     "to engine %d for its SYNC", sip_engine_self(), j->aors->nelts, j->to);
        sync_job_end(j);
        return;
    }
    sip_timer_set(rep_loop, &j->timer, 0, sync_send_batch, j);
}

static void on_sync(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                    apr_size_t len)
{
    sync_job_t *j, *old;
    apr_pool_t *jp;

    (void)kind;
    (void)text;
    if (from->engine < 0 || from->engine >= sip_engine_count() || from->engine == sip_engine_self())
        return;
    /* a restarted engine: the connections its predecessor held are gone */
    sip_transport_peer_generation(from->engine, from->cookie);
    for (old = jobs; old; old = old->next)
        if (old->to == from->engine) {
            sync_job_end(old);      /* it restarted again: start over */
            break;
        }
    apr_pool_create(&jp, rep_pool);
    j = apr_pcalloc(jp, sizeof(*j));
    j->pool = jp;
    j->to = from->engine;
    j->aors = use_replicas ? sip_location_homed_aors(jp)
                           : apr_array_make(jp, 1, sizeof(const char *));
    j->flows = j->aors->nelts;
    if (use_replicas)
        apr_array_cat(j->aors, sip_location_flow_aors(jp, from->engine));
    j->next = jobs;
    jobs = j;
    sync_send_batch(j);
}

static void on_replica(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                       apr_size_t len)
{
    (void)kind;
    sip_transport_peer_generation(from->engine, from->cookie);
    if (!len)
        return;
    if (len >= sizeof(FLOWS_MARK) - 1 && !memcmp(text, FLOWS_MARK, sizeof(FLOWS_MARK) - 1)) {
        if (use_replicas)
            sip_location_replica_flows(text, len);
    }
    else
        sip_location_replica_apply(text, len);
}

static void on_send_flow(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                         apr_size_t len)
{
    sip_ho_origin_t o;

    (void)kind;
    if (sip_transport_flow_send(from->flow, text, len) == APR_SUCCESS)
        return;
    /* gone: the sender's stand-in learns it, its transaction fails over */
    memset(&o, 0, sizeof(o));
    o.kind = from->kind;
    o.engine = sip_engine_self();
    o.flow = from->flow;
    sip_handover_send(from->engine, SIP_HO_FLOW_CLOSED, &o, "", 0);
}

static void on_flow_closed(sip_ho_kind_t kind, const sip_ho_origin_t *from, const char *text,
                           apr_size_t len)
{
    (void)kind;
    (void)text;
    sip_transport_remote_closed(from->flow);
}

void sip_replica_start(sip_loop_t *loop, apr_pool_t *p)
{
    sip_ho_origin_t o;

    rep_loop = loop;
    rep_pool = p;
    jobs = NULL;
    if (sip_engine_count() < 2)
        return;
    /* the mod_dbd store: the database is shared, no replica to keep (a
     * REPLICA then only drops the AoR from the cache and brings flows) */
    use_replicas = !sip_location_is_dbd();
    sip_handover_on(SIP_HO_SYNC, on_sync);
    sip_handover_on(SIP_HO_REPLICA, on_replica);
    sip_handover_on(SIP_HO_SEND_FLOW, on_send_flow);
    sip_handover_on(SIP_HO_FLOW_CLOSED, on_flow_closed);
    origin_self(&o);
    sip_handover_broadcast(SIP_HO_SYNC, &o, "", 0);
}

const char *sip_replica_register_aor(apr_pool_t *p, const sip_msg_t *msg)
{
    return sip_uri_aor(p, sip_msg_header(msg, "To"));
}

int sip_registrar_handover_raw(apr_pool_t *p, const char *buf, apr_size_t len,
                               const sip_source_t *src)
{
    sip_ho_origin_t o;
    const char *aor;
    int home;

    if (sip_engine_count() < 2 || src->kind != SIP_TP_UDP)
        return 0;
    aor = sip_msg_scan_register_aor(p, buf, len);
    if (!aor || (home = sip_engine_home(aor)) == sip_engine_self())
        return 0;
    sip_handover_origin(src, &o);
    o.cookie = SIP_HO_UNCHECKED;
    if (sip_handover_send(home, SIP_HO_DELIVER, &o, buf, len) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, src->vhost, "sip engine %d: REGISTER for %s "
                     "not handed to its home engine %d (channel full); dropped",
                     sip_engine_self(), aor, home);
    return 1;
}

int sip_registrar_handover(apr_pool_t *p, const sip_msg_t *msg, const char *buf, apr_size_t len,
                           const sip_source_t *src)
{
    sip_ho_origin_t o;
    const char *aor;
    int home;

    if (sip_engine_count() < 2 || strcmp(sip_msg_method(msg), "REGISTER") != 0)
        return 0;
    aor = sip_replica_register_aor(p, msg);
    if (!aor || (home = sip_engine_home(aor)) == sip_engine_self())
        return 0;
    /* with its client certificate's subject: the home logs it and gives it
     * to scripts as the engine holding the connection would */
    sip_handover_origin_tls(p, src, &o);
    if (sip_handover_send(home, SIP_HO_DELIVER, &o, buf, len) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, src->vhost, "sip engine %d: REGISTER for %s "
                     "not handed to its home engine %d (channel full); dropped",
                     sip_engine_self(), aor, home);
    return 1;
}
