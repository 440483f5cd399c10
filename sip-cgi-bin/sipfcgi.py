"""sipfcgi -- run a SIP-CGI service as a resident FastCGI worker (Python stdlib only).

A service is a function handle(env, body) -> output: 'env' is the SIP-CGI
environment (a dict: REQUEST_METHOD, SIP_FROM, SCRIPT_COOKIE, ...), 'body'
the request's body (bytes), and the output is what a SIP-CGI script would
print (RFC 3050 section 5.6: "SIP/2.0 302 ..." or CGI-PROXY-REQUEST ...,
str or bytes).  Anything the handler writes with log() goes to httpd's
error log.  serve(handle) then works three ways, with the same file:

  * spawned as a plain SIP-CGI script (descriptor 0 is not a socket):
    one run, environment from os.environ, body from stdin;
  * started by mod_sip's SipFastCGI (descriptor 0 is a listening socket,
    FCGI_LISTENSOCK_FILENO): a resident worker, one connection at a time;
  * as an application server: serve(handle, address="/run/app.sock") or
    ("127.0.0.1", 9000), for SipFastCGIConnect; one thread per connection.

Only the FastCGI responder role is implemented (FastCGI 1.0 spec, sections
3-6).  A connection takes up to MAX_REQS requests at once (FCGI_MPXS_CONNS
1): they are read together, run one after the other, and their answers
written together, so a loaded worker pays its system calls per batch.  Debian has no
python3-flup; this is the small part of it a SIP-CGI worker needs.
"""

import os
import socket
import stat
import struct
import sys
import threading

__all__ = ["serve", "log", "Result"]

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = 1
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, UNKNOWN_ROLE = 0, 1, 3
MAX_REQS = 16       # requests in flight per connection (FCGI_MAX_REQS)

_local = threading.local()


def log(msg):
    """A line for httpd's error log (FCGI_STDERR, or stderr when spawned)."""
    line = msg.rstrip("\n") + "\n"
    sink = getattr(_local, "stderr", None)
    if sink is None:
        sys.stderr.write(line)
        sys.stderr.flush()
    else:
        # sent at once: a worker that dies next still has its say
        out, rid = sink
        out.now(_record(STDERR, rid, line.encode("utf-8", "replace")))


class Result:
    """What a handler returns to give an exit status too: Result(output, 3)
    is a script that printed 'output' and exited with 3 (an error when it
    did nothing else: RFC 3050's server answers 500)."""

    def __init__(self, output, status=0):
        self.output, self.status = output, status


def _record(rtype, rid, content=b""):
    out = []
    for i in range(0, max(len(content), 1), 65535):
        chunk = content[i:i + 65535]
        pad = -len(chunk) % 8
        out.append(struct.pack(">BBHHBx", VERSION, rtype, rid, len(chunk), pad) + chunk + b"\0" * pad)
    return b"".join(out)


def _pairs(data):
    # the hot loop of every request (30-odd variables): plain index
    # arithmetic, one slice per name and value
    env, i, n = {}, 0, len(data)
    while i < n:
        nl = data[i]
        if nl < 128:
            i += 1
        else:
            nl = int.from_bytes(data[i:i + 4], "big") & 0x7FFFFFFF
            i += 4
        vl = data[i]
        if vl < 128:
            i += 1
        else:
            vl = int.from_bytes(data[i:i + 4], "big") & 0x7FFFFFFF
            i += 4
        j = i + nl
        env[data[i:j].decode("latin-1")] = data[j:j + vl].decode("latin-1")
        i = j + vl
    return env


def _encode_pair(name, value):
    out = b""
    for n in (len(name), len(value)):
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return out + name + value


def _bytes(out):
    if out is None:
        return b""
    return out.encode("utf-8") if isinstance(out, str) else bytes(out)


def _run(handle, env, body, write):
    """Runs the handler; returns its status and its output, or what is
    left of it when it streamed (write() sent the pieces).
    A handler may also be a generator: each piece it yields is sent at
    once (a 180 before the final answer), and what it returns is the
    status.  A failure is status 1, as a script that dies; its traceback
    goes to the log."""
    try:
        out = handle(env, body)
        status = 0
        if isinstance(out, Result):
            out, status = out.output, out.status
        if hasattr(out, "__next__"):
            while True:
                try:
                    write(_bytes(next(out)))
                except StopIteration as stop:
                    return stop.value or 0, b""
        return status, _bytes(out)
    except Exception as e:  # the worker lives on; this request failed
        import traceback
        for line in traceback.format_exception(type(e), e, e.__traceback__):
            for part in line.rstrip("\n").split("\n"):
                log(part)
        return 1, b""


