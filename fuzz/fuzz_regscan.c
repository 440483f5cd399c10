/* sip_msg_scan_register_aor, the raw scan that hands a REGISTER to its
 * home engine before any parse: it never reads outside the datagram, and
 * whenever it names an AoR and the parser accepts the datagram, the parser's
 * To gives the same AoR (a REGISTER is never handed to the wrong home).
 * Input not starting with "R" gets a REGISTER start line in front. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    sip_limits_t lim = {8190, 8190, 100, 65536};
    const char *buf = (const char *)data, *aor;
    apr_size_t len = size;
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    char *copy;

    if (!size || data[0] != 'R') {
        static const char start[] = "REGISTER sip:h.example SIP/2.0\r\n";
        copy = malloc(sizeof(start) - 1 + size);
        if (!copy)
            return fuzz_done();
        memcpy(copy, start, sizeof(start) - 1);
        memcpy(copy + sizeof(start) - 1, data, size);
        buf = copy;
        len = sizeof(start) - 1 + size;
    }
    else {
        /* exactly the datagram's bytes: ASan sees a read past them */
        copy = malloc(size);
        if (!copy)
            return fuzz_done();
        memcpy(copy, data, size);
        buf = copy;
    }
    aor = sip_msg_scan_register_aor(p, buf, len);
    if (aor && sip_msg_parse(p, buf, len, &lim, 1, &m, &err) == APR_SUCCESS) {
        const char *parsed = sip_replica_register_aor(p, m);
        if (!parsed || strcmp(parsed, aor) != 0)
            abort();
    }
    free(copy);
    return fuzz_done();
}
