/* Server transactions (RFC 3261 §17.2, RFC 6026): matching, absorbing
 * retransmissions, re-sending the last response, 100 Trying, and the
 * timers that retransmit final responses over UDP. */
#ifndef SIP_TRANSACTION_H
#define SIP_TRANSACTION_H

#include "sip_event.h"
#include "sip_message.h"
#include "sip_transport.h"

typedef struct sip_txn sip_txn_t;

typedef enum {
    SIP_TXN_NEW,            /* a new transaction: the caller must answer it */
    SIP_TXN_ABSORBED,       /* retransmission or hop-by-hop ACK, handled */
    SIP_TXN_ACK_2XX,        /* ACK for a 2xx we sent: ends its retransmission */
    SIP_TXN_STRAY_ACK       /* ACK matching nothing */
} sip_txn_result_t;

/* RFC 3261 timer values (§17.1.1.1, Table 4). */
#define SIP_T1 apr_time_from_msec(500)     /* the default; SipTimerT1 may change it */
#define SIP_T2 apr_time_from_sec(4)
#define SIP_T4 apr_time_from_sec(5)

void sip_txn_init(sip_loop_t *loop, apr_pool_t *p);
/* The secret the To tags of answers without transaction state derive from
 * (RFC 3261 §8.2.7: OPTIONS the server answers itself); set by the parent
 * before it forks the engine. */
void sip_txn_set_tag_secret(const void *key, apr_size_t len);
/* SipTimerT1 (RFC 3261 §17.1.1.1: T1 may be configured; timers A, B, E,
 * F, G, H, J, M follow it).  'arg' is milliseconds ("NNN" or "NNNms");
 * NULL or an error text. */
const char *sip_txn_parse_t1(const char *arg, apr_interval_time_t *t1);
void sip_txn_set_t1(apr_interval_time_t t1);

/* Match a received request.  With SIP_TXN_NEW the transaction takes over
 * 'msg_pool' (which holds 'req'); otherwise the caller still owns it. */
sip_txn_result_t sip_txn_receive(sip_msg_t *req, const sip_source_t *src,
                                 const sip_sockaddr_t *resp_dest, apr_pool_t *msg_pool,
                                 sip_txn_t **txn);

/* The INVITE transaction a CANCEL refers to (§9.2), or NULL. */
sip_txn_t *sip_txn_find_invite(apr_pool_t *p, const sip_msg_t *cancel);

/* Send a response on the transaction (any status); later finals are refused. */
apr_status_t sip_txn_respond(sip_txn_t *t, int status, const char *buf, apr_size_t len);
/* Build and send a simple response; 'hdrs' is NULL or name/value pairs
 * ending in NULL. */
/* sip_txn_reply for a request we refuse, with the info log line every
 * refusal gets ("sip: 483 Too Many Hops for OPTIONS sip:... from ...: why"). */
apr_status_t sip_txn_refuse(sip_txn_t *t, int status, const char *reason,
                            const char *const *hdrs, const char *why);
apr_status_t sip_txn_reply(sip_txn_t *t, int status, const char *reason,
                           const char *const *hdrs);
/* sip_txn_reply / sip_txn_refuse with a body of the caller's own
 * ('ctype', 'body', 'len'; none when len is 0), which for an error
 * replaces any SipErrorDocument. */
apr_status_t sip_txn_reply_body(sip_txn_t *t, int status, const char *reason,
                                const char *const *hdrs, const char *ctype, const char *body,
                                apr_size_t len);
apr_status_t sip_txn_refuse_body(sip_txn_t *t, int status, const char *reason,
                                 const char *const *hdrs, const char *ctype, const char *body,
                                 apr_size_t len, const char *why);

/* The transaction user (script context or proxy) attaches while it
 * works on the transaction. */
typedef struct sip_txn_tu_ops {
    /* A CANCEL arrived: return 1 when the user will send the final
     * response itself (a proxy relays its branches' 487s), 0 when the
     * caller must answer 487. */
    int (*cancel)(void *tu);
    /* The ACK for a 2xx this transaction sent as a UAS (may be NULL). */
    void (*ack)(void *tu, sip_msg_t *ack);
    /* The transaction is over (may be NULL); the user should detach. */
    void (*ended)(void *tu);
} sip_txn_tu_ops_t;

void sip_txn_attach(sip_txn_t *t, const sip_txn_tu_ops_t *ops, void *tu);
/* The answer comes from logic that need not answer a retransmission alike
 * (a script, CPL, the proxy): keep the transaction to re-send it, even for
 * a request the server would otherwise answer without state (OPTIONS). */
void sip_txn_keep_state(sip_txn_t *t);
void sip_txn_detach(sip_txn_t *t);
/* Detach the user but keep the transaction until sip_txn_release, for a
 * caller that still answers it after detaching. */
void sip_txn_detach_keep(sip_txn_t *t);
void sip_txn_release(sip_txn_t *t);
int sip_txn_cancel(sip_txn_t *t);

apr_pool_t *sip_txn_pool(sip_txn_t *t);
const sip_msg_t *sip_txn_request(sip_txn_t *t);
/* Name mapping (sip_namemap) retargets a server transaction's request to
 * the canonical user before it is routed: the Request-URI every later
 * step and the proxy see.  Matching retransmissions is unaffected (RFC
 * 3261 §17.2.3 matches on the branch, not the Request-URI). */
apr_status_t sip_txn_retarget(sip_txn_t *t, const char *uri);
const sip_source_t *sip_txn_source(sip_txn_t *t);
const char *sip_txn_to_tag(sip_txn_t *t);
int sip_txn_final_sent(sip_txn_t *t);
int sip_txn_last_status(sip_txn_t *t);
/* The text of the last response sent (NULL if none). */
const char *sip_txn_last_response(sip_txn_t *t, apr_size_t *len);
/* End a transaction that will not be answered here (a CANCEL forwarded
 * statelessly, §16.10). */
