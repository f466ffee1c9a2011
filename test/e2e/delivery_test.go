package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Legitimate mail through postern is delivered byte for byte as if it had
// been sent straight to Postfix: each test sends one message twice with
// the same client tool and the same simulated client address, once to
// Postfix's PROXY port and once through postern, and compares the two
// stored files after removing only the trace fields (normalize,
// traceFields in mail_test.go).

const alice = "alice@example.test"

// mustQueue checks that a swaks run ended with Postfix's "queued as".
func mustQueue(t *testing.T, what string, r swaksRun) {
	t.Helper()
	if r.code != 0 || !r.has("250 2.0.0 Ok: queued as ") {
		t.Fatalf("%s: swaks exit %d, want the message queued:\n%s", what, r.code, r.out)
	}
}

// mustQueued checks that the reply at index i is Postfix's "queued as".
func mustQueued(t *testing.T, what string, r session, i int) {
	t.Helper()
	// DATA: "2.0.0 Ok: queued as ID"; BDAT LAST: "2.0.0 Ok: N bytes queued as ID".
	if got := r.reply(i); got.Code != 250 || !strings.HasPrefix(got.Msg, "2.0.0 Ok: ") || !strings.Contains(got.Msg, "queued as ") {
		t.Fatalf("%s: %v, want the message queued%v", what, got, r)
	}
}

func testDeliverPlain(t *testing.T, s *suite) {
	const a = "198.51.100.50"
	tok := uniq("plain")
	file := writeFile(t, "m.eml", richMessage(tok))
	args := []string{"--from", "bob@example.test", "--to", alice, "--data", "@" + file}
	deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueue(t, "direct", swaks(t, s.env.SMTPProxy, ap(a, 40001), args...)) },
		func() { mustQueue(t, "postern smtp", swaks(t, s.gw.SMTP, ap(a, 40002), args...)) })
}

// testDeliverLarge: a message larger than postern's write buffer, with
// dot-stuffed lines all through it, leaves postern in large writes, its end
// line in the same write as its last bytes; Postfix must store it exactly
// as when sent directly.
func testDeliverLarge(t *testing.T, s *suite) {
	const a = "198.51.100.59"
	tok := uniq("large")
	var body strings.Builder
	for i := range 600 {
		fmt.Fprintf(&body, ".line %d of a large message, dot-stuffed on the wire\n", i)
	}
	file := writeFile(t, "m.eml", append(richMessage(tok), crlf(body.String())...))
	args := []string{"--from", "bob@example.test", "--to", alice, "--data", "@" + file}
	deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueue(t, "direct", swaks(t, s.env.SMTPProxy, ap(a, 40001), args...)) },
		func() { mustQueue(t, "postern smtp", swaks(t, s.gw.SMTP, ap(a, 40002), args...)) })
}

func testDeliverSTARTTLS(t *testing.T, s *suite) {
	const a = "198.51.100.51"
	tok := uniq("starttls")
	file := writeFile(t, "m.eml", richMessage(tok))
	args := []string{"-tls", "--from", "bob@example.test", "--to", alice, "--data", "@" + file}
	var via swaksRun
	deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueue(t, "direct", swaks(t, s.env.SMTPProxy, ap(a, 40001), args...)) },
		func() { via = swaks(t, s.gw.SMTP, ap(a, 40002), args...); mustQueue(t, "postern smtp", via) })
	if !strings.Contains(via.out, "<~  250 2.0.0 Ok: queued as") {
		t.Fatalf("the message through postern did not go over TLS:\n%s", via.out)
	}
}

func testDeliverImplicitTLS(t *testing.T, s *suite) {
	const a = "198.51.100.52"
	tok := uniq("smtps")
	file := writeFile(t, "m.eml", richMessage(tok))
	steps := []step{ehlo(), mail("bob@example.test"), rcpt(alice), data(file), quit()}
	deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueued(t, "direct", python(t, s.env.SMTPProxy, ap(a, 40001), false, steps...), 4) },
		func() { mustQueued(t, "postern smtps", python(t, s.gw.SMTPS, ap(a, 40002), true, steps...), 4) })
}

func testDeliverAuthPlain(t *testing.T, s *suite) {
	const a = "198.51.100.53"
	tok := uniq("authplain")
	file := writeFile(t, "m.eml", richMessage(tok))
	args := []string{"--auth", "PLAIN", "--auth-user", alice, "--auth-password", s.env.Users[alice],
		"--from", alice, "--to", alice, "--data", "@" + file}
	_, via := deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueue(t, "direct", swaks(t, s.env.SMTPProxy, ap(a, 40001), args...)) },
		func() {
			mustQueue(t, "postern submission", swaks(t, s.gw.Submission, ap(a, 40002), append([]string{"-tls"}, args...)...))
		})
	if _, proto := postfixSaw(t, via); proto != "ESMTPA" {
		t.Fatalf("Postfix received the message through postern with %s, want ESMTPA (authenticated)", proto)
	}
}

