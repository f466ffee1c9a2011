package e2e

import (
	"strings"
	"testing"
	"time"
)

// Bad input against a gateway of its own in front of the real Dovecot, one
// case after the other so that postern's descriptors can be counted: the
// count before each case must come back after it (the client's and the
// backend's sockets closed). Every case checks the reply, postern's log
// line, and that postern still runs.
func testMailBadInput(t *testing.T, s *mailSuite) {
	gw := startGateway(t, gwConfig{Backend: s.env.SMTPProxy,
		IMAP: s.env.IMAPProxy, IMAPS: s.env.IMAPSProxy, POP3: s.env.POP3Proxy, POP3S: s.env.POP3SProxy})
	// Warm up with a logged-in (spliced) IMAP and POP3 session: Go's
	// splice(2) path keeps a pool of pipes (internal/poll) that later
	// sessions reuse, so the baseline is taken after one splice.
	r := mailc(t, "imap", gw.IMAP, ap("192.0.2.59", 40000), "", mlogin("login", bob, bobPass), mop("noop"), mop("logout"))
	p := mailc(t, "pop3", gw.POP3, ap("192.0.2.59", 40001), "", mlogin("userpass", bob, bobPass), mop("stat"), mop("quit"))
	if !r.at(3).OK || !p.at(3).OK {
		t.Fatalf("warm-up:%v%v", r, p)
	}
	base := gw.fdsAtRest(t)
	t.Logf("postern has %+v open descriptors at rest", base)

	cases := []struct {
		name string
		f    func(t *testing.T, gw *gateway)
	}{
		{"IMAP_UnterminatedLiteral", badIMAPUnterminatedLiteral},
		{"IMAP_HugeLiteral", badIMAPHugeLiteral},
		{"IMAP_MegabyteLine", badIMAPLongLine},
		{"IMAP_NUL", badIMAPNUL},
		{"IMAP_PipelinedBeforeGreeting", badIMAPEarly},
		{"IMAP_LoginAndVanish", func(t *testing.T, gw *gateway) { badIMAPVanish(t, gw, s) }},
		{"IMAP_TooManyErrors", badIMAPErrors},
		{"IMAP_AuthenticateAbandoned", badIMAPSASLStall},
		{"POP3_MegabyteLine", badPOP3LongLine},
		{"POP3_NUL", badPOP3NUL},
		{"POP3_PipelinedBeforeGreeting", badPOP3Early},
		{"POP3_LoginAndVanish", func(t *testing.T, gw *gateway) { badPOP3Vanish(t, gw, s) }},
		{"POP3_TooManyErrors", badPOP3Errors},
		{"POP3_AuthAbandoned", badPOP3SASLStall},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.f(t, gw)
			gw.fdsBackTo(t, base, tc.name)
			gw.alive(t)
		})
	}
}

// imapGreeted connects as src and reads postern's greeting.
func imapGreeted(t *testing.T, gw *gateway, src string) *rawConn {
	c := dialRaw(t, gw.IMAP, ap(src, 40000))
	c.line("* OK [CAPABILITY ")
	return c
}

func pop3Greeted(t *testing.T, gw *gateway, src string) *rawConn {
	c := dialRaw(t, gw.POP3, ap(src, 40000))
	c.line("+OK Dovecot (Debian) ready.")
	return c
}

// A literal announced but never completed: postern waits for it as for a
// command (timeouts.command, 2 s here), then says BYE and closes.
func badIMAPUnterminatedLiteral(t *testing.T, gw *gateway) {
	c := imapGreeted(t, gw, "192.0.2.60")
	c.send("a LOGIN bob {20}\r\n")
	c.line("+ Ready for literal data")
	c.send("abc")
	t0 := time.Now()
	c.line("* BYE Disconnected for inactivity")
	if d := time.Since(t0); d < 1500*time.Millisecond || d > 8*time.Second {
		t.Fatalf("BYE after %v, want about 2 s", d)
	}
	if !c.closed() {
		t.Fatal("connection still open")
	}
}

