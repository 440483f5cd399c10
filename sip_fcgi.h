/* FastCGI (the 1996 Open Market specification) as a SIP-CGI transport:
 * the record layer (pure: encoding a request, parsing the answer
 * incrementally) and the engine's client of worker pools (sip_fcgi_pool.c):
 * external application servers (SipFastCGIConnect) and pools the engine
 * starts itself (SipFastCGI).  docs/fastcgi.md. */
#ifndef SIP_FCGI_H
#define SIP_FCGI_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "httpd.h"
#include "http_config.h"
#include "sip_event.h"
#include "util_fcgi.h"      /* record types and flags only: its helpers live in httpd */

/* ---- record layer (sip_fcgi.c) ---- */

/* The whole request as bytes: BEGIN_REQUEST (responder; FCGI_KEEP_CONN
 * when 'keep'), 'envp' ("NAME=value" strings, NULL-ended, as given to a
 * spawned script) as PARAMS name-value pairs, 'body' as STDIN, each stream
 * ended by its empty record.  NULL when a variable has no '='. */
char *sip_fcgi_encode_request(apr_pool_t *p, apr_uint16_t id, int keep, const char *const *envp,
                              const char *body, apr_size_t blen, apr_size_t *len);

/* Gives every record of an encoded request (sip_fcgi_encode_request)
 * the request id 'id': a request gets its id when a connection takes it. */
void sip_fcgi_set_id(char *buf, apr_size_t len, apr_uint16_t id);

/* FCGI_ABORT_REQUEST for request 'id' (8 bytes). */
void sip_fcgi_encode_abort(unsigned char out[AP_FCGI_HEADER_LEN], apr_uint16_t id);

/* One name-value pair of PARAMS appended at 'out' (NULL: only measured);
 * returns its encoded length. */
apr_size_t sip_fcgi_encode_pair(unsigned char *out, const char *name, apr_size_t nlen,
                                const char *value, apr_size_t vlen);

/* Decodes PARAMS content (what a worker does; for tests and the fuzzer):
 * the pairs go into 't'.  0, or -1 with *why when malformed. */
int sip_fcgi_decode_params(apr_pool_t *p, const unsigned char *buf, apr_size_t len,
                           apr_table_t *t, const char **why);

typedef void (*sip_fcgi_data_cb)(void *baton, const char *buf, apr_size_t len);

/* The answer to one request, parsed as its bytes arrive. */
typedef struct sip_fcgi_parser {
    apr_uint16_t id;            /* the request's id: records of others are errors */
    apr_size_t max_stderr;      /* bytes of STDERR accepted; more is an error */
    sip_fcgi_data_cb on_stdout, on_stderr;
    void *baton;
    /* state */
    unsigned char hdr[AP_FCGI_HEADER_LEN];
    apr_size_t hlen;            /* bytes of hdr filled */
    int type;                   /* record being read; 0 = between records */
    apr_size_t content_left, padding_left;
    unsigned char end[8];       /* END_REQUEST body */
    apr_size_t end_len;
    apr_size_t err_total;
    int stdout_closed;          /* the empty STDOUT record came */
    int ended;
    apr_uint32_t app_status;    /* from END_REQUEST */
    int protocol_status;        /* FCGI_REQUEST_COMPLETE 0, CANT_MPX_CONN 1, OVERLOADED 2,
                                   UNKNOWN_ROLE 3 */
} sip_fcgi_parser_t;

void sip_fcgi_parser_init(sip_fcgi_parser_t *ps, apr_uint16_t id, apr_size_t max_stderr,
                          sip_fcgi_data_cb on_stdout, sip_fcgi_data_cb on_stderr, void *baton);

/* Feed 'len' bytes.  Returns 0 when all was consumed and the answer goes
 * on, 1 when END_REQUEST is complete (*used: the bytes up to its end; what
 * follows is not this request's), -1 with *why on a malformed record (the
 * connection cannot be trusted any more). */
int sip_fcgi_parse(sip_fcgi_parser_t *ps, const char *buf, apr_size_t len, apr_size_t *used,
                   const char **why);

/* A connection's byte stream when several requests share it
 * (FCGI_MPXS_CONNS, §3.3: records of different requests interleave): the
 * stream is cut into records, each handed whole, in order, to the parser
 * of its request ('lookup' by id; NULL: no such request in flight, an
 * error).  Management records (id 0) go to 'on_mgmt' (content at most
 * SIP_FCGI_MGMT_MAX bytes; non-zero return: not expected, an error).
 * 'after' runs after each piece given to a request's parser ('ended': its
 * END_REQUEST is complete); a non-zero return stops the demultiplexing
 * (the connection went away). */
