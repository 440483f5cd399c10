/* httpd_stubs.h -- the few httpd symbols that mod_sip's sources reference.
 *
 * Why this file exists: the unit tests #include the module's .c files
 * directly (the way httpd's own test/unit does), but functions such as
 * ap_log_error_() or ap_unescape_url() live in the httpd executable, not in
 * a library we could link against.  They are defined here instead, kept
 * minimal and honest:
 *   - logging only prints to stderr (no filtering, no fake behaviour);
 *   - ap_unescape_url, ap_strcasestr and ap_create_environment follow
 *     httpd 2.4's documented semantics (server/util.c, util_script.c),
 *     reimplemented here, because module code relies on them for its
 *     security decisions (e.g. %2F and %00 refusal in sip_cgi_locate);
 *   - sip_module / sip_get_conf stand in for mod_sip.c, which is not
 *     compiled into the tests (it registers hooks with httpd);
 *   - ap_strcasecmp_match (ServerAlias wildcards) uses fnmatch like httpd.
 * The transaction and proxy layers are compiled in for real; only the
 * glue (mod_sip.c, sip_engine.c) is left out.
 * Include this file exactly once, from test_units.c.
 */
#ifndef SIP_TEST_HTTPD_STUBS_H
#define SIP_TEST_HTTPD_STUBS_H

#include <stdarg.h>
#include <stdio.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_main.h"
#include "util_script.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_tables.h"

#include "sip_conf.h"
#include "sip_transaction.h"

/* http_main.c: the main server; NULL here, which also makes every
 * ap_log_error() call reach ap_log_error_() whatever its level. */
server_rec *ap_server_conf = NULL;

/* sip_request.c (the request_rec glue) is not compiled here: no access
 * control is configured, so sip_auth.c never challenges and has no realm
 * whose credentials a proxy would remove.  What it does with a
 * configuration is covered by the auth-*.t and relay.t tests. */
#include "sip_request.h"
int sip_access_configured(server_rec *s)
{
    (void)s;
    return 0;
}
sip_access_t *sip_access_begin(server_rec *s, const char *method, const char *aor,
                               const sip_sockaddr_t *peer)
{
    (void)s; (void)method; (void)aor; (void)peer;
    abort();
}
sip_access_result_t sip_access_check(sip_access_t *a, const char **realm)
{
    (void)a; (void)realm;
    abort();
}
void sip_access_realm(sip_access_t *a, const char **realm)
{
    (void)a; (void)realm;
    abort();
}
const char *sip_access_realm_hash(sip_access_t *a, apr_pool_t *p, const char *user,
                                  const char *realm, int *failed)
{
    (void)a; (void)p; (void)user; (void)realm; (void)failed;
    abort();
}
sip_access_result_t sip_access_authorize(sip_access_t *a, const char *user)
{
    (void)a; (void)user;
    abort();
}
void sip_access_end(sip_access_t *a)
{
    (void)a;
    abort();
}

/* mod_sip.c: the module record (APLOG_USE_MODULE takes its index). */
module AP_MODULE_DECLARE_DATA sip_module = {
    STANDARD20_MODULE_STUFF,
    NULL, NULL, NULL, NULL, NULL, NULL, 0
};

/* mod_sip.c: per-server configuration; one static conf with the defaults. */
static sip_server_conf stub_conf = {
    .enabled = 1, .directory = NULL, .default_script = SIP_DEFAULT_SCRIPT,
    .script_timeout = SIP_DEFAULT_SCRIPT_TIMEOUT, .max_output = SIP_DEFAULT_MAX_OUTPUT,
    .max_body = SIP_DEFAULT_MAX_BODY, .tcp_idle = SIP_DEFAULT_TCP_IDLE
};

sip_server_conf *sip_get_conf(server_rec *s)
{
    (void)s;
    return &stub_conf;
}

/* server/log.c: print the message to stderr. */
void ap_log_error_(const char *file, int line, int module_index, int level,
                   apr_status_t status, const server_rec *s, const char *fmt, ...)
{
    va_list ap;
    char buf[1024];

    (void)module_index;
    (void)s;
    va_start(ap, fmt);
    apr_vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "[log level %d] %s:%d: %s", level & APLOG_LEVELMASK, file, line, buf);
    if (status) {
        char err[256];
        fprintf(stderr, " (%d: %s)", status, apr_strerror(status, err, sizeof(err)));
    }
    fputc('\n', stderr);
}

/* server/core.c */
const char *ap_get_server_banner(void)
{
    return "Apache (mod_sip unit tests)";
}

/* server/core.c: one configuration generation, as in a first start */
int ap_state_query(int query)
{
    return query == AP_SQ_CONFIG_GEN ? 1 : 0;
}

