/* STUN on the UDP SIP ports (sip_stun.c): any datagram is classified
 * without reading past its end; an answerable one gets an answer that is
 * itself well-formed STUN (a response, so never answered back), with a
 * FINGERPRINT exactly when the request had one, for IPv4 and IPv6 peers. */
#include "fuzz_common.h"

static void check_answer(const sip_stun_req_t *req, const char *ip)
{
    unsigned char out[SIP_STUN_MAX_ANSWER];
    sip_stun_req_t back;
    sip_sockaddr_t a;
    apr_size_t n;

    if (sip_sockaddr_set(&a, ip, 5060) != APR_SUCCESS)
        abort();
    n = sip_stun_answer(req, (const struct sockaddr *)&a.ss, out, sizeof(out));
    if (n < SIP_STUN_HEADER || n > sizeof(out) || memcmp(out + 8, req->txid, 12) != 0)
        abort();
    if (sip_stun_parse(out, n, &back) != SIP_STUN_DROP || strcmp(back.why, "STUN response") != 0
        || back.fingerprint != req->fingerprint)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sip_stun_req_t req;
    /* a copy of exactly 'size' bytes, so that ASan sees any over-read */
    unsigned char *buf = malloc(size ? size : 1);

    fuzz_init();
    memcpy(buf, data, size);
    switch (sip_stun_parse(buf, size, &req)) {
    case SIP_STUN_NONE:
        if (size && buf[0] <= 0x01)
            abort();
        break;
    case SIP_STUN_ANSWER:
        if (req.why || req.n_unknown < 0 || req.n_unknown > SIP_STUN_MAX_UNKNOWN)
            abort();
        check_answer(&req, "192.0.2.1");
        check_answer(&req, "2001:db8::1");
        break;
    case SIP_STUN_DROP:
        if (!req.why)
            abort();
        break;
    }
    free(buf);
    return fuzz_done();
}
