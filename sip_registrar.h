/* Registrar and redirect/proxy routing to registered users (RFC 3261
 * §10.3, §16.5), on the location store (sip_location.h). */
#ifndef SIP_REGISTRAR_H
#define SIP_REGISTRAR_H

#include "httpd.h"
#include "http_config.h"
#include "sip_transaction.h"

/* A REGISTER for one of this vhost's domains. */
void sip_registrar_register(sip_txn_t *txn, server_rec *s);

/* A request for a local user: 302 to its bindings (redirect mode) or
 * proxy to them by q (proxy mode); 480 when it has none now, 404 when it
 * never registered (OPTIONS: the server's own 200).  Returns 0 (and does
 * nothing) for a Request-URI without a user part. */
int sip_registrar_route(sip_txn_t *txn, server_rec *s);
/* The same with the caller's choice instead of SipMode (the rules'
 * "respond 3xx" and "proxy" with no target): 'redirect' a 3xx to answer
 * with the bindings as Contacts, 0 to proxy to them, -1 as SipMode says;
 * 'sequential' 1 one by one, 0 all at once, -1 by q (§16.6). */
int sip_registrar_route_as(sip_txn_t *txn, server_rec *s, int redirect, int sequential);

/* A proxy owner (SIP-CGI, CPL) forks to a target that is one of our own
 * users: the location service is asked here instead, since a request sent
 * to ourselves over the network would come back with the caller's spent
 * credentials and a second Record-Route of ours.  When the store answers
 * (maybe at once), 'proxy' is asked for the proxy to fork on (NULL: the
 * owner no longer wants it), which gets one branch per binding, best q
 * first, at most SipMaxBranches, or one branch that ends at once with a
 * response made up here: 404 (never registered), 480 (no binding now) or
 * 500 (store failure).  Then 'done' is called; the owner keeps itself
 * alive until then.  'p' must live until then too. */
struct sip_proxy;
struct branch;
typedef struct sip_registrar_fork_ops {
    struct sip_proxy *(*proxy)(void *baton);
    /* each branch sip_proxy_fork made (may be NULL; a made-up response may
     * reach the owner before this is called) */
    void (*forked)(void *baton, struct branch *b);
    void (*done)(void *baton);
} sip_registrar_fork_ops_t;
void sip_registrar_fork_user(apr_pool_t *p, server_rec *s, const char *uri,
                             const sip_msg_t *block, const sip_registrar_fork_ops_t *ops,
                             void *baton);

/* REGISTRATIONS for a script (RFC 3050 §5.5.1.6): bindings in Contact
 * syntax, best first, at most 64 KB of them; NULL when there are none. */
const char *sip_registrar_format(apr_pool_t *p, const apr_array_header_t *bindings);

/* Directives (docs/nat.md): SipNatRouting auto|always|off, SipFlowTimer
 * seconds|Off, SipPathUnsupported refuse|accept. */
const char *sip_registrar_cmd_nat(cmd_parms *cmd, const char *arg);
const char *sip_registrar_cmd_flow_timer(cmd_parms *cmd, const char *arg);
const char *sip_registrar_cmd_path(cmd_parms *cmd, const char *arg);

#endif
