/* Lists and forwarding files (sip_lists.c, sip_forward.c): the input as a
 * SipListFile, as a forwarding file (which its users write), as a
 * Call-Disposition value and as one member.  Every list parsed is found
 * again by its name, every address kept parses to itself, and a |program
 * is an absolute path. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *s = apr_pstrmemdup(p, (const char *)data, size), *why = NULL, *m;
    sip_lists_t *l = NULL;
    sip_forward_t *fw;
    int i;

    fw = sip_forward_parse(p, (const char *)data, size, &why);
    if (fw && fw->argv && fw->argv[0][0] != '/')
        abort();
    for (i = 0; fw && !fw->argv && i < fw->addresses->nelts; i++) {
        const char *a = APR_ARRAY_IDX(fw->addresses, i, const char *);
        const char *again = sip_lists_member_parse(p, a, &why);
        if (!again || strcmp(again, a) || !sip_lists_member_uri(p, a, "sip:u@example.com"))
            abort();
    }
    if (memchr(data, '\0', size))
        return fuzz_done();     /* configuration text and header values hold no NUL */
    if (!sip_lists_parse(p, &l, "fuzz", s) && l) {
        for (i = 0; i < l->order->nelts; i++) {
            const sip_list_t *x = APR_ARRAY_IDX(l->order, i, const sip_list_t *);
            const char *at = strchr(x->name, '@');
            const char *user = at ? apr_pstrmemdup(p, x->name, (apr_size_t)(at - x->name))
                                  : x->name;
            if (sip_lists_find(p, l, user, at ? at + 1 : "h.example") != x->members)
                abort();
        }
        sip_lists_check(p, l, 1);
    }
    sip_lists_disposition_all(s);
    if ((m = sip_lists_member_parse(p, s, &why)))
        sip_lists_member_uri(p, m, "sips:list@example.com:5061");
    return fuzz_done();
}
