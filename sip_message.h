/* Message layer: the only code that touches libosip2's osip_message_*.
 * Parses and validates received messages, builds and serializes
 * responses, and exposes headers as (long name, value) pairs. */
#ifndef SIP_MESSAGE_H
#define SIP_MESSAGE_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "sip_conf.h"
#include "sip_transport.h"

typedef struct sip_msg sip_msg_t;

typedef struct sip_header {
    const char *name;   /* long form ("f" becomes "From") */
    const char *value;  /* unfolded */
} sip_header_t;

/* Why a message was refused: 'status' is the SIP answer to give, or 0
 * when nothing can be answered (the message is dropped). */
typedef struct sip_msg_error {
    int status;
    const char *reason;
} sip_msg_error_t;

void sip_message_init(void);
/* An engine: libosip2's allocations of the calling thread go to free lists
 * (sip_freelist.h).  0 when left to malloc (ASan, valgrind), 1 otherwise. */
int sip_message_use_freelists(void);
void sip_message_freelist_stats(unsigned long *hits, unsigned long *misses, apr_size_t *held);

/* Parse and validate a received message (RFC 3261 §8.2, §16.3, §18.3).
 * On failure *out may still hold what was readable, for an error answer. */
apr_status_t sip_msg_parse(apr_pool_t *p, const char *buf, apr_size_t len,
                           const sip_limits_t *lim, int datagram,
                           sip_msg_t **out, sip_msg_error_t *err);

/* Error answer copied from the raw headers of a message that failed
 * validation; NULL if impossible (no request line, an ACK, or no Via on a
 * datagram). */
const char *sip_msg_raw_error_response(apr_pool_t *p, const sip_msg_t *req, int status,
                                       const char *reason, const char *to_tag, int stream,
                                       apr_size_t *len);

/* RFC 3261 §18.2.1 / RFC 3581: note received/rport in the top Via and work
 * out where responses go (§18.2.2): over UDP, received and rport (or the
 * sent-by port); over TCP or TLS, where a new connection goes should the
 * request's have closed (received and the sent-by port, or 5060/5061);
 * over WebSocket, the peer (no other connection can be opened). */
void sip_msg_stamp_via(sip_msg_t *req, const sip_source_t *src, sip_sockaddr_t *resp_dest);

/* Accessors (strings live in the message's pool). */
int sip_msg_is_request(const sip_msg_t *m);
const char *sip_msg_method(const sip_msg_t *m);
const char *sip_msg_request_uri(const sip_msg_t *m);  /* as received */
const char *sip_msg_uri_user(const sip_msg_t *m);     /* still %-escaped, or NULL */
const char *sip_msg_uri_host(const sip_msg_t *m);
const char *sip_msg_version(const sip_msg_t *m);
int sip_msg_status(const sip_msg_t *m);
const char *sip_msg_reason(const sip_msg_t *m);
/* The usual reason phrase of a status code (RFC 3261 §21), or a generic
 * one for its class. */
const char *sip_status_reason(int status);
const char *sip_msg_branch(const sip_msg_t *m);       /* top Via, or NULL */
const char *sip_msg_via_sent_by(const sip_msg_t *m);  /* host:port of the top Via */
const char *sip_msg_top_via(const sip_msg_t *m);      /* whole top Via as text */
const char *sip_msg_call_id(const sip_msg_t *m);
const char *sip_msg_cseq_number(const sip_msg_t *m);
const char *sip_msg_cseq_method(const sip_msg_t *m);
const char *sip_msg_from_tag(const sip_msg_t *m);
const char *sip_msg_to_tag(const sip_msg_t *m);
const apr_array_header_t *sip_msg_headers(const sip_msg_t *m);
const char *sip_msg_header(const sip_msg_t *m, const char *name);  /* first, or NULL */
const char *sip_msg_body(const sip_msg_t *m, apr_size_t *len);
const char *sip_msg_content_type(const sip_msg_t *m);

/* A response to 'req' with Via, From, To (tagged unless status 100 or
 * to_tag NULL), Call-ID and CSeq copied, ready for extra headers. */
sip_msg_t *sip_msg_make_response(apr_pool_t *p, const sip_msg_t *req, int status,
                                 const char *reason, const char *to_tag);
void sip_msg_add_header(sip_msg_t *m, const char *name, const char *value);
/* The text of our own response to 'req' (RFC 3261 §8.2.6): status line,
 * the request's Vias as stamped, From, To (with 'to_tag' past 100), Call-ID
 * and CSeq as the request had them, then 'hdrs' (name, value, ..., NULL)
 * and an optional body.  Built directly: no libosip2 message to serialize. */
const char *sip_msg_response_text(apr_pool_t *p, const sip_msg_t *req, int status,
                                  const char *reason, const char *to_tag,
                                  const char *const *hdrs, const char *content_type,
                                  const char *body, apr_size_t body_len, apr_size_t *len);

