/* Logging helpers: the module index for ap_log_* and libosip2's trace hook. */
#ifndef SIP_LOG_H
#define SIP_LOG_H

#include "httpd.h"
#include "http_log.h"
#include "http_main.h"    /* ap_server_conf */

#ifdef APLOG_USE_MODULE
APLOG_USE_MODULE(sip);
#endif

/* Route libosip2's traces (which default to stdout) into the error log. */
void sip_log_init_osip(server_rec *s);

#endif
