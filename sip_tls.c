/* TLS for SIP streams, terminated in the engine with the SSL_CTX that
 * mod_ssl built for each virtual host (docs/architecture.md, "TLS and
 * WebSocket"; docs/tls.md).  Transport layer: bytes only, no SIP. */
#include "sip_tls.h"
#include "sip_log.h"
#include "sip_stats.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "apr_optional_hooks.h"
#include "apr_strings.h"
#include "http_log.h"
#include "mod_ssl.h"

/* mod_ssl_openssl.h (which declares this hook) is not installed by every
 * distribution; the declaration is mod_ssl's own, and APR_OPTIONAL_HOOK
 * needs its ssl_HOOK_init_server_t type. */
APR_DECLARE_EXTERNAL_HOOK(ssl, SSL, int, init_server,
                          (server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx))

/* What mod_ssl built for one virtual host, recorded in the parent. */
typedef struct tls_vhost {
    server_rec *s;
    SSL_CTX *server_ctx;    /* SSLEngine on */
    SSL_CTX *proxy_ctx;     /* SSLProxyEngine on */
} tls_vhost_t;

struct sip_tls_conn {
    SSL *ssl;
    int fd;
    int client;
    int want_write;         /* the last call wants the descriptor writable */
    int handshake_logged;   /* one line per failed handshake */
    server_rec *vhost;
};

static apr_array_header_t *tls_vhosts;  /* tls_vhost_t, in pconf */
static SSL_CTX *system_client_ctx;      /* outgoing without a proxy context */
static int conn_idx = -1;               /* SSL ex_data: the sip_tls_conn_t */

static sip_log_rate_t rl_handshake = SIP_LOG_RATE_INIT("failed TLS handshakes");

/* ---- parent: capture the contexts ---- */

static apr_status_t tls_vhosts_reset(void *data)
{
    (void)data;
    tls_vhosts = NULL;      /* mod_ssl frees the contexts with pconf */
    return APR_SUCCESS;
}

static tls_vhost_t *tls_vhost_entry(server_rec *s, apr_pool_t *p)
{
    tls_vhost_t *v;
    int i;

    for (i = 0; tls_vhosts && i < tls_vhosts->nelts; i++)
        if (APR_ARRAY_IDX(tls_vhosts, i, tls_vhost_t).s == s)
            return &APR_ARRAY_IDX(tls_vhosts, i, tls_vhost_t);
    if (!p)
        return NULL;
    if (!tls_vhosts) {
        tls_vhosts = apr_array_make(p, 4, sizeof(tls_vhost_t));
        apr_pool_cleanup_register(p, NULL, tls_vhosts_reset, apr_pool_cleanup_null);
    }
    v = apr_array_push(tls_vhosts);
    memset(v, 0, sizeof(*v));
    v->s = s;
    return v;
}

/* mod_ssl's post_config offers every context it builds; mod_sip's own
 * post_config (REALLY_LAST) forks the engine afterwards, which inherits
 * them. */
static int tls_init_server(server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx)
{
    tls_vhost_t *v = tls_vhost_entry(s, p);

    if (is_proxy)
        v->proxy_ctx = ctx;
    else
        v->server_ctx = ctx;
    return OK;
}

void sip_tls_register_hooks(apr_pool_t *p)
{
    (void)p;
    APR_OPTIONAL_HOOK(ssl, init_server, tls_init_server, NULL, NULL, APR_HOOK_MIDDLE);
}

/* ---- engine: callbacks that need no conn_rec ---- */

static const char *tls_peer_text(apr_pool_t *p, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[64], port[16];

    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) < 0
        || getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                       NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return "?";
    return apr_pstrcat(p, host, ":", port, NULL);
}

/* The verification OpenSSL did, unchanged (mod_ssl's SSLVerifyClient
 * optional_no_ca, which overrides it, needs mod_ssl's per-directory
 * state): only a log line for the refusal. */