/* Parse a response written by a script; NULL and *why on failure. */
sip_msg_t *sip_msg_parse_script_response(apr_pool_t *p, const char *buf, apr_size_t len,
                                         const char **why);
/* Fill what the script left out (RFC 3050 §5.6.1.1): Via always from the
 * request, From/To/Call-ID/CSeq when missing, the To tag on non-100. */
void sip_msg_complete_response(sip_msg_t *resp, const sip_msg_t *req, const char *to_tag);

/* Serialize (Content-Length recomputed). */
const char *sip_msg_serialize(apr_pool_t *p, sip_msg_t *m, apr_size_t *len);

/* ---- proxying (RFC 3261 §16) ---- */

/* A parsed SIP URI, enough to route on. */
typedef struct sip_uri_info {
    const char *host;
    int port;               /* 0 when absent */
    int tcp;                /* transport=tcp */
    const char *transport;  /* the transport parameter, or NULL */
    int lr;                 /* loose-route parameter */
    const char *maddr;
    int secure;             /* sips: (RFC 3261 §26.2.2: TLS on every hop) */
} sip_uri_info_t;

int sip_uri_info(apr_pool_t *p, const char *uri, sip_uri_info_t *out);
/* The same for a request's Request-URI, from the parse the message already
 * has (no second parse of its text). */
int sip_msg_uri_info(apr_pool_t *p, const sip_msg_t *req, sip_uri_info_t *out);

/* Canonical address-of-record of a SIP URI (RFC 3261 §10.3 step 5):
 * "sip:user@host", host in lower case, no port or parameters; NULL when
 * the URI has no user or host.  Also accepts name-addr ("<...>"). */
const char *sip_uri_aor(apr_pool_t *p, const char *uri);
/* sip_uri_aor of a request's Request-URI, from the parse it already has. */
const char *sip_msg_uri_aor(apr_pool_t *p, const sip_msg_t *req);
/* The AoR of a REGISTER's To read from the raw datagram, before any parse,
 * to hand the REGISTER to its home engine unparsed: what sip_uri_aor gives
 * for the To the parser would read, or NULL whenever the text is anything
 * but a REGISTER with a plain To (then the parse decides).  Not a
 * validation: the home engine still parses it (the parser of record). */
const char *sip_msg_scan_register_aor(apr_pool_t *p, const char *buf, apr_size_t len);
/* The address-of-record a request is about: To for REGISTER, else the
 * Request-URI; NULL when it has none. */
const char *sip_msg_aor(apr_pool_t *p, const sip_msg_t *req);

/* A lower-case copy of 's' (scheme, host and parameter names compare
 * case-insensitively). */
const char *sip_str_lower(apr_pool_t *p, const char *s);
/* 'head' (a start line and headers, up to the blank line) followed by
 * 'body_len' bytes of 'body', NUL-ended; *len its length. */
char *sip_text_with_body(apr_pool_t *p, const char *head, const char *body,
                         apr_size_t body_len, apr_size_t *len);
/* RFC 3261 §25.1 token: a non-empty run of token characters. */
int sip_is_token(const char *s);
/* 's' (NULL: "") cut to 'max' bytes, control and non-ASCII bytes made
 * '?' (line breaks and tabs ' '), trailing blanks dropped: safe in a
 * reason phrase, a text/plain body and the log, whoever wrote it. */
const char *sip_str_printable(apr_pool_t *p, const char *s, apr_size_t max);

/* RFC 3261 §19.1.4 URI equality (scheme and host case-insensitive, user
 * case-sensitive, a default port is not the absence of one, transport,
 * user, ttl, method and maddr parameters must agree). */
int sip_uri_equal(const char *a, const char *b);

/* A string equal for two URIs exactly when sip_uri_equal says they are
 * (for hashing); NULL when the URI does not parse. */
const char *sip_uri_key(apr_pool_t *p, const char *uri);

/* A Contact q (RFC 3261 §20.10 qvalue) in thousandths, -1 when invalid. */
int sip_qvalue_parse(const char *s);

/* The user part (still %-escaped) and host of a SIP URI, as written. */
int sip_uri_user_host(apr_pool_t *p, const char *uri, const char **user, const char **host);

/* The parts of a URI that CPL address switches look at (RFC 3880 §4.1):
 * scheme (lower case) always; for sip: and sips: the user (still
 * %-escaped), password, host and port as written (NULL when absent) and
 * whether it has user=phone; for other schemes (tel:, ...) 'opaque', what
 * follows the colon.  0 when 'uri' has no scheme or a SIP URI does not
 * parse. */
