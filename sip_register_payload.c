#include "sip_register_payload.h"
#include "sip_auth.h"
#include "sip_conf.h"
#include "sip_cpl.h"
#include "sip_request.h"
#include "sip_script_store.h"
#include "sip_upload.h"

#include <string.h>

#include "apr_strings.h"

#define CPL_TYPE "application/cpl+xml"

/* What we take in a REGISTER (§4.2 asks servers to say so): CPL, any
 * media type for SIP-CGI (§4.1: be lenient), several in multipart/mixed. */
#define ACCEPT_ALL     CPL_TYPE ", multipart/mixed, */*"
#define ACCEPT_CPL     CPL_TYPE ", multipart/mixed"
#define DISP_ALL       SIP_SCRIPT_CPL ", " SIP_SCRIPT_SIP_CGI
#define DISP_CPL       SIP_SCRIPT_CPL

static int rp_refuse(sip_regpl_t *pl, int status, const char *reason, const char *warning,
                  const char *why)
{
    pl->status = status;
    pl->reason = reason;
    pl->warning = warning;
    pl->why = why ? why : warning;
    pl->ops = NULL;
    return status;
}

static int rp_known_type(const char *type)
{
    return !strcmp(type, SIP_SCRIPT_CPL) || !strcmp(type, SIP_SCRIPT_SIP_CGI);
}

/* S1/S2 for one body (the whole one, or a part of a multipart): its
 * disposition 'cd' (NULL: none), media type and content. */
static int rp_classify(apr_pool_t *p, sip_regpl_t *pl, const char *cd, const char *ctype,
                    const char *body, apr_size_t len)
{
    sip_disposition_t d;
    sip_script_op_t *op;
    const char *mtype = NULL;
    int i;

    if (!cd)     /* RFC 3261 §20.11: render or session, not a script (§3 S1) */
        return rp_refuse(pl, 415, "Unsupported Media Type",
                      "a REGISTER body without Content-Disposition is not a script; send "
                      "Content-Disposition: script or sip-cgi with action=store or remove", NULL);
    if (sip_mime_disposition_parse(p, cd, &d) != 0)
        return rp_refuse(pl, 400, "Bad Content-Disposition", "malformed Content-Disposition",
                      apr_psprintf(p, "malformed Content-Disposition: %.128s", cd));
    if (!rp_known_type(d.type)) {
        /* RFC 3261 §20.11: optional content may be ignored */
        if (d.handling && !strcmp(d.handling, "optional"))
            return 0;
        return rp_refuse(pl, 415, "Unsupported Media Type",
                      apr_psprintf(p, "disposition type %.64s is not stored here (see "
                                   "Accept-Disposition)", d.type), NULL);
    }
    if (!d.action)
        return rp_refuse(pl, 400, "Missing Script Action",
                      "a script needs action=store or action=remove (draft section 4.1)", NULL);
    if (strcmp(d.action, "store") && strcmp(d.action, "remove"))
        return rp_refuse(pl, 400, "Unknown Script Action",
                      apr_psprintf(p, "unknown action %.64s (store or remove)", d.action), NULL);
    if (!strcmp(d.action, "remove") && len)
        return rp_refuse(pl, 400, "Body With Remove",
                      "action=remove needs an empty body (draft section 3.1)", NULL);
    for (i = 0; pl->ops && i < pl->ops->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(pl->ops, i, sip_script_op_t).type, d.type))
            return rp_refuse(pl, 400, "Duplicate Script Type",
                          apr_psprintf(p, "two %s scripts in one REGISTER", d.type), NULL);
    if (ctype && sip_mime_content_type(p, ctype, &mtype, NULL) != 0)
        return rp_refuse(pl, 400, "Bad Content-Type", "malformed Content-Type",
                      apr_psprintf(p, "malformed Content-Type: %.128s", ctype));
    if (!pl->ops)
        pl->ops = apr_array_make(p, 2, sizeof(sip_script_op_t));
    op = apr_array_push(pl->ops);
    memset(op, 0, sizeof(*op));
    op->type = d.type;
    op->remove = !strcmp(d.action, "remove");
    if (!op->remove) {
        /* an empty script may come without a type (§4.1: empty is allowed) */
        op->content_type = mtype ? mtype
                           : !strcmp(d.type, SIP_SCRIPT_CPL) ? CPL_TYPE
                           : "application/octet-stream";
        op->body = body ? body : "";
        op->len = len;
    }
    return 0;
}

