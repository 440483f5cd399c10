/* The <mail> action of CPL (RFC 3880 §7.1): a mailto: URL (RFC 6068)
 * turned into a message and handed to a sendmail-style command
 * (SipCplMail) without blocking the engine. */
#ifndef SIP_CPL_MAIL_H
#define SIP_CPL_MAIL_H

#include "apr_pools.h"
#include "httpd.h"
#include "sip_event.h"

/* Pure: the message (RFC 5322 headers, blank line, body; CRLF line ends)
 * that 'url' asks for: its to-addresses and hname=hvalue headers (only
 * the safe ones: subject, cc, in-reply-to, keywords, comments; never
 * bcc or anything that could add headers of its own), its body, and after
 * it 'call_info' (what the call was: caller, callee, time; may be NULL).
 * 'from' is the sender address.  NULL with *why for a URL that is not
 * mailto:, has no recipient, or bad %-escapes or line breaks. */
const char *sip_cpl_mail_message(apr_pool_t *p, const char *url, const char *from,
                                 const char *call_info, const char **why);

/* Engine: the loop the mail processes are watched from. */
void sip_cpl_mail_init(sip_loop_t *loop, apr_pool_t *p);

/* Engine: start 'command' (a command line split on blanks, run without a
 * shell, e.g. "/usr/sbin/sendmail -t -i") with 'message' on its standard
 * input, written as the pipe takes it; the process is reaped and killed
 * after a timeout, its exit status logged when it fails.  At most a few
 * mails run at once: beyond that, or when it cannot start, APR_EAGAIN or
 * the error is returned (the caller logs it).  Never blocks. */
apr_status_t sip_cpl_mail_send(const char *command, const char *message, server_rec *s);

/* Mail processes running now (tests, mod_status). */
apr_size_t sip_cpl_mail_running(void);

#endif
