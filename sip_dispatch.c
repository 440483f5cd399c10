#include "sip_dispatch.h"
#include "sip_forward.h"
#include "sip_lists.h"
#include "sip_namemap.h"
#include "sip_rules.h"
#include "sip_auth.h"
#include "sip_cgi.h"
#include "sip_conf.h"
#include "sip_cpl_exec.h"
#include "sip_location.h"
#include "sip_log.h"
#include "sip_message.h"
#include "sip_proxy.h"
#include "sip_relay.h"
#include "sip_request.h"
#include "sip_script_store.h"
#include "sip_upload.h"

#include <string.h>

#include "apr_strings.h"

typedef enum { STEP_NEXT, STEP_DONE, STEP_WAIT } step_result_t;

typedef struct dispatch dispatch_t;
typedef step_result_t (*step_fn)(dispatch_t *d);

struct dispatch {
    sip_txn_t *txn;
    server_rec *s;
    apr_pool_t *p;
    const sip_msg_t *req;
    const char *user, *host;        /* names SipDirectory's scripts (REGISTER: To) */
    const char *ruri_before;        /* the Request-URI before name mapping */
    const char *upload_aor;         /* uploaded scripts apply to it, or NULL */
    int cpl;                        /* the CPL steps apply (INVITE outside a dialog) */
    int fetched;                    /* uploaded scripts: 0 not asked, -1 awaited, 1 here */
    int fetch_status;
    apr_array_header_t *scripts;
    const step_fn *steps;
    int step;
    /* <outgoing> only */
    const char *caller;             /* the caller's AoR */
    sip_dispatch_cont_fn cont;
};

static void run_steps(dispatch_t *d);

/* ---- the one store fetch for the uploaded SIP-CGI and CPL scripts ---- */

/* The store may answer later (database): the transaction is held until it
 * does; a CANCEL meanwhile is answered 487 by the engine. */
static int held_cancel(void *tu)
{
    (void)tu;
    return 0;
}

static const sip_txn_tu_ops_t held_ops = {held_cancel, NULL, NULL};

static void scripts_fetched(void *baton, int status, apr_array_header_t *scripts)
{
    dispatch_t *d = baton;
    int waited = d->fetched < 0;

    d->fetched = 1;
    d->fetch_status = status;
    d->scripts = scripts;
    if (!waited)
        return;             /* answered at once: the step goes on */
    sip_txn_detach_keep(d->txn);
    if (!sip_txn_final_sent(d->txn))    /* not cancelled meanwhile */
        run_steps(d);
    sip_txn_release(d->txn);
}

/* 1 when the scripts are there; 0 when the step must wait (it runs again
 * when they come). */
static int have_scripts(dispatch_t *d)
{
    if (d->fetched > 0)
        return 1;
    d->fetched = 0;
    sip_location_fetch_scripts(d->p, d->upload_aor, scripts_fetched, d);
    if (d->fetched > 0)
        return 1;
    d->fetched = -1;
    sip_txn_attach(d->txn, &held_ops, d);
    return 0;
}

static const sip_script_t *uploaded(const dispatch_t *d, const char *type)
{
    int i;

    for (i = 0; d->scripts && i < d->scripts->nelts; i++) {
        const sip_script_t *sc = APR_ARRAY_IDX(d->scripts, i, const sip_script_t *);
        if (!strcmp(sc->type, type))
            return sc;
    }
    return NULL;
}

/* ---- running a CPL script as a step ---- */

static void cpl_next(void *baton)
{
    dispatch_t *d = baton;

    d->step++;
    run_steps(d);
}

static step_result_t run_cpl(dispatch_t *d, sip_cpl_entry_t *e, sip_cpl_dir_t dir,
                             const char *owner)
{
    if (!e || !sip_cpl_entry_has(e, dir))
        return STEP_NEXT;
    sip_cpl_exec_run(d->txn, d->s, e, dir, owner, cpl_next, d);
    return STEP_WAIT;       /* the run answers, or cpl_next goes on */
}

