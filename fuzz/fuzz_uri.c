/* URIs and Contact values: equality, AoR, header URI, contact splitting
 * and parameters as the registrar reads them. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    char *s = apr_pstrmemdup(p, (const char *)data, size);
    char *half = s + size / 2;
    const char *params = NULL;
    apr_array_header_t *list = apr_array_make(p, 4, sizeof(const char *));
    sip_uri_info_t ui;
    int i;

    if (memchr(data, '\0', size))
        return fuzz_done();     /* header values never hold NUL */
    sip_uri_equal(s, s);
    sip_uri_equal(s, half);
    sip_uri_aor(p, s);
    sip_uri_info(p, s, &ui);
    split_contacts(p, s, list);
    for (i = 0; i < list->nelts; i++) {
        const char *u = sip_header_uri(p, APR_ARRAY_IDX(list, i, const char *), &params);
        const char *rest = NULL;
        sip_uri_equal(u, s);
        param(p, params, "expires", &rest);
        sip_qvalue_parse(param(p, rest, "q", &rest));   /* RFC 3261 §20.10 grammar */
    }
    return fuzz_done();
}
