/* Script output: the RFC 3050 splitter, action blocks, script responses
 * completed from a request, and the header merge onto a request. */
#include "fuzz_common.h"

static const char base_req[] =
    "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c1\r\n"
    "CSeq: 1 INVITE\r\nSubject: s\r\nContent-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *buf = (const char *)data;
    sip_msg_t *req = NULL;
    sip_msg_error_t err;
    apr_size_t pos = 0;
    int eof;

    if (sip_msg_parse(p, base_req, sizeof(base_req) - 1, NULL, 1, &req, &err) != APR_SUCCESS)
        abort();    /* the fixed request must parse */
    for (eof = 0; eof < 2; eof++) {
        pos = 0;
        while (pos < size) {
            apr_size_t skip = 0, mlen = 0, olen = 0;
            const char *why = NULL;
            int r = sip_cgi_split(buf + pos, size - pos, eof, &skip, &mlen, &why);
            sip_msg_t *block, *resp;
            if (r <= 0)
                break;
            if (skip + mlen == 0 || skip + mlen > size - pos)
                abort();    /* the splitter must make progress inside the buffer */
            block = sip_msg_parse_block(p, buf + pos + skip, mlen);
            if (block)
                sip_msg_merge_text(p, base_req, sizeof(base_req) - 1, block, &olen);
            resp = sip_msg_parse_script_response(p, buf + pos + skip, mlen, &why);
            if (resp) {
                sip_msg_complete_response(resp, req, "tag");
                sip_msg_serialize(p, resp, &olen);
            }
            pos += skip + mlen;
        }
    }
    return fuzz_done();
}
