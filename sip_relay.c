#include "sip_relay.h"
#include "sip_auth.h"
#include "sip_explode.h"
#include "sip_explode_run.h"
#include "sip_log.h"
#include "sip_options.h"
#include "sip_registrar.h"
#include "sip_request.h"

#include <string.h>

#include "apr_strings.h"

int sip_relay_method_known(const sip_server_conf *c, const char *method)
{
    return sip_options_method_known(c, method);
}

int sip_relay_in_recorded_dialog(const sip_msg_t *req, sip_route_kind_t routed)
{
    /* An initial request has no To tag: a Record-Route value copied from
     * an old call proves nothing about it.  A REGISTER is never part of a
     * dialog (RFC 3261 §10.2): dressed as one on a route we signed for
     * some call, it must not skip the registrar's authentication. */
    return routed == SIP_ROUTE_RECORDED && sip_msg_to_tag(req) != NULL
           && strcmp(sip_msg_method(req), "REGISTER") != 0;
}

static int not_implemented(sip_txn_t *txn, server_rec *s, const char *method)
{
    apr_pool_t *p = sip_txn_pool(txn);
    const char *hdrs[] = {"Allow", sip_options_allow(p, s, sip_msg_uri_aor(p, sip_txn_request(txn))),
                          NULL};

    /* RFC 3261 §21.5.2: a method the server does not recognise */
    sip_txn_refuse(txn, 501, "Not Implemented", hdrs,
                   apr_pstrcat(sip_txn_pool(txn), "method ", method,
                               " is not forwarded (SipProxyMethods)", NULL));
    return 0;
}

void sip_relay_default_request(sip_txn_t *txn, server_rec *s)
{
    const sip_msg_t *req = sip_txn_request(txn);
    const char *method = sip_msg_method(req);

    /* a URI-list request (EXPLODE, RFC 5365 MESSAGE) for our address is
     * the service's, whatever the method registry says */
    if (sip_explode_kind(sip_txn_pool(txn), req) != SIP_EXPLODE_NONE) {
        sip_explode_handle(txn, s);
        return;
    }
    /* not even to a registered user: a method nobody here recognises is
     * not sent blindly to the user's devices */
    if (!sip_relay_method_known(sip_get_conf(s), method)) {
        not_implemented(txn, s, method);
        return;
    }
    /* §10.3: we are the registrar of our own domains */
    if (strcmp(method, "REGISTER") == 0) {
        sip_registrar_register(txn, s);
        return;
    }
    if (sip_registrar_route(txn, s))
        return;
    if (strcmp(method, "OPTIONS") == 0) {
        apr_pool_t *p = sip_txn_pool(txn);
        sip_txn_reply(txn, 200, "OK",
                      sip_options_headers(p, s, sip_msg_uri_aor(p, req)));
        return;
    }
    sip_txn_refuse(txn, 404, "Not Found", NULL, "no script and no registration");
}

/* Nobody may relay here: 404 for a domain not ours (as a server that is
 * no proxy would say), 403 where a Route would lead elsewhere. */
static int refuse_relay(sip_txn_t *txn, sip_route_kind_t routed, const char *why)
{
    if (sip_msg_route_count(sip_txn_request(txn)) == 0 && !routed)
        sip_txn_refuse(txn, 404, "Domain Not Served Here", NULL,
                       apr_pstrcat(sip_txn_pool(txn), "not a domain of this server (", why, ")",
                                   NULL));
    else
        sip_txn_refuse(txn, 403, "Forbidden", NULL,
                       apr_pstrcat(sip_txn_pool(txn), "relaying refused: the route leaves this "
                                   "server (", why, ")", NULL));
    return 0;
}

int sip_relay_permit(sip_txn_t *txn, server_rec *s, sip_route_kind_t routed)
{
    const sip_msg_t *req = sip_txn_request(txn);
    const sip_server_conf *conf = sip_get_conf(s);
    const char *method = sip_msg_method(req);
    int register_ = strcmp(method, "REGISTER") == 0;

    if (!sip_relay_method_known(conf, method))
        return not_implemented(txn, s, method);
    if (sip_relay_in_recorded_dialog(req, routed))
        return 1;
    if (conf->proxy_outside == SIP_RELAY_OFF)
        return refuse_relay(txn, routed, "SipProxyOutside Off");
    /* RFC 3261 §22.3: as a proxy we challenge with 407 (a REGISTER is
     * for a registrar, which says 401) */
    if (!sip_auth_check(txn, s, !register_))
        return 0;
    if (conf->proxy_outside == SIP_RELAY_AUTHENTICATED && !sip_txn_user(txn))
        return refuse_relay(txn, routed, "SipProxyOutside Authenticated, and no SipAuth applies "
                                         "to this request");
    return 1;
}

/* Anyone may relay, unchecked: ACK and CANCEL, which cannot be
 * challenged, pass no check their INVITE would have had to pass. */
static int open_relay(server_rec *s)
{
    return sip_get_conf(s)->proxy_outside == SIP_RELAY_ON && !sip_access_configured(s);
}

int sip_relay_leaves(const sip_msg_t *req, server_rec *s, apr_pool_t *p)
{
    /* a Route left after ours (§16.4), or a domain not ours (§16.5) */
    return sip_msg_route_count(req) > 0
           || !sip_proxy_request_is_local(req, s, p);
}

int sip_relay_cancel_permitted(const sip_msg_t *cancel, server_rec *s, apr_pool_t *p)
{
    return open_relay(s) && sip_relay_leaves(cancel, s, p);
}

int sip_relay_ack_permitted(const sip_msg_t *ack, server_rec *s, sip_route_kind_t routed,
                            apr_pool_t *p)
{
    /* An ACK cannot be challenged (§22.1): it leaves only where its
     * INVITE's dialog was recorded by us, or where anyone may relay. */
    return sip_relay_leaves(ack, s, p)
           && (sip_relay_in_recorded_dialog(ack, routed) || open_relay(s));
}
