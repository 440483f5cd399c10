/* Placeholder until issue 15's rules code lands: the step passes. */
#include "sip_rules.h"

sip_step_t sip_rules_step(sip_txn_t *txn, server_rec *s, sip_step_resume_fn resume, void *baton)
{
    (void)txn; (void)s; (void)resume; (void)baton;
    return SIP_STEP_NEXT;
}
