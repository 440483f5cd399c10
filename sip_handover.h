/* Several engines (issue 19, docs/architecture.md "Several engines"):
 * which engine this process is, the mark that puts an engine's number into
 * the identifiers it generates, and the hand-over channel between engines.
 *
 * With one engine (SipEngines 1, and in unit tests and fuzzers) every
 * function is trivial: self 0, count 1, every branch, flow and AoR is
 * ours, and there is no peer to hand anything to.
 *
 * Layering: this sits beside the transport (it moves SIP text between
 * processes); it never parses SIP.  The layers above decide what to hand
 * over and register a handler per kind. */
#ifndef SIP_HANDOVER_H
#define SIP_HANDOVER_H

#include "apr_pools.h"
#include "sip_event.h"
#include "sip_transport.h"

#define SIP_ENGINES_MAX 32

/* ---- identity ---- */

/* This engine's number, 0..count-1 (0 outside an engine). */
int sip_engine_self(void);
/* How many engines run (1 outside an engine). */
int sip_engine_count(void);
/* Engine process, right after fork: who it is. */
void sip_engine_identity_set(int self, int count);

/* The one character that names an engine in what it generates: a Via
 * branch after "z9hG4bKmS", a To tag, a flow token.  '0'..'9', 'a'..'v'. */
char sip_engine_mark(int engine);
/* The engine a mark names; -1 when 'c' is no mark or names no engine
 * that runs now. */
int sip_engine_from_mark(char c);
/* The engine that generated a Via branch ("z9hG4bKmS<mark>..."); -1 when
 * the branch is not one of ours. */
int sip_engine_of_branch(const char *branch);

/* The engine that generated a To tag ("mS<mark>..." , sip_transaction.c's
 * stateful tags); -1 when the tag is not one of ours. */
int sip_engine_of_tag(const char *tag);

/* Flow ids (sip_source_flow_id) carry their engine in the top 8 bits, so a
 * binding's flow names the engine holding the connection. */
#define SIP_FLOW_ENGINE_SHIFT 56
#define sip_flow_engine(id) ((int)((apr_uint64_t)(id) >> SIP_FLOW_ENGINE_SHIFT))

/* The home engine of an address-of-record: the one engine that applies
 * its REGISTERs (RFC 3261 §10.3 CSeq/Call-ID rules need one writer). */
int sip_engine_home(const char *aor);

/* ---- the channel ---- */

typedef enum {
    SIP_HO_DELIVER = 1, /* process this message as if it had arrived here
                         * (a response for our branch, a REGISTER for an
                         * AoR homed here) */
    SIP_HO_QUERY,       /* a CANCEL or non-2xx ACK that matched nothing at
                         * the sender: process it if it matches here, else
                         * answer SIP_HO_MISS */
    SIP_HO_MISS,        /* answer to a QUERY: nothing here either */
    SIP_HO_SEND_FLOW,   /* send the text on the receiver's flow 'flow' */
    SIP_HO_FLOW_CLOSED, /* the sender's flow 'flow' closed (to every engine) */
    SIP_HO_REPLICA,     /* a location change for the replicas (text is the
                         * location store's own record format) */
    SIP_HO_SYNC,        /* a (re)started engine asks for every binding
                         * homed at the receiver, sent back as REPLICA */
    SIP_HO_HIT,         /* answer to a QUERY: matched here and processed
                         * here (the sender forgets its copy) */
    SIP_HO_KIND_COUNT
} sip_ho_kind_t;

/* Where the message came from, as the sending engine's transport saw it.
 * 'vhost' is a server_rec pointer: every engine is forked from the same
 * parent after the configuration is read, so it is valid in all of them.
 * 'flow' is the source's flow id at 'engine' (0 for UDP). */
typedef struct sip_ho_origin {
    sip_tp_kind_t kind;
    sip_sockaddr_t peer;
    sip_sockaddr_t local;
    void *vhost;
    int engine;
    apr_uint64_t flow;
    apr_uint32_t cookie;    /* the sender's own correlation value (QUERY/MISS);
                             * DELIVER: SIP_HO_UNCHECKED or 0 */
    const char *tls_subject;    /* a TLS client certificate's subject (SSL_CLIENT_S_DN) of
                                 * the origin's connection, or NULL; at most
                                 * SIP_HO_SUBJECT_MAX bytes are carried */
} sip_ho_origin_t;

