package e2e

import (
	"strings"
	"testing"
	"time"
)

const carol, carolPass = "carol@other.test", "carol-pass-3"

// Login restriction over IMAP: carol@other.test may log in only from
// 203.0.113.0/24 ("@other.test=203.0.113.0/24"). From 192.0.2.20 (granted,
// outside the restriction) her right password gets exactly Dovecot's
// wrong-password reply (Dovecot is asked with a decoy password, never hers)
// and counts as a failed login: alice's wrong password (1), carol's right password twice, once as
// a literal (the same password counts once: 2), another password in a new
// session (3) blocks with L and closes the connection.
func testIMAPLoginRestriction(t *testing.T, s *mailSuite) {
	const in, out = "203.0.113.20", "192.0.2.20"
	mark := s.env.LogMark(t, "dovecot")
	r := mailc(t, "imap", s.gw.IMAP, ap(in, 40001), "starttls", mlogin("login", carol, carolPass), mop("logout"))
	if got := r.at(2); !got.OK || !strings.HasSuffix(got.Text, "] Logged in") {
		t.Fatalf("carol from %s: %v%v", in, got, r)
	}
	r = mailc(t, "imap", s.gw.IMAP, ap(out, 40001), "",
		mlogin("login", "alice@example.test", "wrong-1"),
		mlogin("login", carol, carolPass),
		mlogin("login_literal", carol, carolPass),
		mop("noop"), mop("logout"))
	wrong := r.at(1)
	if wrong.OK || wrong.Text != "NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Fatalf("wrong password: %v, want Dovecot's NO [AUTHENTICATIONFAILED]%v", wrong, r)
	}
	for i := 2; i <= 3; i++ {
		if got := r.at(i); got.OK || got.Text != wrong.Text {
			t.Fatalf("refused login of carol from %s: %v, want exactly %q%v", out, got, wrong.Text, r)
		}
	}
	if !r.at(4).OK || !r.at(5).OK {
		t.Fatalf("two counted failures must not end the session:%v", r)
	}
	s.gw.noBlock(t, out)
	r = mailc(t, "imap", s.gw.IMAP, ap(out, 40002), "", mlogin("authenticate", carol, "guess-2"), mop("noop"))
	// imaplib reports the tagged NO, then the BYE that follows it as an
	// error of the next command.
	if got := r.at(1); got.OK || !strings.Contains(got.Text, "[AUTHENTICATIONFAILED] Authentication failed.") {
		t.Fatalf("third refused login: %v%v", got, r)
	}
	if e := r.at(2).Error; !strings.Contains(e, "Blocked (failed logins)") {
		t.Fatalf("after the third failure: %v, want * BYE Blocked (failed logins)%v", r.at(2), r)
	}
	s.gw.wantBlock(t, out, "L", "imap", "account "+carol)
	r = mailc(t, "imap", s.gw.IMAPS, ap(out, 40003), "implicit", mop("noop"))
	if e := r.at(0).Error; !strings.Contains(e, "* BYE Blocked (failed logins)") {
		t.Fatalf("connection of the blocked %s: %v", out, r)
	}
	// Dovecot saw alice's wrong password from out, and carol's three
	// refused logins as wrong passwords (decoys), never her login.
	waitDovecot(t, s.env, mark, 1, "passwd-file(alice@example.test,"+out+",", "Password mismatch")
	waitDovecot(t, s.env, mark, 1, loginLine("imap", carol, in)...)
	dovecotSawDecoys(t, s.env, mark, 3, carol, out)
	if !s.gw.logContains("login refused by the login IP restriction", time.Second) {
		t.Fatal("postern did not log the refused login")
	}
}

