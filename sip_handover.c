/* Several engines: identity, marks and the hand-over channel
 * (sip_handover.h).  Placeholder for one engine until the channel is
 * built: identity and marks are final, the channel has no peer. */
#include <string.h>
#include "apr_strings.h"
#include "sip_handover.h"

static int engine_self = 0;
static int engine_count = 1;
static sip_ho_handler_t handlers[SIP_HO_KIND_COUNT];

int sip_engine_self(void) { return engine_self; }
int sip_engine_count(void) { return engine_count; }

void sip_engine_identity_set(int self, int count)
{
    engine_count = count < 1 ? 1 : count > SIP_ENGINES_MAX ? SIP_ENGINES_MAX : count;
    engine_self = self < 0 || self >= engine_count ? 0 : self;
}

char sip_engine_mark(int engine)
{
    static const char marks[] = "0123456789abcdefghijklmnopqrstuv";

    return engine >= 0 && engine < SIP_ENGINES_MAX ? marks[engine] : '0';
}

int sip_engine_from_mark(char c)
{
    int n = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'v' ? c - 'a' + 10 : -1;

    return n >= 0 && n < engine_count ? n : -1;
}

int sip_engine_of_branch(const char *branch)
{
    if (!branch || strncmp(branch, "z9hG4bKmS", 9) != 0)
        return -1;
    return engine_count == 1 ? 0 : sip_engine_from_mark(branch[9]);
}

int sip_engine_home(const char *aor)
{
    /* FNV-1a: stable across processes and builds, unlike a seeded hash. */
    apr_uint32_t h = 2166136261u;

    for (; aor && *aor; aor++)
        h = (h ^ (unsigned char)*aor) * 16777619u;
    return (int)(h % (apr_uint32_t)engine_count);
}

apr_status_t sip_handover_prepare(apr_pool_t *pconf, int count)
{
    (void)pconf;
    return count <= 1 ? APR_SUCCESS : APR_ENOTIMPL;
}

apr_status_t sip_handover_start(sip_loop_t *loop, apr_pool_t *p)
{
    (void)loop;
    (void)p;
    return APR_SUCCESS;
}

void sip_handover_on(sip_ho_kind_t kind, sip_ho_handler_t h)
{
    if (kind > 0 && kind < SIP_HO_KIND_COUNT)
        handlers[kind] = h;
}

apr_status_t sip_handover_send(int to, sip_ho_kind_t kind, const sip_ho_origin_t *from,
                               const char *text, apr_size_t len)
{
    (void)to; (void)kind; (void)from; (void)text; (void)len;
    return APR_ENOTIMPL;
}

void sip_handover_broadcast(sip_ho_kind_t kind, const sip_ho_origin_t *from,
                            const char *text, apr_size_t len)
{
    (void)kind; (void)from; (void)text; (void)len;
}

void sip_handover_origin(const sip_source_t *src, sip_ho_origin_t *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = src->kind;
    out->peer = src->peer;
    out->local = src->local;
    out->vhost = src->vhost;
    out->engine = engine_self;
    out->flow = src->kind == SIP_TP_UDP ? 0 : sip_source_flow_id(src);
}

int sip_handover_source(const sip_ho_origin_t *o, sip_source_t *out)
{
    /* One engine: every origin is ours; a UDP one would need our socket
     * for its local address, which only the channel's sender needs. */
    memset(out, 0, sizeof(*out));
    if (o->kind != SIP_TP_UDP)      /* a stand-in whose sends go to the owner (SEND_FLOW) */
        return sip_transport_remote_source(o->flow, o->kind, &o->peer, &o->local, o->vhost, out);
    return 0;
}
