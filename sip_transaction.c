#include "sip_transaction.h"
#include "sip_handover.h"
#include "sip_log.h"
#include "sip_stats.h"

#include <stdlib.h>
#include <string.h>

#include "apr_hash.h"
#include "apr_strings.h"
#include "apr_random.h"
#include "apr_sha1.h"

typedef enum {
    ST_TRYING,      /* non-INVITE, nothing sent */
    ST_PROCEEDING,  /* INVITE from the start; non-INVITE after a 1xx */
    ST_COMPLETED,   /* final non-2xx (INVITE) or any final (non-INVITE) */
    ST_CONFIRMED,   /* INVITE: ACK received */
    ST_ACCEPTED,    /* INVITE: 2xx sent, waiting for its ACK (RFC 6026) */
    ST_TERMINATED
} txn_state_t;

struct sip_txn {
    apr_pool_t *pool;
    sip_msg_t *req;
    sip_source_t src;
    sip_sockaddr_t dest;
    const char *key;
    const char *ack_key;    /* set while a 2xx waits for its ACK */
    int invite;
    txn_state_t state;
    const char *to_tag;
    const char *last;
    apr_size_t last_len;
    int last_status;
    apr_interval_time_t retx;
    sip_timer_t t_retx, t_end, t_trying;
    const sip_txn_tu_ops_t *tu_ops;
    void *tu;
    int proxied;
    int destroyed;
    int kept;
    apr_time_t start;
    const char *user;
    apr_table_t *notes;         /* for the access log line (%{name}n) */
    apr_table_t *env;           /* for the access log line (env=NAME) */
    int auth_int;               /* the digest covered the body (qop=auth-int) */
    int compact;        /* malloc'd remnant of a completed transaction */
    int stateless;      /* may end with its final answer (sip_txn_receive) */
    int keep_state;     /* answered by a script or proxy: sip_txn_keep_state */
};

static sip_loop_t *txn_loop;
static sip_txn_final_hook final_hook;
static sip_txn_error_body_hook error_body_hook;

void sip_txn_on_error_body(sip_txn_error_body_hook hook)
{
    error_body_hook = hook;
}

void sip_txn_on_final(sip_txn_final_hook hook)
{
    final_hook = hook;
}

apr_time_t sip_txn_start(sip_txn_t *t)
{
    return t->start;
}
static apr_hash_t *txns;        /* key -> sip_txn_t */
static apr_hash_t *acks;        /* ack_key -> sip_txn_t (2xx awaiting ACK) */
static apr_size_t ntxns;

static void ctxn_transport_closed(sip_tcp_conn_t *c);
static apr_hash_t *ctxns;       /* branch|method -> sip_ctxn_t */
static apr_pool_t *txn_root;
static apr_interval_time_t txn_t1 = SIP_T1;

const char *sip_txn_parse_t1(const char *arg, apr_interval_time_t *t1)
{
    char *end;
    long ms = strtol(arg, &end, 10);

    if (end == arg || (*end && strcmp(end, "ms") != 0) || ms < 10 || ms > 4000)
        return "SipTimerT1 needs milliseconds from 10 to 4000 (T2 is 4 s), e.g. 500 or 500ms";
    *t1 = apr_time_from_msec(ms);
    return NULL;
}

void sip_txn_set_t1(apr_interval_time_t t1)
{
    txn_t1 = t1 > 0 ? t1 : SIP_T1;
}

void sip_txn_init(sip_loop_t *loop, apr_pool_t *p)
{
    txn_loop = loop;
    txn_root = p;
    txns = apr_hash_make(p);
    acks = apr_hash_make(p);
    ctxns = apr_hash_make(p);
    sip_transport_on_close(ctxn_transport_closed);
}

void sip_txn_keep_state(sip_txn_t *t)
{
    t->keep_state = 1;
}

void sip_txn_set_proxied(sip_txn_t *t)
{
    t->keep_state = 1;
    t->proxied = 1;
    sip_timer_cancel(txn_loop, &t->t_trying);   /* the proxy sends its own 100 */
}

apr_size_t sip_txn_count(void)
{
    return ntxns;
}

/* §17.2.3 matching; the RFC 2543 fallback leaves the To tag out so that
 * an ACK (which carries our tag) still finds its INVITE. */
static const char *txn_key(apr_pool_t *p, const sip_msg_t *m, const char *method)
{
    const char *branch = sip_msg_branch(m);

    if (branch && strncmp(branch, "z9hG4bK", 7) == 0)
        return apr_pstrcat(p, branch, "|", sip_msg_via_sent_by(m), "|", method, NULL);
    return apr_pstrcat(p, "2543|", sip_msg_request_uri(m), "|", sip_msg_from_tag(m) ? sip_msg_from_tag(m) : "",
                       "|", sip_msg_call_id(m), "|", sip_msg_cseq_number(m), "|", method,
                       "|", sip_msg_top_via(m), NULL);
}

/* A 2xx's ACK is a new transaction (§17.1.1.3): match it by dialog. */
static const char *ack_key(apr_pool_t *p, const sip_msg_t *m)
{
    const char *ft = sip_msg_from_tag(m);
    return apr_pstrcat(p, sip_msg_call_id(m), "|", sip_msg_cseq_number(m), "|", ft ? ft : "", NULL);
}

/* RFC 3261 §19.3: tags are cryptographically random, 64 bits here.  The
 * random bytes are fetched a page at a time: one getrandom() per tag was
 * a visible share of a whole OPTIONS transaction. */