// A literal of 10^12 bytes (13 digits) and one of 10^12-1 (12 digits, over
// the 64 KiB limit), synchronizing and LITERAL+: BAD, BYE, closed, nothing
// read or allocated.
func badIMAPHugeLiteral(t *testing.T, gw *gateway) {
	for _, lit := range []string{"{1000000000000}", "{999999999999}", "{1000000000000+}"} {
		c := imapGreeted(t, gw, "192.0.2.61")
		c.send("a LOGIN bob " + lit + "\r\n")
		c.line("a BAD Literal too big")
		c.line("* BYE Too big")
		if !c.closed() {
			t.Fatalf("%s: connection still open", lit)
		}
	}
	if !gw.logContains("client=192.0.2.61", time.Second) {
		t.Fatalf("postern logged nothing for 192.0.2.61:\n%s", gw.logTail(10))
	}
}

// A 1 MiB line: BAD, the session goes on.
func badIMAPLongLine(t *testing.T, gw *gateway) {
	c := imapGreeted(t, gw, "192.0.2.62")
	c.send("a LOGIN " + strings.Repeat("x", 1<<20) + "\r\n")
	c.line("* BAD Error in IMAP command received by server.")
	c.send("b NOOP\r\n")
	c.line("b OK NOOP completed.")
	c.send("c LOGOUT\r\n")
	c.line("* BYE Logging out")
	c.line("c OK Logout completed.")
}

// NUL bytes in a command: BAD, the session goes on.
func badIMAPNUL(t *testing.T, gw *gateway) {
	c := imapGreeted(t, gw, "192.0.2.63")
	c.send("a LOGIN bob\x00 x\x00y\r\n")
	c.line("* BAD Error in IMAP command received by server.")
	c.send("b CAPABILITY\r\n")
	c.line("* CAPABILITY ")
	c.line("b OK ")
}

// Commands pipelined before the greeting: postern logs the early talker,
// then answers them in order after the greeting.
func badIMAPEarly(t *testing.T, gw *gateway) {
	c := dialRawSaying(t, gw.IMAP, ap("192.0.2.64", 40000), "a CAPABILITY\r\nb NOOP\r\nc LOGOUT\r\n")
	c.line("* OK [CAPABILITY ")
	c.line("* CAPABILITY ")
	c.line("a OK ")
	c.line("b OK NOOP completed.")
	c.line("* BYE Logging out")
	c.line("c OK Logout completed.")
	if !c.closed() {
		t.Fatal("connection still open after LOGOUT")
	}
	if len(gw.logLines(1, "early talker", "client=192.0.2.64")) != 1 {
		t.Fatalf("postern did not log the early talker:\n%s", gw.logTail(10))
	}
}

// A client that sends LOGIN and vanishes: the login is replayed, Dovecot
// logs it in, postern notices the closed client and closes the backend.
func badIMAPVanish(t *testing.T, gw *gateway, s *mailSuite) {
	mark := s.env.LogMark(t, "dovecot")
	c := dialRaw(t, gw.IMAP, ap("192.0.2.65", 40000))
	c.send("a LOGIN " + bob + " " + bobPass + "\r\n")
	c.Close()
	l := waitDovecot(t, s.env, mark, 1, loginLine("imap", bob, "192.0.2.65")...)
	// Dovecot's imap process for that session ends when postern closes
	// the backend side.
	waitDovecot(t, s.env, mark, 1, "imap("+bob+")", dovecotSession(t, l[0])+": Info: Disconnected")
}

// Ten unknown commands: BAD each, then BYE and closed.
func badIMAPErrors(t *testing.T, gw *gateway) {
	c := imapGreeted(t, gw, "192.0.2.66")
	for i := range 9 {
		c.send("x BOGUS\r\n")
		if l := c.lines(1)[0]; l != "x BAD Error in IMAP command received by server." {
			t.Fatalf("bad command %d: %q", i+1, l)
		}
	}
	c.send("x BOGUS\r\n")
	c.line("x BAD ")
	c.line("* BYE Too many invalid IMAP commands.")
	if !c.closed() {
		t.Fatal("connection still open")
	}
}

