#!/usr/bin/env python3
"""mailc.py: scripted imaplib / poplib clients that open with a PROXY v2 header.

The IMAP and POP3 end-to-end tests use it as a real client in front of
postern and directly in front of Dovecot's PROXY ports. It reads one JSON
object on stdin:

    {"proto": "imap" | "pop3",
     "addr": "127.0.0.1:1143",             # where to connect
     "src": "192.0.2.7", "sport": 40000,   # the client address the header claims
                                           # (no "src": no header, for Dovecot's plain ports)
     "tls": "" | "starttls" | "implicit",  # STARTTLS/STLS before the steps, or TLS after the header
     "steps": [...]}

IMAP steps: {"op": "capability"}, {"op": "login", "user", "pass"} (LOGIN with
quoted strings), {"op": "login_literal", "user", "pass"} (the password as a
synchronizing literal), {"op": "authenticate", "user", "pass"} (AUTHENTICATE
PLAIN, the response after the continuation), {"op": "fetch", "token"}
(EXAMINE INBOX, UID SEARCH SUBJECT token, UID FETCH BODY.PEEK[] of the one
match), {"op": "noop"}, {"op": "logout"}.

POP3 steps: {"op": "capa"}, {"op": "userpass", "user", "pass"} (USER, PASS),
{"op": "authplain", "user", "pass"} (AUTH PLAIN with an initial response),
{"op": "retr", "token"} (the message whose Subject is token: TOP n 0 of each,
then RETR), {"op": "stat"}, {"op": "quit"}.

It prints one JSON list: {"op": "greeting", "text"} first, then for each
step {"op", "ok", "text", ...} ("data": the message, base64, lines joined
with CRLF; "caps"; "uid"/"n") or {"op", "error"} (closed connection,
timeout, TLS failure, a protocol error), stopping at the first error. A
refused login is a reply ("ok": false, "text": the server's text), not an
error.
"""
import base64
import imaplib
import ipaddress
import json
import poplib
import socket
import ssl
import struct
import sys

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TIMEOUT = 20
poplib._MAXLINE = 1 << 20  # the test messages have lines longer than poplib's 2048


def proxy_v2(src, dst):
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s, d = (ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a
                for a in (s, d))
    family = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def tls_context():
    # The certificates are the test's own self-signed ones; the tests check
    # what is relayed, not the certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(host, port, src, implicit):
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    if src is not None:
        sock.sendall(proxy_v2(src, sock.getpeername()[:2]))
    if implicit:
        sock = tls_context().wrap_socket(sock, server_hostname=host)
    return sock


class IMAP(imaplib.IMAP4):
    def __init__(self, host, port, src, implicit):
        self.src, self.implicit = src, implicit
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        return connect(self.host, self.port, self.src, self.implicit)


class POP3(poplib.POP3):
    def __init__(self, host, port, src, implicit):
        self.src, self.implicit = src, implicit
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        return connect(self.host, self.port, self.src, self.implicit)


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def imap_login_result(m, typ, dat):
    if typ == "OK":
        m.state = "AUTH"
    return {"ok": typ == "OK", "text": typ + " " + text(dat[-1] if dat else b"")}


