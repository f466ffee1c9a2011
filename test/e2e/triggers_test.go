package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Every trigger at exactly its threshold: threshold − 1 events do not
// block, the threshold event does. Each is checked in `postern blocks list
// --json` (reason, service, detail) and in what Postfix saw.

// I: connections_per_minute 5. Four connections reach Postfix; the fifth
// is closed by postern with 421 and blocks; the sixth is refused.
func testTriggerI(t *testing.T, s *suite) {
	const a = "203.0.113.10"
	mark := s.env.LogMark(t, "postfix")
	for i := 1; i <= 4; i++ {
		r := swaks(t, s.gw.SMTP, ap(a, uint16(40000+i)), "--quit-after", "EHLO")
		if !r.has("220 mx.example.test ESMTP Postfix") || !r.has("221 ") {
			t.Fatalf("connection %d: want Postfix's greeting relayed:\n%s", i, r.out)
		}
	}
	s.gw.noBlock(t, a)
	waitPostfix(t, s.env, mark, 4, "disconnect from "+client(a))

	r := swaks(t, s.gw.SMTP, ap(a, 40005), "--quit-after", "EHLO")
	if !r.has("421 4.7.1 " + gwHost + " Blocked (connections per minute): closing connection") {
		t.Fatalf("fifth connection: want 421 4.7.1 Blocked:\n%s", r.out)
	}
	s.gw.wantBlock(t, a, "I", "smtp", "")
	s.refused(t, a, "smtp", "connections per minute")
	if n := len(linesWith(postfixSince(t, s.env, mark), " connect from "+client(a)+":")); n != 4 {
		t.Fatalf("Postfix saw %d connections of %s, want 4 (the fifth is closed by postern)", n, a)
	}
}

// L: failed_logins 3, on smtps (implicit TLS). A retry with the same wrong
// password counts once; the third distinct wrong password blocks.
func testTriggerL(t *testing.T, s *suite) {
	const a, user = "203.0.113.11", "alice@example.test"
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTPS, ap(a, 40001), true, ehlo(),
		auth("PLAIN", user, "wrong-1"),
		auth("LOGIN", user, "wrong-1"), // the same password again: counted once
		auth("PLAIN", user, "wrong-2"),
		noop(), quit())
	for i := 2; i <= 4; i++ {
		if got := r.reply(i); got.Code != 535 || got.Msg != "5.7.8 Error: authentication failed: (reason unavailable)" {
			t.Fatalf("AUTH %d: %v, want Postfix's 535 relayed%v", i-1, got, r)
		}
	}
	if r.reply(5).Code != 250 {
		t.Fatalf("two counted failures must not close the session:%v", r)
	}
	s.gw.noBlock(t, a)

	sw := swaks(t, s.gw.SMTPS, ap(a, 40002), "--tlsc", "--auth", "PLAIN", "--auth-user", user, "--auth-password", "wrong-3",
		"--from", user, "--to", "alice@example.test")
	if !sw.has("535 5.7.8 Error: authentication failed: (reason unavailable)") ||
		!sw.has("421 4.7.1 "+gwHost+" Blocked (failed logins): closing connection") {
		t.Fatalf("third wrong password: want 535 then 421 4.7.1 Blocked:\n%s", sw.out)
	}
	s.gw.wantBlock(t, a, "L", "smtps", "account "+user)
	// Postfix checked every attempt (four, the repeated one included).
	waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if n := len(linesWith(postfixSince(t, s.env, mark), "warning: "+client(a), "SASL PLAIN authentication failed", "sasl_username="+user)); n != 4 {
		t.Fatalf("Postfix logged %d failed AUTH of %s, want 4:\n%s", n, a, postfixSince(t, s.env, mark))
	}
	s.refused(t, a, "smtps", "failed logins")
}