static int tls_verify_cb(int ok, X509_STORE_CTX *store)
{
    if (!ok) {
        SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
        sip_tls_conn_t *t = ssl ? SSL_get_ex_data(ssl, conn_idx) : NULL;
        int err = X509_STORE_CTX_get_error(store);
        char subject[256] = "";
        X509 *cert = X509_STORE_CTX_get_current_cert(store);
        apr_pool_t *p;

        if (cert)
            X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        apr_pool_create(&p, NULL);
        sip_log_limited(&rl_handshake, "verify", 1, APLOG_INFO,
                        t && t->vhost ? t->vhost : ap_server_conf,
                        "sip: TLS %s certificate of %s refused at depth %d: %s (%s)",
                        t && t->client ? "server" : "client", tls_peer_text(p, t ? t->fd : -1),
                        X509_STORE_CTX_get_error_depth(store),
                        X509_verify_cert_error_string(err), subject);
        apr_pool_destroy(p);
    }
    return ok;
}

static int tls_names_match(server_rec *s, const char *name)
{
    int i;

    if (s->server_hostname && !strcasecmp(s->server_hostname, name))
        return 1;
    for (i = 0; s->names && i < s->names->nelts; i++)
        if (!strcasecmp(APR_ARRAY_IDX(s->names, i, const char *), name))
            return 1;
    for (i = 0; s->wild_names && i < s->wild_names->nelts; i++)
        if (!ap_strcasecmp_match(name, APR_ARRAY_IDX(s->wild_names, i, const char *)))
            return 1;
    return 0;
}

static int tls_same_address(server_rec *a, server_rec *b)
{
    server_addr_rec *x, *y;

    for (x = a->addrs; x; x = x->next)
        for (y = b->addrs; y; y = y->next)
            if (x->host_port == y->host_port
                && (!x->host_addr || !y->host_addr || apr_sockaddr_equal(x->host_addr, y->host_addr)
                    || apr_sockaddr_is_wildcard(x->host_addr)
                    || apr_sockaddr_is_wildcard(y->host_addr)))
                return 1;
    return 0;
}

static void tls_use_ctx(SSL *ssl, SSL_CTX *ctx)
{
    SSL_set_SSL_CTX(ssl, ctx);
    /* SSL_set_SSL_CTX takes the certificate, not the verification settings */
    SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), tls_verify_cb);
    SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(ctx));
}

/* SNI (RFC 6066 §3) among the TLS virtual hosts on the connection's
 * address; no match keeps the address's own (first) virtual host. */
static int tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    sip_tls_conn_t *t = SSL_get_ex_data(ssl, conn_idx);
    int i;

    (void)alert;
    (void)arg;
    if (!name || !t || !t->vhost || tls_names_match(t->vhost, name))
        return SSL_TLSEXT_ERR_OK;
    for (i = 0; tls_vhosts && i < tls_vhosts->nelts; i++) {
        tls_vhost_t *v = &APR_ARRAY_IDX(tls_vhosts, i, tls_vhost_t);
        if (v->server_ctx && v->s != t->vhost && tls_same_address(v->s, t->vhost)
            && tls_names_match(v->s, name)) {
            tls_use_ctx(ssl, v->server_ctx);
            t->vhost = v->s;
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Every mod_ssl callback on 'ctx' reads its conn_rec from the SSL's app
 * data, which only exists in an MPM child: replace or drop each one. */
static void tls_make_standalone(SSL_CTX *ctx, int server)
{
    SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), tls_verify_cb);
    SSL_CTX_set_info_callback(ctx, NULL);
    SSL_CTX_set_msg_callback(ctx, NULL);
    SSL_CTX_set_keylog_callback(ctx, NULL);
    SSL_CTX_set_client_cert_cb(ctx, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, (server ? tls_sni_cb : NULL));
    SSL_CTX_set_tlsext_servername_arg(ctx, NULL);
    SSL_CTX_set_client_hello_cb(ctx, NULL, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, NULL, NULL);
    SSL_CTX_set_tlsext_status_cb(ctx, NULL);
    SSL_CTX_set_tlsext_status_arg(ctx, NULL);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, NULL);
