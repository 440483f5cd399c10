/* httpd glue for the engine: the only code that creates request_recs.
 * A SIP request is given a synthetic "/user@host" path so that
 * <Location> sections apply to it. */
#ifndef SIP_REQUEST_H
#define SIP_REQUEST_H

#include "httpd.h"
#include "util_cfgtree.h"
#include "apr_hash.h"
#include "sip_transport.h"
#include "sip_message.h"

/* Per-directory (<Location "/user@domain">) settings of mod_sip. */
typedef struct sip_dir_conf {
    int mode;                       /* SipMode; -1 = unset */
    int auth;                       /* SipAuth; -1 = unset (Off) */
    apr_array_header_t *providers;  /* SipAuthProvider names, NULL = "file" */
    apr_hash_t *error_docs;         /* SipErrorDocument: int status -> sip_error_doc */
    int script_upload;              /* SipScriptUpload; -1 = unset (Off) */
    int explode;                    /* SipExplode; -1 = unset (Off) */
    apr_array_header_t *rules;      /* SipRule, SipRuleFile (const sip_rule_t *), in
                                     * config order; merged base first, then add */
    int websocket;                  /* SipWebSocket; -1 = unset (Off) */
} sip_dir_conf;

struct sip_txn;

/* A body for the server's own error responses (SipErrorDocument). */
typedef struct sip_error_doc {
    const char *content_type;       /* NULL: "default", no body */
    const char *body;
    apr_size_t len;
} sip_error_doc;

/* The body to put in the server's own 'status' (>= 400) answer to the
 * request of 't': SipErrorDocument of the <Location> that applies, else a
 * text ErrorDocument of core for codes httpd knows.  0 when none. */
int sip_request_error_body(struct sip_txn *t, int status, apr_pool_t *p, const char **ctype,
                           const char **body, apr_size_t *len);

/* The access log line of a server transaction, through mod_log_config
 * (ap_run_log_transaction), written when its final response is sent. */
struct sip_txn;
void sip_request_log(struct sip_txn *t, int status, apr_size_t bytes);
/* httpd's default_port hook: the port of the SIP message being logged
 * (0 = not ours: decline). */
apr_port_t sip_request_default_port(const request_rec *r);

/* Access control of one SIP request with Apache's own configuration: the
 * <Location> its synthetic path lands in, SipAuth, and mod_authz_core's
 * Require (ip, host, user, valid-user, <Limit INVITE>...).  One request_rec,
 * walked once, serves every step; sip_access_end() frees it. */
typedef struct sip_access sip_access_t;

typedef enum {
    SIP_ACCESS_GRANTED,     /* no user needed */
    SIP_ACCESS_NEED_USER,   /* authenticate first: SipAuth On, or Require wants a user */
    SIP_ACCESS_DENIED,      /* 403 */
    SIP_ACCESS_ERROR        /* 500: configuration error, logged by httpd */
} sip_access_result_t;

/* Is there anything to check for requests to 's' at all?  (No <Location>
 * and no SipAuth anywhere: nothing can restrict a request.) */
int sip_access_configured(server_rec *s);

sip_access_t *sip_access_begin(server_rec *s, const char *method, const char *aor,
                               const sip_sockaddr_t *peer);

/* Reverse lookups without blocking (sip_dns.h).  At config time: is any
 * Require host / forward-dns in the configuration ('tree' = ap_conftree)?
 * Per request: does 's' need the peer's name (HostnameLookups On/Double,
 * or such a Require where access is checked)?  '*dbl' when it must be
 * double-reverse verified.  The engine resolves the peer before the
 * access check, so httpd finds r->useragent_host set and never calls
 * the blocking resolver itself. */
void sip_request_scan_names(const ap_directive_t *tree);
/* (The same scan notes whether any <Location> holds more than routing:
 * when none does, sip_access_configured is only a vhost-wide SipAuth.) */
int sip_request_wants_name(server_rec *s, int *dbl);
/* The realm alone (AuthName, else ServerName), with no access check. */
void sip_access_realm(sip_access_t *a, const char **realm);
/* Before authentication; *realm is the AuthName that applies. */
sip_access_result_t sip_access_check(sip_access_t *a, const char **realm);
/* MD5(user:realm:password) in hex from the authn providers configured
 * there (SipAuthProvider, default "file" = AuthUserFile); NULL if unknown,
 * or, with *failed set (and logged), if a provider is missing or failed. */
const char *sip_access_realm_hash(sip_access_t *a, apr_pool_t *p, const char *user,
                                  const char *realm, int *failed);
/* After authentication as 'user': does Require let the user in? */
sip_access_result_t sip_access_authorize(sip_access_t *a, const char *user);
void sip_access_end(sip_access_t *a);

/* SipMode that applies to 'aor' (vhost default, or a <Location>). */
int sip_request_mode(apr_pool_t *p, server_rec *s, const char *aor);

/* SipScriptUpload that applies to 'aor' (vhost default, or a <Location>). */
int sip_request_script_upload(apr_pool_t *p, server_rec *s, const char *aor);

/* SipExplode that applies to 'aor' (vhost default, or a <Location>): may
 * URI-list requests (EXPLODE, RFC 5365 MESSAGE) for it be fanned out? */
int sip_request_explode(apr_pool_t *p, server_rec *s, const char *aor);
/* Is SipExplode On anywhere in the configuration? (saves per-request work) */
int sip_explode_used(void);

/* The rules (SipRule, SipRuleFile) that apply to 'req' from 'peer': its
 * <Location "/user@host"> walked, then its <If> sections, evaluated on a
 * request_rec whose headers_in are the SIP headers (so %{HTTP:From},
 * %{REQUEST_METHOD}, %{REMOTE_ADDR} work in <If>).  An array of
 * const sip_rule_t * in p (empty: none); NULL when the walk failed.  An
 * <If> httpd cannot evaluate is false (AH00039 in the error log). */
apr_array_header_t *sip_request_rules(apr_pool_t *p, server_rec *s, const sip_msg_t *req,
                                      const sip_sockaddr_t *peer);
/* Is there a SipRule or SipRuleFile anywhere in the configuration? */
int sip_rules_used(void);

#endif