// P: unknown_recipients 3. Postfix refuses each unknown user with 550
// 5.1.1 and postern relays it; the third blocks.
func testTriggerP(t *testing.T, s *suite) {
	const a = "203.0.113.30"
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"),
		rcpt("nobody1@example.test"), rcpt("nobody2@example.test"), rcpt("alice@example.test"), quit())
	for i, want := range []string{"", "", "", "550 5.1.1 <nobody1@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
		"550 5.1.1 <nobody2@example.test>: Recipient address rejected: User unknown in virtual mailbox table", "250 2.1.5 Ok", "221 "} {
		if got := r.reply(i); want != "" && !strings.HasPrefix(fmt.Sprintf("%d %s", got.Code, got.Msg), want) {
			t.Fatalf("reply %d: %v, want %q%v", i, got, want, r)
		}
	}
	s.gw.noBlock(t, a)
	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), mail("bob@example.test"), rcpt("nobody3@example.test"), quit())
	if got := r.reply(3); got.Code != 550 || !strings.HasPrefix(got.Msg, "5.1.1 <nobody3@example.test>") {
		t.Fatalf("third unknown recipient: %v%v", got, r)
	}
	if got := r.reply(4); got.Code != 421 || got.Msg != "4.7.1 "+gwHost+" Blocked (unknown recipients): closing connection" {
		t.Fatalf("after the third unknown recipient: %v, want 421 Blocked%v", got, r)
	}
	s.gw.wantBlock(t, a, "P", "smtp", "recipient nobody3@example.test")
	for i := 1; i <= 3; i++ {
		waitPostfix(t, s.env, mark, 1, fmt.Sprintf("reject: RCPT from %s", client(a)),
			fmt.Sprintf("550 5.1.1 <nobody%d@example.test>: Recipient address rejected: User unknown in virtual mailbox table", i))
	}
	s.refused(t, a, "smtp", "unknown recipients")
}

// Y: relay_denials 3, from IPv6 clients. postern refuses relaying for
// domains outside local_domains itself (Postfix never sees those RCPTs);
// the block covers the client's /64.
func testTriggerY(t *testing.T, s *suite) {
	const a, neighbour, prefix = "2001:db8:31::5", "2001:db8:31::99", "2001:db8:31::/64"
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"),
		rcpt("x1@elsewhere.invalid"), rcpt("x2@elsewhere.invalid"), rcpt("alice@example.test"), quit())
	for i, want := range []string{"", "", "", "554 5.7.1 <x1@elsewhere.invalid>: Relay access denied",
		"554 5.7.1 <x2@elsewhere.invalid>: Relay access denied", "250 2.1.5 Ok", "221 "} {
		if got := r.reply(i); want != "" && !strings.HasPrefix(fmt.Sprintf("%d %s", got.Code, got.Msg), want) {
			t.Fatalf("reply %d: %v, want %q%v", i, got, want, r)
		}
	}
	s.gw.noBlock(t, prefix)
	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), mail("bob@example.test"), rcpt("x3@elsewhere.invalid"), quit())
	if got := r.reply(3); got.Code != 554 || got.Msg != "5.7.1 <x3@elsewhere.invalid>: Relay access denied" {
		t.Fatalf("third relay attempt: %v%v", got, r)
	}
	if got := r.reply(4); got.Code != 421 || got.Msg != "4.7.1 "+gwHost+" Blocked (relay denials): closing connection" {
		t.Fatalf("after the third relay attempt: %v, want 421 Blocked%v", got, r)
	}
	s.gw.wantBlock(t, prefix, "Y", "smtp", "recipient x3@elsewhere.invalid")
	// Postfix saw the sessions (with the IPv6 client address) but none of
	// the relay attempts.
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if !strings.Contains(d[0], " rcpt=1 ") || strings.Contains(d[1], "rcpt=") {
		t.Fatalf("Postfix's sessions of %s: want one accepted RCPT and no other:\n%s", a, strings.Join(d, "\n"))
	}
	if l := linesWith(postfixSince(t, s.env, mark), "elsewhere.invalid"); len(l) > 0 {
		t.Fatalf("Postfix saw a relay attempt postern refused:\n%s", strings.Join(l, "\n"))
	}
	s.refused(t, neighbour, "smtp", "relay denials") // the whole /64
}

// R: rset_count 3, counted across two connections; Postfix gets every
// RSET.
func testTriggerR(t *testing.T, s *suite) {
	const a = "203.0.113.32"
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), rset(), rset(), quit())
	if r.reply(2).Code != 250 || r.reply(3).Code != 250 || r.reply(4).Code != 221 {
		t.Fatalf("two RSETs:%v", r)
	}
	s.gw.noBlock(t, a)
	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), rset(), quit())
	if r.reply(2).Code != 250 {
		t.Fatalf("third RSET: want Postfix's 250 relayed first:%v", r)
	}
	if got := r.reply(3); got.Code != 421 || got.Msg != "4.7.1 "+gwHost+" Blocked (RSET count): closing connection" {
		t.Fatalf("after the third RSET: %v, want 421 Blocked%v", got, r)
	}
	s.gw.wantBlock(t, a, "R", "smtp", "")
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if !strings.Contains(d[0], " rset=2 ") || !strings.Contains(d[1], " rset=1 ") {
		t.Fatalf("Postfix's sessions of %s: want rset=2 and rset=1:\n%s", a, strings.Join(d, "\n"))
	}
	s.refused(t, a, "smtp", "RSET count")
}

