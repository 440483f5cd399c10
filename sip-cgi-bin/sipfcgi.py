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
3-6): no multiplexing (FCGI_MPXS_CONNS 0), as libfcgi.  Debian has no
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
        sock, rid = sink
        sock.sendall(_record(STDERR, rid, line.encode("utf-8", "replace")))


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


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_record(self):
        while len(self.buf) < 8:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        version, rtype, rid, clen, pad = struct.unpack(">BBHHBx", self.buf[:8])
        while len(self.buf) < 8 + clen + pad:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        content = self.buf[8:8 + clen]
        self.buf = self.buf[8 + clen + pad:]
        return rtype, rid, content


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


def _serve_conn(handle, sock):
    conn = _Conn(sock)
    try:
        while True:
            rid, keep, params, stdin = None, False, b"", b""
            params_done = stdin_done = False
            while not stdin_done:
                rec = conn.read_record()
                if rec is None:
                    return
                rtype, r, content = rec
                if r == 0:
                    if rtype == GET_VALUES:
                        names = _pairs(content)
                        vals = {"FCGI_MAX_CONNS": "1", "FCGI_MAX_REQS": "1", "FCGI_MPXS_CONNS": "0"}
                        res = b"".join(_encode_pair(k.encode(), vals[k].encode())
                                       for k in names if k in vals)
                        sock.sendall(_record(GET_VALUES_RESULT, 0, res))
                    else:
                        sock.sendall(_record(UNKNOWN_TYPE, 0, bytes([rtype]) + b"\0" * 7))
                    continue
                if rtype == BEGIN_REQUEST:
                    role, flags = struct.unpack(">HB5x", content)
                    if rid is not None:
                        sock.sendall(_record(END_REQUEST, r, struct.pack(">IB3x", 0, CANT_MPX_CONN)))
                        continue
                    if role != RESPONDER:
                        sock.sendall(_record(END_REQUEST, r, struct.pack(">IB3x", 0, UNKNOWN_ROLE)))
                        continue
                    rid, keep = r, bool(flags & KEEP_CONN)
                elif r != rid:
                    continue
                elif rtype == ABORT_REQUEST:
                    sock.sendall(_record(END_REQUEST, rid, struct.pack(">IB3x", 0, REQUEST_COMPLETE)))
                    rid = None
                    params, stdin, params_done = b"", b"", False
                elif rtype == PARAMS:
                    if content:
                        params += content
                    else:
                        params_done = True
                elif rtype == STDIN:
                    if content:
                        stdin += content
                    else:
                        stdin_done = params_done
            _local.stderr = (sock, rid)

            def write(data, rid=rid):
                if data:
                    sock.sendall(_record(STDOUT, rid, data))
            try:
                status, out = _run(handle, _pairs(params), stdin, write)
            finally:
                _local.stderr = None
            # the answer and its end in one write: the worker is free when
            # the engine sees the answer
            sock.sendall((_record(STDOUT, rid, out) if out else b"") + _record(STDOUT, rid, b"")
                         + _record(END_REQUEST, rid, struct.pack(">IB3x", status, REQUEST_COMPLETE)))
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


def serve(handle, address=None):
    """Run 'handle' as described in the module's docstring; never returns
    in the resident modes (SIGTERM ends the worker)."""
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
            _serve_conn(handle, sock)
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
        threading.Thread(target=_serve_conn, args=(handle, sock), daemon=True).start()