/* server/util.c: case-insensitive strstr; an empty s2 matches at s1. */
char *ap_strcasestr(const char *s1, const char *s2)
{
    apr_size_t n = strlen(s2);

    for (; ; s1++) {
        if (strncasecmp(s1, s2, n) == 0)
            return (char *)s1;
        if (!*s1)
            return NULL;
    }
}

/* server/util.c: ap_unescape_url() decodes %XX in place.  A '%' not
 * followed by two hex digits is kept as is and makes the result
 * HTTP_BAD_REQUEST; a decoded '/' or NUL makes it HTTP_NOT_FOUND (400 wins
 * when both occur).  '+' is not special. */
static int stub_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return apr_tolower(c) - 'a' + 10;
}

int ap_unescape_url(char *url)
{
    int badesc = 0, badpath = 0;
    char *x, *y;

    if (!url || !(y = strchr(url, '%')))
        return OK;
    for (x = y; *y; ++x, ++y) {
        if (*y != '%') {
            *x = *y;
        }
        else if (!apr_isxdigit(y[1]) || !apr_isxdigit(y[2])) {
            badesc = 1;
            *x = '%';
        }
        else {
            char decoded = (char)(stub_hexval(y[1]) * 16 + stub_hexval(y[2]));
            if (decoded == '\0' || decoded == '/')
                badpath = 1;
            *x = decoded;
            y += 2;
        }
    }
    *x = '\0';
    if (badesc)
        return HTTP_BAD_REQUEST;
    if (badpath)
        return HTTP_NOT_FOUND;
    return OK;
}

/* server/util_script.c: "NAME=value" strings from a table; a leading digit
 * and every non-alphanumeric character of a name become '_'. */
char **ap_create_environment(apr_pool_t *p, apr_table_t *t)
{
    const apr_array_header_t *arr = apr_table_elts(t);
    const apr_table_entry_t *elts = (const apr_table_entry_t *)arr->elts;
    char **env = apr_palloc(p, (arr->nelts + 2) * sizeof(char *));
    const char *tz;
    int i, j = 0;

    if (!apr_table_get(t, "TZ") && (tz = getenv("TZ")) != NULL)
        env[j++] = apr_pstrcat(p, "TZ=", tz, NULL);
    for (i = 0; i < arr->nelts; i++) {
        char *w;
        if (!elts[i].key)
            continue;
        env[j] = apr_pstrcat(p, elts[i].key, "=", elts[i].val, NULL);
        w = env[j];
        if (apr_isdigit(*w))
            *w++ = '_';
        for (; *w != '='; w++)
            if (!apr_isalnum(*w))
                *w = '_';
        j++;
    }
    env[j] = NULL;
    return env;
}

/* sip_request.c is httpd glue (request_rec, <Location> walk) and is not
 * compiled here; routing by SipMode is covered by the black-box tests. */
int sip_request_mode(apr_pool_t *p, server_rec *s, const char *aor)
{
    (void)p; (void)s; (void)aor;
    return 0;   /* SIP_MODE_PROXY */
}

int sip_auth_enabled(void)
{
    return 0;
}

int sip_request_script_upload(apr_pool_t *p, server_rec *s, const char *aor)
{
    (void)p; (void)s; (void)aor;
    return 0;
}

/* SipExplode: Off unless a test names the one address it is On for. */
static const char *stub_explode_aor;

int sip_request_explode(apr_pool_t *p, server_rec *s, const char *aor)
{
    (void)p; (void)s;
    return stub_explode_aor && aor && strcmp(aor, stub_explode_aor) == 0;
}

int sip_explode_used(void)
{
    return stub_explode_aor != NULL;
}

/* Rules: the unit tests set the ones that apply to every request. */
static apr_array_header_t *stub_rules;

apr_array_header_t *sip_request_rules(apr_pool_t *p, server_rec *s, const sip_msg_t *req,
                                      const sip_sockaddr_t *peer)
{
    (void)s; (void)req; (void)peer;
    return stub_rules ? stub_rules : apr_array_make(p, 1, sizeof(const void *));
}

/* Uploaded scripts: the unit tests set what they need. */
static sip_upload_conf_t test_upload_conf = {NULL, NULL, NULL, NULL, 1, NULL, 0, 0, 0,
                                              SIP_DEFAULT_UPLOAD_TMP_SIZE};

const sip_upload_conf_t *sip_upload_conf(void)
{
    return &test_upload_conf;
}

/* mod_proxy-style host matching used by sip_proxy.c (wildcard ServerAlias) */
int ap_strcasecmp_match(const char *str, const char *expected)
{
    return fnmatch(expected, str, FNM_CASEFOLD) == 0 ? 0 : 1;
}

#endif
