/* The location journal and the reach of a binding (issue 17): the input
 * is a journal line, its first byte choosing the version (1-3).  A B line
 * written again (version 3) must read back with the same fields; its
 * binding's identity, private-address test and reach in every NAT mode
 * must not crash (the Contact and the source come from the network). */
#include "fuzz_common.h"

static int same(const char *a, const char *b)
{
    return (!a || !*a) ? (!b || !*b) : (b && !strcmp(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    journal_rec_t r, again;
    apr_time_t now = apr_time_from_sec(1000000);
    apr_interval_time_t life = apr_time_from_sec(86400);
    int version, mode;
    char *line;

    if (size < 1 || memchr(data, '\0', size) || memchr(data, '\n', size))
        return fuzz_done();     /* the replay reads one line, NUL-free */
    version = 1 + data[0] % 3;
    line = apr_pstrmemdup(p, (const char *)data + 1, size - 1);
    if (journal_parse(line, version, now, life, &r) != 'B')
        return fuzz_done();
    if (version >= 2) {
        char *w = apr_pstrdup(p, journal_line(p, &r.b));
        w[strcspn(w, "\n")] = '\0';
        if (journal_parse(w, 3, now, life, &again) != 'B')
            abort();
        if (!same(r.b.aor, again.b.aor) || !same(r.b.contact, again.b.contact)
            || !same(r.b.params, again.b.params) || !same(r.b.call_id, again.b.call_id)
            || r.b.cseq != again.b.cseq || r.b.expires != again.b.expires
            || r.b.q1000 != again.b.q1000 || !same(r.b.path, again.b.path)
            || !same(r.b.display, again.b.display) || r.b.transport != again.b.transport
            || !same(r.b.received, again.b.received) || !same(r.b.instance, again.b.instance)
            || (r.b.instance ? r.b.reg_id : 0) != again.b.reg_id)
            abort();
    }
    sip_binding_identity(p, &r.b);
    if (r.b.received)
        sip_addr_is_private(r.b.received);
    for (mode = SIP_NAT_AUTO; mode <= SIP_NAT_OFF; mode++) {
        sip_reach_t a = sip_binding_reach_mode(p, &r.b, 0, mode);
        sip_reach_t b = sip_binding_reach_mode(p, &r.b, 1, mode);
        if (a == SIP_REACH_SOURCE && !r.b.received)
            abort();            /* the source is used only when known */
        if (a == SIP_REACH_FLOW || (b == SIP_REACH_SOURCE && !r.b.received))
            abort();            /* no flow when it is closed */
    }
    return fuzz_done();
}
