/*
 * bench/fcgi302.c: the c-fcgi row's resident worker, a shell-free C
 * FastCGI responder on libfcgi (Debian libfcgi-dev) making the decision of
 * bench/py302.py: INVITE -> 302 to sip:x@127.0.0.1, anything else 200.
 * mod_sip's SipFastCGI hands it its listening socket as descriptor 0
 * (FCGI_LISTENSOCK_FILENO), which FCGX_Accept_r uses as it is.
 *
 *   cc -O2 -o fcgi302 fcgi302.c -lfcgi
 */
#include <fcgiapp.h>
#include <string.h>

int main(void)
{
    FCGX_Request req;
    char buf[4096];

    if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0)
        return 1;
    while (FCGX_Accept_r(&req) >= 0) {
        const char *m = FCGX_GetParam("REQUEST_METHOD", req.envp);
        /* read the whole body, as a SIP-CGI script must (RFC 3050 §5.5) */
        while (FCGX_GetStr(buf, sizeof buf, req.in) > 0)
            ;
        if (m && strcmp(m, "INVITE") == 0)
            FCGX_PutS("SIP/2.0 302 Moved Temporarily\nContact: <sip:x@127.0.0.1>\n\n", req.out);
        else
            FCGX_PutS("SIP/2.0 200 OK\n\n", req.out);
        FCGX_Finish_r(&req);
    }
    return 0;
}