#endif
#ifndef OPENSSL_NO_DEPRECATED_3_0
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, NULL);
#endif
    /* mod_ssl's session cache callbacks (SSLSessionCache) go through its
     * socache in the child; the engine keeps sessions itself. */
    SSL_CTX_sess_set_new_cb(ctx, NULL);
    SSL_CTX_sess_set_get_cb(ctx, NULL);
    SSL_CTX_sess_set_remove_cb(ctx, NULL);
    SSL_CTX_set_session_cache_mode(ctx, server ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_CLIENT);
}

apr_status_t sip_tls_engine_init(apr_pool_t *p, server_rec *main_server)
{
    int i, servers = 0;

    (void)p;
    if (conn_idx < 0)
        conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    for (i = 0; tls_vhosts && i < tls_vhosts->nelts; i++) {
        tls_vhost_t *v = &APR_ARRAY_IDX(tls_vhosts, i, tls_vhost_t);
        if (v->server_ctx) {
            tls_make_standalone(v->server_ctx, 1);
            servers++;
        }
        if (v->proxy_ctx) {
            tls_make_standalone(v->proxy_ctx, 0);
            if (!(SSL_CTX_get_verify_mode(v->proxy_ctx) & SSL_VERIFY_PEER))
                ap_log_error(APLOG_MARK, APLOG_WARNING, 0, v->s,
                             "sip: outgoing TLS from %s:%u does not verify servers "
                             "(SSLProxyVerify none)", v->s->server_hostname,
                             v->s->addrs ? v->s->addrs->host_port : 0);
        }
    }
    /* RFC 5922 §7: a server's certificate is checked, against the system
     * trust store when the virtual host configures no proxy context. */
    system_client_ctx = SSL_CTX_new(TLS_client_method());
    if (system_client_ctx) {
        SSL_CTX_set_min_proto_version(system_client_ctx, TLS1_2_VERSION);
        SSL_CTX_set_default_verify_paths(system_client_ctx);
        SSL_CTX_set_verify(system_client_ctx, SSL_VERIFY_PEER, tls_verify_cb);
        SSL_CTX_set_session_cache_mode(system_client_ctx, SSL_SESS_CACHE_CLIENT);
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main_server,
                 "sip engine: %d TLS server contexts from mod_ssl", servers);
    return system_client_ctx ? APR_SUCCESS : APR_ENOMEM;
}

int sip_tls_vhost_enabled(void *vhost)
{
    tls_vhost_t *v = tls_vhost_entry(vhost, NULL);
    return v && v->server_ctx;
}

int sip_tls_port(void *vhost)
{
    server_rec *s = vhost, *best = NULL;
    int i, best_score = -1;

    for (i = 0; tls_vhosts && i < tls_vhosts->nelts; i++) {
        tls_vhost_t *v = &APR_ARRAY_IDX(tls_vhosts, i, tls_vhost_t);
        int score;
        if (!v->server_ctx || !v->s->addrs)
            continue;
        if (v->s == s)
            return v->s->addrs->host_port;
        /* the same name first, then one a peer without a client
         * certificate can reach (Record-Route is for every peer) */
        score = (s && s->server_hostname && v->s->server_hostname
                 && !strcasecmp(s->server_hostname, v->s->server_hostname)) * 2
                + !(SSL_CTX_get_verify_mode(v->server_ctx) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
        if (score > best_score) {
            best = v->s;
            best_score = score;
        }
    }
    return best ? best->addrs->host_port : 0;
}

/* ---- connections ---- */

static sip_tls_conn_t *tls_conn_new(SSL_CTX *ctx, int fd, server_rec *vhost, int client)
{
    sip_tls_conn_t *t;

    if (!ctx || conn_idx < 0 || (t = calloc(1, sizeof(*t))) == NULL)
        return NULL;
    t->ssl = SSL_new(ctx);
    if (!t->ssl || !SSL_set_fd(t->ssl, fd)) {
        if (t->ssl)
            SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    t->fd = fd;
    t->client = client;
    t->vhost = vhost;
    SSL_set_ex_data(t->ssl, conn_idx, t);
    /* the write buffer is an output queue entry that is retried, not
     * copied; a peer's EOF without close_notify just ends the stream */
    SSL_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                             | SSL_MODE_RELEASE_BUFFERS);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_set_options(t->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    return t;
}

sip_tls_conn_t *sip_tls_accept(int fd, void *vhost)
{
    tls_vhost_t *v = tls_vhost_entry(vhost, NULL);
    sip_tls_conn_t *t = tls_conn_new(v ? v->server_ctx : NULL, fd, vhost, 0);

    if (t)
        SSL_set_accept_state(t->ssl);
    return t;
}

sip_tls_conn_t *sip_tls_connect(int fd, void *vhost, const char *host)
{
    tls_vhost_t *v = tls_vhost_entry(vhost, NULL);
    SSL_CTX *ctx = v && v->proxy_ctx ? v->proxy_ctx : system_client_ctx;
    sip_tls_conn_t *t = tls_conn_new(ctx, fd, vhost, 1);

    if (!t)
        return NULL;
    SSL_set_connect_state(t->ssl);
    if (host && *host) {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);

        /* RFC 5922 §7.3: the name the request was sent to, in
         * subjectAltName; an address literal against an IP SAN. */
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
            X509_VERIFY_PARAM_set1_host(param, host, 0);
            SSL_set_tlsext_host_name(t->ssl, host);     /* RFC 6066 §3: names only */
        }
    }
    return t;
}