static const char *new_tag(apr_pool_t *p)
{
    static unsigned char rnd[512];
    static apr_size_t used = sizeof(rnd);
    static const char hexdigits[] = "0123456789abcdef";
    char *tag = apr_palloc(p, 20), *hex = tag + 3;
    int i;

    /* "mS" and our engine's mark first (sip_handover.h): an ACK or CANCEL
     * carrying this tag names the engine that holds its transaction. */
    tag[0] = 'm';
    tag[1] = 'S';
    tag[2] = sip_engine_mark(sip_engine_self());
    if (used + 8 > sizeof(rnd)) {
        if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS) {
            apr_uint64_t t = (apr_uint64_t)apr_time_now();
            for (i = 0; i < (int)sizeof(rnd); i++)
                rnd[i] ^= (unsigned char)(t >> (8 * (i % 8))) + (unsigned char)i;
        }
        used = 0;
    }
    for (i = 0; i < 8; i++) {
        hex[2 * i] = hexdigits[rnd[used + i] >> 4];
        hex[2 * i + 1] = hexdigits[rnd[used + i] & 15];
    }
    used += 8;
    hex[16] = '\0';
    return tag;
}

/* The key of the deterministic To tags: the route secret (mod_sip.c), so
 * that every engine forked by the parent derives the same tag.  Padded to
 * one SHA-1 block and hashed once: each tag then starts from this state. */
static apr_sha1_ctx_t tag_key_ctx;

void sip_txn_set_tag_secret(const void *key, apr_size_t len)
{
    unsigned char block[64];

    memset(block, 0, sizeof(block));
    memcpy(block, key, len < sizeof(block) ? len : sizeof(block));
    apr_sha1_init(&tag_key_ctx);
    apr_sha1_update_binary(&tag_key_ctx, block, sizeof(block));
}

/* RFC 3261 §8.2.7: a stateless UAS derives its To tag from the request, so
 * that a retransmission, handled as new, gets the same answer.  64 bits of
 * SHA-1 over a secret and the transaction's identity (the §17.2.3 key:
 * branch, sent-by, method; or the RFC 2543 fields), Call-ID, From tag and
 * CSeq: different requests get different tags, and without the secret
 * nobody can predict one.  Only 8 of the 20 octets leave, so the secret
 * prefix is not open to length extension. */
static const char *derived_tag(apr_pool_t *p, const sip_msg_t *m, const char *key)
{
    static const char hexdigits[] = "0123456789abcdef";
    const char *ft = sip_msg_from_tag(m);
    const char *parts[] = {"to-tag|", key, "|", sip_msg_call_id(m), "|", ft ? ft : "", "|",
                           sip_msg_cseq_number(m)};
    unsigned char d[APR_SHA1_DIGESTSIZE];
    char *hex = apr_palloc(p, 17);
    apr_sha1_ctx_t c;
    apr_size_t i;

    if (!tag_key_ctx.count_lo && !tag_key_ctx.count_hi)
        sip_txn_set_tag_secret("", 0);  /* no secret set: still a valid state */
    c = tag_key_ctx;
    for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        apr_sha1_update_binary(&c, (const unsigned char *)parts[i], (unsigned int)strlen(parts[i]));
    apr_sha1_final(d, &c);
    for (i = 0; i < 8; i++) {
        hex[2 * i] = hexdigits[d[i] >> 4];
        hex[2 * i + 1] = hexdigits[d[i] & 15];
    }
    hex[16] = '\0';
    return hex;
}

/* Requests the server may answer without keeping the transaction: OPTIONS
 * changes nothing (RFC 3261 §11), so handling a retransmission as a new
 * request gives the same answer (§8.2.7, the stateless UAS; what Kamailio's
 * sl module does).  Which answers qualify is decided in sip_txn_respond. */
static int stateless_method(const char *method)
{
    return strcmp(method, "OPTIONS") == 0;
}

static void txn_destroy_if_done(sip_txn_t *t)
{
    if (t->state == ST_TERMINATED && !t->tu && !t->kept && !t->destroyed) {
        t->destroyed = 1;
        if (t->compact) {
            free((char *)t->key);
            free((char *)t->last);
            free(t);
            return;
        }
        sip_source_release(&t->src);
        sip_loop_defer_destroy(txn_loop, t->pool);
    }
}

static void timer_end(void *baton);

/* A non-INVITE transaction over UDP that has answered only waits out timer
 * J (32 s) to re-send its answer to retransmissions: keep just that (key,
 * answer, addresses) and give its pool back, so that thousands of them per
 * second do not hold megabytes. */
static void txn_terminate(sip_txn_t *t);

static void txn_maybe_compact(sip_txn_t *t)
{
    sip_txn_t *z;
    apr_time_t left;
    int keep_last;

    /* The stateless UAS (§8.2.7): the server's own answer (no script or
     * proxy took the request) to a request that changes nothing keeps no
     * state once nobody holds the transaction: a retransmission is handled
     * as new and, with the derived To tag, answered alike.  A challenge
     * carries a fresh nonce each time: it stays stateful. */
    if (t->stateless && t->state == ST_COMPLETED && !t->keep_state && !t->tu
        && !t->kept && !t->destroyed && t->last_status != 401 && t->last_status != 407) {
        txn_terminate(t);
        return;
    }
    /* A proxied INVITE in Accepted (RFC 6026 §7.1) only waits out timer L
     * to absorb retransmitted INVITEs and to carry 2xx retransmissions up
     * (sip_ctxn_retire), and an INVITE in Confirmed only absorbs ACKs until
     * timer I (§17.2.1): the same remnant will do for both. */
    if (t->invite ? !((t->proxied && t->state == ST_ACCEPTED) || t->state == ST_CONFIRMED)
                  : t->state != ST_COMPLETED)
        return;
    if (t->src.kind != SIP_TP_UDP || t->tu || t->kept || t->compact || t->destroyed || !t->last)
        return;
    z = calloc(1, sizeof(*z));
    if (!z)
        return;
    /* Confirmed sends nothing more (§17.2.1, figure 7): no answer to keep */
    keep_last = t->state != ST_CONFIRMED;
    z->compact = 1;
    z->key = strdup(t->key);
    z->last = keep_last ? malloc(t->last_len) : NULL;
    if (!z->key || (keep_last && !z->last)) {
        free((char *)z->key);
        free((char *)z->last);
        free(z);
        return;
    }
    if (keep_last) {
        memcpy((char *)z->last, t->last, t->last_len);
        z->last_len = t->last_len;
    }
    z->last_status = t->last_status;
    z->src = t->src;            /* UDP: no connection reference to carry */
    z->dest = t->dest;
    z->state = t->state;
    z->invite = t->invite;
    z->proxied = t->proxied;
    z->to_tag = NULL;
    left = t->t_end.when - apr_time_now();
    sip_timer_cancel(txn_loop, &t->t_end);
    sip_timer_cancel(txn_loop, &t->t_retx);
    sip_timer_cancel(txn_loop, &t->t_trying);
    apr_hash_set(txns, t->key, APR_HASH_KEY_STRING, NULL);
    apr_hash_set(txns, z->key, APR_HASH_KEY_STRING, z);
    sip_timer_set(txn_loop, &z->t_end, left > 0 ? left : 0, timer_end, z);
    t->destroyed = 1;
    sip_source_release(&t->src);
    sip_loop_defer_destroy(txn_loop, t->pool);
}

