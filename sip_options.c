#include "sip_options.h"
#include "sip_conf.h"
#include "sip_register_payload.h"
#include "sip_request.h"

#include <string.h>

#include "apr_strings.h"

/* RFC 3261 and the methods of its extensions in IANA's SIP registry:
 * what the server recognises and routes. */
static const char *const registered_methods[] = {
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER",   /* RFC 3261 */
    "PRACK",        /* RFC 3262 */
    "SUBSCRIBE", "NOTIFY",  /* RFC 6665 */
    "REFER",        /* RFC 3515 */
    "INFO",         /* RFC 6086 */
    "UPDATE",       /* RFC 3311 */
    "MESSAGE",      /* RFC 3428 */
    "PUBLISH",      /* RFC 3903 */
    NULL
};

/* RFC 5365 §6: the option tag of a recipient-list MESSAGE */
#define TAG_LIST_MESSAGE "recipient-list-message"

int sip_options_method_known(const sip_server_conf *c, const char *method)
{
    int i;

    for (i = 0; registered_methods[i]; i++)
        if (strcmp(method, registered_methods[i]) == 0)     /* methods are case-sensitive */
            return 1;
    for (i = 0; c && c->proxy_methods && i < c->proxy_methods->nelts; i++)
        if (strcmp(method, APR_ARRAY_IDX(c->proxy_methods, i, const char *)) == 0)
            return 1;
    return 0;
}

static int explode_on(apr_pool_t *p, server_rec *s, const char *aor)
{
    return aor && sip_explode_used() && sip_request_explode(p, s, aor);
}

/* The Allow value of a configuration, without EXPLODE: worked out once
 * per SipProxyMethods list (it was 13 concatenations per OPTIONS), kept in
 * the list's own pool and forgotten with it. */
#define ALLOW_MEMO_MAX 16
static struct {
    const apr_array_header_t *methods;
    const char *allow;
} allow_memo[ALLOW_MEMO_MAX];
static int allow_memos;

static apr_status_t allow_forget(void *data)
{
    (void)data;
    allow_memos = 0;
    return APR_SUCCESS;
}

static const char *allow_methods(apr_pool_t *p, const sip_server_conf *c)
{
    static char registered[160];
    const apr_array_header_t *pm = c ? c->proxy_methods : NULL;
    const char *allow;
    int i, keep;

    if (!registered[0]) {
        apr_size_t n = 0;
        for (i = 0; registered_methods[i]; i++)
            n += (apr_size_t)apr_snprintf(registered + n, sizeof(registered) - n, "%s%s",
                                          i ? ", " : "", registered_methods[i]);
    }
    if (!pm || !pm->nelts)
        return registered;
    for (i = 0; i < allow_memos; i++)
        if (allow_memo[i].methods == pm)
            return allow_memo[i].allow;
    keep = allow_memos < ALLOW_MEMO_MAX;
    allow = registered;
    for (i = 0; i < pm->nelts; i++)
        allow = apr_pstrcat(keep ? pm->pool : p, allow, ", ",
                            APR_ARRAY_IDX(pm, i, const char *), NULL);
    if (keep) {
        apr_pool_cleanup_register(pm->pool, NULL, allow_forget, apr_pool_cleanup_null);
        allow_memo[allow_memos].methods = pm;
        allow_memo[allow_memos++].allow = allow;
    }
    return allow;
}

const char *sip_options_allow(apr_pool_t *p, server_rec *s, const char *aor)
{
    const char *allow = allow_methods(p, s ? sip_get_conf(s) : NULL);

    /* EXPLODE has no option tag: Allow is how a client finds it (E0) */
    if (explode_on(p, s, aor))
        allow = apr_pstrcat(p, allow, ", EXPLODE", NULL);
    return allow;
}

const char *const *sip_options_headers(apr_pool_t *p, server_rec *s, const char *aor)
{
    const char **h = apr_pcalloc(p, 9 * sizeof(*h));
    const char *const *up = sip_regpl_capabilities(p, s, aor);
    int n = 0;

    h[n++] = "Allow";
    h[n++] = sip_options_allow(p, s, aor);
    h[n++] = "Accept";
    h[n++] = "application/sdp";
    /* the server answers for itself: what a REGISTER may carry too */
    for (; up && up[0]; up += 2) {
        if (!strcmp(up[0], "Accept"))
            h[3] = apr_pstrcat(p, h[3], ", ", up[1], NULL);
        else if (n < 6) {
            h[n++] = up[0];
            h[n++] = up[1];
        }
    }
    /* RFC 5365 §6; never recipient-list-invite: no conference factory here */
    if (explode_on(p, s, aor)) {
        h[n++] = "Supported";
        h[n++] = TAG_LIST_MESSAGE;
    }
    h[n] = NULL;
    return h;
}

const char *sip_options_unsupported(apr_pool_t *p, server_rec *s, const sip_msg_t *req,
                                    const char *require)
{
    apr_array_header_t *tags = apr_array_make(p, 4, sizeof(const char *));
    const char *out = NULL;
    int i, list_ok = -1;

    sip_header_split_list(p, require, tags);
    for (i = 0; i < tags->nelts; i++) {
        const char *tag = APR_ARRAY_IDX(tags, i, const char *);
        if (!*tag)
            continue;
        /* RFC 3327 §5.2: an edge proxy may require Path of the registrar */
        if (!strcasecmp(tag, "path") && req && sip_msg_method(req)
            && !strcmp(sip_msg_method(req), "REGISTER"))
            continue;
        /* RFC 5365 §5-6: only a MESSAGE to an address with the service */
        if (!strcasecmp(tag, TAG_LIST_MESSAGE)) {
            if (list_ok < 0)
                list_ok = req && sip_msg_method(req) && !strcmp(sip_msg_method(req), "MESSAGE")
                          && explode_on(p, s, sip_msg_uri_aor(p, req));
            if (list_ok)
                continue;
        }
        out = out ? apr_pstrcat(p, out, ", ", tag, NULL) : tag;
    }
    return out;
}