void sip_txn_drop(sip_txn_t *t);

apr_size_t sip_txn_count(void);

/* Called once per server transaction when its first final response is
 * sent (for the access log). */
typedef void (*sip_txn_final_hook)(sip_txn_t *t, int status, apr_size_t bytes);
void sip_txn_on_final(sip_txn_final_hook hook);

/* Asked for a body when the server itself answers with an error
 * (sip_txn_reply, status >= 400): 1 and the body, or 0. */
typedef int (*sip_txn_error_body_hook)(sip_txn_t *t, int status, apr_pool_t *p,
                                       const char **content_type, const char **body,
                                       apr_size_t *len);
void sip_txn_on_error_body(sip_txn_error_body_hook hook);
apr_time_t sip_txn_start(sip_txn_t *t);
/* The user digest authentication proved (AUTH_TYPE/REMOTE_USER, %u). */
void sip_txn_set_user(sip_txn_t *t, const char *user);
const char *sip_txn_user(sip_txn_t *t);
/* Notes the access log line shows (mod_log_config %{name}n): a second
 * value for the same name is appended after "; ". */
void sip_txn_add_note(sip_txn_t *t, const char *name, const char *value);
const apr_table_t *sip_txn_notes(sip_txn_t *t);   /* NULL when none */
/* Environment variables of the access log line (r->subprocess_env, for
 * CustomLog ... env=NAME): the rules' "log" action sets sip-rule-log. */
void sip_txn_set_env(sip_txn_t *t, const char *name, const char *value);
const apr_table_t *sip_txn_env(sip_txn_t *t);     /* NULL when none */
/* Whether those credentials protected the body too (qop=auth-int). */
void sip_txn_set_auth_int(sip_txn_t *t, int on);
int sip_txn_auth_int(sip_txn_t *t);
sip_loop_t *sip_txn_loop(void);

#endif

/* ---- client transactions (RFC 3261 §17.1) ---- */

typedef struct sip_ctxn sip_ctxn_t;

/* Every response (retransmitted 2xx included), or a synthesized 408
 * (timeout) / 503 (transport error) with from_network = 0. */
typedef void (*sip_ctxn_cb)(void *baton, sip_ctxn_t *c, sip_msg_t *resp, int from_network);

/* Send 'req' (its top Via already ours, with a unique branch) to 'dest'.
 * The transaction lives in its own pool until it ends. */
sip_ctxn_t *sip_ctxn_send(sip_msg_t *req, sip_tp_kind_t kind, void *vhost,
                          const sip_sockaddr_t *dest, sip_ctxn_cb cb, void *baton);
/* The same for a request already serialized (script header merging keeps
 * its own header order); 'text' must parse as a request. */
sip_ctxn_t *sip_ctxn_send_text(const char *text, apr_size_t len, sip_tp_kind_t kind,
                               void *vhost, const sip_sockaddr_t *dest, sip_ctxn_cb cb,
                               void *baton);
/* The same on the connection 'on' (a flow: RFC 5626 §5.3, RFC 7118 §5),
 * whatever connection its address would pick; its CANCEL goes there too.
 * 'on' is copied and held until the transaction ends. */
sip_ctxn_t *sip_ctxn_send_text_on(const char *text, apr_size_t len, const sip_source_t *on,
                                  void *vhost, sip_ctxn_cb cb, void *baton);
/* The same for a request whose text the caller built from a request it
 * had parsed, with our edits only (the branch and method it gives are the
 * text's): the text is not parsed again unless the transaction needs it
 * (a CANCEL, the ACK of a non-2xx, a local 408/503, a TLS name check).
 * Over the connection 'on' when it is given, else to 'dest'. */
sip_ctxn_t *sip_ctxn_send_known(const char *text, apr_size_t len, const char *branch,
                                const char *method, sip_tp_kind_t kind, void *vhost,
                                const sip_sockaddr_t *dest, const sip_source_t *on,
                                sip_ctxn_cb cb, void *baton);
/* 1 when a client transaction has had its final response: Completed, or
 * an INVITE's Accepted (RFC 6026). */
int sip_ctxn_settled(const sip_ctxn_t *c);
/* Let a settled client transaction outlive its owner as a malloc'd
 * remnant until its last timer (D, K or M): a Completed one absorbs
 * retransmitted finals (re-sending the ACK of a non-2xx, §17.1.1.2); an
 * Accepted INVITE sends each 2xx retransmitted to it up through the
 * proxied server transaction 'up' (its Via popped, RFC 6026 §7.1).  'c'
 * is gone when this returns 1; 0: nothing changed (not settled, 'up' not
 * a proxied INVITE in Accepted, no memory). */
int sip_ctxn_retire(sip_ctxn_t *c, sip_txn_t *up);
/* Stop telling the owner (the transaction still absorbs retransmissions). */
void sip_ctxn_abandon(sip_ctxn_t *c);
/* §9.1: CANCEL an INVITE client transaction once it has a provisional. */
void sip_ctxn_cancel(sip_ctxn_t *c);
const sip_msg_t *sip_ctxn_request(const sip_ctxn_t *c);

/* A response that arrived from the network: 1 if a client transaction
 * took it, 0 if it matches none (the caller may forward it statelessly). */
int sip_ctxn_receive(sip_msg_t *resp, apr_pool_t *msg_pool);

/* The server transaction forwards responses of a proxy: no 2xx
 * retransmission of its own, and every 2xx is passed on (RFC 6026). */
void sip_txn_set_proxied(sip_txn_t *t);

apr_size_t sip_ctxn_count(void);
