/* Placeholder until issue 15's namemap code lands: the step passes. */
#include "sip_namemap.h"

sip_step_t sip_namemap_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume, void *baton)
{
    (void)txn; (void)s; (void)resume; (void)baton;
    return SIP_STEP_NEXT;
}