static void txn_terminate(sip_txn_t *t)
{
    if (t->state == ST_TERMINATED)
        return;
    t->state = ST_TERMINATED;
    sip_timer_cancel(txn_loop, &t->t_retx);
    sip_timer_cancel(txn_loop, &t->t_end);
    sip_timer_cancel(txn_loop, &t->t_trying);
    apr_hash_set(txns, t->key, APR_HASH_KEY_STRING, NULL);
    if (t->ack_key)
        apr_hash_set(acks, t->ack_key, APR_HASH_KEY_STRING, NULL);
    ntxns--;
    sip_stats->now.txns = ntxns;
    if (t->tu && t->tu_ops && t->tu_ops->ended)
        t->tu_ops->ended(t->tu);
    txn_destroy_if_done(t);
}

/* A response of server transaction 't'.  RFC 3261 §18.2.2: over a stream,
 * on the request's connection; when that has closed, over TCP or TLS on a
 * connection to the received address and the sent-by port (t->dest, from
 * sip_msg_stamp_via), which then carries the transaction's later ones. */
static apr_status_t txn_send(sip_txn_t *t, const char *buf, apr_size_t len)
{
    sip_source_t used;
    apr_status_t rv;

    if (sip_source_is_open(&t->src) || (t->src.kind != SIP_TP_TCP && t->src.kind != SIP_TP_TLS))
        return sip_transport_send(&t->src, &t->dest, buf, len);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, t->src.vhost ? t->src.vhost : ap_server_conf,
                 "sip: %s connection of the request closed: response to %s:%d on a new one",
                 sip_tp_via_name(t->src.kind), sip_sockaddr_ip(t->pool, &t->dest),
                 sip_sockaddr_port(&t->dest));
    memset(&used, 0, sizeof(used));
    rv = sip_transport_send_to(t->src.kind, t->src.vhost, &t->dest, buf, len, &used);
    if (rv == APR_SUCCESS) {
        sip_source_release(&t->src);
        t->src = used;
    }
    else
        sip_source_release(&used);
    return rv;
}

static void send_last(sip_txn_t *t)
{
    apr_status_t rv;

    if (!t->last)
        return;
    rv = txn_send(t, t->last, t->last_len);
    if (rv != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_INFO, rv, ap_server_conf,
                     "sip: cannot send %d response for %s %s", t->last_status,
                     t->req ? sip_msg_method(t->req) : "a request",
                     t->req ? sip_msg_request_uri(t->req) : "");
}

static void timer_end(void *baton)
{
    sip_txn_t *t = baton;

    if (t->state == ST_COMPLETED && t->invite)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                     "sip: no ACK for %d to INVITE %s (Call-ID %s), timer H fired",
                     t->last_status, sip_msg_request_uri(t->req), sip_msg_call_id(t->req));
    else if (t->state == ST_ACCEPTED && !t->proxied)   /* a proxied 2xx's ACK goes end to end */
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf,
                     "sip: no ACK for %d to INVITE %s (Call-ID %s)", t->last_status,
                     sip_msg_request_uri(t->req), sip_msg_call_id(t->req));
    txn_terminate(t);
}

/* Timer G (§17.2.1) and the 2xx retransmission of §13.3.1.4 share the
 * doubling-to-T2 schedule. */
static void timer_retx(void *baton)
{
    sip_txn_t *t = baton;

    send_last(t);
    t->retx = t->retx * 2 < SIP_T2 ? t->retx * 2 : SIP_T2;
    sip_timer_set(txn_loop, &t->t_retx, t->retx, timer_retx, t);
}

static void timer_trying(void *baton)
{
    sip_txn_t *t = baton;

    /* §17.2.1: 100 Trying when the TU has not answered within 200 ms */
    if (!t->last)
        sip_txn_reply(t, 100, "Trying", NULL);
}

