#!/usr/bin/python3
# t/fcgi.t: a "FastCGI server" that answers every request with records that
# are not FastCGI (or not this request's), per the first argument.  "mpx"
# (t/fcgi-mpx.t) says it multiplexes, waits for two requests on the
# connection, starts the first one's answer, then sends a record for a
# request id that is not in flight.
import os
import socket
import struct
import sys

mode, path = sys.argv[1], sys.argv[2]
if os.path.exists(path):
    os.unlink(path)
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind(path)
os.chmod(path, 0o777)
ls.listen(8)
while True:
    c, _ = ls.accept()
    try:
        if mode == "mpx":
            got = b""
            while got.count(bytes([1, 1])) < 2:     # two BEGIN_REQUEST headers
                d = c.recv(65536)
                if not d:
                    break
                if b"FCGI_MPXS_CONNS" in d:
                    res = b"\x0f\x01FCGI_MPXS_CONNS1\x0d\x01FCGI_MAX_REQS8"
                    pad = -len(res) % 8
                    c.sendall(struct.pack(">BBHHBx", 1, 10, 0, len(res), pad) + res + b"\0" * pad)
                got += d
            c.sendall(struct.pack(">BBHHBx", 1, 6, 1, 16, 0) + b"SIP/2.0 200 OK\nX"
                      + struct.pack(">BBHHBx", 1, 6, 7, 5, 3) + b"hello\0\0\0")
            c.recv(65536)
            c.close()
            continue
        c.recv(65536)
        if mode == "http":
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        elif mode == "otherid":
            c.sendall(struct.pack(">BBHHBx", 1, 6, 9, 5, 3) + b"hello\0\0\0")
        else:  # oversized stderr
            c.sendall(b"".join(struct.pack(">BBHHBx", 1, 7, 1, 60000, 0) + b"e" * 60000
                               for _ in range(3)))
        c.recv(65536)
    except OSError:
        pass
    c.close()
