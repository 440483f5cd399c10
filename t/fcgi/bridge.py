#!/usr/bin/python3
# A resident FastCGI worker that runs the selected script (SCRIPT_FILENAME)
# as a child, the way the engine would spawn it: the same environment (less
# SCRIPT_FILENAME), the body on stdin, the script's directory as working
# directory (RFC 3050 section 6.1); its stdout is passed on as it comes, its
# stderr goes to the log, its exit status is the application status (128 +
# signal when killed).  With it, whole conformance files (t/cgi-*.t) run
# again with every trigger carried over FastCGI: SIP_CGI_FCGI=1
# (t/lib/SipCgiTest.pm).
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..",
                                "sip-cgi-bin"))
import sipfcgi  # noqa: E402


def handle(env, body):
    path = env.pop("SCRIPT_FILENAME")
    p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=os.path.dirname(path))
    err = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()))
    t.start()

    def feed():
        try:
            p.stdin.write(body)
            p.stdin.close()
        except OSError:
            pass        # the script does not read its input: fine
    threading.Thread(target=feed).start()
    while True:
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        yield chunk
    status = p.wait()
    t.join()
    for line in b"".join(err).decode("utf-8", "replace").splitlines():
        sipfcgi.log(line)
    return status if status >= 0 else 128 - status


sipfcgi.serve(handle)
