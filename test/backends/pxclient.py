#!/usr/bin/python3
"""pxclient.py — stdlib IMAP/POP3/SMTP clients that begin with a PROXY v2 header.

verify.sh uses it to talk to the backends' PROXY ports as the gateway will:
the header claims a client address (SRC), then the protocol follows, in the
clear, after STARTTLS, or inside implicit TLS.

    pxclient.py imap HOST:PORT SRC USER PASS [--starttls | --tls] [--cafile PEM]
    pxclient.py pop3 HOST:PORT SRC USER PASS [--starttls | --tls] [--cafile PEM]
    pxclient.py smtp HOST:PORT SRC FROM RCPT [--starttls] [--cafile PEM]
                     [--auth USER PASS] [--size BYTES] [--subject TEXT] [--body-bytes N]
    pxclient.py hex SRC[:PORT] DST:PORT      # print the header, for eyes

--size sends MAIL FROM ... SIZE=BYTES; --body-bytes pads the message body to
about N bytes. SRC "local" sends the LOCAL command (a health check: the backend uses the real
peer). It prints the server's replies, one line per step ("LOGIN OK ...",
"RCPT 550 ...", "TLS TLSv1.3"), and exits 0 when the last step succeeded,
1 when the server refused, 3 on a connection error or timeout (20 s).
"""
import imaplib
import ipaddress
import poplib
import smtplib
import socket
import ssl
import struct
import sys

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TIMEOUT = 20


def proxy_v2(src, dst):
    """The v2 header for a TCP connection from src to dst ((ip, port) pairs),
    or the LOCAL command when src is None. Mixed families are sent as IPv6
    with the IPv4 side mapped (::ffff:a.b.c.d)."""
    if src is None:
        return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        s, d = (ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a
                for a in (s, d))
    family = 0x11 if s.version == 4 else 0x21  # TCP over IPv4 / IPv6
    body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def parse_src(text):
    """'203.0.113.7', '203.0.113.7:40001', '[2001:db8::7]:40001', '2001:db8::7' or 'local'."""
    if text == "local":
        return None
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port or 40000)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 40000


def connect(host, port, src):
    """A TCP connection to host:port that has already sent the PROXY header."""
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    peer = sock.getpeername()[:2]
    sock.sendall(proxy_v2(src, peer))
    return sock


class IMAP(imaplib.IMAP4):
    def __init__(self, host, port, src, context=None):
        self.src, self.context = src, context
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        sock = connect(self.host, self.port, self.src)
        if self.context:  # implicit TLS: the header first, then the handshake
            sock = self.context.wrap_socket(sock, server_hostname=self.host)
        return sock


class POP3(poplib.POP3):
    def __init__(self, host, port, src, context=None):
        self.src, self.context = src, context
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        sock = connect(self.host, self.port, self.src)
        if self.context:
            sock = self.context.wrap_socket(sock, server_hostname=self.host)
        return sock


class SMTP(smtplib.SMTP):
    def __init__(self, host, port, src):
        self.src = src
        super().__init__(host, port, local_hostname="client.test", timeout=TIMEOUT)

    def _get_socket(self, host, port, timeout):
        return connect(host, port, self.src)


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    return ctx


def option(args, name, count=1):
    """Remove --name and its values from args; return the values (or True)."""
    if name not in args:
        return None
    i = args.index(name)
    values = args[i + 1:i + 1 + count]
    if len(values) != count:
        raise SystemExit(f"{name} needs {count} value(s)")
    del args[i:i + 1 + count]
    return values if count > 1 else (values[0] if count == 1 else True)


def text(b):
    return b.decode(errors="replace") if isinstance(b, bytes) else str(b)


def run_imap(host, port, src, args, ctx, mode):
    user, password = args
    c = IMAP(host, port, src, ctx if mode == "tls" else None)
    if mode == "starttls":
        typ, data = c.starttls(ssl_context=ctx)
        print("STARTTLS", typ, text(data[0]))
    if mode:
        print("TLS", c.sock.version())
    try:
        typ, data = c.login(user, password)
    except imaplib.IMAP4.error as e:
        print("LOGIN NO", text(e))
        return 1
    print("LOGIN", typ, text(data[0]))
    c.logout()
    return 0


def run_pop3(host, port, src, args, ctx, mode):
    user, password = args
    c = POP3(host, port, src, ctx if mode == "tls" else None)
    if mode == "starttls":
        print("STLS", text(c.stls(context=ctx)))
    if mode:
        print("TLS", c.sock.version())
    try:
        c.user(user)
        print("PASS", text(c.pass_(password)))
    except poplib.error_proto as e:
        print("PASS", text(e.args[0]))
        return 1
    c.quit()
    return 0


def run_smtp(host, port, src, args, ctx, mode, auth, size, subject, body_bytes):
    mail_from, rcpt = args
    c = SMTP(host, port, src)
    c.ehlo()
    if mode == "starttls":
        code, msg = c.starttls(context=ctx)
        print("STARTTLS", code, text(msg))
        print("TLS", c.sock.version())
        c.ehlo()
    if auth:
        try:
            code, msg = c.login(*auth)
        except smtplib.SMTPAuthenticationError as e:
            code, msg = e.smtp_code, e.smtp_error
        print("AUTH", code, text(msg))
        if code != 235:
            return 1
    code, msg = c.mail(mail_from, ["SIZE=%d" % size] if size else [])
    print("MAIL", code, text(msg))
    if code != 250:
        return 1
    code, msg = c.rcpt(rcpt)
    print("RCPT", code, text(msg))
    if code not in (250, 251):
        return 1
    body = "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nsent by pxclient.py\r\n" % (mail_from, rcpt, subject)
    body += ("x" * 76 + "\r\n") * (body_bytes // 78)
    try:
        code, msg = c.data(body.encode())
    except smtplib.SMTPDataError as e:
        code, msg = e.smtp_code, e.smtp_error
    print("DATA", code, text(msg))
    c.quit()
    return 0 if code == 250 else 1


def main(argv):
    args = list(argv)
    if len(args) == 3 and args[0] == "hex":
        src, dst = parse_src(args[1]), parse_src(args[2])
        print(proxy_v2(src, dst).hex(" "))
        return 0
    cafile = option(args, "--cafile")
    mode = "starttls" if option(args, "--starttls", 0) else "tls" if option(args, "--tls", 0) else None
    auth = option(args, "--auth", 2)
    size = option(args, "--size")
    subject = option(args, "--subject") or "pxclient.py test"
    body_bytes = int(option(args, "--body-bytes") or 0)
    if len(args) < 3 or args[0] not in ("imap", "pop3", "smtp"):
        print(__doc__, file=sys.stderr)
        return 2
    proto, (host, port), src = args[0], parse_src(args[1]), parse_src(args[2])
    ctx = tls_context(cafile) if mode else None
    if proto == "imap":
        return run_imap(host, port, src, args[3:], ctx, mode)
    if proto == "pop3":
        return run_pop3(host, port, src, args[3:], ctx, mode)
    return run_smtp(host, port, src, args[3:], ctx, mode, auth, int(size or 0), subject, body_bytes)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.abort, poplib.error_proto) as e:
        print("ERROR", type(e).__name__, e)
        sys.exit(3)
