#include "sip_auth.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_nonce.h"
#include "sip_register_payload.h"
#include "sip_request.h"

#include <stdlib.h>
#include <string.h>

#include "apr_md5.h"
#include "apr_strings.h"
#include "apr_lib.h"

#include "sip_conf.h"
#include "sip_stats.h"

/* One client failing authentication over and over must not flood the
 * error log: lines are limited per source address (SipLogRateLimit). */
static sip_log_rate_t auth_lines = SIP_LOG_RATE_INIT("authentication failures");
#define AUTH_LOG(t, level, s, ...) \
    sip_log_limited(&auth_lines, sip_sockaddr_ip(sip_txn_pool(t), &sip_txn_source(t)->peer), \
                    401, (level), (s), __VA_ARGS__)

/* The key nonces are signed with.  Set in the parent before the engines
 * are forked (sip_auth_set_secret), so every engine, and an engine
 * restarted after a crash, verifies the nonces of every other: a client
 * may answer a challenge at another engine (another source port). */
static unsigned char secret[16];
static int secret_set;

void sip_auth_set_secret(const unsigned char *key, apr_size_t len)
{
    memset(secret, 0, sizeof(secret));
    memcpy(secret, key, len < sizeof(secret) ? len : sizeof(secret));
    secret_set = 1;
}

void sip_auth_init(apr_pool_t *p)
{
    /* without a secret from the parent (unit tests, fuzzers): our own */
    if (!secret_set && apr_generate_random_bytes(secret, sizeof(secret)) != APR_SUCCESS) {
        apr_time_t now = apr_time_now();
        memcpy(secret, &now, sizeof(now));
    }
    /* The parent's table, inherited by every engine; without one (unit
     * tests, fuzzers, or the parent could not map it) a table of our own. */
    if (!sip_nonce_attached() && sip_nonce_attach(p, p, SIP_NONCE_DEFAULT_SLOTS) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, NULL,
                     "sip auth: no memory for the nonce-count table; every qop credential "
                     "will be challenged");
}

static const char *md5hex(apr_pool_t *p, const char *s)
{
    unsigned char d[APR_MD5_DIGESTSIZE];
    char *hex = apr_palloc(p, 2 * APR_MD5_DIGESTSIZE + 1);
    int i;

    apr_md5(d, s, strlen(s));
    for (i = 0; i < APR_MD5_DIGESTSIZE; i++)
        apr_snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return hex;
}

/* A nonce says when it was made and proves that we made it (a keyed hash),
 * so nothing has to be remembered to check it (cf. mod_auth_digest). */
static const char *make_nonce(apr_pool_t *p, apr_time_t when)
{
    const char *t = apr_psprintf(p, "%016" APR_UINT64_T_HEX_FMT, (apr_uint64_t)when);
    char key[2 * sizeof(secret) + 1];
    int i;

    for (i = 0; i < (int)sizeof(secret); i++)
        apr_snprintf(key + 2 * i, 3, "%02x", secret[i]);
    return apr_pstrcat(p, t, md5hex(p, apr_pstrcat(p, t, ":", key, NULL)), NULL);
}

/* 1 valid, 0 forged or malformed; *stale when valid but too old. */
static int check_nonce(apr_pool_t *p, const char *nonce, apr_interval_time_t lifetime, int *stale,
                       apr_time_t *made)
{
    char t[17];
    apr_uint64_t when;

    *stale = 0;
    if (!nonce || strlen(nonce) != 48)
        return 0;
    memcpy(t, nonce, 16);
    t[16] = '\0';
    when = apr_strtoi64(t, NULL, 16);
    if (strcmp(make_nonce(p, (apr_time_t)when), nonce) != 0)
        return 0;
    *stale = apr_time_now() - (apr_time_t)when > lifetime;
    *made = (apr_time_t)when;
    return 1;
}

/* The headers of a REGISTER refusal: 'hdrs' with Accept and
 * Accept-Disposition where scripts may be uploaded
 * (draft-lennox-sip-reg-payload §4.2: every REGISTER response). */
static const char *const *register_headers(sip_txn_t *t, int status, const char *const *hdrs)
{
    apr_pool_t *p = sip_txn_pool(t);
    server_rec *s = sip_txn_source(t)->vhost;
    sip_regpl_t pl;

    if (!s || strcmp(sip_msg_method(sip_txn_request(t)), "REGISTER"))
        return hdrs;
    sip_regpl_init(p, s, sip_msg_aor(p, sip_txn_request(t)), &pl);
    return sip_regpl_headers(p, &pl, status, hdrs);
}

