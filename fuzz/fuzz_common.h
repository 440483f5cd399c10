/* Shared by the libFuzzer targets: the module's pure layers compiled in
 * (as the unit tests do), with the same few httpd stand-ins. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "../t/unit/httpd_stubs.h"
#include "../sip_event.c"
#include "../sip_transport.c"
#include "../sip_message.c"
#include "../sip_transaction.c"
#include "../sip_proxy.c"
#include "../sip_route.c"
#include "../sip_location.c"
#include "../sip_script_store.c"
#include "../sip_upload.c"
#include "../sip_cpl.c"
#include "../sip_cpl_run.c"
#include "../sip_cpl_time.c"
#include "../sip_cpl_mail.c"
#include "../sip_mime.c"
#include "../sip_register_payload.c"
#include "../sip_registrar.c"
#include "../sip_relay.c"
#include "../sip_auth.c"
#include "../sip_nonce.c"
#include "../sip_cgi.c"
#include "../sip_stats.c"
#include "../sip_log.c"
#include "../sip_uri_list.c"
#include "../sip_explode.c"
#include "../sip_consent.c"
#include "../sip_options.c"
#include "../sip_explode_run.c"
#include "../sip_rules.c"
#include "../sip_namemap.c"
#include "../sip_lists.c"
#include "../sip_forward.c"
#include "../sip_tls.c"
#include "../sip_ws.c"
#include "../sip_fcgi.c"
#include "../sip_fcgi_pool.c"
#include "../sip_dns.c"
#include "../sip_freelist.c"
#include "../sip_location_dbd.c"
#include "../sip_stun.c"
#include "../sip_handover.c"
#include "../sip_replica.c"

static apr_pool_t *fuzz_pool;

/* One-time setup; returns the scratch pool for one input. */
static apr_pool_t *fuzz_init(void)
{
    if (!fuzz_pool) {
        apr_initialize();
        apr_pool_create(&fuzz_pool, NULL);
        sip_message_init();
        /* libosip2 traces are noise here */
        osip_trace_initialize_func(TRACE_LEVEL0, NULL);
    }
    return fuzz_pool;
}

/* Every input frees all it made (LeakSanitizer checks at exit). */
static int fuzz_done(void)
{
    apr_pool_clear(fuzz_pool);
    return 0;
}

#endif
