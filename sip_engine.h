/* The SIP engine process: forked by the httpd parent at post_config and
 * supervised like mod_cgid's daemon.  It owns the UDP sockets, the TCP
 * connections handed over by the MPM children, all transactions, timers
 * and script processes, in one event loop. */
#ifndef SIP_ENGINE_H
#define SIP_ENGINE_H

#include "httpd.h"
#include "apr_network_io.h"
#include "sip_transport.h"
#include "sip_handover.h"

/* Parent, before starting the engines: the UDP sockets of one address to
 * serve, one per engine (SIP_ENGINES_MAX entries, the first SipEngines
 * used; they form a SO_REUSEPORT group when there are several). */
void sip_engine_add_udp(apr_pool_t *pconf, apr_socket_t *const *socks, server_rec *vhost);

/* SipEngines: the default (online cores, at most SIP_ENGINES_MAX), and the
 * directive's argument (NULL, or an error message). */
int sip_engine_default_count(void);
const char *sip_engine_parse_count(const char *arg, int *out);

/* Parent: 'named' shares the address of 'primary' (which owns the UDP
 * socket); requests whose Request-URI host is one of its ServerName or
 * ServerAlias go to it, as httpd does with Host for name-based vhosts. */
void sip_engine_add_named(apr_pool_t *pconf, server_rec *primary, server_rec *named);

/* Parent, at post_config: fork the SipEngines engines (and restart each
 * one alone whenever it dies, until httpd stops).  sip-engine.pid holds
 * engine 0's pid, sip-engines.pid every engine's, one a line. */
apr_status_t sip_engine_start(apr_pool_t *pconf, server_rec *main_server);

/* Parent: the location journal descriptor (-1: memory only). */
void sip_engine_set_journal(int fd);

/* Parent: keep bindings in the mod_dbd database of 's'. */
void sip_engine_set_dbd(server_rec *s);

/* MPM child: hand a SIP TCP connection to the engine chosen by a hash of
 * the peer's address (every connection of a peer to one engine). */
apr_status_t sip_engine_handoff(int fd, const sip_handoff_t *h);

#endif