static int challenge_qop(sip_txn_t *t, int proxied, const char *realm, int stale, const char *qop)
{
    apr_pool_t *p = sip_txn_pool(t);
    const char *value = apr_psprintf(p, "Digest realm=\"%s\", nonce=\"%s\", algorithm=MD5, "
                                     "qop=\"%s\"%s", realm, make_nonce(p, apr_time_now()), qop,
                                     stale ? ", stale=true" : "");
    const char *hdrs[] = {proxied ? "Proxy-Authenticate" : "WWW-Authenticate", value, NULL};

    /* §22.1: 401 from a registrar or UAS, 407 from a proxy */
    sip_txn_reply(t, proxied ? 407 : 401,
                  proxied ? "Proxy Authentication Required" : "Unauthorized",
                  proxied ? hdrs : register_headers(t, 401, hdrs));
    return 0;
}

static int challenge(sip_txn_t *t, int proxied, const char *realm, int stale)
{
    server_rec *s = sip_txn_source(t)->vhost;
    const char *qop = "auth";

    /* SipScriptUploadIntegrity: offer auth-int at once to a REGISTER that
     * may carry scripts, rather than refuse its qop=auth later */
    if (!proxied && s && sip_get_conf(s)->upload_integrity > 0
        && !strcmp(sip_msg_method(sip_txn_request(t)), "REGISTER")) {
        sip_regpl_t pl;
        sip_regpl_init(sip_txn_pool(t), s, sip_msg_aor(sip_txn_pool(t), sip_txn_request(t)), &pl);
        if (pl.enabled)
            qop = "auth,auth-int";
    }
    return challenge_qop(t, proxied, realm, stale, qop);
}

void sip_auth_challenge_integrity(sip_txn_t *t, server_rec *s)
{
    const char *realm = sip_auth_realm(s, sip_txn_pool(t), sip_txn_request(t));

    challenge_qop(t, 0, realm ? realm : s->server_hostname, 0, "auth-int");
}

/* RFC 2617 §3.2.2.1 (RFC 7616 §3.4): nonce-counts only go up for one
 * nonce.  The highest count seen is kept in the table every engine shares
 * (sip_nonce.h), until the nonce goes stale.  1 when 'nc' is new; else
 * the request was answered (a challenge, with stale=true when the table
 * had no room: the credentials were right, a fresh nonce will do). */
static int nc_fresh(sip_txn_t *t, server_rec *s, int proxied, const char *realm,
                    const sip_credentials_t *c, apr_time_t stale_at)
{
    static sip_log_rate_t full = SIP_LOG_RATE_INIT("nonce-count table full");

    switch (sip_nonce_count(c->nonce, apr_strtoi64(c->nc, NULL, 16), stale_at, apr_time_now())) {
    case SIP_NC_FRESH:
        return 1;
    case SIP_NC_REPLAY:
        sip_stats->auth_replays++;
        AUTH_LOG(t, APLOG_NOTICE, s, "sip auth: replayed nonce-count %s for %s refused",
                 c->nc, c->username);
        return challenge(t, proxied, realm, 0);
    default:
        /* forgetting a live nonce would let its credentials be replayed:
         * refuse it instead (the client gets a new one) */
        sip_stats->nonce_table_full++;
        sip_log_limited(&full, "all", 503, APLOG_WARNING, s,
                        "sip auth: no room for the count of a new nonce (%lu slots, "
                        "SipNonceCounts); challenged again until some go stale "
                        "(SipNonceLifetime)", (unsigned long)sip_nonce_slots());
        return challenge(t, proxied, realm, 1);
    }
}

/* Verify the credentials of 't' for 'realm'.  1: *user is authenticated;
 * 0: a challenge (or 403) was sent. */