/* S1: the script operations the body asks for. */
static int rp_parse_body(apr_pool_t *p, sip_regpl_t *pl, const sip_msg_t *req)
{
    const char *ctype = sip_msg_content_type(req), *cd = sip_msg_header(req, "Content-Disposition");
    const char *mtype = NULL, *boundary = NULL, *why = NULL;
    apr_size_t len = 0;
    const char *body = sip_msg_body(req, &len);
    apr_array_header_t *parts;
    int i;

    if (ctype && sip_mime_content_type(p, ctype, &mtype, &boundary) == 0
        && !strncmp(mtype, "multipart/", 10) && len) {
        /* RP-6: each part's own Content-Disposition (N: not the message's) */
        if (sip_mime_multipart_split(p, body, len, boundary, &parts, &why) != 0)
            return rp_refuse(pl, 400, "Bad Multipart Body", why, NULL);
        if (!parts->nelts)
            return rp_refuse(pl, 400, "Bad Multipart Body", "a multipart body without parts", NULL);
        for (i = 0; i < parts->nelts; i++) {
            const sip_mime_part_t *part = &APR_ARRAY_IDX(parts, i, sip_mime_part_t);
            /* RFC 2046 §5.1: a part without Content-Type is text/plain */
            const char *pct = sip_mime_part_header(part, "Content-Type");
            if (rp_classify(p, pl, sip_mime_part_header(part, "Content-Disposition"),
                         pct ? pct : "text/plain", part->body, part->len))
                return pl->status;
        }
        return 0;
    }
    if (!cd && !len)
        return 0;       /* a plain registration or query */
    return rp_classify(p, pl, cd, ctype, body, len);
}

/* §10.3 step 3 applied to scripts: the owner is the To AoR's
 * (sip_auth_user_owns). */
static int rp_owner(apr_pool_t *p, const char *user, const sip_msg_t *req)
{
    const char *to = sip_msg_header(req, "To");

    return to && sip_auth_user_owns(p, user, sip_header_uri(p, to, NULL));
}

/* S4: the uploads themselves. */
static int rp_check_scripts(apr_pool_t *p, server_rec *s, sip_regpl_t *pl)
{
    const sip_server_conf *conf = sip_get_conf(s);
    apr_size_t total = 0;
    int i;

    for (i = 0; i < pl->ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(pl->ops, i, sip_script_op_t);
        if (op->remove)
            continue;
        total += op->len;
        if (conf->upload_max_size > 0 && op->len > (apr_size_t)conf->upload_max_size)
            return rp_refuse(pl, 413, "Script Too Large",
                          apr_psprintf(p, "a script may have at most %" APR_OFF_T_FMT " bytes "
                                       "(SipScriptUploadMaxSize)", conf->upload_max_size),
                          apr_psprintf(p, "%s script of %" APR_SIZE_T_FMT " bytes is over "
                                       "SipScriptUploadMaxSize", op->type, op->len));
    }
    if (conf->upload_max_total > 0 && total > (apr_size_t)conf->upload_max_total)
        return rp_refuse(pl, 413, "Scripts Too Large",
                      apr_psprintf(p, "a user's scripts may have at most %" APR_OFF_T_FMT
                                   " bytes (SipScriptUploadMaxTotal)", conf->upload_max_total),
                      NULL);
    for (i = 0; i < pl->ops->nelts; i++) {
        const sip_script_op_t *op = &APR_ARRAY_IDX(pl->ops, i, sip_script_op_t);
        const char *why = NULL, *interp, *arg;
        if (op->remove)
            continue;
        if (!strcmp(op->type, SIP_SCRIPT_SIP_CGI)) {
            if (!pl->cgi_ok)
                return rp_refuse(pl, 415, "Unsupported Media Type",
                              "SIP-CGI scripts are not taken here (no SipUploadUser)", NULL);
            /* an empty script runs nothing; anything else needs an allowed #! */
            if (op->len && !sip_upload_interpreter_ok(p, op->body, op->len,
                                                      sip_upload_conf()->interpreters, &interp,
                                                      &arg, &why))
                return rp_refuse(pl, 415, "Unsupported Script Interpreter", why, NULL);
        }
        else {
            /* 'script': the media type names the language; CPL is the one
             * this server runs (RFC 3880) */
            if (strcmp(op->content_type, CPL_TYPE))
                return rp_refuse(pl, 415, "Unsupported Media Type",
                              apr_psprintf(p, "scripts of type %.64s are not taken here (only "
                                           CPL_TYPE ")", op->content_type), NULL);
            if (op->len && !sip_cpl_validate(p, op->body, op->len, &why))
                return rp_refuse(pl, 400, "Bad CPL Script", why, NULL);
        }
    }
    return 0;
}