sip_txn_result_t sip_txn_receive(sip_msg_t *req, const sip_source_t *src,
                                 const sip_sockaddr_t *resp_dest, apr_pool_t *msg_pool,
                                 sip_txn_t **out)
{
    const char *method = sip_msg_method(req);
    int is_ack = strcmp(method, "ACK") == 0;
    const char *key = txn_key(msg_pool, req, is_ack ? "INVITE" : method);
    sip_txn_t *t = apr_hash_get(txns, key, APR_HASH_KEY_STRING);

    *out = t;
    if (is_ack) {
        if (t && t->state == ST_COMPLETED) {
            /* §17.2.1: ACK for a non-2xx final: Confirmed, then timer I */
            t->state = ST_CONFIRMED;
            sip_timer_cancel(txn_loop, &t->t_retx);
            sip_timer_set(txn_loop, &t->t_end, src->kind == SIP_TP_UDP ? SIP_T4 : 0,
                          timer_end, t);
            txn_maybe_compact(t);
            *out = NULL;
            return SIP_TXN_ABSORBED;
        }
        if (t && t->state != ST_ACCEPTED)
            return SIP_TXN_ABSORBED;
        t = apr_hash_get(acks, ack_key(msg_pool, req), APR_HASH_KEY_STRING);
        *out = t;
        if (t) {
            const char *tt = sip_msg_to_tag(req);
            if (tt && t->to_tag && strcmp(tt, t->to_tag) != 0)
                return SIP_TXN_STRAY_ACK;
            sip_timer_cancel(txn_loop, &t->t_retx);
            /* RFC 3050 §5.11.1: a script that answered 200 sees the ACK */
            if (t->tu && t->tu_ops && t->tu_ops->ack)
                t->tu_ops->ack(t->tu, req);
            txn_terminate(t);
            *out = NULL;
            return SIP_TXN_ACK_2XX;
        }
        return SIP_TXN_STRAY_ACK;
    }
    if (t) {
        /* §17.2.1/§17.2.2: a retransmission gets the last response again,
         * except in Confirmed, which sends nothing more (figure 7) */
        if (t->state != ST_CONFIRMED)
            send_last(t);
        return SIP_TXN_ABSORBED;
    }

    t = apr_pcalloc(msg_pool, sizeof(*t));
    t->pool = msg_pool;
    t->req = req;
    t->src = *src;
    sip_source_hold(&t->src);
    t->dest = *resp_dest;
    t->key = key;
    t->invite = strcmp(method, "INVITE") == 0;
    t->state = t->invite ? ST_PROCEEDING : ST_TRYING;
    t->stateless = stateless_method(method);
    t->to_tag = sip_msg_to_tag(req) ? sip_msg_to_tag(req)
                : t->stateless ? derived_tag(msg_pool, req, key) : new_tag(msg_pool);
    t->start = apr_time_now();
    apr_hash_set(txns, t->key, APR_HASH_KEY_STRING, t);
    ntxns++;
    sip_stats->now.txns = ntxns;
    sip_stats->txns++;
    if (t->invite)
        sip_timer_set(txn_loop, &t->t_trying, apr_time_from_msec(200), timer_trying, t);
    *out = t;
    return SIP_TXN_NEW;
}

sip_txn_t *sip_txn_find_invite(apr_pool_t *p, const sip_msg_t *cancel)
{
    return apr_hash_get(txns, txn_key(p, cancel, "INVITE"), APR_HASH_KEY_STRING);
}

apr_status_t sip_txn_respond(sip_txn_t *t, int status, const char *buf, apr_size_t len)
{
    int reliable = t->src.kind != SIP_TP_UDP;

    if (t->proxied && t->state == ST_ACCEPTED && status >= 200 && status < 300) {
        /* RFC 6026 §7.1: every 2xx of a forked INVITE goes upstream */
        txn_send(t, buf, len);
        return APR_SUCCESS;
    }
    if (t->state != ST_TRYING && t->state != ST_PROCEEDING)
        return APR_EGENERAL;    /* a final response was already sent */
    sip_timer_cancel(txn_loop, &t->t_trying);
    /* Counted before it leaves, so that whoever sees it can see the count. */
    if (status >= 200 && status < 700)
        sip_stats->finals[status / 100 - 2]++;
    t->last = apr_pmemdup(t->pool, buf, len);
    t->last_len = len;
    t->last_status = status;
    send_last(t);

    if (status < 200) {
        t->state = ST_PROCEEDING;
        return APR_SUCCESS;
    }
    if (final_hook)
        final_hook(t, status, len);
    if (t->invite && status < 300) {
        /* RFC 6026 Accepted; §13.3.1.4: the 2xx is retransmitted until ACK */
        t->state = ST_ACCEPTED;
        if (t->proxied) {
            /* The UAS retransmits its 2xx and the ACK goes end to end. */
            sip_timer_set(txn_loop, &t->t_end, 64 * txn_t1, timer_end, t);    /* L */
            return APR_SUCCESS;
        }
        t->ack_key = ack_key(t->pool, t->req);
        apr_hash_set(acks, t->ack_key, APR_HASH_KEY_STRING, t);
        if (!reliable) {
            t->retx = txn_t1;
            sip_timer_set(txn_loop, &t->t_retx, t->retx, timer_retx, t);
        }
        sip_timer_set(txn_loop, &t->t_end, 64 * txn_t1, timer_end, t);
        return APR_SUCCESS;
    }
    t->state = ST_COMPLETED;
    if (t->invite) {
        if (!reliable) {
            t->retx = txn_t1;
            sip_timer_set(txn_loop, &t->t_retx, t->retx, timer_retx, t);
        }
        sip_timer_set(txn_loop, &t->t_end, 64 * txn_t1, timer_end, t);   /* H */
    }
    else {
        sip_timer_set(txn_loop, &t->t_end, reliable ? 0 : 64 * txn_t1, timer_end, t); /* J */
        txn_maybe_compact(t);
    }
    return APR_SUCCESS;
}

/* One sender's refused requests: a few lines per status, then a count. */
static sip_log_rate_t rl_refusals = SIP_LOG_RATE_INIT("refused requests");

#define SIP_LOG_URI_MAX 256     /* the Request-URI is the sender's text: cut it */

static void refuse_log(sip_txn_t *t, int status, const char *reason, const char *why)
{
    const char *uri = sip_msg_request_uri(t->req);
    const char *ip = sip_sockaddr_ip(t->pool, &t->src.peer);

    sip_log_limited(&rl_refusals, ip, status, APLOG_INFO,
                    t->src.vhost ? t->src.vhost : ap_server_conf,
                    "sip: %d %s for %s %.*s%s from %s: %s", status, reason,
                    sip_msg_method(t->req), SIP_LOG_URI_MAX, uri,
                    strlen(uri) > SIP_LOG_URI_MAX ? "..." : "", ip, why);
}

apr_status_t sip_txn_refuse(sip_txn_t *t, int status, const char *reason,
                            const char *const *hdrs, const char *why)
{
    refuse_log(t, status, reason, why);
    return sip_txn_reply(t, status, reason, hdrs);
}

apr_status_t sip_txn_refuse_body(sip_txn_t *t, int status, const char *reason,
                                 const char *const *hdrs, const char *ctype, const char *body,
                                 apr_size_t len, const char *why)
{
    refuse_log(t, status, reason, why);
    return sip_txn_reply_body(t, status, reason, hdrs, ctype, body, len);
}

