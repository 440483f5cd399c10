#!/usr/bin/python3
"""A tiny authoritative DNS server for the tests (started by t/lib/SipDNS.pm).

Answers UDP and TCP on 127.0.0.1 from a zone file in master-file syntax
(dnslib's parser: NAPTR, SRV, A, AAAA, PTR, CNAME, SOA, TXT ... with TTLs).
The zone file and a control file ("normal", "silent", or "slow SECONDS")
are read again whenever they change, so a test can switch records or modes
while the server runs.  Every query received is appended to the log file as
"TIME<TAB>NAME<TAB>TYPE<TAB>PROTO" before it is answered (or dropped), so a
test can count what the resolver under test really asked.

A name with no record of the asked type gets NOERROR/NODATA, an unknown name
NXDOMAIN; both carry the zone's SOA (if any) in the authority section, so the
negative TTL of RFC 2308 is the SOA's minimum.
"""
import argparse
import os
import socket
import sys
import threading
import time

from dnslib import DNSRecord, QTYPE, RCODE, RR


class Zone:
    def __init__(self, zone_path, control_path):
        self.zone_path = zone_path
        self.control_path = control_path
        self.lock = threading.Lock()
        self.zone_stamp = None
        self.control_stamp = None
        self.rrs = []
        self.mode = "normal"
        self.delay = 0.0

    @staticmethod
    def _stamp(path):
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def refresh(self):
        with self.lock:
            s = self._stamp(self.zone_path)
            if s != self.zone_stamp:
                with open(self.zone_path) as f:
                    text = f.read()
                self.rrs = list(RR.fromZone(qualify_srv(text))) if text.strip() else []
                self.zone_stamp = s
            s = self._stamp(self.control_path)
            if s != self.control_stamp:
                mode, delay = "normal", 0.0
                try:
                    with open(self.control_path) as f:
                        words = f.read().split()
                    if words:
                        mode = words[0]
                    if len(words) > 1:
                        delay = float(words[1])
                except OSError:
                    pass
                self.mode, self.delay = mode, delay
                self.control_stamp = s
            return list(self.rrs), self.mode, self.delay


def qualify_srv(text):
    """dnslib applies $ORIGIN to every relative name but an SRV target's:
    qualify those here so a zone reads the same as in BIND."""
    origin, out = "", []
    for line in text.splitlines():
        words = line.split(";")[0].split()
        if words and words[0].upper() == "$ORIGIN" and len(words) > 1:
            origin = words[1] if words[1].endswith(".") else words[1] + "."
        elif ("SRV" in [w.upper() for w in words] and origin and words
              and not words[-1].endswith(".")):
            head = line.split(";")[0].rstrip()
            head = head[:len(head) - len(words[-1])]
            line = head + (origin if words[-1] == "@" else words[-1] + "." + origin)
        out.append(line)
    return "\n".join(out) + "\n"


def norm(name):
    return str(name).lower().rstrip(".")


def answer(request, rrs):
    reply = request.reply()
    reply.header.aa = 1
    reply.header.ra = 0
    q = request.q
    qname, qtype = norm(q.qname), q.qtype
    names = {norm(rr.rname) for rr in rrs}
    # CNAME chains (a few steps), then the records of the asked type
    name = qname
    for _ in range(8):
        cnames = [rr for rr in rrs if norm(rr.rname) == name and rr.rtype == QTYPE.CNAME]
        if not cnames or qtype == QTYPE.CNAME:
            break
        reply.add_answer(cnames[0])
        name = norm(cnames[0].rdata.label)
    hits = [rr for rr in rrs if norm(rr.rname) == name
            and (rr.rtype == qtype or qtype == QTYPE.ANY)]
    for rr in hits:
        reply.add_answer(rr)
    if not hits:
        if name not in names:
            reply.header.rcode = RCODE.NXDOMAIN
        soas = [rr for rr in rrs if rr.rtype == QTYPE.SOA
                and (name == norm(rr.rname) or name.endswith("." + norm(rr.rname)))]
        if soas:
            reply.add_auth(soas[0])
    return reply


class Server:
    def __init__(self, zone, log_path):
        self.zone = zone
        self.log_path = log_path
        self.log_lock = threading.Lock()

    def log(self, request, proto):
        q = request.q
        line = "%.3f\t%s\t%s\t%s\n" % (time.time(), norm(q.qname), QTYPE.get(q.qtype), proto)
        with self.log_lock:
            with open(self.log_path, "a") as f:
                f.write(line)

    def handle(self, data, proto, send):
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return
        rrs, mode, delay = self.zone.refresh()
        self.log(request, proto)
        if mode == "silent":
            return
        reply = answer(request, rrs)
        packed = reply.pack()
        if proto == "udp" and len(packed) > 512:
            reply = request.reply()
            reply.header.aa = 1
            reply.header.tc = 1
            packed = reply.pack()
        if mode == "slow" and delay > 0:
            threading.Timer(delay, send, args=(packed,)).start()
        else:
            send(packed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zone", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--portfile", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    server = Server(Zone(args.zone, args.control), args.log)

    # UDP and TCP on one port: bind UDP first (port 0 picks one), then TCP
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", args.port))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", port))
            break
        except OSError:
            udp.close()
            tcp.close()
            if args.port:
                raise
    tcp.listen(16)

    def tcp_client(conn):
        with conn:
            buf = b""
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 2:
                    n = int.from_bytes(buf[:2], "big")
                    if len(buf) < 2 + n:
                        break
                    msg, buf = buf[2:2 + n], buf[2 + n:]

                    def send(p, conn=conn):
                        try:
                            conn.sendall(len(p).to_bytes(2, "big") + p)
                        except OSError:
                            pass
                    server.handle(msg, "tcp", send)

    def tcp_loop():
        while True:
            conn, _ = tcp.accept()
            threading.Thread(target=tcp_client, args=(conn,), daemon=True).start()

    threading.Thread(target=tcp_loop, daemon=True).start()

    tmp = args.portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, args.portfile)

    while True:
        data, peer = udp.recvfrom(65535)

        def send(p, peer=peer):
            try:
                udp.sendto(p, peer)
            except OSError:
                pass
        server.handle(data, "udp", send)


if __name__ == "__main__":
    sys.exit(main())
