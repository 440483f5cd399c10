#!/bin/sh
# default.cgi -- SIP-CGI fallback script.
#
# mod_sip runs this script (the SipDefaultScript, "default.cgi" unless
# configured otherwise) when no script named after the Request-URI's
# user@host exists in the SipDirectory.
#
#   OPTIONS        -> 200 OK with an Allow header (keep-alive / capability
#                     probes keep working for unknown users)
#   anything else  -> no output: the server's default action.  A REGISTER
#                     is stored by the registrar; a request for a user who
#                     registered (a browser phone of www/phone/, a SIP
#                     phone) is proxied to the registered contacts; a user
#                     with no binding gets 480, one never registered 404.
#   ACK            -> mod_sip never runs a script for ACK
#
# This is a placeholder.  Administrators are expected to replace it with
# their own policy (a 404, a lookup in a user database, a redirect to a
# voicemail server, ...) or delete it: without a default script the server
# itself answers 404 Not Found, and OPTIONS with its built-in 200 OK.
#
# RFC 3050 references:
#   3.4        which script handles a message is local server policy
#   5.5.1.11   REQUEST_METHOD names the method of the triggering request
#   5.6.1.1    a status line makes the server send that response; Via, From,
#              To, Call-ID and CSeq are copied from the request by the server
#   5.6.1.6    no output: the server's default action (proxy to the
#              registered contacts); 5.9: a REGISTER's binding is stored

case "$REQUEST_METHOD" in
OPTIONS)
    printf 'SIP/2.0 200 OK\n'
    printf 'Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\n'
    printf '\n'
    ;;
esac