func testDeliverAuthLogin(t *testing.T, s *suite) {
	const a = "198.51.100.54"
	tok := uniq("authlogin")
	file := writeFile(t, "m.eml", richMessage(tok))
	tail := []step{auth("LOGIN", alice, s.env.Users[alice]), mail(alice), rcpt(alice), data(file), quit()}
	deliverBoth(t, s.env, alice, tok, a,
		func() {
			mustQueued(t, "direct", python(t, s.env.SMTPProxy, ap(a, 40001), false, append([]step{ehlo()}, tail...)...), 5)
		},
		func() {
			r := python(t, s.gw.Submission, ap(a, 40002), false, append([]step{ehlo(), starttls(), ehlo()}, tail...)...)
			mustQueued(t, "postern submission", r, 7)
		})
	// Submission requires AUTH: without it, MAIL is refused by postern.
	r := python(t, s.gw.Submission, ap(a, 40003), false, ehlo(), starttls(), ehlo(), mail(alice), quit())
	if got := r.reply(4); got.Code != 530 || got.Msg != "5.7.0 Authentication required" {
		t.Fatalf("MAIL without AUTH on submission: %v, want 530 5.7.0%v", got, r)
	}
}

func testDeliverPipelined(t *testing.T, s *suite) {
	const a = "198.51.100.55"
	tok := uniq("pipelined")
	file := writeFile(t, "m.eml", richMessage(tok))
	args := []string{"--pipeline", "--from", "bob@example.test", "--to", alice, "--data", "@" + file}
	var via swaksRun
	deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueue(t, "direct", swaks(t, s.env.SMTPProxy, ap(a, 40001), args...)) },
		func() { via = swaks(t, s.gw.SMTP, ap(a, 40002), args...); mustQueue(t, "postern smtp", via) })
	if !regexp.MustCompile(`(?m)^ -> MAIL FROM:.*\n -> RCPT TO:.*\n -> DATA\r?\n`).MatchString(via.out) {
		t.Fatalf("swaks did not pipeline MAIL, RCPT and DATA through postern:\n%s", via.out)
	}
}

func testDeliver8BITMIME(t *testing.T, s *suite) {
	const a = "198.51.100.56"
	tok := uniq("8bitmime")
	msg := richMessage(tok, "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit")
	msg = append(msg, []byte("Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x9c\x93\r\nLatin-1 bytes: \xfc\xdf\xf6\xe9\r\nhigh bytes: \x80\x81\xfe\xff\r\n")...)
	file := writeFile(t, "m.eml", msg)
	steps := []step{ehlo(), mail("bob@example.test", "BODY=8BITMIME"), rcpt(alice), data(file), quit()}
	check := func(what string, r session) {
		if got := r.reply(2); got.Code != 250 {
			t.Fatalf("%s: MAIL BODY=8BITMIME: %v%v", what, got, r)
		}
		mustQueued(t, what, r, 4)
	}
	_, via := deliverBoth(t, s.env, alice, tok, a,
		func() { check("direct", python(t, s.env.SMTPProxy, ap(a, 40001), false, steps...)) },
		func() { check("postern smtp", python(t, s.gw.SMTP, ap(a, 40002), false, steps...)) })
	if !bytes.Contains(via, []byte("high bytes: \x80\x81\xfe\xff")) {
		t.Fatal("the 8-bit bytes did not arrive unchanged")
	}
}

