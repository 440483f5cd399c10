# Kamailio app_python3 for the py-fcgi row (bench/kamailio.cfg, -A WITH_PYTHON):
# the Python service of mod_sip's py-* rows, bench/py302.py, run inside
# Kamailio's worker processes.  Each INVITE builds the part of the SIP-CGI
# environment the service reads, calls the same handle(), and turns its
# SIP-CGI output (status line, headers) into a stateful reply: t_newtran,
# append_to_reply per header, t_reply -- what mod_sip does with a worker's
# answer (a server transaction, the Contact from the output).
import os
import sys

import KSR

sys.path.insert(0, os.environ.get("BENCH_PY_DIR", os.path.dirname(os.path.realpath(__file__))))
import py302  # noqa: E402


class Bench302:
    def child_init(self, rank):
        return 0

    def handle(self, msg):
        env = {
            "REQUEST_METHOD": KSR.pv.get("$rm"),
            "REQUEST_URI": KSR.pv.get("$ru"),
            "SIP_FROM": KSR.pv.get("$fu"),
            "SIP_TO": KSR.pv.get("$tu"),
            "SIP_CALL_ID": KSR.pv.get("$ci"),
        }
        out = py302.handle(env, KSR.pv.get("$rb") or "")
        head = out.split("\n\n", 1)[0].split("\n")
        parts = head[0].split(" ", 2)
        code, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        if KSR.tm.t_newtran() < 0:
            KSR.sl.sl_reply_error()
            return 1
        for h in head[1:]:
            if h:
                KSR.hdr.append_to_reply(h + "\r\n")
        KSR.tm.t_reply(code, reason)
        return 1


def mod_init():
    return Bench302()
