/* Call handling rules in Apache's own configuration (issue 15; seed 002
 * §6; docs/routing.md).  Two forms, one engine:
 *
 *   SipRule <action> [args]         in the SIP vhost, <Location "/user@host">,
 *                                   <If "%{HTTP:From} =~ /aol\.com/">, <Else>...;
 *                                   the section decides when it applies
 *   SipRuleFile <path>              the seed's compact table, one rule per
 *                                   line: Header Method glob action [args]
 *
 * Both append to the same per-directory list (sip_dir_conf.rules) in
 * configuration order; sections merge base first (vhost, then <Location>,
 * then <If>), so the rules of a request run in the order they were written
 * within the sections that match it.  Actions (one function each in
 * sip_rules.c's action table):
 *
 *   log [envvar]          set envvar (default "sip-rule-log") for this
 *                         transaction's access-log line, so that
 *                         CustomLog ... env=sip-rule-log writes it; go on
 *   respond <status> [uri ...]
 *                         2xx: allow (stop the rules, normal handling goes
 *                         on: "From REGISTER cs.columbia.edu 200");
 *                         3xx: redirect with Contact = the URIs, or the
 *                         registrar's bindings when none (480 if none);
 *                         4xx-6xx: answer it.  Stops the rules.
 *   proxy [parallel|sequential] [target ...]
 *                         proxy to the targets: a SIP URI, or a domain
 *                         (the Request-URI's user at that host); none: the
 *                         registrar's bindings.  Stops the rules.
 *   authenticate [digest] the caller must be digest-authenticated (the
 *                         SipAuth machinery: 401/407 challenge); once he
 *                         is, go on
 *   script [name]         run SipDirectory's SIP-CGI script 'name'; when
 *                         it answers or proxies, the rules stop; when it
 *                         leaves the request to the server (no output,
 *                         RFC 3050 §5.6.1.6), the next rule runs (seed
 *                         §6); without a name, stop the rules and go on
 *                         with the user's own scripts (the normal steps)
 *   record <host>         voice mail by indirection: proxy to the
 *                         Request-URI's user at <host>.  Stops the rules.
 *
 * In a SipRuleFile the action may also be a bare status ("404", "301
 * sip:vp@example.com"; the seed's "sip://" is read as "sip:") or a script
 * path ("/usr/local/bin/user_script", checked to exist and be executable;
 * a SipRule's script is always a name in SipDirectory); Header is any SIP
 * header (its address is matched) or "Request-URI", Method a method or
 * "*" (left out: "*"; written after the glob, as the seed's "From *
 * INVITE log": accepted), glob matched case-insensitively from the end of
 * the address user@host, %-decoded, on a boundary (the start, or after a
 * '.' or '@': "columbia.edu" matches erlang.cs.columbia.edu, not
 * xcolumbia.edu; "@columbia.edu" only foo@columbia.edu); a glob without
 * '@' is also tried on the user alone ("To *-voicemail record host").
 * "log" takes no log file (that is CustomLog's job: a destination is a
 * configuration error saying so).  A 3xx with no URI and no binding: 404
 * when never registered, 480 when none now (as the registrar routes).  A
 * bad rule is a configuration error with its file and line (apachectl
 * -t). */
#ifndef SIP_RULES_H
#define SIP_RULES_H

#include "httpd.h"
#include "apr_tables.h"
#include "sip_dispatch.h"
#include "sip_message.h"
#include "sip_transaction.h"

typedef struct sip_rule sip_rule_t;

/* What "log" sets when it names no variable. */
#define SIP_RULE_LOG_ENV "sip-rule-log"

/* SipRule's arguments (the whole argument string): one rule with no
 * condition.  NULL and *err on a bad rule. */
const sip_rule_t *sip_rule_parse(apr_pool_t *p, const char *args, const char **err);
/* The same, naming where it was written ("file:line") in the error log
 * lines the rule causes at run time. */
const sip_rule_t *sip_rule_parse_at(apr_pool_t *p, const char *args, const char *where,
                                    const char **err);

/* SipRuleFile: every rule of the table at 'path' pushed (const sip_rule_t *)
 * onto 'rules'.  0, or -1 and *err ("path:line: why"). */
int sip_rule_file_read(apr_pool_t *p, const char *path, apr_array_header_t *rules,
                       const char **err);

/* Does the rule's condition (SipRuleFile only) hold for 'req'? */
int sip_rule_matches(apr_pool_t *p, const sip_rule_t *rule, const sip_msg_t *req);

/* The rules step (sip_dispatch.h): the rules that apply to the request of
 * 'txn' (sip_request_rules), in order. */
sip_step_t sip_rules_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume,
                          void *baton);

#endif