#define SIP_HO_SUBJECT_MAX 1024

/* A DELIVER the sender did not parse (sip_registrar_handover_raw): the
 * receiver answers it if it is malformed, and hands it on if its parse
 * names another home. */
#define SIP_HO_UNCHECKED 1

typedef void (*sip_ho_handler_t)(sip_ho_kind_t kind, const sip_ho_origin_t *from,
                                 const char *text, apr_size_t len);

/* Parent, before forking the engines: one SOCK_DGRAM socketpair per
 * engine (engine n reads its own, everyone writes to every engine). */
apr_status_t sip_handover_prepare(apr_pool_t *pconf, int count);
/* Engine, after fork: poll our end of the channel, close the others'
 * read ends. */
apr_status_t sip_handover_start(sip_loop_t *loop, apr_pool_t *p);
/* One handler per kind (the last one set wins). */
void sip_handover_on(sip_ho_kind_t kind, sip_ho_handler_t h);

/* Send one datagram to engine 'to' (never to ourselves).  Non-blocking: a
 * full channel drops it, counts it (SipHandoverDropped) and returns
 * APR_EAGAIN; the sender treats it like a lost UDP datagram. */
apr_status_t sip_handover_send(int to, sip_ho_kind_t kind, const sip_ho_origin_t *from,
                               const char *text, apr_size_t len);
/* The same to every other engine. */
void sip_handover_broadcast(sip_ho_kind_t kind, const sip_ho_origin_t *from,
                            const char *text, apr_size_t len);

/* Before a request is routed: apply every replica already sent to this
 * engine (a REGISTER's 200 leaves its home only after its replica was
 * sent, so a phone's next request finds its binding on any engine).
 * Costs a read of shared memory when nothing is due; other datagrams it
 * meets are handled later, in their order. */
void sip_handover_catch_up(void);

/* The channel's largest SIP text (the engine sets the largest message
 * its limits allow; at least 64 KiB).  Longer texts are dropped. */
void sip_handover_set_max(apr_size_t max);

/* The datagram format, exposed for the fuzzer and unit tests: a fixed
 * header of sip_handover_header_size() bytes and the text.  encode
 * returns the datagram's length (0: 'size' too small); decode returns 1
 * and points 'text' into 'buf' when the header is well formed (known
 * kind and transport, addresses whose length fits their family), else 0.
 * The vhost it returns is unchecked: the receiver must find it among its
 * own server_recs before using it. */
apr_size_t sip_handover_header_size(void);
apr_size_t sip_handover_encode(char *buf, apr_size_t size, sip_ho_kind_t kind,
                               const sip_ho_origin_t *from, const char *text, apr_size_t len);
int sip_handover_decode(const char *buf, apr_size_t len, sip_ho_kind_t *kind,
                        sip_ho_origin_t *out, const char **text, apr_size_t *text_len);

/* A source as an origin (engine = self, flow = its flow id), and an
 * origin as a source the receiving engine can answer: UDP answers leave by
 * our own socket on the same local address (all engines hold one of the
 * SO_REUSEPORT group); a stream origin becomes a source whose sends go back
 * to its engine as SIP_HO_SEND_FLOW. */
void sip_handover_origin(const sip_source_t *src, sip_ho_origin_t *out);
/* The same with the client certificate's subject of a TLS origin (made in
 * 'p'), for a message the receiver processes as its own: the REGISTER
 * handed to its home engine logs and runs with SSL_CLIENT_S_DN. */
void sip_handover_origin_tls(apr_pool_t *p, const sip_source_t *src, sip_ho_origin_t *out);
/* 1 when 'out' can be answered or sent on, 0 when not (a flow closed). */
int sip_handover_source(const sip_ho_origin_t *o, sip_source_t *out);

#endif
