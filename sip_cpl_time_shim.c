/* Temporary build shim until branch cpl-time is merged: never matches. */
#include "sip_cpl_time.h"
#include <string.h>
struct sip_cpl_time { int unused; };
sip_cpl_time_t *sip_cpl_time_compile(apr_pool_t *p, const char *tzid, const char *tzurl,
                                     const char *const *attrs, const char **why)
{
    return apr_pcalloc(p, sizeof(sip_cpl_time_t));
}
int sip_cpl_time_match(const sip_cpl_time_t *t, apr_time_t now)
{
    return 0;
}
