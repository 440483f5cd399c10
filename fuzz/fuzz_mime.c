/* MIME pieces of SIP bodies: Content-Disposition, Content-Type, SIP-dates,
 * Accept / Accept-Disposition lists and their matching, multipart/mixed
 * splitting (the input is a body; its first line, when it starts with
 * "b=", the boundary), and building a body again from the parts: it must
 * split back into the same parts. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *s = apr_pstrmemdup(p, (const char *)data, size), *why = NULL;
    const char *boundary = "b", *body = (const char *)data, *type = NULL, *bnd = NULL;
    apr_size_t len = size, n = 0;
    apr_array_header_t *parts = NULL, *again = NULL;
    apr_array_header_t *hdrs = apr_array_make(p, 2, sizeof(sip_header_t));
    sip_disposition_t d;
    sip_mime_list_t l1, l2;
    sip_header_t *h;
    int i;

    if (size > 2 && data[0] == 'b' && data[1] == '=') {
        const char *nl = memchr(data, '\n', size);
        if (nl) {
            boundary = apr_pstrmemdup(p, (const char *)data + 2,
                                      (apr_size_t)(nl - (const char *)data) - 2);
            body = nl + 1;
            len = size - (apr_size_t)(body - (const char *)data);
        }
    }
    if (sip_mime_multipart_split(p, body, len, boundary, &parts, &why) == 0) {
        const char *built = sip_mime_multipart_build(p, parts, &bnd, &n);
        if (sip_mime_multipart_split(p, built, n, bnd, &again, &why) != 0
            || again->nelts != parts->nelts)
            abort();
        for (i = 0; i < parts->nelts; i++) {
            const sip_mime_part_t *a = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
            const sip_mime_part_t *b = &APR_ARRAY_IDX(again, i, sip_mime_part_t);
            if (a->len != b->len || (a->len && memcmp(a->body, b->body, a->len)))
                abort();
            sip_mime_part_header(a, "Content-Disposition");
        }
    }
    if (memchr(data, '\0', size))
        return fuzz_done();     /* header values never hold NUL */
    sip_mime_disposition_parse(p, s, &d);
    sip_mime_content_type(p, s, &type, &bnd);
    sip_mime_date_parse(s);
    h = apr_array_push(hdrs);
    h->name = "Accept";
    h->value = s;
    h = apr_array_push(hdrs);
    h->name = "Accept-Disposition";
    h->value = s;
    sip_mime_list_parse(p, hdrs, "Accept", 1, &l1);
    sip_mime_list_parse(p, hdrs, "Accept-Disposition", 0, &l2);
    sip_mime_accepts_type(&l1, "application/cpl+xml");
    sip_mime_accepts_type(&l1, s);
    sip_mime_names_type(&l1, "multipart/mixed");
    sip_mime_accepts_disposition(&l2, "sip-cgi");
    return fuzz_done();
}
