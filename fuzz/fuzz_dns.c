/* DNS answers as c-ares hands them over (sip_dns.c's dns_parse, with
 * libresolv's ns_parserr under it): parsed as each record type the
 * resolver asks for, then through the RFC 3263 ordering (NAPTR filter,
 * SRV priority/weight) as a real answer would go; and the input as a
 * reverse-lookup name.  Nothing may read out of bounds, and every record
 * kept must be whole. */
#include "fuzz_common.h"

static unsigned long fuzz_rnd_state = 1;

static unsigned long fuzz_rnd(unsigned long bound)
{
    fuzz_rnd_state = fuzz_rnd_state * 1103515245u + 12345u;
    return bound ? (fuzz_rnd_state >> 8) % (bound + 1) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int types[] = { ns_t_naptr, ns_t_srv, ns_t_a, ns_t_aaaa, ns_t_ptr };
    apr_pool_t *p = fuzz_init();
    unsigned char *copy = apr_pmemdup(p, data, size ? size : 1);
    unsigned char addr[16];
    int i, j, family, seen;

    for (i = 0; i < 5; i++) {
        dns_answer_t a;
        int st = dns_parse(p, types[i], copy, (int)size, &a);
        if (st == SIP_DNS_DONE && (a.recs->nelts == 0 || a.ttl < 1 || a.ttl > DNS_MAX_TTL))
            abort();
        if (st == SIP_DNS_NOTFOUND && (a.ttl < 1 || a.ttl > DNS_MAX_NEG_TTL))
            abort();
        if (st != SIP_DNS_DONE)
            continue;
        if (types[i] == ns_t_naptr) {
            apr_array_header_t *q = dns_naptr_select(p, a.recs, 7u, &seen);
            for (j = 0; j < q->nelts; j++)
                if (!APR_ARRAY_IDX(q, j, dns_srvq_t).name[0]
                    || APR_ARRAY_IDX(q, j, dns_srvq_t).kind > SIP_TP_TLS)
                    abort();
        }
        else if (types[i] == ns_t_srv) {
            apr_array_header_t *o = dns_srv_order(p, a.recs, fuzz_rnd);
            if (o->nelts > a.recs->nelts)
                abort();
            for (j = 1; j < o->nelts; j++)
                if (APR_ARRAY_IDX(o, j, dns_srv_t).prio < APR_ARRAY_IDX(o, j - 1, dns_srv_t).prio)
                    abort();
        }
        else {
            for (j = 0; j < a.recs->nelts; j++)
                if (!APR_ARRAY_IDX(a.recs, j, const char *)[0])
                    abort();
        }
    }
    dns_ptr_addr(apr_pstrmemdup(p, (const char *)data, size), addr, &family);
    return fuzz_done();
}
