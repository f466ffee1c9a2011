#!/usr/bin/env python3
"""TLS session resumption through postern with Python's ssl (OpenSSL).

argv: CA file, then NAME=MODE:HOST:PORT:SRC13,SRC12 items (MODE: imaps,
imap-starttls, smtps, smtp-starttls; SRC13 and SRC12 the client source
addresses for TLS 1.3 and 1.2, three connections each). For TLS 1.3 and 1.2
and each item: a full handshake, then one resuming its session. Prints one
JSON line {"NAME/TLSv1.3": [reused1, reused2], ...}, then waits for a line
on stdin (the test reloads postern meanwhile) and resumes each saved
session once more, printing {"NAME/TLSv1.3": reused3, ...}.
"""
import json, socket, ssl, sys

cafile = sys.argv[1]
items = [a.split("=", 1) for a in sys.argv[2:]]
VERSIONS = {"TLSv1.3": ssl.TLSVersion.TLSv1_3, "TLSv1.2": ssl.TLSVersion.TLSv1_2}


def lines(f, until):
    while True:
        l = f.readline()
        if not l:
            raise EOFError("connection closed")
        if until(l):
            return l


def session(spec, src, ctx, sess):
    mode, host, port = spec.split(":")
    raw = socket.create_connection((host, int(port)), timeout=20, source_address=(src, 0))
    with raw:
        if mode.endswith("starttls"):
            f = raw.makefile("rb")
            if mode.startswith("imap"):
                lines(f, lambda l: True)
                raw.sendall(b"a STARTTLS\r\n")
                lines(f, lambda l: l.startswith(b"a "))
            else:
                lines(f, lambda l: l[3:4] == b" ")
                raw.sendall(b"EHLO client.example\r\n")
                lines(f, lambda l: l[3:4] == b" ")
                raw.sendall(b"STARTTLS\r\n")
                l = lines(f, lambda l: l[3:4] == b" ")
                if not l.startswith(b"220"):
                    raise RuntimeError("STARTTLS refused: %r" % l)
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        f = s.makefile("rb")
        if mode.startswith("imap"):
            if mode == "imaps":
                lines(f, lambda l: True)  # greeting
            s.sendall(b"b NOOP\r\n")
            lines(f, lambda l: l.startswith(b"b "))
            s.sendall(b"c LOGOUT\r\n")
            lines(f, lambda l: l.startswith(b"c "))
        else:
            if mode == "smtps":
                lines(f, lambda l: l[3:4] == b" ")  # greeting
            s.sendall(b"EHLO client.example\r\n")
            lines(f, lambda l: l[3:4] == b" ")
            s.sendall(b"QUIT\r\n")
            lines(f, lambda l: l[3:4] == b" ")
        return s.session, s.session_reused


saved, first = {}, {}
for i, (vname, v) in enumerate(VERSIONS.items()):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ctx.maximum_version = v
    for name, item in items:
        spec, srcs = item.rsplit(":", 1)
        src = srcs.split(",")[i]
        key = name + "/" + vname
        sess, r1 = session(spec, src, ctx, None)
        sess2, r2 = session(spec, src, ctx, sess)
        saved[key] = (spec, src, ctx, sess2 if sess2 is not None else sess)
        first[key] = [r1, r2]
print(json.dumps(first), flush=True)
sys.stdin.readline()
after = {}
for key, (spec, src, ctx, sess) in saved.items():
    after[key] = session(spec, src, ctx, sess)[1]
print(json.dumps(after), flush=True)