/* SipDirectory's CPL file 'name': NULL when absent or not usable (logged). */
static sip_cpl_entry_t *admin_cpl(dispatch_t *d, const char *name)
{
    const sip_server_conf *conf = sip_get_conf(d->s);
    const char *path = NULL, *why = NULL;
    sip_cpl_entry_t *e;
    int r;

    if (!name)
        return NULL;
    r = sip_cgi_locate_file(d->p, conf->directory, name, 0, &path, &why);
    if (r == 404)
        return NULL;
    if (r) {
        sip_cpl_exec_log_invalid(d->s, name, why);
        return NULL;
    }
    if (!(e = sip_cpl_exec_file(d->p, path, &why)))
        sip_cpl_exec_log_invalid(d->s, name, why);
    return e;
}

static const char *owner_aor(dispatch_t *d)
{
    const char *aor = sip_msg_aor(d->p, d->req);

    return aor ? aor : sip_msg_request_uri(d->req);
}

/* ---- the steps (sip_dispatch.h) ---- */

static void refuse_name(dispatch_t *d, const char *why)
{
    static sip_log_rate_t unsafe = SIP_LOG_RATE_INIT("refused script names");
    const char *ip = sip_sockaddr_ip(d->p, &sip_txn_source(d->txn)->peer);

    sip_log_limited(&unsafe, ip, 403, APLOG_ERR, d->s, "sip: 403 for %s %.256s from %s: %s",
                    sip_msg_method(d->req), sip_msg_request_uri(d->req), ip, why);
    sip_txn_reply(d->txn, 403, "Forbidden", NULL);
}

/* 0a-0c and f2: steps of their own concern (sip_dispatch.h) */
static step_result_t step_namemap(dispatch_t *d);

/* A retargeted request names the canonical user: the later steps find
 * that user's scripts.  Otherwise d->user stays (a REGISTER's is To's). */
static void namemap_done(dispatch_t *d)
{
    if (strcmp(d->ruri_before, sip_msg_request_uri(d->req)) != 0)
        d->user = sip_msg_uri_user(d->req);
}

static void concern_resume(void *baton)
{
    dispatch_t *d = baton;

    sip_txn_detach_keep(d->txn);
    if (!sip_txn_final_sent(d->txn)) {
        if (d->steps[d->step] == step_namemap)
            namemap_done(d);
        d->step++;
        run_steps(d);
    }
    sip_txn_release(d->txn);
}

static step_result_t concern(dispatch_t *d, sip_step_t r)
{
    return r == SIP_STEP_NEXT ? STEP_NEXT : r == SIP_STEP_DONE ? STEP_DONE : STEP_WAIT;
}

/* 0a-0c decide where a call goes: a request inside a dialog (To tag) has
 * its target already (RFC 3261 §12.2.2: the remote target, not a name to
 * map, a list or a rule's), and must not be refused or sent elsewhere. */
static int in_dialog(const dispatch_t *d)
{
    return sip_msg_to_tag(d->req) != NULL;
}

static step_result_t step_lists(dispatch_t *d)
{
    if (in_dialog(d))
        return STEP_NEXT;
    return concern(d, sip_lists_step(d->txn, d->s, concern_resume, d));
}

/* the later steps find the canonical user's scripts */
static step_result_t step_namemap(dispatch_t *d)
{
    step_result_t r;

    if (in_dialog(d))
        return STEP_NEXT;
    d->ruri_before = apr_pstrdup(d->p, sip_msg_request_uri(d->req));
    r = concern(d, sip_namemap_step(d->txn, d->s, concern_resume, d));
    if (r == STEP_NEXT)
        namemap_done(d);
    return r;
}

static step_result_t step_rules(dispatch_t *d)
{
    if (in_dialog(d))
        return STEP_NEXT;
    return concern(d, sip_rules_step(d->txn, d->s, concern_resume, d));
}

static step_result_t step_forward(dispatch_t *d)
{
    return concern(d, sip_forward_step(d->txn, d->s, concern_resume, d));
}

/* a. the user's uploaded SIP-CGI script */
static step_result_t step_uploaded_cgi(dispatch_t *d)
{
    const sip_script_t *cgi;

    if (!d->upload_aor)
        return STEP_NEXT;
    if (!have_scripts(d))
        return STEP_WAIT;
    if (d->fetch_status) {
        /* the user may have a script: running SipDirectory's instead could
         * bypass what the user asked for */
        sip_upload_fail_closed(d->txn, d->s, d->upload_aor, "SIP-CGI or CPL",
                               "the script store could not be read");
        return STEP_DONE;
    }
    if (!(cgi = uploaded(d, SIP_SCRIPT_SIP_CGI)))
        return STEP_NEXT;
    sip_upload_run_cgi(d->txn, d->s, cgi);
    return STEP_DONE;
}

