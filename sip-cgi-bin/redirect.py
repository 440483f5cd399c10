#!/usr/bin/python3
# redirect.py -- the redirect@127.0.0.1 example as a resident Python worker.
#
# The same decisions as the shell script redirect@127.0.0.1: INVITE gets
# "302 Moved Temporarily" with the Contact read from forward.txt (next to
# this file; blank lines and '#' lines skipped), anything else "200 OK".
# sipfcgi.serve() makes the one file work three ways (docs/fastcgi.md):
#
#   spawned per request     install (or symlink) it as SipDirectory/<user>@<host>
#   engine-managed pool     SipFastCGI /path/to/redirect.py 1 4
#   application server      ./redirect.py --listen /run/redirect.sock
#                           and SipFastCGIConnect 'redirect*' unix:/run/redirect.sock
#
# Only the decision lives in handle(); the process, and whatever it keeps
# (here: the parsed forward.txt until the file changes), stays between calls.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import sipfcgi  # noqa: E402

FORWARD = os.path.join(os.path.dirname(os.path.realpath(__file__)), "forward.txt")
_cache = {"mtime": None, "target": None}


def target():
    """The first usable line of forward.txt, read again when it changes."""
    try:
        mtime = os.stat(FORWARD).st_mtime_ns
    except OSError:
        return None
    if mtime != _cache["mtime"]:
        t = None
        with open(FORWARD, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    t = line
                    break
        _cache.update(mtime=mtime, target=t)
    return _cache["target"]


def handle(env, body):
    if env.get("REQUEST_METHOD") != "INVITE":
        return "SIP/2.0 200 OK\n\n"
    t = target()
    if not t:
        sipfcgi.log("redirect: no target in %s" % FORWARD)
        return "SIP/2.0 480 Temporarily Unavailable\n\n"
    contact = t if "<" in t else "<%s>" % t
    return "SIP/2.0 302 Moved Temporarily\nContact: %s\n\n" % contact


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--listen":
        addr = sys.argv[2]
        if not addr.startswith("/"):
            host, port = addr.rsplit(":", 1)
            addr = (host, int(port))
        sipfcgi.serve(handle, address=addr)
    else:
        sipfcgi.serve(handle)
