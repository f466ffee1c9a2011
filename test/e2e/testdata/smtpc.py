#!/usr/bin/env python3
"""smtpc.py: a scripted smtplib client that opens with a PROXY v2 header.

The end-to-end tests use it as a real SMTP client in front of postern (and
directly in front of Postfix's PROXY port). It reads one JSON object on
stdin:

    {"addr": "127.0.0.1:2525",          # where to connect
     "src": "203.0.113.7", "sport": 40000,  # the client address the header claims
     "tls": "implicit" | "",            # implicit TLS after the header (smtps)
     "ehlo": "client.e2e.test",
     "steps": [ {"op": "ehlo"}, {"op": "starttls"},
                {"op": "auth", "mech": "PLAIN" | "LOGIN", "user": U, "pass": P},
                {"op": "mail", "from": A, "opts": ["BODY=8BITMIME", ...]},
                {"op": "rcpt", "to": A, "opts": ["NOTIFY=SUCCESS", ...]},
                {"op": "data", "file": PATH},       # smtplib.data: dot-stuffing, CRLF.CRLF
                {"op": "bdat", "file": PATH, "chunks": [N, ...]},  # CHUNKING; the last chunk is LAST
                {"op": "rset"}, {"op": "noop"}, {"op": "quit"} ]}

and prints one JSON list: for each step that ran, {"op", "code", "msg"} or
{"op", "error"} (a closed connection, a timeout, a TLS failure); it stops
at the first error. A refused AUTH is a reply ({"code": 535}), not an
error. Exit status 0 unless the input is wrong (2).
"""
import ipaddress
import json
import smtplib
import socket
import ssl
import struct
import sys

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TIMEOUT = 20


def proxy_v2(src, dst):
    """The v2 PROXY header for TCP from src to dst ((ip, port) pairs).
    Mixed families are sent as IPv6 with the IPv4 side mapped."""
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s, d = (ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a
                for a in (s, d))
    family = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def tls_context():
    # The gateway's certificate is self-signed for the test; the tests
    # check what is relayed, not the certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client(smtplib.SMTP):
    def __init__(self, src, implicit, ehlo):
        self.src, self.implicit = src, implicit
        super().__init__(local_hostname=ehlo, timeout=TIMEOUT)  # not connected yet

    def connect(self, host, port):
        # Unlike smtplib's, any greeting is returned, not raised: a refusal
        # (554, 421) is a reply the test checks.
        self._host = host
        self.sock = self._get_socket(host, port, self.timeout)
        self.file = None
        return self.getreply()

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.sendall(proxy_v2(self.src, sock.getpeername()[:2]))
        if self.implicit:
            sock = tls_context().wrap_socket(sock, server_hostname=host)
        return sock


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def step(c, s):
    op = s["op"]
    if op == "ehlo":
        return c.ehlo()
    if op == "starttls":
        return c.starttls(context=tls_context())
    if op == "auth":
        c.user, c.password = s["user"], s["pass"]
        mech = s["mech"].upper()
        obj = {"PLAIN": c.auth_plain, "LOGIN": c.auth_login}[mech]
        try:
            return c.auth(mech, obj)
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code, e.smtp_error
    if op == "mail":
        opts = s.get("opts") or []
        if any(o.upper() == "SMTPUTF8" for o in opts):
            c.command_encoding = "utf-8"
        return c.mail(s["from"], opts)
    if op == "rcpt":
        return c.rcpt(s["to"], s.get("opts") or [])
    if op == "data":
        with open(s["file"], "rb") as f:
            msg = f.read()
        try:
            return c.data(msg)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error
    if op == "bdat":
        with open(s["file"], "rb") as f:
            msg = f.read()
        chunks, off, res = s["chunks"], 0, None
        if sum(chunks) != len(msg):
            raise SystemExit("bdat: chunks add up to %d, the file has %d bytes" % (sum(chunks), len(msg)))
        for i, n in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            c.send(("BDAT %d%s\r\n" % (n, last)).encode() + msg[off:off + n])
            off += n
            res = c.getreply()
            if res[0] != 250:
                break
        return res
    if op == "rset":
        return c.rset()
    if op == "noop":
        return c.noop()
    if op == "quit":
        return c.quit()
    raise SystemExit("unknown op %r" % op)


def main():
    spec = json.load(sys.stdin)
    host, port = spec["addr"].rsplit(":", 1)
    out = []
    try:
        c = Client((spec["src"], spec.get("sport", 40000)), spec.get("tls") == "implicit",
                   spec.get("ehlo", "client.e2e.test"))
        code, msg = c.connect(host.strip("[]"), int(port))
        out.append({"op": "connect", "code": code, "msg": text(msg)})
        if code != 220:
            print(json.dumps(out))
            return 0
        for s in spec["steps"]:
            code, msg = step(c, s)
            out.append({"op": s["op"], "code": code, "msg": text(msg)})
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        out.append({"op": "error", "error": "%s: %s" % (type(e).__name__, e)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