// AUTHENTICATE PLAIN whose continuation never comes: BYE after the idle
// timeout, closed.
func badIMAPSASLStall(t *testing.T, gw *gateway) {
	c := imapGreeted(t, gw, "192.0.2.67")
	c.send("a AUTHENTICATE PLAIN\r\n")
	c.line("+ ")
	c.line("* BYE Disconnected for inactivity")
	if !c.closed() {
		t.Fatal("connection still open")
	}
}

func badPOP3LongLine(t *testing.T, gw *gateway) {
	c := pop3Greeted(t, gw, "192.0.2.70")
	c.send("USER " + strings.Repeat("x", 1<<20) + "\r\n")
	c.line("-ERR Line too long")
	c.send("CAPA\r\n")
	c.line("+OK")
	c.untilLine(".")
	c.send("QUIT\r\n")
	c.line("+OK Logging out.")
}

func badPOP3NUL(t *testing.T, gw *gateway) {
	c := pop3Greeted(t, gw, "192.0.2.71")
	c.send("USER bob\x00\r\n")
	c.line("-ERR Unknown command")
	c.send("QUIT\r\n")
	c.line("+OK Logging out.")
}

func badPOP3Early(t *testing.T, gw *gateway) {
	c := dialRawSaying(t, gw.POP3, ap("192.0.2.72", 40000), "CAPA\r\nQUIT\r\n")
	c.line("+OK Dovecot (Debian) ready.")
	c.line("+OK")
	c.untilLine(".")
	c.line("+OK Logging out.")
	if !c.closed() {
		t.Fatal("connection still open after QUIT")
	}
	if len(gw.logLines(1, "early talker", "client=192.0.2.72")) != 1 {
		t.Fatalf("postern did not log the early talker:\n%s", gw.logTail(10))
	}
}

func badPOP3Vanish(t *testing.T, gw *gateway, s *mailSuite) {
	mark := s.env.LogMark(t, "dovecot")
	// (A client that closes before reading USER's +OK is gone before
	// postern reads PASS: postern's +OK fails, the session ends.)
	c := pop3Greeted(t, gw, "192.0.2.73")
	c.send("USER " + bob + "\r\n")
	c.line("+OK")
	c.send("PASS " + bobPass + "\r\n")
	c.Close()
	l := waitDovecot(t, s.env, mark, 1, loginLine("pop3", bob, "192.0.2.73")...)
	waitDovecot(t, s.env, mark, 1, "pop3("+bob+")", dovecotSession(t, l[0])+": Info: Disconnected")
}

func badPOP3Errors(t *testing.T, gw *gateway) {
	c := pop3Greeted(t, gw, "192.0.2.74")
	for i := range 9 {
		c.send("BOGUS\r\n")
		if l := c.lines(1)[0]; l != "-ERR Unknown command: BOGUS" {
			t.Fatalf("bad command %d: %q", i+1, l)
		}
	}
	c.send("BOGUS\r\n")
	c.line("-ERR Too many bad commands.")
	if !c.closed() {
		t.Fatal("connection still open")
	}
}

func badPOP3SASLStall(t *testing.T, gw *gateway) {
	c := pop3Greeted(t, gw, "192.0.2.75")
	c.send("AUTH PLAIN\r\n")
	c.line("+ ")
	c.line("-ERR Disconnected for inactivity.")
	if !c.closed() {
		t.Fatal("connection still open")
	}
}

// dovecotSession returns "<ID>" of a Dovecot login line's session=<ID>,
// which the mail process's lines carry too.
func dovecotSession(t testing.TB, loginLine string) string {
	t.Helper()
	_, rest, ok := strings.Cut(loginLine, "session=<")
	id, _, ok2 := strings.Cut(rest, ">")
	if !ok || !ok2 || id == "" {
		t.Fatalf("no session id in %q", loginLine)
	}
	return "<" + id + ">"
}

// untilLine reads lines until one equals want.
func (c *rawConn) untilLine(want string) {
	c.t.Helper()
	for range 1000 {
		if c.lines(1)[0] == want {
			return
		}
	}
	c.t.Fatalf("no line %q", want)
}