#define SIP_FCGI_MGMT_MAX 1024

typedef struct sip_fcgi_demux {
    sip_fcgi_parser_t *(*lookup)(void *baton, apr_uint16_t id);
    int (*on_mgmt)(void *baton, int type, const unsigned char *content, apr_size_t len);
    int (*after)(void *baton, sip_fcgi_parser_t *ps, int ended);
    void *baton;
    /* state */
    unsigned char hdr[AP_FCGI_HEADER_LEN];
    apr_size_t hlen;
    apr_size_t rec_left;        /* bytes of the current record still to come (content, padding) */
    sip_fcgi_parser_t *cur;     /* its request's parser; NULL with rec_left: a management record */
    int mtype;
    apr_size_t mclen;           /* the management record's content length */
    apr_size_t mlen;            /* bytes of it gathered */
    unsigned char mgmt[SIP_FCGI_MGMT_MAX];
} sip_fcgi_demux_t;

void sip_fcgi_demux_init(sip_fcgi_demux_t *d, sip_fcgi_parser_t *(*lookup)(void *, apr_uint16_t),
                         int (*on_mgmt)(void *, int, const unsigned char *, apr_size_t),
                         int (*after)(void *, sip_fcgi_parser_t *, int), void *baton);

/* Feed 'len' bytes: 0 when all was consumed, 1 when 'after' stopped it,
 * -1 with *why on a malformed record (the connection cannot be trusted). */
int sip_fcgi_demux(sip_fcgi_demux_t *d, const char *buf, apr_size_t len, const char **why);

/* FCGI_GET_VALUES asking for FCGI_MPXS_CONNS and FCGI_MAX_REQS (§4.1);
 * returns its length (at most 64 bytes at 'out'). */
apr_size_t sip_fcgi_encode_get_values(unsigned char *out);

/* Reads a GET_VALUES_RESULT's content: *mpxs (0 or 1) and *max_reqs (0:
 * not given).  0, or -1 with *why when malformed. */
int sip_fcgi_parse_values(const unsigned char *buf, apr_size_t len, int *mpxs, int *max_reqs,
                          const char **why);

/* ---- the engine's client (sip_fcgi_pool.c) ---- */

struct sip_fcgi_target;
typedef struct sip_fcgi_target sip_fcgi_target_t;
typedef struct sip_fcgi_req sip_fcgi_req_t;

/* What a request reports back to its SIP-CGI run. */
typedef struct sip_fcgi_sink {
    /* STDOUT bytes; returns non-zero when the run is over (stop reading) */
    int (*out)(void *baton, const char *buf, apr_size_t len);
    /* the answer is complete ('app_status' from END_REQUEST), or failed
     * ('failure' set: the run answers 500 as for a crashed script) */
    void (*end)(void *baton, const char *failure, apr_uint32_t app_status);
} sip_fcgi_sink_t;

/* The worker pool a script maps to (SipFastCGIConnect pattern, or the
 * script's own path named by SipFastCGI), or NULL: spawn it as usual. */
sip_fcgi_target_t *sip_fcgi_lookup(server_rec *s, const char *path, const char *name);

/* Send a request: envp and body are copied.  NULL with *busy set when the
 * pool's connections are all busy and its queue is full (the caller
 * answers 503 with Retry-After). */
sip_fcgi_req_t *sip_fcgi_submit(sip_fcgi_target_t *t, server_rec *s, const char *script,
                                const char *const *envp, const char *body, apr_size_t blen,
                                const sip_fcgi_sink_t *sink, void *baton, int *busy);

/* The run is over before the answer was (timeout, CANCEL, output cap,
 * bad output): no more callbacks; the worker is told or its connection
 * dropped. */
void sip_fcgi_cancel(sip_fcgi_req_t *r);

/* Engine start and stop: starts SipFastCGI pools (after killing what the
 * workers of a crashed engine before it left), stops their workers. */
void sip_fcgi_init(sip_loop_t *loop, apr_pool_t *p);
void sip_fcgi_shutdown(void);

/* Directives (mod_sip.c's thin handlers) */
const char *sip_fcgi_cmd_connect(cmd_parms *cmd, int argc, char *const argv[]);
const char *sip_fcgi_cmd_pool(cmd_parms *cmd, int argc, char *const argv[]);
const char *sip_fcgi_cmd_max_requests(cmd_parms *cmd, const char *arg);
const char *sip_fcgi_cmd_idle(cmd_parms *cmd, const char *arg);
const char *sip_fcgi_cmd_queue(cmd_parms *cmd, const char *arg);

#endif
