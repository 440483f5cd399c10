/* URI-list requests: a whole request text parsed, read as a URI-list
 * request (sip_explode_parse), and the request each target gets written;
 * every one of those must parse again as SIP. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    sip_limits_t lim = {4096, 8192, 100, 65536};
    sip_explode_limits_t xl = {20, NULL, "example.org"};
    sip_explode_job_t *job = NULL;
    const char *reason, *why, *accept;
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    int i;

    if (sip_msg_parse(p, (const char *)data, size, &lim, 0, &m, &err) != APR_SUCCESS
        || !sip_msg_is_request(m))
        return fuzz_done();
    sip_explode_kind(p, m);
    if (sip_explode_parse(p, m, &xl, &job, &reason, &why, &accept) != 0)
        return fuzz_done();
    for (i = 0; i < job->targets->nelts; i++) {
        const sip_uri_list_entry_t *e = &APR_ARRAY_IDX(job->targets, i, sip_uri_list_entry_t);
        apr_size_t len = 0;
        const char *t = sip_explode_request(p, job, e, NULL, "cid@x", "tag", &len);
        const char *nl;
        if (!t)
            abort();    /* parse kept only targets a request can be written for */
        /* with a Via, what we send must be a valid request */
        nl = strstr(t, "\r\n");
        if (!nl)
            abort();
        {
            static const char via[] = "Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKf\r\n";
            apr_size_t head = (apr_size_t)(nl + 2 - t), vl = sizeof(via) - 1;
            char *full = apr_palloc(p, len + vl);
            memcpy(full, t, head);
            memcpy(full + head, via, vl);
            memcpy(full + head + vl, t + head, len - head);
            if (sip_msg_parse(p, full, len + vl, NULL, 0, &m, &err) != APR_SUCCESS)
                abort();
        }
        sip_explode_request(p, job, e, "sip:bob@192.0.2.1:5070;transport=tcp", "c", "t", &len);
    }
    return fuzz_done();
}