typedef struct sip_uri_parts {
    const char *scheme;
    const char *user, *password, *host, *port;
    int user_phone;
    const char *opaque;
} sip_uri_parts_t;
int sip_uri_parts(apr_pool_t *p, const char *uri, sip_uri_parts_t *out);

/* The display name of a name-addr header value (From, To; RFC 3261
 * §25.1): quotes removed and quoted-pairs resolved; NULL when it has none
 * or does not parse. */
const char *sip_header_display(apr_pool_t *p, const char *value);

/* The elements of a comma-separated header value such as Contact (RFC
 * 3261 §7.3.1), split at the commas outside quotes and <...>, trimmed,
 * appended to 'out' (const char *). */
void sip_header_split_list(apr_pool_t *p, const char *value, apr_array_header_t *out);

/* The URI inside a header value such as To or Contact ("<uri>;params" or
 * "uri;params"), and the header parameters after it (or ""). */
const char *sip_header_uri(apr_pool_t *p, const char *value, const char **params);

/* ---- forwarding as text (RFC 3261 §16.6, §16.7) ----
 * A proxy changes what §16.6 asks and leaves the rest as it came: the
 * received text is copied header by header (order, spelling, folding and
 * the body untouched) with only these edits. */
typedef struct sip_wire_edit {
    const char *request_uri;    /* requests: the Request-URI (step 2), or NULL */
    int status;                 /* responses: a new status line, or 0 */
    const char *reason;
    const char *via;            /* a Via value put on top (step 8), or NULL */
    int pop_via;                /* responses: the top Via value removed */
    int max_forwards;           /* requests: decremented (step 3), 70 if absent */
    int route_drop;             /* more Route values removed from the top */
    const char *route_append;   /* a Route value added at the end (step 6) */
    const char *const *record_route;  /* values put on top (step 4), NULL-ended */
    const char *realm;          /* Authorization/Proxy-Authorization for this
                                 * realm removed (§22.3), or NULL */
    const char *extra;          /* raw header lines ("Name: v\r\n") added */
} sip_wire_edit_t;

/* The received text of 'm' with the edits above; also the Route values
 * route preprocessing removed, and the top Via as stamped.  Content-Length
 * is kept as it came (added when a datagram had none).  NULL for a
 * message that was built rather than received. */
const char *sip_msg_wire_text(apr_pool_t *p, const sip_msg_t *m, const sip_wire_edit_t *e,
                              apr_size_t *len);
/* A received response's text as it goes on upstream: its top Via value
 * (ours) removed, nothing else changed (RFC 3261 §16.7 step 3). */
const char *sip_msg_relay_text(apr_pool_t *p, const sip_msg_t *resp, apr_size_t *len);
/* Every header line called 'name', as received (possibly ""). */
const char *sip_msg_raw_headers(apr_pool_t *p, const sip_msg_t *m, const char *name);
/* Route values removed from the top by route preprocessing, and the text
 * of number 'idx' of them (as received, "<uri>;params"). */
int sip_msg_routes_removed(const sip_msg_t *m);
const char *sip_msg_removed_route(apr_pool_t *p, const sip_msg_t *m, int idx);
/* The first Record-Route value as received, or NULL. */
const char *sip_msg_top_record_route(apr_pool_t *p, const sip_msg_t *m);
/* The IP address a received message came from (RFC 3050 §5.5.1.7
 * REMOTE_ADDR for response runs); NULL unless the receiver noted it. */
void sip_msg_set_peer(sip_msg_t *m, const char *ip);
const char *sip_msg_peer(const sip_msg_t *m);

/* Size of the message as received. */
apr_size_t sip_msg_length(const sip_msg_t *m);

/* An independent copy that keeps the raw header list (for a script's
 * environment), made by serializing and parsing again. */
sip_msg_t *sip_msg_dup(apr_pool_t *p, sip_msg_t *m);

/* A copy of a request (or response) that can be changed and serialized. */
sip_msg_t *sip_msg_clone(apr_pool_t *p, const sip_msg_t *m);

int sip_msg_max_forwards(const sip_msg_t *m);      /* -1 when absent */
apr_status_t sip_msg_set_request_uri(sip_msg_t *m, const char *uri);
apr_status_t sip_msg_push_via(sip_msg_t *m, const char *via);
void sip_msg_pop_via(sip_msg_t *m);
int sip_msg_via_count(const sip_msg_t *m);
/* Sent-by, received, rport and transport of Via number 'idx'. */
int sip_msg_via_info(apr_pool_t *p, const sip_msg_t *m, int idx, const char **host, int *port,
                     const char **received, int *rport, int *tcp, const char **branch);
int sip_msg_route_count(const sip_msg_t *m);
const char *sip_msg_route_uri(apr_pool_t *p, const sip_msg_t *m, int idx);
void sip_msg_remove_route(sip_msg_t *m, int idx);
/* §9.1 CANCEL and §17.1.1.3 ACK for a request sent by a client transaction. */
sip_msg_t *sip_msg_make_cancel(apr_pool_t *p, const sip_msg_t *req);
sip_msg_t *sip_msg_make_ack(apr_pool_t *p, const sip_msg_t *req, const sip_msg_t *resp);

