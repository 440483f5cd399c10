#!/usr/bin/python3
# t/fcgi.t's worker: what it does depends on the Request-URI's user.
#   crash@   the worker process dies in the middle of the request
#   slow@    answers 200 after 3 s
#   env@     200 with the environment it got as the body (sorted NAME=value lines)
#   other    200 with X-Worker-Pid: its pid (the same process serves many calls)
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import sipfcgi  # noqa: E402


def handle(env, body):
    user = env.get("REQUEST_URI", "").split(":", 1)[-1].split("@", 1)[0]
    if user == "crash":
        sipfcgi.log("behave: crashing on purpose")
        os._exit(3)
    if user == "slow":
        time.sleep(3)
    if user == "env":
        text = "".join("%s=%s\n" % kv for kv in sorted(env.items()))
        return ("SIP/2.0 200 OK\nContent-Type: text/plain\nContent-Length: %d\n\n%s"
                % (len(text.encode()), text))
    return "SIP/2.0 200 OK\nX-Worker-Pid: %d\n\n" % os.getpid()


sipfcgi.serve(handle)
