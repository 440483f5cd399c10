/* TCP stream framing by Content-Length. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_size_t len = 0, max_header = size > 2 ? data[0] * 16 + 16 : 64;
    int r;

    fuzz_init();
    r = sip_stream_frame((const char *)data, size, max_header, 4096, &len);
    if (r == 1 && (len == 0 || len > size))
        abort();    /* a framed message lies inside what was read */
    if (r < 0 && len > size)
        abort();
    return fuzz_done();
}
