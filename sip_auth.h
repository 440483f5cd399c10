/* SIP digest authentication (RFC 3261 §22, RFC 2617 qop=auth) for the
 * methods and <Location>s the administrator chooses (SipAuth On); the
 * password hashes come from Apache's authn providers (htdigest files,
 * dbm, dbd) through the httpd glue. */
#ifndef SIP_AUTH_H
#define SIP_AUTH_H

#include "httpd.h"
#include "sip_transaction.h"

/* Engine start: a secret of our own when sip_auth_set_secret was never
 * called, and a nonce-count table of our own when the parent attached
 * none (sip_nonce_attach). */
void sip_auth_init(apr_pool_t *p);

/* Parent, before forking the engines: the key every engine signs and
 * verifies nonces with (the first 16 bytes are used).  One key for all
 * engines, kept across engine restarts, so a nonce made by one engine is
 * valid at every other.  Nonce-counts (RFC 2617 §3.2.2.1) are kept in
 * the table the parent shares with every engine (sip_nonce.h). */
void sip_auth_set_secret(const unsigned char *key, apr_size_t len);

/* Check the request of 't' if its target needs authentication.  Returns
 * 1 when it may go on (authenticated, or nothing required), 0 when an
 * answer (401/407 challenge, 403) was sent. */
int sip_auth_check(sip_txn_t *t, server_rec *s, int proxied);

/* sip_auth_check for a request that needs an authenticated user even
 * where no SipAuth or Require asks for one (a URI-list request: RFC 5363
 * §5.2): challenged (401) with the realm that applies (AuthName, else
 * ServerName) and checked against the authn providers configured there;
 * Require still authorizes the user (403). */
int sip_auth_check_user(sip_txn_t *t, server_rec *s);

/* A 401 asking for credentials that protect the body too (qop=auth-int:
 * SipScriptUploadIntegrity for script uploads). */
void sip_auth_challenge_integrity(sip_txn_t *t, server_rec *s);

/* The digest realm this server challenges 'req' with (the AuthName of
 * its <Location>, else the ServerName), or NULL when no access control is
 * configured: a proxy removes credentials for it before forwarding. */
const char *sip_auth_realm(server_rec *s, apr_pool_t *p, const sip_msg_t *req);

/* RFC 3261 §10.3 step 3 applied to what a user owns (scripts uploaded for
 * an AoR, calls placed from it): does the digest user 'user' own the
 * address-of-record of 'uri'?  It does when it is the AoR's user part, or
 * its user@host. */
int sip_auth_user_owns(apr_pool_t *p, const char *user, const char *uri);

#endif