apr_status_t sip_txn_reply(sip_txn_t *t, int status, const char *reason,
                           const char *const *hdrs)
{
    return sip_txn_reply_body(t, status, reason, hdrs, NULL, NULL, 0);
}

apr_status_t sip_txn_reply_body(sip_txn_t *t, int status, const char *reason,
                                const char *const *hdrs, const char *ctype, const char *body,
                                apr_size_t blen)
{
    apr_pool_t *p;
    const char *buf;
    apr_size_t len = 0;
    apr_status_t rv = APR_EGENERAL;

    apr_pool_create(&p, t->pool);
    /* a body of the caller's own wins over SipErrorDocument */
    if (status >= 400 && error_body_hook && !(body && blen))
        error_body_hook(t, status, p, &ctype, &body, &blen);
    buf = sip_msg_response_text(p, t->req, status, reason, t->to_tag, hdrs, ctype, body, blen,
                                &len);
    if (buf)
        rv = sip_txn_respond(t, status, buf, len);
    apr_pool_destroy(p);
    return rv;
}

void sip_txn_attach(sip_txn_t *t, const sip_txn_tu_ops_t *ops, void *tu)
{
    t->tu_ops = ops;
    t->tu = tu;
}

void sip_txn_detach(sip_txn_t *t)
{
    t->tu = NULL;
    t->tu_ops = NULL;
    txn_destroy_if_done(t);
    txn_maybe_compact(t);
}

int sip_txn_cancel(sip_txn_t *t)
{
    if (t->tu && t->tu_ops && t->tu_ops->cancel)
        return t->tu_ops->cancel(t->tu);
    return 0;
}

apr_pool_t *sip_txn_pool(sip_txn_t *t)
{
    return t->pool;
}

const sip_msg_t *sip_txn_request(sip_txn_t *t)
{
    return t->req;
}

apr_status_t sip_txn_retarget(sip_txn_t *t, const char *uri)
{
    return sip_msg_set_request_uri(t->req, uri);
}

const sip_source_t *sip_txn_source(sip_txn_t *t)
{
    return &t->src;
}

const char *sip_txn_to_tag(sip_txn_t *t)
{
    return t->to_tag;
}

int sip_txn_final_sent(sip_txn_t *t)
{
    return t->state != ST_TRYING && t->state != ST_PROCEEDING;
}

/* ---- client transactions ---- */

typedef enum { CT_CALLING, CT_PROCEEDING, CT_COMPLETED, CT_ACCEPTED, CT_TERMINATED } ctxn_state_t;

struct sip_ctxn {
    apr_pool_t *pool;
    sip_msg_t *req;
    const char *buf;
    apr_size_t len;
    sip_tp_kind_t kind;
    void *vhost;
    sip_sockaddr_t dest;
    sip_source_t used;          /* the connection, for TCP */
    const char *key;
    int invite;
    ctxn_state_t state;
    apr_interval_time_t retx;
    sip_timer_t t_retx, t_timeout, t_end, t_fail;
    sip_ctxn_cb cb;
    void *baton;
    const char *ack;            /* re-sent for retransmitted non-2xx finals */
    apr_size_t ack_len;
    int cancel_pending;
    int cancelled;
    int on_flow;                /* 'used' was given (sip_ctxn_send_text_on) */
    const char *tls_host;       /* TLS: the name the server's certificate must match */
    const char *method;         /* sip_ctxn_send_known: 'req' is parsed when needed */
    int retired;                /* malloc'd Accepted remnant (sip_ctxn_retire) */
    char *up_key;               /* retired: the server transaction its 2xx go up by */
};

static apr_size_t nctxns;

apr_size_t sip_ctxn_count(void)
{
    return nctxns;
}

/* The request of 'c', parsed from its text on first use when it was sent
 * by sip_ctxn_send_known (only a CANCEL, the ACK of a non-2xx, a local
 * 408/503 or a TLS name check need it); NULL if that text does not parse. */
static sip_msg_t *ctxn_req(sip_ctxn_t *c)
{
    sip_msg_error_t err;

    if (!c->req && c->buf
        && sip_msg_parse(c->pool, c->buf, c->len, NULL, 0, &c->req, &err) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf,
                     "sip: a request sent as %s does not parse back (%s)", c->key, err.reason);
        c->req = NULL;
    }
    return c->req;
}

const sip_msg_t *sip_ctxn_request(const sip_ctxn_t *c)
{
    return ctxn_req((sip_ctxn_t *)c);
}

static void ctxn_stop_timers(sip_ctxn_t *c)
{
    sip_timer_cancel(txn_loop, &c->t_retx);
    sip_timer_cancel(txn_loop, &c->t_timeout);
    sip_timer_cancel(txn_loop, &c->t_end);
    sip_timer_cancel(txn_loop, &c->t_fail);
}

static void ctxn_terminate(sip_ctxn_t *c)
{
    sip_ctxn_cb cb = c->cb;

    if (c->state == CT_TERMINATED)
        return;
    c->state = CT_TERMINATED;
    ctxn_stop_timers(c);
    apr_hash_set(ctxns, c->key, APR_HASH_KEY_STRING, NULL);
    nctxns--;
    sip_stats->now.ctxns = nctxns;
    c->cb = NULL;
    if (cb)
        cb(c->baton, c, NULL, -1);     /* gone: the owner drops its pointer */
    sip_source_release(&c->used);
    if (c->retired) {
        free((char *)c->key);
        free(c->up_key);
        free((char *)c->ack);
        free(c);
        return;
    }
    sip_loop_defer_destroy(txn_loop, c->pool);
}

static void ctxn_end(void *baton)
{
    ctxn_terminate(baton);
}

static void ctxn_deliver(sip_ctxn_t *c, sip_msg_t *resp, int from_network)
{
    if (c->cb)
        c->cb(c->baton, c, resp, from_network);
}

