package e2e

import (
	"strings"
	"testing"
)

// Login restrictions: the gateways have "@other.test=203.0.113.0/24", so
// carol@other.test may log in only from 203.0.113.0/24. A login from
// elsewhere gets the same 535 5.7.8 as a wrong password (Postfix is asked
// with a decoy password, never hers), and counts as a failed login (L).
func testLoginRestriction(t *testing.T, s *suite) {
	const out, in = "198.51.100.20", "203.0.113.21"
	const carol, carolPass = "carol@other.test", "carol-pass-3"
	mark := s.env.LogMark(t, "postfix")

	// Inside the allowed network: Postfix checks the password.
	r := python(t, s.gw.Submission, ap(in, 40001), false, ehlo(), starttls(), ehlo(), auth("PLAIN", carol, carolPass), quit())
	if got := r.reply(4); got.Code != 235 {
		t.Fatalf("carol from %s: %v, want 235%v", in, got, r)
	}

	// Outside: a wrong password (alice, not restricted) first, for
	// Postfix's own 535; then carol's right password twice (refused,
	// counted once: the same password), and the session goes on.
	r = python(t, s.gw.Submission, ap(out, 40001), false, ehlo(), starttls(), ehlo(),
		auth("PLAIN", "alice@example.test", "wrong-1"),
		auth("PLAIN", carol, carolPass),
		auth("LOGIN", carol, carolPass),
		noop(), quit())
	wrong := r.reply(4)
	if wrong.Code != 535 || wrong.Msg != "5.7.8 Error: authentication failed: (reason unavailable)" {
		t.Fatalf("wrong password: %v, want Postfix's 535%v", wrong, r)
	}
	for i := 5; i <= 6; i++ {
		if got := r.reply(i); got.Code != wrong.Code || got.Msg != wrong.Msg {
			t.Fatalf("refused login of carol from %s: %v, want exactly the wrong-password reply %v%v", out, got, wrong, r)
		}
	}
	if r.reply(7).Code != 250 {
		t.Fatalf("two counted failures must not close the session:%v", r)
	}
	s.gw.noBlock(t, out)

	// The third counted failure (another password) blocks.
	r = python(t, s.gw.Submission, ap(out, 40002), false, ehlo(), starttls(), ehlo(), auth("PLAIN", carol, "guess-2"), quit())
	if got := r.reply(4); got.Code != wrong.Code || got.Msg != wrong.Msg {
		t.Fatalf("third refused login: %v, want %v%v", got, wrong, r)
	}
	if got := r.reply(5); got.Code != 421 || got.Msg != "4.7.1 "+gwHost+" Blocked (failed logins): closing connection" {
		t.Fatalf("after the third failure: %v, want 421 Blocked%v", got, r)
	}
	s.gw.wantBlock(t, out, "L", "submission", "account "+carol)

	// Postfix saw alice's failed AUTH from outside and carol's three
	// refused ones as failures (decoy passwords), never her password.
	waitPostfix(t, s.env, mark, 2, "disconnect from "+client(out))
	log := postfixSince(t, s.env, mark)
	if l := linesWith(log, client(out), "authentication failed", "sasl_username=alice@example.test"); len(l) != 1 {
		t.Fatalf("Postfix's AUTH failures of alice from %s: want one:\n%s", out, strings.Join(l, "\n"))
	}
	if l := linesWith(log, client(out), "authentication failed", "sasl_username="+carol); len(l) != 3 {
		t.Fatalf("Postfix's AUTH failures of carol from %s: want the three refused logins:\n%s", out, strings.Join(l, "\n"))
	}
	if n, f := len(linesWith(log, client(out), carol)), len(linesWith(log, client(out), carol, "authentication failed")); n != f || strings.Contains(log, carolPass) {
		t.Fatalf("Postfix's lines of carol from %s: want failures only, never her password:\n%s", out, strings.Join(linesWith(log, client(out), carol), "\n"))
	}
	if d := linesWith(log, "disconnect from "+client(in)); len(d) != 1 || !strings.Contains(d[0], " auth=1 ") {
		t.Fatalf("Postfix's session of %s: want one successful AUTH:\n%s", in, strings.Join(d, "\n"))
	}
	s.refused(t, out, "submission", "failed logins")
}

// The first refused login after postern starts must also look like a wrong
// password, before postern has ever relayed one of Postfix's 535 replies.
func testLoginRestrictionFirst(t *testing.T, s *suite) {
	const direct, out = "198.51.100.22", "198.51.100.23"
	r := python(t, s.env.SMTPProxy, ap(direct, 40001), false, ehlo(), auth("PLAIN", "alice@example.test", "wrong"), quit())
	wrong := r.reply(2)
	if wrong.Code != 535 {
		t.Fatalf("wrong password, directly at Postfix: %v%v", wrong, r)
	}
	gw := startGateway(t, gwConfig{Backend: s.env.SMTPProxy}) // fresh: it has relayed no 535 yet
	r = python(t, gw.Submission, ap(out, 40001), false, ehlo(), starttls(), ehlo(), auth("PLAIN", "carol@other.test", "carol-pass-3"), quit())
	if got := r.reply(4); got.Code != wrong.Code || got.Msg != wrong.Msg {
		t.Fatalf("first refused login: %v, want exactly Postfix's wrong-password reply %v%v", got, wrong, r)
	}
}