/* b. the user's uploaded CPL script */
static step_result_t step_uploaded_cpl(dispatch_t *d)
{
    const sip_script_t *sc;
    sip_cpl_entry_t *e;
    const char *why = NULL;

    if (!d->upload_aor || !d->cpl || !(sc = uploaded(d, SIP_SCRIPT_CPL)))
        return STEP_NEXT;
    if (!(e = sip_cpl_exec_uploaded(sc, &why))) {
        sip_cpl_exec_log_invalid(d->s, apr_pstrcat(d->p, "uploaded by ", sc->aor, NULL), why);
        return STEP_NEXT;
    }
    return run_cpl(d, e, SIP_CPL_INCOMING, d->upload_aor);
}

/* SipDirectory's SIP-CGI script 'name' (r: what finding the name gave):
 * run it, pass on when there is none, refuse an unsafe name: it runs
 * nothing, not even a default (31-traversal.t). */
static step_result_t run_admin_cgi(dispatch_t *d, int r, const char *name, const char *why)
{
    const char *path = NULL;

    if (r == 0)
        r = sip_cgi_locate_file(d->p, sip_get_conf(d->s)->directory, name, 1, &path, &why);
    if (r == 404)
        return STEP_NEXT;
    if (r) {
        refuse_name(d, why);
        return STEP_DONE;
    }
    sip_cgi_run(d->txn, path, d->s);
    return STEP_DONE;
}

/* c. SipDirectory's user@host */
static step_result_t step_admin_cgi(dispatch_t *d)
{
    const char *name = NULL, *why = NULL;
    int r;

    if (!sip_get_conf(d->s)->directory)
        return STEP_NEXT;
    r = sip_cgi_user_file(d->p, d->user, d->host, "", &name, &why);
    return run_admin_cgi(d, r, name, why);
}

/* d. SipDirectory's user@host.cpl */
static step_result_t step_admin_cpl(dispatch_t *d)
{
    const char *name = NULL, *why = NULL;

    if (!d->cpl || !sip_get_conf(d->s)->directory
        || sip_cgi_user_file(d->p, d->user, d->host, ".cpl", &name, &why))
        return STEP_NEXT;
    return run_cpl(d, admin_cpl(d, name), SIP_CPL_INCOMING, owner_aor(d));
}

/* e. the default SIP-CGI script */
static step_result_t step_default_cgi(dispatch_t *d)
{
    const sip_server_conf *conf = sip_get_conf(d->s);

    if (!conf->directory || !conf->default_script)
        return STEP_NEXT;
    return run_admin_cgi(d, 0, conf->default_script, NULL);
}

/* f. the default CPL script */
static step_result_t step_default_cpl(dispatch_t *d)
{
    const sip_server_conf *conf = sip_get_conf(d->s);

    if (!d->cpl || !conf->directory || !conf->cpl_default_script)
        return STEP_NEXT;
    return run_cpl(d, admin_cpl(d, conf->cpl_default_script), SIP_CPL_INCOMING, owner_aor(d));
}

/* g. default handling */
static step_result_t step_default(dispatch_t *d)
{
    sip_relay_default_request(d->txn, d->s);
    return STEP_DONE;
}

static const step_fn incoming_steps[] = {
    step_lists, step_namemap, step_rules,
    step_uploaded_cgi, step_uploaded_cpl, step_admin_cgi, step_admin_cpl, step_default_cgi,
    step_default_cpl, step_forward, step_default, NULL
};

static void run_steps(dispatch_t *d)
{
    while (d->steps[d->step]) {
        switch (d->steps[d->step](d)) {
        case STEP_NEXT:
            d->step++;
            break;
        case STEP_DONE:
        case STEP_WAIT:
            return;
        }
    }
}

/* CPL applies to a call being set up (RFC 3880 §2.3): an INVITE without a
 * To tag. */
static int cpl_applies(const sip_msg_t *req)
{
    return !strcmp(sip_msg_method(req), "INVITE") && !sip_msg_to_tag(req);
}

