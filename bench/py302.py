#!/usr/bin/python3
# The py-* rows' service: INVITE -> 302 to sip:x@127.0.0.1, in Python with
# sip-cgi-bin/sipfcgi.py: spawned per request, or resident (SipFastCGI).
# Kamailio's app_python3 row imports this file (bench/kam302.py) and calls
# the same handle() in the server, so all three run one decision.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import sipfcgi  # noqa: E402


def handle(env, body):
    if env.get("REQUEST_METHOD") != "INVITE":
        return "SIP/2.0 200 OK\n\n"
    return "SIP/2.0 302 Moved Temporarily\nContact: <sip:x@127.0.0.1>\n\n"


if __name__ == "__main__":
    sipfcgi.serve(handle)
