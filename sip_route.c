#include "sip_route.h"
#include "sip_message.h"

#include <stdlib.h>
#include <string.h>

#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_sha1.h"

#define RS_BYTES 8      /* 64 bits of HMAC-SHA1 in the rs parameter */

static unsigned char route_key[64];
static apr_size_t route_key_len;

void sip_route_set_secret(const void *key, apr_size_t len)
{
    if (len > sizeof(route_key))
        len = sizeof(route_key);
    memset(route_key, 0, sizeof(route_key));
    memcpy(route_key, key, len);
    route_key_len = len;
}

/* HMAC-SHA1 (RFC 2104) of 'msg' under the route secret; the key is at
 * most one block long, so it is used as is. */
static void hmac(const char *msg, apr_size_t len, unsigned char out[APR_SHA1_DIGESTSIZE])
{
    unsigned char pad[64], inner[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t c;
    int i;

    for (i = 0; i < 64; i++)
        pad[i] = route_key[i] ^ 0x36;
    apr_sha1_init(&c);
    apr_sha1_update_binary(&c, pad, 64);
    apr_sha1_update_binary(&c, (const unsigned char *)msg, (unsigned int)len);
    apr_sha1_final(inner, &c);
    for (i = 0; i < 64; i++)
        pad[i] = route_key[i] ^ 0x5c;
    apr_sha1_init(&c);
    apr_sha1_update_binary(&c, pad, 64);
    apr_sha1_update_binary(&c, inner, sizeof(inner));
    apr_sha1_final(out, &c);
}

/* A tag as it may stand in a URI parameter (RFC 3261 §25.1 paramchar):
 * tag characters outside it are %-escaped. */
static const char *escape_tag(apr_pool_t *p, const char *tag)
{
    char *out = apr_palloc(p, 3 * strlen(tag) + 1), *o = out;

    for (; *tag; tag++) {
        unsigned char c = (unsigned char)*tag;
        if (apr_isalnum(c) || strchr("-_.!~*'+", c))
            *o++ = (char)c;
        else {
            apr_snprintf(o, 4, "%%%02X", c);
            o += 3;
        }
    }
    *o = '\0';
    return out;
}

const char *sip_route_mac(apr_pool_t *p, const char *data)
{
    unsigned char d[APR_SHA1_DIGESTSIZE];
    char *hex = apr_palloc(p, 2 * RS_BYTES + 1);
    int i;

    hmac(data, strlen(data), d);
    for (i = 0; i < RS_BYTES; i++)
        apr_snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return hex;
}

int sip_route_mac_ok(apr_pool_t *p, const char *data, const char *mac)
{
    const char *want = sip_route_mac(p, data);
    apr_size_t i, n = strlen(want);
    unsigned diff = 0;

    if (!mac || strlen(mac) != n)
        return 0;
    for (i = 0; i < n; i++)     /* no early exit: nothing to learn from timing */
        diff |= (unsigned)(mac[i] ^ want[i]);
    return diff == 0;
}

/* What the rs parameter is the MAC of. */
static const char *rs_data(apr_pool_t *p, const char *call_id, const char *ftag,
                           const char *hostport, const char *transport)
{
    return apr_pstrcat(p, call_id, "\n", ftag, "\n", hostport, "\n", transport, NULL);
}

static const char *rs_hash(apr_pool_t *p, const char *call_id, const char *ftag,
                           const char *hostport, const char *transport)
{
    return sip_route_mac(p, rs_data(p, call_id, ftag, hostport, transport));
}

/* the transport as hashed: lower case, UDP when the URI names none */
static const char *transport_key(apr_pool_t *p, const char *t)
{
    return sip_str_lower(p, t ? t : "udp");
}

const char *sip_route_uri(apr_pool_t *p, const char *hostport, const char *transport,
                          const char *call_id, const char *ftag)
{
    return sip_route_uri_flow(p, hostport, transport, call_id, ftag, 0);
}

/* The flow as written in the value and hashed: 16 hex digits. */
static const char *flow_text(apr_pool_t *p, apr_uint64_t flow)
{
    return apr_psprintf(p, "%016" APR_UINT64_T_HEX_FMT, flow);
}

const char *sip_route_uri_flow(apr_pool_t *p, const char *hostport, const char *transport,
                               const char *call_id, const char *ftag, apr_uint64_t flow)
{
    const char *ft = escape_tag(p, ftag ? ftag : "");
    const char *fl = flow ? flow_text(p, flow) : NULL;
    const char *tk = transport_key(p, transport);

    /* a URI parameter value cannot be empty: no ftag for a tagless From */
    return apr_pstrcat(p, "sip:", hostport, transport ? ";transport=" : "",
                       transport ? transport : "", fl ? ";flow=" : "", fl ? fl : "", ";lr",
                       *ft ? ";ftag=" : "", ft, ";rs=",
                       rs_hash(p, call_id, ft, hostport, fl ? apr_pstrcat(p, tk, "\n", fl, NULL)
                                                            : tk), NULL);
}

/* The URI of a route value, its host:port and its parameters. */
typedef struct route_parts {
    const char *hostport, *transport, *ftag, *rs, *flow;
} route_parts_t;

static int split_route(apr_pool_t *p, const char *value, route_parts_t *rp)
{
    const char *u = value, *end, *hp;
    char *params, *tok, *last;

    memset(rp, 0, sizeof(*rp));
    while (*u == ' ' || *u == '\t')
        u++;
    if (*u == '<') {
        u++;
        end = strchr(u, '>');
        if (!end)
            return 0;
    }
    else
        end = u + strcspn(u, ",? \t");
    if (!strncasecmp(u, "sip:", 4))
        u += 4;
    else if (!strncasecmp(u, "sips:", 5))
        u += 5;
    else
        return 0;
    hp = u;
    u += strcspn(u, ";?>");
    if (u > end)
        u = end;
    /* userinfo never names us; skip it if present */
    if (memchr(hp, '@', (apr_size_t)(u - hp)))
        hp = (const char *)memchr(hp, '@', (apr_size_t)(u - hp)) + 1;
    rp->hostport = apr_pstrmemdup(p, hp, (apr_size_t)(u - hp));
    if (*u != ';')
        return 1;
    params = apr_pstrmemdup(p, u + 1, strcspn(u + 1, "?>"));
    for (tok = apr_strtok(params, ";", &last); tok; tok = apr_strtok(NULL, ";", &last)) {
        char *eq = strchr(tok, '=');
        const char *v = eq ? eq + 1 : "";
        if (eq)
            *eq = '\0';
        if (!strcasecmp(tok, "transport"))
            rp->transport = v;
        else if (!strcasecmp(tok, "ftag"))
            rp->ftag = v;
        else if (!strcasecmp(tok, "rs"))
            rp->rs = v;
        else if (!strcasecmp(tok, "flow"))
            rp->flow = v;
    }
    return 1;
}

int sip_route_verify(apr_pool_t *p, const char *value, const char *call_id,
                     const char *from_tag, const char *to_tag)
{
    route_parts_t rp;

    if (!value || !call_id || !split_route(p, value, &rp) || !rp.rs)
        return 0;
    if (!rp.ftag)
        rp.ftag = "";   /* recorded for a From without a tag */
    /* the dialog: created by the From side, or answered by the To side */
    if (strcmp(rp.ftag, escape_tag(p, from_tag ? from_tag : "")) != 0
        && !(to_tag && strcmp(rp.ftag, escape_tag(p, to_tag)) == 0))
        return 0;
    /* hex digits compare case-insensitively in a URI parameter */
    return sip_route_mac_ok(p, rs_data(p, call_id, rp.ftag, rp.hostport,
                                       rp.flow ? apr_pstrcat(p, transport_key(p, rp.transport),
                                                             "\n", sip_str_lower(p, rp.flow),
                                                             NULL)
                                               : transport_key(p, rp.transport)),
                            sip_str_lower(p, rp.rs));
}

const char *sip_route_transport(apr_pool_t *p, const char *value)
{
    route_parts_t rp;

    if (!value || !split_route(p, value, &rp))
        return NULL;
    return rp.transport;
}

apr_uint64_t sip_route_flow(apr_pool_t *p, const char *value)
{
    route_parts_t rp;
    char *end;
    apr_uint64_t f;

    if (!value || !split_route(p, value, &rp) || !rp.flow || strlen(rp.flow) != 16)
        return 0;
    if (!apr_isxdigit(*rp.flow))
        return 0;
    f = (apr_uint64_t)strtoull(rp.flow, &end, 16);   /* the whole 64 bits: unsigned */
    return *end ? 0 : f;
}