def imap_step(m, st):
    op = st["op"]
    if op == "capability":
        typ, dat = m.capability()
        return {"ok": typ == "OK", "caps": text(dat[0]).split()}
    if op == "login":
        typ, dat = m._simple_command("LOGIN", m._quote(st["user"]), m._quote(st["pass"]))
        return imap_login_result(m, typ, dat)
    if op == "login_literal":
        m.literal = st["pass"].encode()
        typ, dat = m._simple_command("LOGIN", m._quote(st["user"]))
        return imap_login_result(m, typ, dat)
    if op == "authenticate":
        blob = ("\0" + st["user"] + "\0" + st["pass"]).encode()
        try:
            typ, dat = m.authenticate("PLAIN", lambda _: blob)
            return {"ok": typ == "OK", "text": typ + " " + text(dat[-1])}
        except imaplib.IMAP4.error as e:
            return {"ok": False, "text": "NO " + str(e)}
    if op == "fetch":
        typ, dat = m.select("INBOX", readonly=True)
        if typ != "OK":
            return {"ok": False, "text": typ + " " + text(dat[-1])}
        typ, dat = m.uid("SEARCH", "SUBJECT", m._quote(st["token"]))
        uids = text(dat[0]).split()
        if typ != "OK" or len(uids) != 1:
            return {"ok": False, "text": "SEARCH %s %r" % (typ, dat)}
        typ, dat = m.uid("FETCH", uids[0], "(BODY.PEEK[])")
        # Dovecot may put an unsolicited FETCH (FLAGS (\Seen)) first when
        # another session has just read the message: RFC 3501 allows
        # untagged FETCH responses at any time. The body is the response
        # that carries a literal.
        body = [d for d in dat or [] if isinstance(d, tuple)]
        if typ != "OK" or len(body) != 1:
            return {"ok": False, "text": "FETCH %s %r" % (typ, dat)}
        return {"ok": True, "uid": int(uids[0]), "data": base64.b64encode(body[0][1]).decode()}
    if op == "noop":
        typ, dat = m.noop()
        return {"ok": typ == "OK", "text": typ + " " + text(dat[-1])}
    if op == "logout":
        typ, dat = m.logout()
        return {"ok": typ == "BYE", "text": typ + " " + text(dat[-1])}
    raise ValueError("unknown IMAP step " + op)


def pop3_step(m, st):
    op = st["op"]
    if op == "capa":
        return {"ok": True, "caps": sorted(m.capa().keys())}
    if op in ("userpass", "authplain"):
        try:
            if op == "userpass":
                m.user(st["user"])
                r = m.pass_(st["pass"])
            else:
                blob = base64.b64encode(("\0" + st["user"] + "\0" + st["pass"]).encode()).decode()
                r = m._shortcmd("AUTH PLAIN " + blob)
            return {"ok": True, "text": text(r)}
        except poplib.error_proto as e:
            return {"ok": False, "text": text(e.args[0])}
    if op == "retr":
        want = ("Subject: " + st["token"]).encode()
        count = m.stat()[0]
        for n in range(1, count + 1):
            _, lines, _ = m.top(n, 0)
            if want in lines:
                _, lines, _ = m.retr(n)
                return {"ok": True, "n": n, "data": base64.b64encode(b"\r\n".join(lines) + b"\r\n").decode()}
        return {"ok": False, "text": "no message with " + st["token"]}
    if op == "stat":
        c, size = m.stat()
        return {"ok": True, "n": c, "text": str(size)}
    if op == "quit":
        return {"ok": True, "text": text(m.quit())}
    raise ValueError("unknown POP3 step " + op)


def main():
    spec = json.load(sys.stdin)
    host, _, port = spec["addr"].rpartition(":")
    src = (spec["src"], int(spec.get("sport", 40000))) if spec.get("src") else None
    mode = spec.get("tls", "")
    out = []
    try:
        if spec["proto"] == "imap":
            m = IMAP(host.strip("[]"), int(port), src, mode == "implicit")
            out.append({"op": "greeting", "text": text(m.welcome)})
            if mode == "starttls":
                m.starttls(tls_context())
                out.append({"op": "starttls", "ok": True})
            step = imap_step
        else:
            m = POP3(host.strip("[]"), int(port), src, mode == "implicit")
            out.append({"op": "greeting", "text": text(m.getwelcome())})
            if mode == "starttls":
                m.stls(tls_context())
                out.append({"op": "starttls", "ok": True})
            step = pop3_step
    except Exception as e:  # noqa: BLE001 - reported to the test
        out.append({"op": "error", "error": "%s: %s" % (type(e).__name__, e)})
        print(json.dumps(out))
        return
    for st in spec.get("steps", []):
        try:
            r = step(m, st)
        except Exception as e:  # noqa: BLE001
            out.append({"op": st["op"], "error": "%s: %s" % (type(e).__name__, e)})
            break
        r["op"] = st["op"]
        out.append(r)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