/* Timeout (408) or transport failure (503) reported as a response. */
static void ctxn_fail(sip_ctxn_t *c, int status, const char *reason)
{
    apr_pool_t *p;

    if (c->state == CT_TERMINATED || c->state == CT_COMPLETED || c->state == CT_ACCEPTED)
        return;
    if (status == 408)
        sip_stats->ctxn_timeouts++;
    apr_pool_create(&p, c->pool);
    if (ctxn_req(c))
        ctxn_deliver(c, sip_msg_make_response(p, c->req, status, reason, NULL), 0);
    apr_pool_destroy(p);
    ctxn_terminate(c);
}

static void ctxn_timeout(void *baton)
{
    ctxn_fail(baton, 408, "Request Timeout");   /* timer B or F */
}

static void ctxn_transport_failed(void *baton)
{
    ctxn_fail(baton, 503, "Service Unavailable");
}

static void ctxn_send(sip_ctxn_t *c)
{
    apr_status_t rv;

    if (c->used.tcp || (c->used.udp && c->kind == SIP_TP_UDP))
        rv = sip_transport_send(&c->used, &c->dest, c->buf, c->len);
    else if (c->kind == SIP_TP_TLS)
        rv = sip_transport_send_tls(c->vhost, &c->dest, c->tls_host, c->buf, c->len, &c->used);
    else
        rv = sip_transport_send_to(c->kind, c->vhost, &c->dest, c->buf, c->len, &c->used);
    if (rv != APR_SUCCESS)
        sip_timer_set(txn_loop, &c->t_fail, 0, ctxn_transport_failed, c);
}

static void ctxn_retransmit(void *baton)
{
    sip_ctxn_t *c = baton;

    if (c->state != CT_CALLING && c->state != CT_PROCEEDING)
        return;
    ctxn_send(c);
    /* A doubles without bound (§17.1.1.2); E stops at T2 (§17.1.2.2) */
    if (c->invite)
        c->retx *= 2;
    else
        c->retx = c->state == CT_PROCEEDING || c->retx * 2 > SIP_T2 ? SIP_T2 : c->retx * 2;
    sip_timer_set(txn_loop, &c->t_retx, c->retx, ctxn_retransmit, c);
}

static void ctxn_transport_closed(sip_tcp_conn_t *conn)
{
    apr_hash_index_t *hi;

    for (hi = apr_hash_first(NULL, ctxns); hi; hi = apr_hash_next(hi)) {
        sip_ctxn_t *c = apr_hash_this_val(hi);
        if (c->used.tcp == conn && c->state == CT_CALLING)
            sip_timer_set(txn_loop, &c->t_fail, 0, ctxn_transport_failed, c);
    }
}

static sip_ctxn_t *ctxn_start(apr_pool_t *p, sip_ctxn_t *c, const char *buf, apr_size_t len,
                              sip_tp_kind_t kind, void *vhost, const sip_sockaddr_t *dest,
                              sip_ctxn_cb cb, void *baton);

/* A new client transaction in a pool of its own (*p). */
static sip_ctxn_t *ctxn_alloc(apr_pool_t **p)
{
    sip_ctxn_t *c;

    apr_pool_create(p, txn_root);
    c = apr_pcalloc(*p, sizeof(*c));
    c->pool = *p;
    return c;
}

/* A client transaction for a request given as text: parsed (it must be a
 * request with a branch) into the transaction's own pool; NULL if not. */
static sip_ctxn_t *ctxn_new_from_text(const char *text, apr_size_t len)
{
    apr_pool_t *p;
    sip_ctxn_t *c;
    sip_msg_error_t err;

    c = ctxn_alloc(&p);
    if (sip_msg_parse(p, text, len, NULL, 0, &c->req, &err) != APR_SUCCESS
        || !sip_msg_is_request(c->req) || !sip_msg_branch(c->req)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf,
                     "sip: refusing to send a malformed request (%s)", err.reason);
        apr_pool_destroy(p);
        return NULL;
    }
    return c;
}

sip_ctxn_t *sip_ctxn_send_text(const char *text, apr_size_t len, sip_tp_kind_t kind,
                               void *vhost, const sip_sockaddr_t *dest, sip_ctxn_cb cb,
                               void *baton)
{
    sip_ctxn_t *c = ctxn_new_from_text(text, len);

    if (!c)
        return NULL;
    return ctxn_start(c->pool, c, apr_pstrmemdup(c->pool, text, len), len, kind, vhost, dest,
                      cb, baton);
}

/* A client transaction for a copy of 'req' (it must have a branch), its
 * text in *buf; NULL if the copy or its text cannot be made. */
static sip_ctxn_t *ctxn_new_from_msg(sip_msg_t *req, const char **buf, apr_size_t *len)
{
    apr_pool_t *p;
    sip_ctxn_t *c;

    c = ctxn_alloc(&p);
    *len = 0;
    c->req = sip_msg_clone(p, req);
    *buf = c->req ? sip_msg_serialize(p, c->req, len) : NULL;
    if (!*buf || !sip_msg_branch(c->req)) {
        apr_pool_destroy(p);
        return NULL;
    }
    return c;
}

sip_ctxn_t *sip_ctxn_send(sip_msg_t *req, sip_tp_kind_t kind, void *vhost,
                          const sip_sockaddr_t *dest, sip_ctxn_cb cb, void *baton)
{
    const char *buf;
    apr_size_t len;
    sip_ctxn_t *c = ctxn_new_from_msg(req, &buf, &len);

    if (!c)
        return NULL;
    return ctxn_start(c->pool, c, buf, len, kind, vhost, dest, cb, baton);
}

