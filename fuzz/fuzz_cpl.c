/* CPL scripts as uploaded in REGISTER (sip_cpl_validate): the XML parse
 * without DTDs, the RFC 3880 schema and the subaction rules. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *why = NULL;

    if (!sip_cpl_validate(p, (const char *)data, size, &why) && !why)
        __builtin_trap();       /* a refusal always says why */
    return fuzz_done();
}
