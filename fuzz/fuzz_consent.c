/* The consent file (sip_consent.c): parse, then ask about a few targets
 * and invokers, some taken from the input itself. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *text = apr_pstrmemdup(p, (const char *)data, size), *why = NULL;
    const char *first = apr_pstrndup(p, text, strcspn(text, " \t\n"));
    sip_consent_t *c = sip_consent_parse(p, "fuzz", text, &why);

    if (!c) {
        if (!why || strncmp(why, "fuzz:", 5))
            abort();
        return fuzz_done();
    }
    sip_consent_allows(c, p, "sip:bob@example.org", "alice", "sip:alice@example.org");
    sip_consent_allows(c, p, "sips:x@[::1]", "alice", NULL);
    sip_consent_allows(c, p, first, "alice", first);
    sip_consent_allows(c, p, first, first, text);
    sip_consent_allows(c, p, text, NULL, NULL);
    return fuzz_done();
}
