#!/usr/bin/python3
# t/fcgi.t's worker: what it does depends on the Request-URI's user.
#   crash@   the worker process dies in the middle of the request
#   slow@    answers 200 after 1.5 s
#   nap@     answers 200 after 0.5 s
#   hang@    answers after 30 s (past SipScriptTimeout)
#   huge@    200 with a 200 000-byte body (past SipScriptMaxOutput)
#   env@     200 with the environment it got as the body (sorted NAME=value lines)
#   rec@     appends "pid Call-ID" to the file "seen" beside it (a side
#            effect t/fcgi-retry.t counts), then answers 200 after 1 s
#   other    200 with X-Worker-Pid: its pid (the same process serves many calls)
# Installed as mpx*.py it takes 8 requests per connection (FCGI_MPXS_CONNS
# 1); under other names one at a time, so that a slow request holds its
# worker and the pool's limits show.  Installed as closer*.py it closes
# the connection after every answer, FCGI_KEEP_CONN or not, and given a
# TCP port it is an application server listening on it.
import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
NAME = os.path.basename(__file__)
sys.path.insert(0, HERE)
import sipfcgi  # noqa: E402

if NAME.startswith("closer"):
    sipfcgi.KEEP_CONN = 0   # no request keeps the connection


def handle(env, body):
    user = env.get("REQUEST_URI", "").split(":", 1)[-1].split("@", 1)[0]
    if user == "rec":
        with open(os.path.join(HERE, "seen"), "a") as f:
            f.write("%d %s\n" % (os.getpid(), env.get("SIP_CALL_ID", "")))
        time.sleep(1)
    if user == "crash":
        sipfcgi.log("behave: crashing on purpose")
        os._exit(3)
    if user == "slow":
        time.sleep(1.5)
    if user == "nap":
        time.sleep(0.5)
    if user == "hang":
        time.sleep(30)
    if user == "huge":
        return "SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: 200000\n\n" + "x" * 200000
    if user == "env":
        text = "".join("%s=%s\n" % kv for kv in sorted(env.items()))
        return ("SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: %d\n\n%s"
                % (len(text.encode()), text))
    return "SIP/2.0 200 OK\nX-Worker-Pid: %d\n\n" % os.getpid()


sipfcgi.serve(handle, address=("127.0.0.1", int(sys.argv[1])) if len(sys.argv) > 1 else None,
              max_reqs=8 if NAME.startswith("mpx") else 1)