// S: spam_score 10 (above it blocks). A message rspamd scores exactly 10
// is delivered; GTUBE (15) is refused, never reaches Postfix, and blocks.
func testTriggerS(t *testing.T, s *suite) {
	const a = "203.0.113.33"
	tokOK, tokSpam := uniq("S-ten"), uniq("S-gtube")
	ten := writeFile(t, "ten.eml", richMessage(tokOK, "X-E2E-Spam-Score: 10"))
	gtube := writeFile(t, "gtube.eml", gtubeMessage(tokSpam))
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(ten), quit())
	if got := r.reply(4); got.Code != 250 {
		t.Fatalf("message scoring 10: %v, want delivered%v", got, r)
	}
	if !s.gw.logContains(`msg=scanned service=smtp client=`+a+` score=10 `, 5*time.Second) {
		t.Fatalf("postern did not log a scan of score 10 for %s", a)
	}
	waitMessages(t, s.env, "alice@example.test", tokOK, 1)
	s.gw.noBlock(t, a)

	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(gtube), quit())
	if got := r.reply(4); got.Code != 554 || got.Msg != "5.7.1 Error: message rejected as spam" {
		t.Fatalf("GTUBE: %v, want 554 5.7.1 rejected as spam%v", got, r)
	}
	if got := r.reply(5); got.Code != 421 || got.Msg != "4.7.1 "+gwHost+" Blocked (spam score): closing connection" {
		t.Fatalf("after GTUBE: %v, want 421 Blocked%v", got, r)
	}
	s.gw.wantBlock(t, a, "S", "smtp", "score 15.00, limit 10.00")
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if !strings.Contains(d[0], " data=1 ") || strings.Contains(d[1], "data=") {
		t.Fatalf("Postfix's sessions of %s: want DATA only for the first message:\n%s", a, strings.Join(d, "\n"))
	}
	noMessage(t, s.env, "alice@example.test", tokSpam)
	s.refused(t, a, "smtp", "spam score")
}

// S over BDAT: CHUNKING must not be a way around the spam scanner.
func testTriggerSBDAT(t *testing.T, s *suite) {
	const a = "203.0.113.34"
	tok := uniq("S-bdat")
	msg := gtubeMessage(tok)
	gtube := writeFile(t, "gtube.eml", msg)
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"),
		bdat(gtube, 100, len(msg)-100), quit())
	if got := r.reply(4); got.Code != 554 {
		t.Errorf("GTUBE over BDAT: %v, want 554 5.7.1 rejected as spam%v", got, r)
	}
	s.gw.wantBlock(t, a, "S", "smtp", "score 15.00, limit 10.00")
	noMessage(t, s.env, "alice@example.test", tok)
}

// gtubeMessage is rspamd's test spam (score 15, action reject).
func gtubeMessage(token string) []byte {
	return crlf("From: Sender <bob@example.test>\nTo: Alice <alice@example.test>\nSubject: " + token + "\n" +
		"Message-ID: <" + token + "@client.e2e.test>\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=us-ascii\n\nThis is the GTUBE, the Generic Test for Unsolicited Bulk Email.\n\n" +
		"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n")
}

// D: an address on the DNSBL is refused at its first connection (before
// postern connects to Postfix) and blocked; an unlisted one is looked up
// and served.
func testTriggerD(t *testing.T, s *suite) {
	const a, other = dnsListed, "203.0.113.67"
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(other, 40001), false, ehlo(), quit())
	if r.reply(0).Code != 220 || r.reply(2).Code != 221 {
		t.Fatalf("unlisted address:%v", r)
	}
	if s.dns.lookups(other) == 0 {
		t.Fatalf("postern did not look %s up on %s", other, dnsblZone)
	}
	s.gw.noBlock(t, other)

	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo())
	if got := r.reply(0); got.Code != 554 || got.Msg != "5.7.1 Service unavailable; client host ["+a+"] blocked using "+dnsblZone {
		t.Fatalf("listed address: %v, want 554 5.7.1 … blocked using %s%v", got, dnsblZone, r)
	}
	s.gw.wantBlock(t, a, "D", "smtp", "zone "+dnsblZone)
	s.refused(t, a, "smtp", "DNSBL listing")
	waitPostfix(t, s.env, mark, 1, "disconnect from "+client(other))
	if l := linesWith(postfixSince(t, s.env, mark), client(a)); len(l) > 0 {
		t.Fatalf("Postfix saw the listed address:\n%s", strings.Join(l, "\n"))
	}
}

