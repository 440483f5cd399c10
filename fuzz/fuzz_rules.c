/* Call handling rules (sip_rules.c): the input's first line is a rule of
 * the seed's table (Header Method glob action...) and also SipRule's
 * arguments; the rest is a From/To address a caller wrote.  A rule that
 * parses is matched against requests carrying that address; "*" and a
 * rule with no condition match whatever the address. */
#include "fuzz_common.h"

static const sip_msg_t *request(apr_pool_t *p, const char *addr)
{
    const char *text = apr_psprintf(p, "INVITE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP "
                                    "192.0.2.9;branch=z9hG4bKf1\r\nFrom: %s;tag=1\r\nTo: %s\r\n"
                                    "Call-ID: f1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                                    "Content-Length: 0\r\n\r\n", addr, addr);
    sip_msg_t *m = NULL;
    sip_msg_error_t err;

    if (sip_msg_parse(p, text, strlen(text), NULL, 1, &m, &err) != APR_SUCCESS)
        return NULL;
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *text, *line, *addr, *err = NULL;
    const sip_rule_t *any;
    const sip_msg_t *req;
    sip_rule_t *r;
    apr_size_t n;

    if (memchr(data, '\0', size))
        return fuzz_done();     /* configuration lines and headers hold no NUL */
    text = apr_pstrmemdup(p, (const char *)data, size);
    n = strcspn(text, "\r\n");
    line = apr_pstrndup(p, text, n);
    addr = text[n] ? text + n + 1 : "<sip:alice@example.org>";
    if (strpbrk(addr, "\r\n"))
        return fuzz_done();
    req = request(p, addr);
    r = apr_pcalloc(p, sizeof(*r));
    r->sequential = -1;
    r->where = "fuzz:1";
    if (!rules_parse_line(p, r, line)) {
        if (!r->action || !r->header || !r->method || !r->glob)
            abort();
        if (req)
            sip_rule_matches(p, r, req);
    }
    if ((any = sip_rule_parse(p, line, &err)) != NULL) {
        if (req && !sip_rule_matches(p, any, req))
            abort();
    }
    else if (!err)
        abort();
    /* "*" matches any address that is there */
    r = apr_pcalloc(p, sizeof(*r));
    if (req && !rules_parse_line(p, r, "From * * log") && !sip_rule_matches(p, r, req))
        abort();
    return fuzz_done();
}