void sip_regpl_init(apr_pool_t *p, server_rec *s, const char *aor, sip_regpl_t *pl)
{
    memset(pl, 0, sizeof(*pl));
    /* no <Location> walk when no SipScriptUpload On is configured at all */
    pl->enabled = sip_upload_conf()->used && sip_request_script_upload(p, s, aor);
    pl->cgi_ok = sip_upload_conf()->user != NULL;
}

int sip_regpl_request(apr_pool_t *p, server_rec *s, const sip_msg_t *req, const char *aor,
                      const char *user, int integrity, sip_regpl_t *pl)
{
    const apr_array_header_t *hdrs = sip_msg_headers(req);
    const char *ius;
    int is_owner;

    /* malformed elements are left out; the rest still counts */
    sip_mime_list_parse(p, hdrs, "Accept", 1, &pl->accept);
    sip_mime_list_parse(p, hdrs, "Accept-Disposition", 0, &pl->adisp);
    if (!pl->enabled) {
        /* Off: a script the client thinks it uploads must not be dropped
         * silently (RFC 3261 §20.11 handling=required); other bodies are
         * ignored as they always were */
        const char *cd = sip_msg_header(req, "Content-Disposition");
        sip_disposition_t d;
        if (cd && sip_mime_disposition_parse(p, cd, &d) == 0
            && (rp_known_type(d.type) || d.action)
            && !(d.handling && !strcmp(d.handling, "optional")))
            return rp_refuse(pl, 415, "Unsupported Media Type",
                          "scripts cannot be uploaded here",
                          apr_psprintf(p, "a script upload for %s, but SipScriptUpload is Off",
                                       aor));
        return 0;
    }
    if (rp_parse_body(p, pl, req))
        return pl->status;
    is_owner = rp_owner(p, user, req);
    if (pl->ops && pl->ops->nelts) {
        /* S3, draft §8: only the authenticated owner changes scripts */
        if (!user)
            return rp_refuse(pl, 403, "Forbidden", "script changes need digest authentication",
                          apr_psprintf(p, "a script change for %s without a digest-"
                                       "authenticated user; SipScriptUpload needs SipAuth", aor));
        if (!is_owner)
            return rp_refuse(pl, 403, "Forbidden", "you may change only your own scripts",
                          apr_psprintf(p, "%s may not change the scripts of %s", user, aor));
        /* §8, RP-33: SipScriptUploadIntegrity wants the body signed too
         * (there is no TLS here to protect it otherwise) */
        if (sip_get_conf(s)->upload_integrity > 0 && !integrity)
            return rp_refuse(pl, 401, "Unauthorized", "script changes here need digest "
                             "qop=auth-int", apr_psprintf(p, "%s changed scripts with qop=auth; "
                                                          "SipScriptUploadIntegrity wants auth-int",
                                                          user));
        if (rp_check_scripts(p, s, pl))
            return pl->status;
    }
    else
        pl->ops = NULL;
    /* S5 is the store's (atomically with the bindings); a date that does
     * not parse counts as no header (§3.3) */
    ius = sip_msg_header(req, "If-Unmodified-Since");
    pl->if_unmodified_since = ius ? sip_mime_date_parse(ius) : 0;
    /* G3 (N): scripts go back to their authenticated owner only, and only
     * when asked for: an Accept-Disposition (not empty), or an Accept */
    pl->download = is_owner
                   && (pl->adisp.present ? pl->adisp.ranges->nelts > 0 : pl->accept.present);
    return 0;
}

static const char *const *rp_with(apr_pool_t *p, const char *const *hdrs, const char *const *more)
{
    apr_array_header_t *a = apr_array_make(p, 8, sizeof(const char *));

    for (; hdrs && hdrs[0]; hdrs += 2) {
        *(const char **)apr_array_push(a) = hdrs[0];
        *(const char **)apr_array_push(a) = hdrs[1];
    }
    for (; more && more[0]; more += 2) {
        *(const char **)apr_array_push(a) = more[0];
        *(const char **)apr_array_push(a) = more[1];
    }
    *(const char **)apr_array_push(a) = NULL;
    return (const char *const *)a->elts;
}

const char *const *sip_regpl_headers(apr_pool_t *p, const sip_regpl_t *pl, int status,
                                     const char *const *hdrs)
{
    const char *more[7];
    int n = 0;

    if (pl && pl->enabled) {
        more[n++] = "Accept";
        more[n++] = pl->cgi_ok ? ACCEPT_ALL : ACCEPT_CPL;
        more[n++] = "Accept-Disposition";
        more[n++] = pl->cgi_ok ? DISP_ALL : DISP_CPL;
    }
    if (pl && status >= 400 && pl->warning) {
        char *w = apr_psprintf(p, "399 mod_sip \"%s\"", pl->warning), *c;
        for (c = w + sizeof("399 mod_sip \"") - 1; c[1]; c++)     /* keep it one quoted-string */
            if (*c == '"' || *c == '\\' || *c == '\r' || *c == '\n')
                *c = '\'';
        more[n++] = "Warning";
        more[n++] = w;
    }
    more[n] = NULL;
    return n ? rp_with(p, hdrs, more) : hdrs;
}

