/* Temporary build shim until branch cpl-time (sip_cpl_mail.c) is merged:
 * no mail is ever sent. */
#include "sip_cpl_mail.h"

const char *sip_cpl_mail_message(apr_pool_t *p, const char *url, const char *from,
                                 const char *call_info, const char **why)
{
    (void)p;
    (void)url;
    (void)from;
    (void)call_info;
    *why = "mail is not built in yet";
    return NULL;
}

void sip_cpl_mail_init(sip_loop_t *loop, apr_pool_t *p)
{
    (void)loop;
    (void)p;
}

apr_status_t sip_cpl_mail_send(const char *command, const char *message, server_rec *s)
{
    (void)command;
    (void)message;
    (void)s;
    return APR_ENOTIMPL;
}

apr_size_t sip_cpl_mail_running(void)
{
    return 0;
}