// Postfix here has smtputf8_enable = no and Dovecot 2.3's LMTP offers no
// SMTPUTF8, so the real chain cannot deliver an SMTPUTF8 transaction:
// this test sends a UTF-8 sender local part and UTF-8 header fields the
// way the chain takes them (no SMTPUTF8 parameter), checks that postern,
// like Postfix, does not offer SMTPUTF8, and that the parameter gets
// Postfix's own refusal through postern. SMTPUTF8 itself is relayed
// byte for byte to a backend that offers it in testBackendFaults.
func testDeliverUTF8(t *testing.T, s *suite) {
	const a = "198.51.100.57"
	tok := uniq("utf8")
	msg := crlf("Date: Mon, 23 Nov 2026 10:00:00 +0000\nFrom: Jörg Müller <jörg@other.test>\nTo: Ålice <alice@example.test>\n" +
		"Subject: Grüße ✓ " + tok + "\nMessage-ID: <" + tok + "@client.e2e.test>\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nKörper: ünïcödé ✓ 日本語\n")
	file := writeFile(t, "m.eml", msg)
	args := []string{"--from", "jörg@other.test", "--to", alice, "--data", "@" + file}
	_, via := deliverBoth(t, s.env, alice, tok, a,
		func() { mustQueue(t, "direct", swaks(t, s.env.SMTPProxy, ap(a, 40001), args...)) },
		func() { mustQueue(t, "postern smtp", swaks(t, s.gw.SMTP, ap(a, 40002), args...)) })
	if !bytes.Contains(via, []byte("Subject: Grüße ✓ "+tok)) || !bytes.Contains(via, []byte("From: Jörg Müller <jörg@other.test>")) {
		t.Fatalf("UTF-8 header fields changed:\n%s", head(via))
	}

	ehloOf := func(addr string, src netip.AddrPort) string {
		r := python(t, addr, src, false, ehlo(), quit())
		return r.reply(1).Msg
	}
	if e := ehloOf(s.env.SMTPProxy, ap(a, 40003)); strings.Contains(e, "SMTPUTF8") {
		t.Fatalf("Postfix offers SMTPUTF8 here; this test expects smtputf8_enable = no:\n%s", e)
	}
	if e := ehloOf(s.gw.SMTP, ap(a, 40004)); strings.Contains(e, "SMTPUTF8") {
		t.Fatalf("postern offers SMTPUTF8 although its backend does not:\n%s", e)
	}
	param := func(addr string, port uint16) string {
		c := dialRaw(t, addr, ap(a, port))
		c.mustReply("220 ")
		c.cmd("EHLO client.e2e.test", "250")
		r := c.cmd("MAIL FROM:<jörg@other.test> SMTPUTF8", "")
		c.cmd("QUIT", "221")
		return r
	}
	want, got := param(s.env.SMTPProxy, 40005), param(s.gw.SMTP, 40006)
	if want != "555 5.5.4 Unsupported option: SMTPUTF8" || got != want {
		t.Fatalf("MAIL … SMTPUTF8: directly %q, through postern %q; want Postfix's 555 relayed", want, got)
	}
}

// DSN: RET, ENVID, NOTIFY and ORCPT pass through postern; Postfix accepts
// them and honours them: NOTIFY=SUCCESS makes it send bob a delivery
// report carrying the ENVID and the ORCPT, with the headers only (RET=HDRS).
func testDeliverDSN(t *testing.T, s *suite) {
	const a, bob = "198.51.100.58", "bob@example.test"
	tok := uniq("dsn")
	file := writeFile(t, "m.eml", richMessage(tok))
	steps := []step{ehlo(), mail(bob, "RET=HDRS", "ENVID="+tok), rcpt(alice, "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;"+alice),
		data(file), quit()}
	check := func(what string, r session) {
		if !strings.Contains(r.reply(1).Msg, "\nDSN\n") {
			t.Fatalf("%s: EHLO does not offer DSN%v", what, r)
		}
		if r.reply(2).Code != 250 || r.reply(3).Code != 250 {
			t.Fatalf("%s: MAIL/RCPT with DSN parameters refused%v", what, r)
		}
		mustQueued(t, what, r, 4)
	}
	deliverBoth(t, s.env, alice, tok, a,
		func() { check("direct", python(t, s.env.SMTPProxy, ap(a, 40001), false, steps...)) },
		func() { check("postern smtp", python(t, s.gw.SMTP, ap(a, 40002), false, steps...)) })
	reports := waitMessages(t, s.env, bob, "Original-Envelope-Id: "+tok, 2)
	for _, p := range reports {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Subject: Successful Mail Delivery Report", "Original-Recipient: rfc822;" + alice,
			"Final-Recipient: rfc822; " + alice, "Action: relayed", "Status: 2.0.0",
			"X-Postfix-Sender: rfc822; " + bob, "Content-Type: text/rfc822-headers", "(unknown [" + a + "])", "Subject: " + tok} {
			if !bytes.Contains(b, []byte(want)) {
				t.Fatalf("delivery report %s lacks %q:\n%s", p, want, b)
			}
		}
		if bytes.Contains(b, []byte("Body line one.")) {
			t.Fatalf("RET=HDRS: the report %s returned the body", p)
		}
	}
}

// BDAT (CHUNKING), from an IPv6 client: the chunks are relayed as sent.
func testDeliverBDAT(t *testing.T, s *suite) {
	const a = "2001:db8:59::1"
	tok := uniq("bdat")
	msg := richMessage(tok)
	file := writeFile(t, "m.eml", msg)
	steps := []step{ehlo(), mail("bob@example.test"), rcpt(alice), bdat(file, 1000, 777, len(msg)-1777), quit()}
	check := func(what string, r session) {
		if !strings.Contains(r.reply(1).Msg, "CHUNKING") {
			t.Fatalf("%s: EHLO does not offer CHUNKING%v", what, r)
		}
		mustQueued(t, what, r, 4)
	}
	deliverBoth(t, s.env, alice, tok, a,
		func() { check("direct", python(t, s.env.SMTPProxy, ap(a, 40001), false, steps...)) },
		func() { check("postern smtp", python(t, s.gw.SMTP, ap(a, 40002), false, steps...)) })
}
