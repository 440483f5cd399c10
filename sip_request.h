/* httpd glue for the engine: the only code that creates request_recs.
 * A SIP request is given a synthetic "/user@host" path so that
 * <Location> sections apply to it. */
#ifndef SIP_REQUEST_H
#define SIP_REQUEST_H

#include "httpd.h"

/* Per-directory (<Location "/user@domain">) settings of mod_sip. */
typedef struct sip_dir_conf {
    int mode;                       /* SipMode; -1 = unset */
    int auth;                       /* SipAuth; -1 = unset (Off) */
    apr_array_header_t *providers;  /* SipAuthProvider names, NULL = "file" */
} sip_dir_conf;

/* The access log line of a server transaction, through mod_log_config
 * (ap_run_log_transaction), written when its final response is sent. */
struct sip_txn;
void sip_request_log(struct sip_txn *t, int status, apr_size_t bytes);

/* Does a request 'method' to 'aor' need digest authentication (SipAuth On
 * where it lands)?  *realm is the AuthName there. */
int sip_request_auth_required(apr_pool_t *p, server_rec *s, const char *method, const char *aor,
                              const char **realm);

/* MD5(user:realm:password) in hex from the authn providers configured for
 * 'aor' (SipAuthProvider, default "file" = AuthUserFile); NULL if unknown,
 * or, with *failed set (and logged), if a provider is missing or failed. */
const char *sip_request_realm_hash(apr_pool_t *p, server_rec *s, const char *aor,
                                   const char *user, const char *realm, int *failed);

/* SipMode that applies to 'aor' (vhost default, or a <Location>). */
int sip_request_mode(apr_pool_t *p, server_rec *s, const char *aor);

#endif