static sip_ctxn_t *ctxn_start(apr_pool_t *p, sip_ctxn_t *c, const char *buf, apr_size_t len,
                              sip_tp_kind_t kind, void *vhost, const sip_sockaddr_t *dest,
                              sip_ctxn_cb cb, void *baton)
{
    const char *method = c->req ? sip_msg_method(c->req) : c->method;

    c->buf = buf;
    c->len = len;
    c->kind = kind;
    c->vhost = vhost;
    if (c->req)     /* else sip_ctxn_send_known gave it */
        c->key = apr_pstrcat(p, sip_msg_branch(c->req), "|", method, NULL);
    if (kind == SIP_TP_TLS && ctxn_req(c)) {
        /* RFC 5922 §4: the host of the URI the request is routed by */
        const char *next = sip_msg_route_count(c->req) ? sip_msg_route_uri(p, c->req, 0)
                                                       : sip_msg_request_uri(c->req);
        sip_uri_info_t u;
        if (next && sip_uri_info(p, next, &u))
            c->tls_host = u.host;
    }
    c->dest = *dest;
    c->cb = cb;
    c->baton = baton;
    c->invite = strcmp(method, "INVITE") == 0;
    c->state = CT_CALLING;
    apr_hash_set(ctxns, c->key, APR_HASH_KEY_STRING, c);
    nctxns++;
    sip_stats->now.ctxns = nctxns;
    sip_stats->ctxns++;
    ctxn_send(c);
    if (kind == SIP_TP_UDP) {
        c->retx = txn_t1;
        sip_timer_set(txn_loop, &c->t_retx, c->retx, ctxn_retransmit, c);   /* A or E */
    }
    sip_timer_set(txn_loop, &c->t_timeout, 64 * txn_t1, ctxn_timeout, c);  /* B or F */
    return c;
}

void sip_ctxn_abandon(sip_ctxn_t *c)
{
    c->cb = NULL;
}

static void ctxn_cancel_on(sip_msg_t *cancel, sip_ctxn_t *inv);

static void ctxn_send_cancel(sip_ctxn_t *c)
{
    apr_pool_t *p;
    sip_msg_t *cancel;

    if (c->cancelled)
        return;
    c->cancelled = 1;
    apr_pool_create(&p, c->pool);
    cancel = ctxn_req(c) ? sip_msg_make_cancel(p, c->req) : NULL;
    if (cancel && c->on_flow)     /* §9.1: where the INVITE went, its connection */
        ctxn_cancel_on(cancel, c);
    else if (cancel)
        sip_ctxn_send(cancel, c->kind, c->vhost, &c->dest, NULL, NULL);
    apr_pool_destroy(p);
}

void sip_ctxn_cancel(sip_ctxn_t *c)
{
    if (!c->invite || c->state == CT_TERMINATED)
        return;
    if (c->state == CT_PROCEEDING)
        ctxn_send_cancel(c);
    else if (c->state == CT_CALLING) {
        /* §9.1: a CANCEL waits for a provisional response; the INVITE is
         * no longer retransmitted meanwhile. */
        c->cancel_pending = 1;
        sip_timer_cancel(txn_loop, &c->t_retx);
    }
}

int sip_ctxn_receive(sip_msg_t *resp, apr_pool_t *msg_pool)
{
    const char *branch = sip_msg_branch(resp);
    const char *key;
    sip_ctxn_t *c;
    int status = sip_msg_status(resp);
    int reliable;

    if (!branch)
        return 0;
    key = apr_pstrcat(msg_pool, branch, "|", sip_msg_cseq_method(resp), NULL);
    c = apr_hash_get(ctxns, key, APR_HASH_KEY_STRING);
    if (!c)
        return 0;
    reliable = c->kind != SIP_TP_UDP;

    if (status < 200) {
        if (c->state == CT_CALLING || c->state == CT_PROCEEDING) {
            if (c->invite)
                sip_timer_cancel(txn_loop, &c->t_retx);
            if (c->state == CT_CALLING && c->invite)
                sip_timer_cancel(txn_loop, &c->t_timeout);   /* B: Calling only */
            c->state = CT_PROCEEDING;
            ctxn_deliver(c, resp, 1);
            if (c->cancel_pending)
                ctxn_send_cancel(c);
        }
        return 1;
    }
    if (c->retired && c->state == CT_ACCEPTED) {
        /* a 2xx retransmitted to a retired Accepted INVITE: up as the
         * proxy would send it, without our Via (RFC 6026 §7.1, §16.7) */
        sip_txn_t *up = apr_hash_get(txns, c->up_key, APR_HASH_KEY_STRING);
        apr_size_t len = 0;
        const char *text;
        if (status < 200 || status >= 300 || !up || !up->proxied || up->state != ST_ACCEPTED)
            return 1;
        if ((text = sip_msg_relay_text(msg_pool, resp, &len)))
            txn_send(up, text, len);
        return 1;
    }
    if (c->invite && status < 300) {
        /* RFC 6026: Accepted; each 2xx (retransmissions too) goes to the TU */
        if (c->state == CT_CALLING || c->state == CT_PROCEEDING) {
            c->state = CT_ACCEPTED;
            sip_timer_cancel(txn_loop, &c->t_retx);
            sip_timer_cancel(txn_loop, &c->t_timeout);
            sip_timer_set(txn_loop, &c->t_end, 64 * txn_t1, ctxn_end, c);  /* M */
        }
        if (c->state == CT_ACCEPTED)
            ctxn_deliver(c, resp, 1);
        return 1;
    }
    if (c->state == CT_COMPLETED) {
        if (c->ack)
            sip_transport_send(&c->used, &c->dest, c->ack, c->ack_len);
        return 1;
    }
    if (c->state != CT_CALLING && c->state != CT_PROCEEDING)
        return 1;
    c->state = CT_COMPLETED;
    sip_timer_cancel(txn_loop, &c->t_retx);
    sip_timer_cancel(txn_loop, &c->t_timeout);
    if (c->invite) {
        /* §17.1.1.3: the ACK for a non-2xx is sent by the transaction */
        sip_msg_t *ack = ctxn_req(c) ? sip_msg_make_ack(c->pool, c->req, resp) : NULL;
        if (ack && (c->ack = sip_msg_serialize(c->pool, ack, &c->ack_len)))
            sip_transport_send(&c->used, &c->dest, c->ack, c->ack_len);
        sip_timer_set(txn_loop, &c->t_end, reliable ? 0 : apr_time_from_sec(32), ctxn_end, c); /* D */
    }
    else
        sip_timer_set(txn_loop, &c->t_end, reliable ? 0 : SIP_T4, ctxn_end, c);   /* K */
    ctxn_deliver(c, resp, 1);
    return 1;
}

sip_loop_t *sip_txn_loop(void)
{
    return txn_loop;
}

