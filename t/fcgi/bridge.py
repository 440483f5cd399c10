#!/usr/bin/python3
# A resident FastCGI worker that runs the selected script (SCRIPT_FILENAME)
# as a child, the way the engine would spawn it: the same environment (less
# SCRIPT_FILENAME), the body on stdin, the script's directory as working
# directory (RFC 3050 section 6.1); its stdout is the answer, its stderr
# goes to the log, its exit status is the application status (128 + signal
# when killed).  With it, whole conformance files (t/cgi-*.t) run again
# with every trigger carried over FastCGI: SIP_CGI_FCGI=1 (t/lib/SipCgiTest.pm).
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..",
                                "sip-cgi-bin"))
import sipfcgi  # noqa: E402


class Status(Exception):
    pass


def handle(env, body):
    path = env.pop("SCRIPT_FILENAME")
    p = subprocess.run([path], input=body, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, cwd=os.path.dirname(path), close_fds=True)
    for line in p.stderr.decode("utf-8", "replace").splitlines():
        sipfcgi.log(line)
    if p.returncode != 0:
        code = p.returncode if p.returncode > 0 else 128 - p.returncode
        return sipfcgi.Result(p.stdout, code)
    return p.stdout


sipfcgi.serve(handle)
