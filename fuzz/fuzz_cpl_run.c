/* CPL scripts compiled (sip_cpl_compile) and, when they compile, run
 * (sip_cpl_run.c) for an incoming and an outgoing call against a host
 * that answers every lookup and proxy at once, with outcomes taken from
 * the input's bytes so every output gets walked.  The run must end
 * exactly once, within its limits. */
#include "fuzz_common.h"

typedef struct {
    const uint8_t *data;
    size_t size, at;
    int ended, calls;
    apr_pool_t *p;
} fz_host_t;

static int fz_byte(fz_host_t *h)
{
    return h->size ? h->data[h->at++ % h->size] : 0;
}

static void fz_lookup(void *baton, sip_cpl_run_t *run, const char *source, int timeout)
{
    fz_host_t *h = baton;
    apr_array_header_t *a = apr_array_make(h->p, 2, sizeof(sip_cpl_location_t));
    sip_cpl_location_t *l = apr_array_push(a);

    h->calls++;
    l->uri = "sip:bob@192.0.2.10";
    l->q1000 = fz_byte(h) * 4;
    sip_cpl_lookup_done(run, 1 + fz_byte(h) % 3, a);
}

static void fz_proxy(void *baton, sip_cpl_run_t *run, const sip_cpl_proxy_req_t *req)
{
    fz_host_t *h = baton;
    apr_array_header_t *c = apr_array_make(h->p, 1, sizeof(const char *));

    if (!req->locations->nelts)
        __builtin_trap();       /* never asked to proxy to nowhere */
    h->calls++;
    APR_ARRAY_PUSH(c, const char *) = "sip:bob@elsewhere.example";
    sip_cpl_proxy_done(run, fz_byte(h) % 5, 486, c);
}

static void fz_redirect(void *baton, const apr_array_header_t *l, int permanent)
{
    if (!l->nelts)
        __builtin_trap();
    ((fz_host_t *)baton)->calls++;
}

static void fz_reject(void *baton, int status, const char *reason)
{
    if (status < 400 || status > 699)
        __builtin_trap();
    ((fz_host_t *)baton)->calls++;
}

static void fz_log(void *baton, const char *name, const char *comment)
{
    ((fz_host_t *)baton)->calls++;
}

static void fz_mail(void *baton, const char *url)
{
    ((fz_host_t *)baton)->calls++;
}

static void fz_end(void *baton, sip_cpl_end_t how, const apr_array_header_t *l,
                   const char *node, const char *why)
{
    fz_host_t *h = baton;

    if (h->ended++ || !l || (how == SIP_CPL_END_FAILED && (!node || !why)))
        __builtin_trap();
}

static const sip_cpl_host_t fz_host = {
    fz_lookup, fz_proxy, fz_redirect, fz_reject, fz_log, fz_mail, fz_end
};

static const char fz_invite[] =
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfz\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1\r\n"
    "To: <sip:+1-900-555-1234@biloxi.example.com;user=phone>\r\n"
    "Call-ID: fz@192.0.2.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Subject: lunch\r\n"
    "Priority: urgent\r\n"
    "Accept-Language: es, en-gb;q=0.5\r\n"
    "Content-Length: 0\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_init();
    const char *why = NULL;
    sip_cpl_script_t *sc = sip_cpl_compile(p, (const char *)data, size, "fuzz", &why);
    static const sip_limits_t lim = {8190, 8190, 100, 65536};
    sip_msg_t *req = NULL;
    sip_msg_error_t err;
    int dir;

    if (!sc) {
        if (!why)
            __builtin_trap();
        return fuzz_done();
    }
    if (sip_msg_parse(p, fz_invite, sizeof(fz_invite) - 1, &lim, 1, &req, &err) != APR_SUCCESS)
        __builtin_trap();
    for (dir = SIP_CPL_INCOMING; dir <= SIP_CPL_OUTGOING; dir++) {
        fz_host_t h = {data, size, 0, 0, 0, p};
        sip_cpl_run_start(p, sc, dir, req, "sip:bob@biloxi.example.com",
                          apr_time_from_sec(1765022400), &fz_host, &h);
        /* everything answers at once, so every run has ended */
        if (h.ended != 1 || h.calls > CPL_RUN_MAX_NODES + 1)
            __builtin_trap();
    }
    return fuzz_done();
}