static int authenticate(sip_txn_t *t, sip_access_t *a, server_rec *s, int proxied,
                        const char *realm, const char *aor, const char **user)
{
    const sip_msg_t *req = sip_txn_request(t);
    apr_pool_t *p = sip_txn_pool(t);
    const char *method = sip_msg_method(req), *ha1, *ha2, *expected;
    const char *to = sip_msg_header(req, "To");
    int stale = 0, failed;
    apr_time_t made = 0;
    sip_credentials_t c;

    memset(&c, 0, sizeof(c));
    if (!sip_msg_credentials(p, req, proxied, realm, &c) || !c.username || !c.nonce
        || !c.response || !c.uri || !c.realm || strcmp(c.realm, realm) != 0)
        return challenge(t, proxied, realm, 0);
    if (!check_nonce(p, c.nonce, sip_get_conf(s)->nonce_lifetime, &stale, &made)) {
        AUTH_LOG(t, APLOG_INFO, s, "sip auth: %s: nonce not ours", c.username);
        return challenge(t, proxied, realm, 0);
    }
    if (stale)
        return challenge(t, proxied, realm, 1);
    if (c.algorithm && strcasecmp(c.algorithm, "MD5") != 0)
        return challenge(t, proxied, realm, 0);
    /* Without qop a response can be replayed for as long as its nonce
     * lives (RFC 2617 §3.2.2.1 makes nc the defence): refuse that unless
     * SipAuthQop optional lets old clients in. */
    if (!c.qop && sip_get_conf(s)->auth_qop) {
        AUTH_LOG(t, APLOG_NOTICE, s,
                     "sip auth: %s sent credentials without qop (SipAuthQop required)",
                     c.username);
        return challenge(t, proxied, realm, 0);
    }
    /* RFC 2617 §3.2.2.5: the digest-uri names the request it was made for */
    if (strcmp(c.uri, sip_msg_request_uri(req)) != 0
        && !sip_uri_equal(c.uri, sip_msg_request_uri(req))) {
        AUTH_LOG(t, APLOG_NOTICE, s,
                     "sip auth: %s: digest uri %s is not the Request-URI %s", c.username,
                     c.uri, sip_msg_request_uri(req));
        sip_txn_refuse(t, 400, "Bad Request", NULL, "digest uri does not match the Request-URI");
        return 0;
    }
    ha1 = sip_access_realm_hash(a, p, c.username, realm, &failed);
    if (!ha1 && failed) {
        /* a configuration or database problem: no challenge the client cannot meet */
        sip_txn_reply(t, 500, "Server Internal Error", NULL);
        return 0;
    }
    if (!ha1) {
        AUTH_LOG(t, APLOG_NOTICE, s, "sip auth: unknown user %s in realm %s",
                     c.username, realm);
        return challenge(t, proxied, realm, 0);
    }
    if (c.qop && !strcasecmp(c.qop, "auth-int")) {
        /* RFC 2617 §3.2.2.3: the body is part of what was signed */
        apr_size_t blen = 0;
        const char *body = sip_msg_body(req, &blen);
        unsigned char d[APR_MD5_DIGESTSIZE];
        char hex[2 * APR_MD5_DIGESTSIZE + 1];
        int i;
        apr_md5(d, body ? body : "", blen);
        for (i = 0; i < APR_MD5_DIGESTSIZE; i++)
            apr_snprintf(hex + 2 * i, 3, "%02x", d[i]);
        ha2 = md5hex(p, apr_pstrcat(p, method, ":", c.uri, ":", hex, NULL));
    }
    else
        ha2 = md5hex(p, apr_pstrcat(p, method, ":", c.uri, NULL));
    if (c.qop) {
        if ((strcasecmp(c.qop, "auth") && strcasecmp(c.qop, "auth-int")) || !c.nc || !c.cnonce)
            return challenge(t, proxied, realm, 0);
        expected = md5hex(p, apr_pstrcat(p, ha1, ":", c.nonce, ":", c.nc, ":", c.cnonce, ":",
                                         c.qop, ":", ha2, NULL));
    }
    else
        expected = md5hex(p, apr_pstrcat(p, ha1, ":", c.nonce, ":", ha2, NULL));
    if (strcasecmp(expected, c.response) != 0) {
        AUTH_LOG(t, APLOG_NOTICE, s, "sip auth: wrong password for %s in realm %s",
                     c.username, realm);
        return challenge(t, proxied, realm, 0);
    }
    if (c.qop && !nc_fresh(t, s, proxied, realm, &c, made + sip_get_conf(s)->nonce_lifetime))
        return 0;
    /* §10.3 step 3: a user may change only the bindings of its own AoR */
    if (strcmp(method, "REGISTER") == 0) {
        const char *tuser, *host;
        if (!to || !sip_uri_user_host(p, sip_header_uri(p, to, NULL), &tuser, &host)
            || strcmp(tuser, c.username) != 0) {
            AUTH_LOG(t, APLOG_NOTICE, s,
                         "sip auth: %s may not register %s", c.username, aor);
            sip_txn_reply(t, 403, "Forbidden", register_headers(t, 403, NULL));
            return 0;
        }
    }
    *user = c.username;
    sip_txn_set_auth_int(t, c.qop && !strcasecmp(c.qop, "auth-int"));
    return 1;
}