// sizedMessage returns a message of exactly n bytes as sent (CRLF lines of
// at most 1000 bytes, none starting with "."), containing token.
func sizedMessage(token string, n int) []byte {
	b := crlf("From: <bob@example.test>\nTo: <alice@example.test>\nSubject: " + token +
		"\nMessage-ID: <" + token + "@client.e2e.test>\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n\n")
	line := []byte(strings.Repeat("y", 998) + "\r\n")
	for n-len(b) >= 2*len(line) {
		b = append(b, line...)
	}
	rest := n - len(b) // 1000 ≤ rest < 2000: two lines
	half := rest / 2
	b = append(b, strings.Repeat("z", half-2)+"\r\n"...)
	b = append(b, strings.Repeat("z", rest-half-2)+"\r\n"...)
	return b
}

const sizeLimit = 2 << 20 // message_size: 2MB (binary units)

// M: message_size 2MB. A message of exactly 2 MiB is delivered; one byte
// more closes the connection with 552 and blocks; the maildir holds no
// part of it.
func testTriggerM(t *testing.T, s *suite) {
	const a = "203.0.113.35"
	tokOK, tokBig := uniq("M-exact"), uniq("M-over")
	exact := writeFile(t, "exact.eml", sizedMessage(tokOK, sizeLimit))
	over := writeFile(t, "over.eml", sizedMessage(tokBig, sizeLimit+1))
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(exact), quit())
	if got := r.reply(4); got.Code != 250 {
		t.Fatalf("message of exactly 2 MiB: %v, want delivered%v", got, r)
	}
	waitMessages(t, s.env, "alice@example.test", tokOK, 1)
	s.gw.noBlock(t, a)

	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(over), quit())
	if got := r.reply(4); got.Code != 552 || got.Msg != "5.3.4 Error: message too big; connection closed" {
		t.Fatalf("2 MiB + 1: %v, want 552 5.3.4 … connection closed%v", got, r)
	}
	if got := r.reply(5); got.Op != "error" {
		t.Fatalf("after 552 the connection must be closed: %v%v", got, r)
	}
	s.gw.wantBlock(t, a, "M", "smtp", fmt.Sprintf("%d bytes, limit %d", sizeLimit+1, sizeLimit))
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if strings.Contains(d[1], "data=") {
		t.Fatalf("Postfix got DATA for the oversized message:\n%s", d[1])
	}
	noMessage(t, s.env, "alice@example.test", tokBig)
	s.refused(t, a, "smtp", "message size")
}

// M over BDAT: when the message grows past the limit in its second chunk,
// postern closes the connection; a first chunk already relayed to Postfix
// must be discarded there.
func testTriggerMBDAT(t *testing.T, s *suite) {
	const a = "203.0.113.36"
	tokOK, tokBig := uniq("MB-exact"), uniq("MB-over")
	exactMsg, overMsg := sizedMessage(tokOK, sizeLimit), sizedMessage(tokBig, sizeLimit+1)
	exact, over := writeFile(t, "exact.eml", exactMsg), writeFile(t, "over.eml", overMsg)
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"),
		bdat(exact, 1<<20, len(exactMsg)-1<<20), quit())
	if got := r.reply(4); got.Code != 250 || !strings.Contains(got.Msg, "queued as") {
		t.Fatalf("BDAT of exactly 2 MiB: %v, want delivered%v", got, r)
	}
	waitMessages(t, s.env, "alice@example.test", tokOK, 1)
	s.gw.noBlock(t, a)

	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"),
		bdat(over, 1<<20, len(overMsg)-1<<20), quit())
	if got := r.reply(4); got.Code != 552 || got.Msg != "5.3.4 Error: message too big; connection closed" {
		t.Fatalf("BDAT of 2 MiB + 1: %v, want 552%v", got, r)
	}
	s.gw.wantBlock(t, a, "M", "smtp", fmt.Sprintf("%d bytes, limit %d", sizeLimit+1, sizeLimit))
	// Whether postern streamed the first chunk to Postfix (which then
	// lost the connection mid-BDAT) or held it in its spool, Postfix's
	// session must end without a message.
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if strings.Contains(d[1], " data=1") || strings.Contains(d[1], "bdat=2") {
		t.Fatalf("Postfix completed the oversized message:\n%s", d[1])
	}
	noMessage(t, s.env, "alice@example.test", tokBig)
	s.refused(t, a, "smtp", "message size")
}

