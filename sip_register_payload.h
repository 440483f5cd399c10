/* Users' scripts carried in REGISTER bodies (draft-lennox-sip-reg-payload;
 * docs/register-payload.md): what a REGISTER asks of the script store,
 * or why it is refused, and which stored scripts its 2xx carries.  The
 * registrar (sip_registrar.c) applies the answer through
 * sip_location_register(), together with the bindings. */
#ifndef SIP_REGISTER_PAYLOAD_H
#define SIP_REGISTER_PAYLOAD_H

#include "httpd.h"
#include "apr_tables.h"
#include "apr_time.h"
#include "sip_message.h"
#include "sip_mime.h"

typedef struct sip_regpl {
    int enabled;                /* SipScriptUpload applies to the To AoR */
    int cgi_ok;                 /* sip-cgi uploads are taken (SipUploadUser set) */
    sip_mime_list_t accept;     /* the request's Accept */
    sip_mime_list_t adisp;      /* the request's Accept-Disposition */
    int download;               /* the 2xx may carry scripts (owner, asked for: G3) */
    apr_array_header_t *ops;    /* sip_script_op_t; NULL when no script changes */
    apr_time_t if_unmodified_since;   /* 0: none (or not a SIP-date, §3.3) */

    /* a refusal, when status is not 0 (§3, steps S1-S4) */
    int status;
    const char *reason;
    const char *warning;        /* explanation for a Warning 399, or NULL */
    const char *why;            /* for the log line */
} sip_regpl_t;

/* Whether scripts may be uploaded for 'aor' (its To) at 's': fills
 * pl->enabled and pl->cgi_ok, and clears the rest. */
void sip_regpl_init(apr_pool_t *p, server_rec *s, const char *aor, sip_regpl_t *pl);

/* Steps S1-S4 for the REGISTER 'req' (after sip_regpl_init), whose
 * digest-authenticated user is 'user' (NULL: none), 'integrity' when the
 * credentials covered the body (qop=auth-int).  Returns pl->status: 0 to
 * go on with pl->ops (maybe NULL) and pl->if_unmodified_since; 401 when
 * SipScriptUploadIntegrity wants qop=auth-int (the caller challenges). */
int sip_regpl_request(apr_pool_t *p, server_rec *s, const sip_msg_t *req, const char *aor,
                      const char *user, int integrity, sip_regpl_t *pl);

/* 'hdrs' (name, value, ..., NULL; or NULL) with Accept and
 * Accept-Disposition added when scripts may be uploaded here (§4.2,
 * RP-29), and a Warning for pl->warning when 'status' >= 400. */
const char *const *sip_regpl_headers(apr_pool_t *p, const sip_regpl_t *pl, int status,
                                     const char *const *hdrs);

/* The explanation of a refusal as a text/plain body, when the request's
 * Accept names text/plain (§4.1, RP-15); else NULL. */
const char *sip_regpl_explanation(apr_pool_t *p, const sip_regpl_t *pl);

/* What script uploads add to the server's OPTIONS answer for 'aor' when
 * SipScriptUpload applies there (§4.2): "Accept", the script types (to go
 * after application/sdp), "Accept-Disposition", its value, NULL; else NULL
 * (sip_options_headers). */
const char *const *sip_regpl_capabilities(apr_pool_t *p, server_rec *s, const char *aor);

/* Step S7: the body of the 2xx, from the AoR's scripts after the change
 * (sip_script_t *): the ones Accept and Accept-Disposition allow, several
 * as multipart/mixed only when Accept names it.  Returns how many went
 * in (0: no body); headers the body needs (Content-Disposition of a
 * single script; Content-Type of an empty one) are pushed to 'hdrs' as
 * name, value pairs; *ctype, *body and *len are the rest. */
int sip_regpl_body(apr_pool_t *p, const sip_regpl_t *pl, const apr_array_header_t *scripts,
                   apr_array_header_t *hdrs, const char **ctype, const char **body,
                   apr_size_t *len);

#endif