/* ---- SIP-CGI script output (RFC 3050 §5.6) ---- */

/* One message of script output: action line, headers, body; not
 * validated as SIP (action lines are not SIP start lines). */
sip_msg_t *sip_msg_parse_block(apr_pool_t *p, const char *buf, apr_size_t len);
const char *sip_msg_start_line(const sip_msg_t *m);
/* Does the block give header 'name' (CGI headers included)? */
int sip_msg_has_header(const sip_msg_t *m, const char *name);

/* Apply a script block to a serialized message (§5.6.1.2 merge rules):
 * each SIP header the block gives replaces all originals of that name and
 * goes right after the Via block; CGI-Remove deletes headers; CGI-*
 * headers never appear; the block's body replaces the original one, and
 * "Content-Length: 0" removes it.  Via is never taken from the block. */
const char *sip_msg_merge_text(apr_pool_t *p, const char *text, apr_size_t len,
                               const sip_msg_t *block, apr_size_t *out_len);

/* Digest credentials (RFC 3261 §22.4) from Authorization, or from
 * Proxy-Authorization when 'proxy' (either header when only the other one
 * has credentials for 'realm'); quotes removed.  0 when none. */
typedef struct sip_credentials {
    const char *username, *realm, *nonce, *uri, *response, *algorithm;
    const char *cnonce, *qop, *nc, *opaque;
} sip_credentials_t;
int sip_msg_credentials(apr_pool_t *p, const sip_msg_t *m, int proxy, const char *realm,
                        sip_credentials_t *c);

/* Long name of a compact header form (RFC 3261 §7.3.3), or NULL. */
const char *sip_header_long_name(const char *name, apr_size_t len);


/* ---- URI-list services (EXPLODE draft, RFC 5363) ---- */

/* 'uri' with each '@' after its userinfo written %40: the EXPLODE drafts
 * put "list=cid:a@b" unescaped in a parameter, which RFC 3261 §25.1 does
 * not allow and libosip2 would take for the end of a userinfo. */
const char *sip_uri_escape_params(apr_pool_t *p, const char *uri);
/* Parameter 'name' of a SIP or SIPS URI, %-decoded: "" for a flag, NULL
 * when absent or the URI does not parse.  Raw '@' in parameters is read. */
const char *sip_uri_param(apr_pool_t *p, const char *uri, const char *name);
/* The ?headers of a SIP or SIPS URI (RFC 3261 §19.1.1), in order, as
 * sip_header_t with long names and %-decoded values, and (if 'bare') the
 * URI without them.  0, or -1 when it does not parse. */
int sip_uri_headers(apr_pool_t *p, const char *uri, apr_array_header_t **hdrs,
                    const char **bare);
/* The Request-URI RFC 3261 §19.1.5 forms from a SIP or SIPS URI:
 * transport, maddr, ttl, user and unknown parameters kept, method and
 * the headers taken out.  NULL when it is not one, or when it holds what
 * no Request-URI may (controls, white space, <, > or "). */
const char *sip_uri_request_form(apr_pool_t *p, const char *uri);

/* A message/sipfrag request (RFC 3420 §2): request line, headers
 * (unfolded, compact names made long), blank line, body; the fragment's
 * own Content-Length, when there is one, says how long the body is.  NULL
 * with *why when there is no request line (none, or a status line) or it
 * is malformed.  Read with the accessors (method, headers, body). */
sip_msg_t *sip_msg_parse_frag(apr_pool_t *p, const char *buf, apr_size_t len, const char **why);

/* The realm of a credentials header value (Authorization,
 * Proxy-Authorization), unquoted; NULL when it names none. */
const char *sip_credentials_realm(apr_pool_t *p, const char *value);

/* A name-addr header value (From, To) in "<uri>" form (display name
 * kept) without its header parameter 'name' (any case), the others kept;
 * NULL when a '<' is not closed. */
const char *sip_header_drop_param(apr_pool_t *p, const char *value, const char *name);

/* ---- name mapping (sip_namemap) ---- */

/* A user part as written in a URI (sip_msg_uri_user) %-decoded; NULL on a
 * bad escape or %00. */
const char *sip_uri_user_decoded(apr_pool_t *p, const char *user);
/* SIP or SIPS 'uri' with its user replaced by 'user' (escaped as RFC 3261
 * §25.1 needs) and no password; 'bare' drops its parameters and headers
 * too.  NULL when 'uri' is not a SIP URI. */
const char *sip_uri_with_user(apr_pool_t *p, const char *uri, const char *user, int bare);

#endif