static void tls_log_failure(sip_tls_conn_t *t, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char reason[256];
    apr_pool_t *p;

    if (t->handshake_logged)
        return;
    t->handshake_logged = 1;
    ERR_error_string_n(e, reason, sizeof(reason));
    apr_pool_create(&p, NULL);
    if (!SSL_is_init_finished(t->ssl)) {
        sip_stats->tls_handshake_failures++;
        long vr = SSL_get_verify_result(t->ssl);
        sip_log_limited(&rl_handshake, tls_peer_text(p, t->fd), 0, APLOG_INFO,
                        t->vhost ? t->vhost : ap_server_conf,
                        "sip: TLS handshake %s %s failed: %s%s%s",
                        t->client ? "with server" : "from client", tls_peer_text(p, t->fd),
                        e ? reason : what, vr != X509_V_OK ? "; certificate: " : "",
                        vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
    }
    else
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, t->vhost ? t->vhost : ap_server_conf,
                     "sip: TLS %s with %s failed: %s", what, tls_peer_text(p, t->fd),
                     e ? reason : "connection error");
    apr_pool_destroy(p);
}

static ssize_t tls_map_result(sip_tls_conn_t *t, int n, const char *what)
{
    int err = SSL_get_error(t->ssl, n);

    t->want_write = 0;
    switch (err) {
    case SSL_ERROR_WANT_READ:
        return SIP_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        t->want_write = 1;
        return SIP_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return SIP_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0 && (n == 0 || errno == 0 || errno == ECONNRESET)) {
            if (!SSL_is_init_finished(t->ssl) && errno)
                tls_log_failure(t, "reset");
            return SIP_TLS_CLOSED;
        }
        tls_log_failure(t, what);
        return SIP_TLS_ERROR;
    default:
        tls_log_failure(t, what);
        return SIP_TLS_ERROR;
    }
}

ssize_t sip_tls_read(sip_tls_conn_t *t, char *buf, apr_size_t len)
{
    int n;

    if (len == 0)
        return SIP_TLS_WANT_READ;
    ERR_clear_error();
    errno = 0;
    n = SSL_read(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0) {
        t->want_write = 0;
        return n;
    }
    return tls_map_result(t, n, "read");
}

ssize_t sip_tls_write(sip_tls_conn_t *t, const char *buf, apr_size_t len)
{
    int n;

    if (len == 0)
        return 0;
    ERR_clear_error();
    errno = 0;
    n = SSL_write(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0) {
        t->want_write = 0;
        return n;
    }
    return tls_map_result(t, n, "write");
}

int sip_tls_wants_write(const sip_tls_conn_t *t)
{
    return t && t->want_write;
}

int sip_tls_established(const sip_tls_conn_t *t)
{
    return t && SSL_is_init_finished(t->ssl);
}