static dispatch_t *dispatch_new(sip_txn_t *txn, server_rec *s)
{
    apr_pool_t *p = sip_txn_pool(txn);
    dispatch_t *d = apr_pcalloc(p, sizeof(*d));

    d->txn = txn;
    d->s = s;
    d->p = p;
    d->req = sip_txn_request(txn);
    d->cpl = cpl_applies(d->req);
    return d;
}

void sip_dispatch_request(sip_txn_t *txn, server_rec *s)
{
    dispatch_t *d = dispatch_new(txn, s);

    /* A REGISTER names its user in To (RFC 3050 §5.9: the user's script
     * sees its REGISTERs); everything else in the Request-URI. */
    d->user = sip_msg_uri_user(d->req);
    d->host = sip_msg_uri_host(d->req);
    if (!strcmp(sip_msg_method(d->req), "REGISTER") && sip_msg_header(d->req, "To"))
        sip_uri_user_host(d->p, sip_header_uri(d->p, sip_msg_header(d->req, "To"), NULL),
                          &d->user, &d->host);
    d->upload_aor = sip_upload_applies(d->p, txn, s);
    d->steps = incoming_steps;
    run_steps(d);
}

/* ---- <outgoing> (RFC 3880 §2.3) ---- */

/* The caller's script: uploaded, else SipDirectory's user@host.cpl, else
 * the default CPL script; the first of them with an <outgoing> part. */
static step_result_t step_outgoing(dispatch_t *d)
{
    const sip_server_conf *conf = sip_get_conf(d->s);
    const sip_script_t *sc;
    sip_cpl_entry_t *e = NULL;
    const char *why = NULL, *name = NULL;

    if (d->upload_aor) {
        if (!have_scripts(d))
            return STEP_WAIT;
        if (d->fetch_status) {
            sip_upload_fail_closed(d->txn, d->s, d->upload_aor, "CPL",
                                   "the script store could not be read");
            return STEP_DONE;
        }
        if ((sc = uploaded(d, SIP_SCRIPT_CPL)) && !(e = sip_cpl_exec_uploaded(sc, &why)))
            sip_cpl_exec_log_invalid(d->s, apr_pstrcat(d->p, "uploaded by ", sc->aor, NULL),
                                     why);
    }
    if ((!e || !sip_cpl_entry_has(e, SIP_CPL_OUTGOING)) && conf->directory
        && !sip_cgi_user_file(d->p, d->user, d->host, ".cpl", &name, &why))
        e = admin_cpl(d, name);
    if ((!e || !sip_cpl_entry_has(e, SIP_CPL_OUTGOING)) && conf->directory)
        e = admin_cpl(d, conf->cpl_default_script);
    return run_cpl(d, e, SIP_CPL_OUTGOING, d->caller);
}

/* the call proceeds: forwarded, or to our callee's routing steps */
static step_result_t step_proceed(dispatch_t *d)
{
    d->cont(d->txn, d->s);
    return STEP_DONE;
}

static const step_fn outgoing_steps[] = {step_outgoing, step_proceed, NULL};

void sip_dispatch_outgoing(sip_txn_t *txn, server_rec *s, sip_dispatch_cont_fn cont)
{
    const sip_msg_t *req = sip_txn_request(txn);
    apr_pool_t *p = sip_txn_pool(txn);
    const char *from, *uri = NULL, *aor = NULL;
    dispatch_t *d;

    /* only the caller proven to be the From user places calls with that
     * user's script: anyone can write a From (cheap checks first: this
     * is on the path of every request) */
    if (cpl_applies(req) && sip_txn_user(txn) && (from = sip_msg_header(req, "From"))
        && (uri = sip_header_uri(p, from, NULL)))
        aor = sip_uri_aor(p, uri);
    if (!aor || !sip_auth_user_owns(p, sip_txn_user(txn), uri)
        || !sip_proxy_uri_is_local(uri, s, p)) {
        cont(txn, s);
        return;
    }
    d = dispatch_new(txn, s);
    sip_uri_user_host(p, uri, &d->user, &d->host);
    if (!d->user || !d->host) {
        cont(txn, s);
        return;
    }
    d->cont = cont;
    d->caller = aor;
    /* SipScriptUpload of the caller's AoR (the Request-URI is the callee) */
    if (sip_upload_conf()->used && sip_request_script_upload(p, s, aor))
        d->upload_aor = aor;
    d->steps = outgoing_steps;
    run_steps(d);
}