class _Out:
    """What a connection sends: gathered and written in one send per batch
    of requests read, unless something must go at once (a streamed piece,
    a log line), which takes what was gathered with it."""

    def __init__(self, sock):
        self.sock, self.parts = sock, []

    def add(self, data):
        self.parts.append(data)

    def now(self, data):
        self.parts.append(data)
        self.flush()

    def flush(self):
        if self.parts:
            data = b"".join(self.parts)
            self.parts = []
            self.sock.sendall(data)


def _end(rid, status, proto=REQUEST_COMPLETE):
    return _record(END_REQUEST, rid, struct.pack(">IB3x", status, proto))


def _serve_conn(handle, sock, max_reqs, max_conns="1"):
    """One connection: every record that has arrived is read, each request
    it completes is answered in turn, and the answers leave in one send.
    With max_reqs > 1 the engine may send several requests at once
    (FCGI_MPXS_CONNS 1, learnt from FCGI_GET_VALUES); they are still run
    one after the other."""
    out = _Out(sock)
    buf = b""
    reqs = {}       # id -> [keep, params parts, stdin parts, params done]
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
            ready, i, n = [], 0, len(buf)
            while n - i >= 8:
                _, rtype, rid, clen, pad = struct.unpack_from(">BBHHBx", buf, i)
                if n - i < 8 + clen + pad:
                    break
                content = buf[i + 8:i + 8 + clen]
                i += 8 + clen + pad
                if rid == 0:
                    if rtype == GET_VALUES:
                        vals = {"FCGI_MAX_CONNS": max_conns, "FCGI_MAX_REQS": str(max_reqs),
                                "FCGI_MPXS_CONNS": "1" if max_reqs > 1 else "0"}
                        res = b"".join(_encode_pair(k.encode(), vals[k].encode())
                                       for k in _pairs(content) if k in vals)
                        out.add(_record(GET_VALUES_RESULT, 0, res))
                    else:
                        out.add(_record(UNKNOWN_TYPE, 0, bytes([rtype]) + b"\0" * 7))
                    continue
                if rtype == BEGIN_REQUEST:
                    role, flags = struct.unpack(">HB5x", content)
                    if rid in reqs:
                        continue
                    if len(reqs) >= max_reqs:
                        out.add(_end(rid, 0, CANT_MPX_CONN))
                    elif role != RESPONDER:
                        out.add(_end(rid, 0, UNKNOWN_ROLE))
                    else:
                        reqs[rid] = [bool(flags & KEEP_CONN), [], [], False]
                    continue
                req = reqs.get(rid)
                if req is None:
                    continue        # ended, aborted or never begun: ignored
                if rtype == ABORT_REQUEST:
                    del reqs[rid]
                    out.add(_end(rid, 0))
                elif rtype == PARAMS:
                    if content:
                        req[1].append(content)
                    else:
                        req[3] = True
                elif rtype == STDIN:
                    if content:
                        req[2].append(content)
                    elif req[3]:
                        ready.append(rid)
            buf = buf[i:]
            if ready:
                out.flush()     # management answers before the handlers run
            keep = True
            for rid in ready:
                req = reqs.pop(rid, None)
                if req is None:
                    continue        # aborted in the same batch
                keep = keep and req[0]
                _local.stderr = (out, rid)

                def write(data, rid=rid):
                    if data:
                        out.now(_record(STDOUT, rid, data))
                try:
                    status, res = _run(handle, _pairs(b"".join(req[1])), b"".join(req[2]), write)
                finally:
                    _local.stderr = None
                out.add((_record(STDOUT, rid, res) if res else b"") + _record(STDOUT, rid, b"")
                        + _end(rid, status))
            # the answers of the batch in one write: the worker is free when
            # the engine sees them
            out.flush()
            if not keep:
                return
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        sock.close()


def _is_listening_socket(fd):
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        s = socket.socket(fileno=os.dup(fd))
        ok = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
        s.close()
        return ok
    except OSError:
        return False


def serve(handle, address=None, max_reqs=MAX_REQS):
    """Run 'handle' as described in the module's docstring; never returns
    in the resident modes (SIGTERM ends the worker).  'max_reqs': requests
    the engine may send on one connection before the first is answered
    (1: one at a time, as libfcgi); more lets a busy worker read and answer
    them in batches, fewer system calls per request on both sides."""
    if address is None and not _is_listening_socket(0):
        def write(data):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        status, out = _run(handle, dict(os.environ), sys.stdin.buffer.read(), write)
        write(out)
        sys.exit(status)
    if address is None:
        listener = socket.socket(fileno=0)
        while True:
            sock, _ = listener.accept()
            _serve_conn(handle, sock, max_reqs)
    if isinstance(address, str):
        if os.path.exists(address):
            os.unlink(address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(64)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_serve_conn, args=(handle, sock, max_reqs, "100"),
                         daemon=True).start()
