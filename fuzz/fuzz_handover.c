/* The hand-over channel's datagram header (sip_handover.c): any bytes a
 * peer engine could send are decoded without reading past them, and a
 * decoded datagram encodes back to the same kind, origin (with its TLS
 * subject) and text. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    sip_ho_kind_t kind, kind2;
    sip_ho_origin_t o, o2;
    const char *text, *text2;
    apr_size_t tlen, tlen2, n;
    char *buf;

    if (!sip_handover_decode((const char *)data, size, &kind, &o, &text, &tlen))
        return fuzz_done();
    if (kind < SIP_HO_DELIVER || kind >= SIP_HO_KIND_COUNT || o.kind >= SIP_TP_COUNT
        || o.peer.len > sizeof(o.peer.ss) || o.local.len > sizeof(o.local.ss)
        || text < (const char *)data || text + tlen != (const char *)data + size)
        abort();
    buf = apr_palloc(p, size + 1);
    n = sip_handover_encode(buf, size, kind, &o, text, tlen);
    if (n != size
        || !sip_handover_decode(buf, n, &kind2, &o2, &text2, &tlen2)
        || kind2 != kind || o2.kind != o.kind || o2.engine != o.engine || o2.flow != o.flow
        || o2.cookie != o.cookie || o2.vhost != o.vhost || o2.peer.len != o.peer.len
        || memcmp(&o2.peer.ss, &o.peer.ss, o.peer.len) || o2.local.len != o.local.len
        || memcmp(&o2.local.ss, &o.local.ss, o.local.len)
        || tlen2 != tlen || memcmp(text2, text, tlen)
        || !o.tls_subject != !o2.tls_subject
        || (o.tls_subject && strcmp(o.tls_subject, o2.tls_subject)))
        abort();
    /* a subject is one string inside the datagram, before the text */
    if (o.tls_subject && (o.tls_subject < (const char *)data
                          || o.tls_subject + strlen(o.tls_subject) + 1 != text))
        abort();
    /* too small a buffer is refused, not overrun */
    if (sip_handover_encode(buf, n - 1, kind, &o, text, tlen) != 0)
        abort();
    return fuzz_done();
}