const char *sip_regpl_explanation(apr_pool_t *p, const sip_regpl_t *pl)
{
    if (!pl || !pl->status || !pl->warning || !sip_mime_names_type(&pl->accept, "text/plain"))
        return NULL;
    return apr_pstrcat(p, pl->warning, "\n", NULL);
}

const char *const *sip_regpl_capabilities(apr_pool_t *p, server_rec *s, const char *aor)
{
    /* the server answers for itself: what a REGISTER may carry too (§4.2) */
    if (!sip_upload_conf()->used || !sip_request_script_upload(p, s, aor))
        return NULL;
    return apr_pmemdup(p, (const char *const[]){
                           "Accept", sip_upload_conf()->user ? ACCEPT_ALL : ACCEPT_CPL,
                           "Accept-Disposition", sip_upload_conf()->user ? DISP_ALL : DISP_CPL,
                           NULL}, 5 * sizeof(const char *));
}

/* §4.2: the Content-Disposition of a returned script: its type and when
 * it changed, no action */
static const char *rp_disposition_of(apr_pool_t *p, const sip_script_t *sc)
{
    return apr_psprintf(p, "%s;modification-date=\"%s\"", sc->type,
                        sip_mime_date_format(p, sc->mtime));
}

static int rp_wanted(const sip_regpl_t *pl, const sip_script_t *sc)
{
    if (pl->adisp.present)
        return sip_mime_accepts_disposition(&pl->adisp, sc->type)
               && sip_mime_accepts_type(&pl->accept, sc->content_type);
    /* G3: without Accept-Disposition, only what Accept names */
    return sip_mime_names_type(&pl->accept, sc->content_type);
}

int sip_regpl_body(apr_pool_t *p, const sip_regpl_t *pl, const apr_array_header_t *scripts,
                   apr_array_header_t *hdrs, const char **ctype, const char **body,
                   apr_size_t *len)
{
    apr_array_header_t *pick;
    const sip_script_t *one;
    int i;

    *ctype = *body = NULL;
    *len = 0;
    if (!pl || !pl->enabled || !pl->download || !scripts)
        return 0;
    pick = apr_array_make(p, 2, sizeof(const sip_script_t *));
    for (i = 0; i < scripts->nelts; i++) {
        const sip_script_t *sc = APR_ARRAY_IDX(scripts, i, const sip_script_t *);
        if (rp_wanted(pl, sc))
            *(const sip_script_t **)apr_array_push(pick) = sc;
    }
    if (!pick->nelts)
        return 0;
    /* several only as multipart, and only when Accept names it (RP-25) */
    if (pick->nelts > 1 && sip_mime_names_type(&pl->accept, "multipart/mixed")) {
        apr_array_header_t *parts = apr_array_make(p, pick->nelts, sizeof(sip_mime_part_t));
        const char *boundary;
        for (i = 0; i < pick->nelts; i++) {
            const sip_script_t *sc = APR_ARRAY_IDX(pick, i, const sip_script_t *);
            sip_mime_part_t *part = apr_array_push(parts);
            sip_header_t *h;
            part->headers = apr_array_make(p, 2, sizeof(sip_header_t));
            h = apr_array_push(part->headers);
            h->name = "Content-Type";
            h->value = sc->content_type;
            h = apr_array_push(part->headers);
            h->name = "Content-Disposition";
            h->value = rp_disposition_of(p, sc);
            part->body = sc->body;
            part->len = sc->len;
        }
        *body = sip_mime_multipart_build(p, parts, &boundary, len);
        *ctype = apr_pstrcat(p, "multipart/mixed;boundary=", boundary, NULL);
        return pick->nelts;
    }
    /* otherwise any one of them (§4.2): the first, CPL before SIP-CGI */
    one = APR_ARRAY_IDX(pick, 0, const sip_script_t *);
    *(const char **)apr_array_push(hdrs) = "Content-Disposition";
    *(const char **)apr_array_push(hdrs) = rp_disposition_of(p, one);
    if (one->len) {
        *ctype = one->content_type;
        *body = one->body;
        *len = one->len;
    }
    else {
        /* an empty script is still a script (§4.1): typed, with no body */
        *(const char **)apr_array_push(hdrs) = "Content-Type";
        *(const char **)apr_array_push(hdrs) = one->content_type;
    }
    return 1;
}
