/* Resource lists (sip_uri_list.c): parse with a small cap, merge, and
 * build the history body, which must read back as a resource list with
 * as many entries as it shows. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    apr_array_header_t *e = NULL, *m, *back = NULL;
    const char *why = NULL, *h;
    apr_size_t n = 0;
    int rc, i, shown = 0;

    rc = sip_uri_list_parse(p, (const char *)data, size, 50, &e, &why);
    if (rc != 0) {
        if (!why || e)
            abort();
        return fuzz_done();
    }
    m = sip_uri_list_merge(p, e);
    if (m->nelts > e->nelts || (e->nelts && !m->nelts))
        abort();
    h = sip_uri_list_history(p, m, &n);
    for (i = 0; i < m->nelts; i++)
        shown |= APR_ARRAY_IDX(m, i, sip_uri_list_entry_t).copy != SIP_COPY_BCC;
    if (!h != !shown)
        abort();
    if (h && (sip_uri_list_parse(p, h, n, 0, &back, &why) != 0 || back->nelts == 0))
        abort();
    return fuzz_done();
}