// A: tarpit_accounts trap@example.test. A normal recipient is fine; the
// trap is refused by postern (Postfix never sees it) and blocks at once.
func testTriggerA(t *testing.T, s *suite) {
	const a = "203.0.113.37"
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"),
		rcpt("trap@example.test"), quit())
	if got := r.reply(3); got.Code != 250 {
		t.Fatalf("normal recipient: %v%v", got, r)
	}
	if got := r.reply(4); got.Code != 550 || got.Msg != "5.1.1 <trap@example.test>: Recipient address rejected" {
		t.Fatalf("tarpit account: %v, want 550 5.1.1%v", got, r)
	}
	if got := r.reply(5); got.Code != 421 || got.Msg != "4.7.1 "+gwHost+" Blocked (tarpit account): closing connection" {
		t.Fatalf("after the tarpit account: %v, want 421 Blocked%v", got, r)
	}
	s.gw.wantBlock(t, a, "A", "smtp", "recipient trap@example.test")
	d := disconnect(t, s.env, mark, a)
	if !strings.Contains(d, " rcpt=1 ") {
		t.Fatalf("Postfix's session: want only the normal recipient:\n%s", d)
	}
	if l := linesWith(postfixSince(t, s.env, mark), "trap@example.test"); len(l) > 0 {
		t.Fatalf("Postfix saw the tarpit account:\n%s", strings.Join(l, "\n"))
	}
	s.refused(t, a, "smtp", "tarpit account")
}

// C: content rule on the Subject. A clean message is delivered; a
// matching one is refused, the connection closed, the address blocked.
func testTriggerC(t *testing.T, s *suite) {
	const a = "203.0.113.38"
	tokOK, tokBad := uniq("C-clean"), uniq("C-casino")
	clean := writeFile(t, "clean.eml", richMessage(tokOK))
	bad := writeFile(t, "bad.eml", richMessage("win big at CASINO-E2E "+tokBad))
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(clean), quit())
	if got := r.reply(4); got.Code != 250 {
		t.Fatalf("clean message: %v%v", got, r)
	}
	waitMessages(t, s.env, "alice@example.test", tokOK, 1)
	s.gw.noBlock(t, a)
	r = python(t, s.gw.SMTP, ap(a, 40002), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(bad), quit())
	if got := r.reply(4); got.Code != 554 || got.Msg != "5.7.1 Error: message content rejected" {
		t.Fatalf("matching message: %v, want 554 5.7.1 content rejected%v", got, r)
	}
	if got := r.reply(5); got.Op != "error" {
		t.Fatalf("after 554 the connection must be closed: %v%v", got, r)
	}
	s.gw.wantBlock(t, a, "C", "smtp", "rule casino-subject")
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if strings.Contains(d[1], "data=") {
		t.Fatalf("Postfix got DATA for the refused message:\n%s", d[1])
	}
	noMessage(t, s.env, "alice@example.test", tokBad)
	s.refused(t, a, "smtp", "content rule")
}

// C on the body, over BDAT (the streaming path): the chunk that matches is
// not completed at Postfix, which discards what it got.
func testTriggerCBDAT(t *testing.T, s *suite) {
	const a = "203.0.113.39"
	tok := uniq("C-body")
	msg := crlf("From: <bob@example.test>\nTo: <alice@example.test>\nSubject: " + tok + "\n\nplease\nWIRE-THE-MONEY-E2E today\nthanks\n")
	file := writeFile(t, "bad.eml", msg)
	mark := s.env.LogMark(t, "postfix")
	r := python(t, s.gw.SMTP, ap(a, 40001), false, ehlo(), mail("bob@example.test"), rcpt("alice@example.test"),
		bdat(file, 20, len(msg)-20), quit())
	if got := r.reply(4); got.Code != 554 || got.Msg != "5.7.1 Error: message content rejected" {
		t.Fatalf("body rule over BDAT: %v, want 554 5.7.1 content rejected%v", got, r)
	}
	s.gw.wantBlock(t, a, "C", "smtp", "rule wire-fraud-body")
	waitPostfix(t, s.env, mark, 1, "disconnect from "+client(a))
	noMessage(t, s.env, "alice@example.test", tok)
	s.refused(t, a, "smtp", "content rule")
}
