package testenv_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lineConn is a raw line-protocol client: enough IMAP, POP3 and SMTP to
// assert on the exact replies.
type lineConn struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func newLineConn(t *testing.T, c net.Conn) *lineConn {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &lineConn{t: t, c: c, rd: bufio.NewReader(c)}
}

func (l *lineConn) line() string {
	l.t.Helper()
	s, err := l.rd.ReadString('\n')
	if err != nil {
		l.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

func (l *lineConn) send(s string) {
	l.t.Helper()
	if _, err := fmt.Fprintf(l.c, "%s\r\n", s); err != nil {
		l.t.Fatalf("write %q: %v", s, err)
	}
}

// tagged sends an IMAP command and returns its tagged reply.
func (l *lineConn) tagged(tag, cmd string) string {
	l.t.Helper()
	l.send(tag + " " + cmd)
	for range 1000 {
		if s := l.line(); strings.HasPrefix(s, tag+" ") {
			return s
		}
	}
	l.t.Fatalf("no tagged reply to %q", cmd)
	return ""
}

// smtpReply reads a (multi-line) SMTP reply and returns its last line.
func (l *lineConn) smtpReply() string {
	l.t.Helper()
	for range 100 {
		if s := l.line(); len(s) < 4 || s[3] != '-' {
			return s
		}
	}
	l.t.Fatal("endless SMTP reply")
	return ""
}

func expectPrefix(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("%s: got %q, want %q...", what, got, want)
	}
}

func client(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// The brief's scenario: IMAP login through the PROXY port as 203.0.113.7,
// Dovecot logs rip=203.0.113.7, then a message over SMTP through the PROXY
// port lands in alice's Maildir.
func TestIMAPLoginAndSMTPDeliveryThroughProxy(t *testing.T) {
	env := testenv.Backends(t)

	// A raw client over net.Conn: header, greeting, LOGIN.
	c, err := net.DialTimeout("tcp", env.IMAPProxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if _, err := c.Write(testenv.ProxyV2Header(client("203.0.113.7:40000"), dst)); err != nil {
		t.Fatal(err)
	}
	imap := newLineConn(t, c)
	expectPrefix(t, "greeting", imap.line(), "* OK")
	expectPrefix(t, "LOGIN", imap.tagged("a", "LOGIN alice@example.test "+env.Users["alice@example.test"]), "a OK")
	expectPrefix(t, "LOGOUT", imap.tagged("b", "LOGOUT"), "b OK")
	if !env.LogContains(t, "dovecot", "Login: user=<alice@example.test>, method=PLAIN, rip=203.0.113.7,", 5*time.Second) {
		t.Fatalf("dovecot.log has no login with rip=203.0.113.7:\n%s", lastLines(env.DovecotLog, 10))
	}

	// SMTP through the PROXY port, as 203.0.113.7 again.
	before := len(env.Messages("alice@example.test"))
	subject := fmt.Sprintf("testenv-%d", time.Now().UnixNano())
	sc, err := smtp.NewClient(env.DialProxy(t, env.SMTPProxy, client("203.0.113.7:40001")), "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := sc.Mail("sender@remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := sc.Rcpt("alice@example.test"); err != nil {
		t.Fatal(err)
	}
	w, err := sc.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: %s\r\n\r\nhello\r\n", subject)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs := env.WaitForMail(t, "alice@example.test", before+1, 10*time.Second)
	if p := env.WaitForMessage(t, "alice@example.test", "Subject: "+subject, 5*time.Second); !strings.HasPrefix(p, env.Maildir("alice@example.test")+"/") {
		t.Errorf("message at %s, outside %s", p, env.Maildir("alice@example.test"))
	}
	if len(msgs) < before+1 {
		t.Errorf("WaitForMail returned %d paths, want ≥%d", len(msgs), before+1)
	}
	if !env.LogContains(t, "postfix", "client=unknown[203.0.113.7]:40001", 5*time.Second) {
		t.Errorf("postfix.log has no client=unknown[203.0.113.7]:40001:\n%s", lastLines(env.PostfixLog, 10))
	}
}

// Postfix's answers through the PROXY port, as a front-end will see them.
func TestSMTPRepliesThroughProxy(t *testing.T) {
	env := testenv.Backends(t)
	sc, err := smtp.NewClient(env.DialProxy(t, env.SMTPProxy, client("198.51.100.20:40000")), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	code := func(err error) string {
		var te *textproto.Error
		if errors.As(err, &te) {
			return fmt.Sprintf("%d %s", te.Code, te.Msg)
		}
		return fmt.Sprint(err)
	}
	if err := sc.Mail("sender@remote.test"); err != nil {
		t.Fatal(err)
	}
	expectPrefix(t, "unknown user", code(sc.Rcpt("nobody@example.test")), "550 5.1.1 <nobody@example.test>: Recipient address rejected")
	expectPrefix(t, "relay", code(sc.Rcpt("victim@elsewhere.invalid")), "554 5.7.1 <victim@elsewhere.invalid>: Relay access denied")
	if err := sc.Reset(); err != nil { // AUTH is refused inside a mail transaction
		t.Fatal(err)
	}
	// net/smtp sends PLAIN in the clear only to "localhost" (NewClient's
	// name), and QUITs after a failed AUTH: the good one needs a new session.
	expectPrefix(t, "AUTH wrong password", code(sc.Auth(smtp.PlainAuth("", "alice@example.test", "wrong", "localhost"))), "535 5.7.8")
	sc2, err := smtp.NewClient(env.DialProxy(t, env.SMTPProxy, client("198.51.100.21:40000")), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer sc2.Close()
	if err := sc2.Auth(smtp.PlainAuth("", "alice@example.test", env.Users["alice@example.test"], "localhost")); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	if err := sc2.Mail("alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if err := sc2.Rcpt("victim@elsewhere.invalid"); err != nil {
		t.Fatalf("relay after AUTH: %v", err)
	}
	if !env.LogContains(t, "postfix", "unknown[198.51.100.20]:40000: SASL PLAIN authentication failed", 5*time.Second) {
		t.Errorf("postfix.log has no SASL failure for 198.51.100.20")
	}
	if !env.LogContains(t, "postfix", "reject: RCPT from unknown[198.51.100.20]:40000: 554 5.7.1", 5*time.Second) {
		t.Errorf("postfix.log has no relay reject for 198.51.100.20")
	}
}

// STARTTLS to both servers after a PROXY header, verified against the
// backends' certificate; an IPv6 client and the v1 header on the way.
func TestTLSAndIPv6ThroughProxy(t *testing.T) {
	env := testenv.Backends(t)

	// IMAP: v2 header with an IPv6 client, STARTTLS, LOGIN inside TLS.
	imap := newLineConn(t, env.DialProxy(t, env.IMAPProxy, client("[2001:db8::42]:40000")))
	expectPrefix(t, "greeting", imap.line(), "* OK")
	expectPrefix(t, "STARTTLS", imap.tagged("a", "STARTTLS"), "a OK")
	tc := tls.Client(imap.c, env.ClientTLS("mx.example.test"))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("IMAP TLS handshake: %v", err)
	}
	imap = newLineConn(t, tc)
	expectPrefix(t, "LOGIN over TLS", imap.tagged("b", "LOGIN bob@example.test "+env.Users["bob@example.test"]), "b OK")
	if !env.LogContains(t, "dovecot", "user=<bob@example.test>, method=PLAIN, rip=2001:db8::42,", 5*time.Second) {
		t.Errorf("dovecot.log has no login with rip=2001:db8::42")
	}

	// IMAPS: header first, then the TLS handshake.
	raw := env.DialProxy(t, env.IMAPSProxy, client("203.0.113.50:40000"))
	imaps := newLineConn(t, tls.Client(raw, env.ClientTLS("127.0.0.1")))
	expectPrefix(t, "IMAPS greeting", imaps.line(), "* OK")
	expectPrefix(t, "IMAPS LOGIN", imaps.tagged("a", "LOGIN carol@other.test "+env.Users["carol@other.test"]), "a OK")

	// SMTP: STARTTLS with net/smtp, verified.
	sc, err := smtp.NewClient(env.DialProxy(t, env.SMTPProxy, client("203.0.113.51:40000")), "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.StartTLS(env.ClientTLS("mx.example.test")); err != nil {
		t.Fatalf("SMTP STARTTLS: %v", err)
	}
	if st, ok := sc.TLSConnectionState(); !ok || !st.HandshakeComplete {
		t.Fatal("no TLS after STARTTLS")
	}
	if !env.LogContains(t, "postfix", "TLS connection established from unknown[203.0.113.51]", 5*time.Second) {
		t.Errorf("postfix.log has no TLS line for 203.0.113.51")
	}

	// POP3 with the text (v1) header.
	c, err := net.DialTimeout("tcp", env.POP3Proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(testenv.ProxyV1Header(client("192.0.2.60:40000"), c.RemoteAddr().(*net.TCPAddr).AddrPort()))
	pop := newLineConn(t, c)
	expectPrefix(t, "POP3 greeting", pop.line(), "+OK")
	pop.send("USER carol@other.test")
	expectPrefix(t, "USER", pop.line(), "+OK")
	pop.send("PASS wrong")
	expectPrefix(t, "PASS wrong", pop.line(), "-ERR [AUTH] Authentication failed.")
	// The auth process logs the failure at once; pop3-login logs its
	// "auth failed ... rip=" line only when the client goes away.
	if !env.LogContains(t, "dovecot", "passwd-file(carol@other.test,192.0.2.60,", 5*time.Second) {
		t.Errorf("dovecot.log has no auth line for 192.0.2.60")
	}
	pop.send("QUIT")
	expectPrefix(t, "QUIT", pop.line(), "+OK")
	c.Close()
	if !env.LogContains(t, "dovecot", "(auth failed, 1 attempts", 5*time.Second) ||
		!env.LogContains(t, "dovecot", "user=<carol@other.test>, method=PLAIN, rip=192.0.2.60,", 5*time.Second) {
		t.Errorf("dovecot.log has no auth-failed line with rip=192.0.2.60:\n%s", lastLines(env.DovecotLog, 5))
	}
}

// The plain SMTP port takes the client address from XCLIENT.
func TestXCLIENTOnPlainPort(t *testing.T) {
	env := testenv.Backends(t)
	c, err := net.DialTimeout("tcp", env.SMTPPlain, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newLineConn(t, c)
	expectPrefix(t, "greeting", s.smtpReply(), "220 ")
	s.send("EHLO gateway.test")
	expectPrefix(t, "EHLO", s.smtpReply(), "250 ")
	s.send("XCLIENT ADDR=198.51.100.77 PORT=40077 NAME=[UNAVAILABLE]")
	expectPrefix(t, "XCLIENT", s.smtpReply(), "220 ") // a new greeting
	s.send("EHLO client.test")
	expectPrefix(t, "EHLO", s.smtpReply(), "250 ")
	s.send("MAIL FROM:<sender@remote.test>")
	expectPrefix(t, "MAIL", s.smtpReply(), "250 ")
	s.send("RCPT TO:<nobody@other.test>")
	expectPrefix(t, "RCPT", s.smtpReply(), "550 5.1.1")
	s.send("QUIT")
	if !env.LogContains(t, "postfix", "reject: RCPT from unknown[198.51.100.77]:40077: 550 5.1.1", 5*time.Second) {
		t.Errorf("postfix.log does not show the XCLIENT address:\n%s", lastLines(env.PostfixLog, 10))
	}
}

func TestProxyPortsRefuseMissingHeader(t *testing.T) {
	env := testenv.Backends(t)
	c, err := net.DialTimeout("tcp", env.SMTPProxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newLineConn(t, c)
	s.send("EHLO client.test")
	expectPrefix(t, "SMTP without header", s.smtpReply(), "421 4.3.0")

	// A LOCAL header (health check): Dovecot uses the real peer address.
	c2, err := net.DialTimeout("tcp", env.IMAPProxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write(testenv.ProxyV2Local())
	expectPrefix(t, "greeting after LOCAL", newLineConn(t, c2).line(), "* OK")
}

func TestLogAndMailHelpers(t *testing.T) {
	env := testenv.Backends(t)
	if env.LogContains(t, "dovecot", "no such text in any log", 50*time.Millisecond) {
		t.Error("LogContains found text that is not there")
	}
	mark := env.LogMark(t, "postfix")
	if env.LogContainsSince(t, "postfix", mark, "daemon started", 50*time.Millisecond) {
		t.Error("LogContainsSince looked before the mark")
	}
	if !env.LogContains(t, "postfix", "daemon started", time.Second) {
		t.Error("LogContains misses Postfix's start line")
	}
	if got := env.Maildir("Bob@Example.Test"); got != env.Dir+"/mail/example.test/bob/Maildir" {
		t.Errorf("Maildir = %s", got)
	}
	if len(env.Users) != 3 || env.Users["carol@other.test"] != "carol-pass-3" {
		t.Errorf("Users = %v", env.Users)
	}
	want := int64(10 << 20)
	if v := os.Getenv("POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT"); v != "" {
		want, _ = strconv.ParseInt(v, 10, 64)
	}
	if env.MessageSizeLimit != want {
		t.Errorf("MessageSizeLimit = %d, want %d", env.MessageSizeLimit, want)
	}
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
