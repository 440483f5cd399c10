/* Running CPL scripts in the engine (RFC 3880; docs/cpl.md): the host of
 * the interpreter (sip_cpl_run.h).  It keeps compiled scripts in a cache,
 * looks users up in the location service, proxies through the proxy core
 * (sip_proxy_new_owned), answers (reject, redirect), logs, sends mail, and
 * counts for mod_status.  The routing steps (sip_dispatch.c) decide which
 * script runs; this file runs it. */
#ifndef SIP_CPL_EXEC_H
#define SIP_CPL_EXEC_H

#include "httpd.h"
#include "sip_cpl_run.h"
#include "sip_event.h"
#include "sip_transaction.h"

/* A compiled script in the cache (kept alive while a run uses it). */
typedef struct sip_cpl_entry sip_cpl_entry_t;

/* Engine start-up: the cache, the mail watcher, and a check of every
 * *.cpl file in each SipDirectory (each invalid one is logged with the
 * reason; it will be skipped at call time). */
void sip_cpl_exec_init(sip_loop_t *loop, apr_pool_t *p, server_rec *main_server);

/* SipDirectory's script at 'path' (resolved by sip_cgi_locate_file),
 * compiled, or from the cache when its modification time and size are
 * unchanged (it is stat'ed on every call).  NULL with *why when it is not
 * valid (the caller logs it and skips it). */
sip_cpl_entry_t *sip_cpl_exec_file(apr_pool_t *p, const char *path, const char **why);

/* A user's uploaded script (sip_script_t with type SIP_SCRIPT_CPL), from
 * the cache when its AoR and modification time are unchanged.  NULL with
 * *why when it does not compile (it was validated at upload; a newer
 * compiler may be stricter). */
struct sip_script;
sip_cpl_entry_t *sip_cpl_exec_uploaded(const struct sip_script *sc, const char **why);

/* Does the script have an <incoming> / <outgoing> part? */
int sip_cpl_entry_has(const sip_cpl_entry_t *e, sip_cpl_dir_t dir);
const char *sip_cpl_entry_name(const sip_cpl_entry_t *e);

/* Run the 'dir' part of 'e' for the new server transaction 'txn' on
 * behalf of 'owner' (an AoR).  When the script leaves the request alone
 * (it ends without a signalling action or location, RFC 3880 §10, or fails
 * at run time before it proxied), 'next' is called with 'baton' (maybe
 * before this returns): the caller's next routing step.  Otherwise the run
 * answers the transaction itself. */
typedef void (*sip_cpl_exec_next_fn)(void *baton);
void sip_cpl_exec_run(sip_txn_t *txn, server_rec *s, sip_cpl_entry_t *e, sip_cpl_dir_t dir,
                      const char *owner, sip_cpl_exec_next_fn next, void *baton);

/* Log a script of SipDirectory that is not valid at call time (rate-limited). */
void sip_cpl_exec_log_invalid(server_rec *s, const char *name, const char *why);

#endif