static int refuse(sip_txn_t *t, server_rec *s, sip_access_result_t res, const char *who,
                  const char *aor)
{
    if (res == SIP_ACCESS_DENIED) {
        AUTH_LOG(t, APLOG_NOTICE, s, "sip auth: %s denied by Require for %s",
                     who, aor);
        sip_txn_reply(t, 403, "Forbidden", register_headers(t, 403, NULL));
    }
    else
        sip_txn_reply(t, 500, "Server Internal Error", NULL);
    return 0;
}

/* sip_auth_check and sip_auth_check_user: 'need_user' asks for an
 * authenticated user even where the configuration lets anyone in. */
static int check(sip_txn_t *t, server_rec *s, int proxied, int need_user)
{
    const sip_msg_t *req = sip_txn_request(t);
    apr_pool_t *p = sip_txn_pool(t);
    const char *method = sip_msg_method(req), *realm = NULL, *aor, *user = NULL;
    const sip_source_t *src = sip_txn_source(t);
    sip_access_t *a;
    sip_access_result_t res;
    int ok;

    /* §22.1: ACK and CANCEL cannot be challenged */
    if (!strcmp(method, "ACK") || !strcmp(method, "CANCEL")
        || (!need_user && !sip_access_configured(s)))
        return 1;
    aor = sip_msg_aor(p, req);
    if (!aor)
        aor = sip_msg_request_uri(req);
    a = sip_access_begin(s, method, aor, &src->peer);
    res = sip_access_check(a, &realm);
    if (res == SIP_ACCESS_GRANTED && !need_user)
        ok = 1;
    else if (res != SIP_ACCESS_NEED_USER && res != SIP_ACCESS_GRANTED)
        ok = refuse(t, s, res, sip_sockaddr_ip(p, &src->peer), aor);
    else if (!(ok = authenticate(t, a, s, proxied, realm, aor, &user)))
        ;   /* challenged */
    else if ((res = sip_access_authorize(a, user)) != SIP_ACCESS_GRANTED)
        ok = refuse(t, s, res, user, aor);
    else
        sip_txn_set_user(t, user);
    sip_access_end(a);
    return ok;
}

int sip_auth_check(sip_txn_t *t, server_rec *s, int proxied)
{
    return check(t, s, proxied, 0);
}

int sip_auth_check_user(sip_txn_t *t, server_rec *s)
{
    /* RFC 5363 §5.2: a URI-list service authenticates and authorizes its
     * invoker; the UAS answers 401 (RFC 3261 §22.1) */
    return check(t, s, 0, 1);
}

/* ---- realm of our credentials (for the proxy, RFC 3261 §22.3) ---- */

const char *sip_auth_realm(server_rec *s, apr_pool_t *p, const sip_msg_t *req)
{
    const char *aor, *realm = NULL;
    sip_sockaddr_t peer;
    sip_access_t *a;

    /* Without <Location> or SipAuth we never challenge: nothing is ours. */
    if (!sip_access_configured(s) || sip_sockaddr_set(&peer, "127.0.0.1", 1) != APR_SUCCESS)
        return NULL;
    aor = sip_msg_aor(p, req);
    if (!aor)
        aor = sip_msg_request_uri(req);
    /* the realm sip_auth_check challenges with for this request */
    a = sip_access_begin(s, sip_msg_method(req), aor, &peer);
    sip_access_realm(a, &realm);
    realm = realm ? apr_pstrdup(p, realm) : NULL;
    sip_access_end(a);
    return realm;
}

int sip_auth_user_owns(apr_pool_t *p, const char *user, const char *uri)
{
    const char *uuser = NULL, *host = NULL;

    if (!user || !uri || !sip_uri_user_host(p, uri, &uuser, &host) || !uuser)
        return 0;
    return !strcmp(user, uuser) || (host && !strcasecmp(user, apr_pstrcat(p, uuser, "@", host,
                                                                          NULL)));
}
