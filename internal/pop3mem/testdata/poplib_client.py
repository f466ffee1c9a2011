"""Talks to a pop3mem server with Python's poplib and prints what it saw
as JSON, for TestPoplib.

usage: poplib_client.py HOST PORT USER PASSWORD [CAFILE]

With CAFILE the session upgrades with STLS, trusting that certificate.
"""

import base64
import json
import poplib
import ssl
import sys


def b64(lines):
    return base64.b64encode(b"".join(l + b"\r\n" for l in lines)).decode()


def err_text(e):
    a = e.args[0]
    return a.decode() if isinstance(a, bytes) else str(a)


def main():
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cafile = sys.argv[5] if len(sys.argv) > 5 else ""
    out = {}
    p = poplib.POP3(host, port, timeout=10)
    out["welcome"] = p.getwelcome().decode()
    out["capa"] = sorted(p.capa().keys())
    if cafile:
        p.stls(ssl.create_default_context(cafile=cafile))
        out["capa_tls"] = sorted(p.capa().keys())

    p.user(user)
    try:
        p.pass_("wrong-" + password)
    except poplib.error_proto as e:
        out["wrong_pass"] = err_text(e)
    p.user(user)
    out["pass"] = p.pass_(password).decode()

    count, size = p.stat()
    out["stat"] = [count, size]
    out["list"] = [l.decode() for l in p.list()[1]]
    out["uidl"] = [l.decode() for l in p.uidl()[1]]
    out["uidl1"] = p.uidl(1).decode()
    out["retr"] = [b64(p.retr(i)[1]) for i in range(1, count + 1)]
    out["top"] = b64(p.top(2, 1)[1])

    p.dele(1)
    try:
        p.retr(1)
    except poplib.error_proto as e:
        out["retr_deleted"] = err_text(e)
    out["rset"] = p.rset().decode()
    p.dele(count)
    out["quit"] = p.quit().decode()
    print(json.dumps(out))


main()
