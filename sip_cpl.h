/* Call Processing Language scripts (RFC 3880). */
#ifndef SIP_CPL_H
#define SIP_CPL_H

#include "apr_pools.h"

/* Upload-time validation of a CPL script (RFC 3880 §2; the IANA template
 * of application/cpl+xml expects problems to show at upload; docs/cpl.md):
 * well-formed XML without DTD (so no entities, external or expanding),
 * valid against the RFC 3880 Appendix C schema (conf/cpl.xsd, built in),
 * root <cpl> in the namespace urn:ietf:params:xml:ns:cpl, each top-level
 * action at most once, subaction ids unique and every <sub ref> naming one
 * without recursion (RFC 3880 §8), within SIP_CPL_MAX_BYTES, _DEPTH and
 * _NODES.  Returns 1, or 0 with *why (a short printable ASCII text for the
 * 400 answer and the log; never a CR or LF). */
int sip_cpl_validate(apr_pool_t *p, const char *body, apr_size_t len, const char **why);

/* Parses the built-in schema.  Optional: sip_cpl_validate() does it on
 * first use; calling it at engine start moves that cost (about 1 ms) out
 * of the first upload.  The parsed schema is one per process and the first
 * use is not locked: call both from the (single-threaded) engine, or call
 * this once before threads start.  Returns 1, or 0 with *why. */
int sip_cpl_init(apr_pool_t *p, const char **why);

/* Validate as sip_cpl_validate(), then compile into the tree the
 * interpreter walks (sip_cpl_run.h): attribute values parsed once (the
 * time-switch's iCalendar values through sip_cpl_time.h, priorities,
 * timeouts, statuses), so a value the schema lets through but the
 * interpreter cannot use is refused here, at upload or start-up, and
 * never at call time.  'name' names the script in log lines (a path, or
 * "uploaded by alice@example.com").  The result is immutable and lives in
 * 'p': the engine caches it.  NULL with *why as for sip_cpl_validate. */
typedef struct sip_cpl_script sip_cpl_script_t;
sip_cpl_script_t *sip_cpl_compile(apr_pool_t *p, const char *body, apr_size_t len,
                                  const char *name, const char **why);

/* Fixed limits of the validator (the upload size itself is limited first
 * by SipScriptUploadMaxSize).  A script nested deeper than a human or a
 * graphical editor would write, or with more nodes, is refused before the
 * schema walk rather than costing the engine time. */
#define SIP_CPL_MAX_BYTES  (1024 * 1024)
#define SIP_CPL_MAX_DEPTH  64
#define SIP_CPL_MAX_NODES  10000

#endif
