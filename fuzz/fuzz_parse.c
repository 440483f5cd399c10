/* Received messages: parse and validate, then everything the engine does
 * with the result (error answer, Via stamping, responses, copies). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    sip_limits_t lim = {512, 512, 50, 65536};
    sip_msg_t *m = NULL;
    sip_msg_error_t err;
    apr_size_t len = 0;
    int datagram;

    for (datagram = 0; datagram < 2; datagram++) {
        if (sip_msg_parse(p, (const char *)data, size, &lim, datagram, &m, &err) != APR_SUCCESS) {
            if (err.status)
                sip_msg_raw_error_response(p, m, err.status, err.reason, "tag", !datagram, &len);
            continue;
        }
        if (sip_msg_is_request(m)) {
            sip_source_t src;
            sip_sockaddr_t dest;
            sip_msg_t *r;
            osip_message_t *fed = NULL, *whole = NULL;

            /* what osip_feed gives libosip2 builds the message its
             * osip_message_parse builds from the text, and only where
             * that parse accepts the text */
            if (osip_message_init(&fed) == 0 && osip_feed(m, &fed) == 0
                && osip_message_init(&whole) == 0) {
                char *a = NULL, *b = NULL;
                size_t al = 0, bl = 0;
                int ra, rb;

                if (osip_message_parse(whole, (const char *)data, (size_t)(m->body - m->raw)) != 0)
                    abort();
                ra = osip_message_to_str(whole, &a, &al);
                rb = osip_message_to_str(fed, &b, &bl);
                if (ra != rb || (ra == 0 && (al != bl || memcmp(a, b, al) != 0)))
                    abort();
                osip_free(a);
                osip_free(b);
            }
            if (fed)
                osip_message_free(fed);
            if (whole)
                osip_message_free(whole);
            memset(&src, 0, sizeof(src));
            sip_sockaddr_set(&src.peer, "127.0.0.1", 5060);
            src.kind = datagram ? SIP_TP_UDP : SIP_TP_TCP;
            sip_msg_stamp_via(m, &src, &dest);
            r = sip_msg_make_response(p, m, 486, "Busy Here", "t1");
            if (r)
                sip_msg_serialize(p, r, &len);
            {
                static const char *const hdrs[] = {"Allow", "INVITE", NULL};
                sip_msg_response_text(p, m, 200, "OK", "t1", hdrs, NULL, NULL, 0, &len);
                sip_msg_response_text(p, m, 404, "Not Found", "t1", NULL, "text/plain", "x", 1,
                                      &len);
                sip_msg_aor(p, m);
            }
            sip_msg_uri_user(m);
            sip_uri_aor(p, sip_msg_request_uri(m));
            if (sip_msg_header(m, "To"))
                sip_header_uri(p, sip_msg_header(m, "To"), NULL);
            sip_msg_make_cancel(p, m);
            {
                /* the proxy's text forward: our Route entry gone, every edit */
                static const char *const rr[] = {"<sip:127.0.0.1:5060;lr;ftag=a;rs=0>", NULL};
                sip_wire_edit_t e;
                memset(&e, 0, sizeof(e));
                if (sip_msg_route_count(m) > 0) {
                    sip_msg_remove_route(m, 0);
                    sip_route_verify(p, sip_msg_removed_route(p, m, 0), sip_msg_call_id(m),
                                     sip_msg_from_tag(m), sip_msg_to_tag(m));
                    sip_route_flow(p, sip_msg_removed_route(p, m, 0));  /* flows */
                    e.route_drop = sip_msg_route_count(m) > 0;
                    e.route_append = "<sip:x@127.0.0.1>";
                }
                e.request_uri = "sip:bob@127.0.0.1";
                e.via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKmSx.1;rport";
                e.max_forwards = 1;
                e.record_route = rr;
                e.realm = "fuzz";
                sip_msg_wire_text(p, m, &e, &len);
                sip_msg_top_record_route(p, m);
            }
        }
        else {
            sip_wire_edit_t e;
            memset(&e, 0, sizeof(e));
            e.pop_via = 1;
            sip_msg_wire_text(p, m, &e, &len);
            e.status = 500;
            e.reason = "Server Internal Error";
            e.extra = sip_msg_raw_headers(p, m, "WWW-Authenticate");
            sip_msg_wire_text(p, m, &e, &len);
        }
        sip_msg_dup(p, m);
        sip_msg_branch(m);
        sip_msg_top_via(m);
    }
    return fuzz_done();
}