int sip_tls_pending(const sip_tls_conn_t *t)
{
    return t && SSL_pending(t->ssl) > 0;
}

void sip_tls_free(sip_tls_conn_t *t)
{
    if (!t)
        return;
    /* Non-blocking: close_notify goes out if the socket takes it; the
     * peer's answer is not awaited (RFC 5246 §7.2.1 allows that). */
    if (SSL_is_init_finished(t->ssl)) {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
    }
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t);
}

/* ---- what scripts see ---- */

static const char *tls_name_text(apr_pool_t *p, X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long len;
    const char *out = NULL;

    if (!bio)
        return NULL;
    /* mod_ssl's form: RFC 2253, UTF-8 kept as is */
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        len = BIO_get_mem_data(bio, &data);
        out = apr_pstrndup(p, data, (apr_size_t)len);
    }
    BIO_free(bio);
    return out;
}

const char *sip_tls_peer_subject(apr_pool_t *p, const sip_tls_conn_t *t)
{
    X509 *cert;
    const char *s;

    if (!t || !(cert = SSL_get1_peer_certificate(t->ssl)))
        return NULL;
    s = tls_name_text(p, X509_get_subject_name(cert));
    X509_free(cert);
    return s;
}

static const char *tls_time_text(apr_pool_t *p, const ASN1_TIME *tm)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long len;
    const char *out = NULL;

    if (!bio)
        return NULL;
    if (ASN1_TIME_print(bio, tm)) {
        len = BIO_get_mem_data(bio, &data);
        out = apr_pstrndup(p, data, (apr_size_t)len);
    }
    BIO_free(bio);
    return out;
}

void sip_tls_env(apr_pool_t *p, const sip_tls_conn_t *t, apr_table_t *env)
{
    const SSL_CIPHER *cipher;
    X509 *cert;
    int alg = 0;

    if (!t)
        return;
    apr_table_setn(env, "HTTPS", "on");
    apr_table_setn(env, "SSL_PROTOCOL", SSL_get_version(t->ssl));
    if ((cipher = SSL_get_current_cipher(t->ssl)) != NULL) {
        apr_table_setn(env, "SSL_CIPHER", SSL_CIPHER_get_name(cipher));
        apr_table_setn(env, "SSL_CIPHER_USEKEYSIZE",
                       apr_itoa(p, SSL_CIPHER_get_bits(cipher, &alg)));
        apr_table_setn(env, "SSL_CIPHER_ALGKEYSIZE", apr_itoa(p, alg));
    }
    apr_table_setn(env, "SSL_SESSION_RESUMED", SSL_session_reused(t->ssl) ? "Resumed" : "Initial");
    if (!t->client && SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name))
        apr_table_set(env, "SSL_TLS_SNI", SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name));
    cert = SSL_get1_peer_certificate(t->ssl);
    if (!cert) {
        apr_table_setn(env, "SSL_CLIENT_VERIFY", "NONE");
        return;
    }
    {
        long vr = SSL_get_verify_result(t->ssl);
        const char *s = tls_name_text(p, X509_get_subject_name(cert));
        const char *i = tls_name_text(p, X509_get_issuer_name(cert));
        const char *start = tls_time_text(p, X509_get0_notBefore(cert));
        const char *end = tls_time_text(p, X509_get0_notAfter(cert));
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;

        apr_table_setn(env, "SSL_CLIENT_VERIFY", vr == X509_V_OK ? "SUCCESS"
                       : apr_pstrcat(p, "FAILED:", X509_verify_cert_error_string(vr), NULL));
        if (s)
            apr_table_setn(env, "SSL_CLIENT_S_DN", s);
        if (i)
            apr_table_setn(env, "SSL_CLIENT_I_DN", i);
        if (start)
            apr_table_setn(env, "SSL_CLIENT_V_START", start);
        if (end)
            apr_table_setn(env, "SSL_CLIENT_V_END", end);
        if (hex)
            apr_table_set(env, "SSL_CLIENT_M_SERIAL", hex);
        OPENSSL_free(hex);
        BN_free(bn);
        X509_free(cert);
    }
}