const char *sip_txn_last_response(sip_txn_t *t, apr_size_t *len)
{
    *len = t->last_len;
    return t->last;
}

int sip_txn_last_status(sip_txn_t *t)
{
    return t->last_status;
}

void sip_txn_drop(sip_txn_t *t)
{
    txn_terminate(t);
}

void sip_txn_detach_keep(sip_txn_t *t)
{
    t->kept++;
    t->tu = NULL;
    t->tu_ops = NULL;
}

void sip_txn_release(sip_txn_t *t)
{
    t->kept--;
    txn_destroy_if_done(t);
    txn_maybe_compact(t);
}

void sip_txn_set_user(sip_txn_t *t, const char *user)
{
    t->user = apr_pstrdup(t->pool, user);
}

const char *sip_txn_user(sip_txn_t *t)
{
    return t->user;
}

void sip_txn_add_note(sip_txn_t *t, const char *name, const char *value)
{
    const char *old;

    if (!t->notes)
        t->notes = apr_table_make(t->pool, 2);
    old = apr_table_get(t->notes, name);
    apr_table_set(t->notes, name, old ? apr_pstrcat(t->pool, old, "; ", value, NULL) : value);
}

const apr_table_t *sip_txn_notes(sip_txn_t *t)
{
    return t->notes;
}

void sip_txn_set_env(sip_txn_t *t, const char *name, const char *value)
{
    if (!t->env)
        t->env = apr_table_make(t->pool, 2);
    apr_table_set(t->env, name, value);
}

const apr_table_t *sip_txn_env(sip_txn_t *t)
{
    return t->env;
}

void sip_txn_set_auth_int(sip_txn_t *t, int on)
{
    t->auth_int = on;
}

int sip_txn_auth_int(sip_txn_t *t)
{
    return t->auth_int;
}

int sip_ctxn_settled(const sip_ctxn_t *c)
{
    return c->state == CT_ACCEPTED || c->state == CT_COMPLETED;
}

int sip_ctxn_retire(sip_ctxn_t *c, sip_txn_t *up)
{
    sip_ctxn_t *z;
    apr_time_t left;

    if (c->retired || (c->state != CT_COMPLETED
                       && (c->state != CT_ACCEPTED || !up || !up->proxied
                           || up->state != ST_ACCEPTED)))
        return 0;
    z = calloc(1, sizeof(*z));
    if (!z)
        return 0;
    z->key = strdup(c->key);
    z->up_key = c->state == CT_ACCEPTED ? strdup(up->key) : NULL;
    z->ack = c->ack ? malloc(c->ack_len) : NULL;
    if (!z->key || (c->state == CT_ACCEPTED && !z->up_key) || (c->ack && !z->ack)) {
        free((char *)z->key);
        free(z->up_key);
        free((char *)z->ack);
        free(z);
        return 0;
    }
    if (c->ack)
        memcpy((char *)z->ack, c->ack, c->ack_len);
    z->ack_len = c->ack_len;
    z->retired = 1;
    z->invite = c->invite;
    z->kind = c->kind;
    z->state = c->state;
    z->dest = c->dest;
    z->used = c->used;          /* the ACK of a retransmitted non-2xx goes the same way */
    sip_source_hold(&z->used);
    left = c->t_end.when - apr_time_now();
    ctxn_stop_timers(c);
    /* out, then in: a replaced entry would keep c's key, whose pool goes */
    apr_hash_set(ctxns, c->key, APR_HASH_KEY_STRING, NULL);
    apr_hash_set(ctxns, z->key, APR_HASH_KEY_STRING, z);   /* in c's place: the count stays */
    sip_timer_set(txn_loop, &z->t_end, left > 0 ? left : 0, ctxn_end, z);     /* M, D or K */
    c->state = CT_TERMINATED;
    c->cb = NULL;
    sip_source_release(&c->used);
    sip_loop_defer_destroy(txn_loop, c->pool);
    return 1;
}

/* ---- client transactions on a given connection (flows, RFC 5626 §5.3) ---- */

static sip_ctxn_t *ctxn_start_on(apr_pool_t *p, sip_ctxn_t *c, const char *buf, apr_size_t len,
                                 void *vhost, const sip_source_t *on, sip_ctxn_cb cb,
                                 void *baton)
{
    c->used = *on;
    sip_source_hold(&c->used);
    c->on_flow = 1;
    return ctxn_start(p, c, buf, len, on->kind, vhost, &on->peer, cb, baton);
}

sip_ctxn_t *sip_ctxn_send_text_on(const char *text, apr_size_t len, const sip_source_t *on,
                                  void *vhost, sip_ctxn_cb cb, void *baton)
{
    sip_ctxn_t *c = ctxn_new_from_text(text, len);

    if (!c)
        return NULL;
    return ctxn_start_on(c->pool, c, apr_pstrmemdup(c->pool, text, len), len, vhost, on, cb,
                         baton);
}

sip_ctxn_t *sip_ctxn_send_known(const char *text, apr_size_t len, const char *branch,
                                const char *method, sip_tp_kind_t kind, void *vhost,
                                const sip_sockaddr_t *dest, const sip_source_t *on,
                                sip_ctxn_cb cb, void *baton)
{
    apr_pool_t *p;
    sip_ctxn_t *c;

    c = ctxn_alloc(&p);
    c->method = apr_pstrdup(p, method);
    c->key = apr_pstrcat(p, branch, "|", method, NULL);
    text = apr_pstrmemdup(p, text, len);
    if (on)
        return ctxn_start_on(p, c, text, len, vhost, on, cb, baton);
    return ctxn_start(p, c, text, len, kind, vhost, dest, cb, baton);
}

static void ctxn_cancel_on(sip_msg_t *cancel, sip_ctxn_t *inv)
{
    const char *buf;
    apr_size_t len;
    sip_ctxn_t *c = ctxn_new_from_msg(cancel, &buf, &len);

    if (c)
        ctxn_start_on(c->pool, c, buf, len, inv->vhost, &inv->used, NULL, NULL);
}
