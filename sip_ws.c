/* Placeholder until the WebSocket framing lands: every frame and every
 * handshake is refused. */
#include "sip_ws.h"

int sip_ws_frame_parse(const char *buf, apr_size_t len, int need_mask,
                       apr_uint64_t max_payload, sip_ws_frame_t *f)
{
    (void)buf;
    (void)len;
    (void)need_mask;
    (void)max_payload;
    (void)f;
    return -1002;
}

void sip_ws_unmask(char *payload, apr_size_t len, const unsigned char mask[4])
{
    (void)payload;
    (void)len;
    (void)mask;
}

apr_size_t sip_ws_frame_header(unsigned char *hdr, int opcode, apr_uint64_t len)
{
    (void)hdr;
    (void)opcode;
    (void)len;
    return 0;
}

const char *sip_ws_handshake_check(apr_pool_t *p, const char *method, apr_table_t *headers,
                                   const char **accept, int *status)
{
    (void)p;
    (void)method;
    (void)headers;
    *accept = NULL;
    *status = 501;
    return "WebSocket is not available";
}

const char *sip_ws_accept_key(apr_pool_t *p, const char *key)
{
    (void)p;
    (void)key;
    return NULL;
}