// The same over POP3 (USER/PASS and AUTH PLAIN), from 192.0.2.21.
func testPOP3LoginRestriction(t *testing.T, s *mailSuite) {
	const in, out = "203.0.113.21", "192.0.2.21"
	mark := s.env.LogMark(t, "dovecot")
	r := mailc(t, "pop3", s.gw.POP3S, ap(in, 40001), "implicit", mlogin("userpass", carol, carolPass), mop("quit"))
	if got := r.at(1); !got.OK || got.Text != "+OK Logged in." {
		t.Fatalf("carol from %s: %v%v", in, got, r)
	}
	r = mailc(t, "pop3", s.gw.POP3, ap(out, 40001), "",
		mlogin("userpass", "alice@example.test", "wrong-1"),
		mlogin("userpass", carol, carolPass),
		mlogin("authplain", carol, carolPass),
		mop("capa"), mop("quit"))
	wrong := r.at(1)
	if wrong.OK || wrong.Text != "-ERR [AUTH] Authentication failed." {
		t.Fatalf("wrong password: %v, want Dovecot's -ERR [AUTH]%v", wrong, r)
	}
	for i := 2; i <= 3; i++ {
		if got := r.at(i); got.OK || got.Text != wrong.Text {
			t.Fatalf("refused login of carol from %s: %v, want exactly %q%v", out, got, wrong.Text, r)
		}
	}
	if !r.at(4).OK || !r.at(5).OK {
		t.Fatalf("after two counted failures:%v", r)
	}
	s.gw.noBlock(t, out)
	r = mailc(t, "pop3", s.gw.POP3, ap(out, 40002), "starttls", mlogin("authplain", carol, "guess-2"), mop("quit"))
	if got := r.at(2); got.OK || got.Text != wrong.Text {
		t.Fatalf("third refused login: %v%v", got, r)
	}
	if got := r.at(3); !strings.Contains(got.Error, "-ERR [SYS/PERM] Blocked (failed logins)") {
		t.Fatalf("after the third failure: %v, want -ERR [SYS/PERM] Blocked (failed logins)%v", got, r)
	}
	s.gw.wantBlock(t, out, "L", "pop3", "account "+carol)
	r = mailc(t, "pop3", s.gw.POP3, ap(out, 40003), "", mop("quit"))
	if e := r.at(0).Error; !strings.Contains(e, "-ERR [SYS/PERM] Blocked (failed logins)") {
		t.Fatalf("connection of the blocked %s: %v", out, r)
	}
	waitDovecot(t, s.env, mark, 1, "passwd-file(alice@example.test,"+out+",", "Password mismatch")
	waitDovecot(t, s.env, mark, 1, loginLine("pop3", carol, in)...)
	dovecotSawDecoys(t, s.env, mark, 3, carol, out)
}

// close_all: 192.0.2.30 has a logged-in IMAP session and a logged-in POP3
// session (spliced to Dovecot) open when three failed POP3 logins of the
// same address block it (L, counted across imap and pop3): postern closes
// both live sessions. A logged-in session of another address (192.0.2.31)
// stays.
func testMailCloseAll(t *testing.T, s *mailSuite) {
	const victim, bystander = "192.0.2.30", "192.0.2.31"
	mark := s.env.LogMark(t, "dovecot")
	imapLogin := func(src string) *rawConn {
		c := dialRaw(t, s.gw.IMAP, ap(src, 40001))
		c.line("* OK [CAPABILITY ")
		c.send("a LOGIN " + bob + " " + bobPass + "\r\n")
		if l := c.untilTagged("a"); !strings.HasPrefix(l, "a OK ") {
			t.Fatalf("LOGIN of %s: %q", src, l)
		}
		c.send("b SELECT INBOX\r\n")
		if l := c.untilTagged("b"); !strings.HasPrefix(l, "b OK [READ-WRITE]") {
			t.Fatalf("SELECT of %s: %q", src, l)
		}
		return c
	}
	spliced := imapLogin(victim)
	other := imapLogin(bystander)
	pop := dialRaw(t, s.gw.POP3, ap(victim, 40002))
	pop.line("+OK Dovecot")
	pop.send("USER " + bob + "\r\nPASS " + bobPass + "\r\n")
	pop.line("+OK")
	pop.line("+OK Logged in.")
	pop.send("STAT\r\n")
	pop.line("+OK ")
	waitDovecot(t, s.env, mark, 1, loginLine("pop3", bob, victim)...)

	r := mailc(t, "pop3", s.gw.POP3, ap(victim, 40003), "",
		mlogin("userpass", "alice@example.test", "wrong-1"),
		mlogin("userpass", "alice@example.test", "wrong-2"),
		mlogin("userpass", "alice@example.test", "wrong-3"), mop("quit"))
	for i := 1; i <= 3; i++ {
		if got := r.at(i); got.OK || got.Text != "-ERR [AUTH] Authentication failed." {
			t.Fatalf("failed login %d: %v%v", i, got, r)
		}
	}
	s.gw.wantBlock(t, victim, "L", "pop3", "account alice@example.test")
	if !spliced.closed() {
		t.Fatal("the logged-in IMAP session of the blocked address is still open")
	}
	if !pop.closed() {
		t.Fatal("the logged-in POP3 session of the blocked address is still open")
	}
	other.send("c NOOP\r\n")
	if l := other.untilTagged("c"); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("the session of %s: %q", bystander, l)
	}
	other.send("d LOGOUT\r\n")
	other.untilTagged("d")
}
