#include "sip_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <osipparser2/osip_port.h>

static server_rec *trace_server;

static void osip_trace_to_errorlog(const char *fi, int li, osip_trace_level_t level,
                                   const char *chfr, va_list ap)
{
    char buf[1024];
    int aplevel = level <= OSIP_ERROR ? APLOG_INFO : APLOG_TRACE1;

    vsnprintf(buf, sizeof(buf), chfr, ap);
    ap_log_error(APLOG_MARK, aplevel, 0, trace_server, "osip %s:%d: %s", fi, li, buf);
}

void sip_log_init_osip(server_rec *s)
{
    trace_server = s;
    osip_trace_initialize_func(TRACE_LEVEL3, /* fatal, bug, error */ osip_trace_to_errorlog);
}
