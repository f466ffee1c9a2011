package e2e

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// Bad input against the real chain. After each, postern must still run
// and `postern blocks list` must still answer.

// testBadLongLine: a command line over max_line_length (2048) is refused
// by postern and never reaches Postfix; the session goes on; the third
// protocol error closes it.
func testBadLongLine(t *testing.T, s *suite) {
	const a = "198.51.100.70"
	mark := s.env.LogMark(t, "postfix")
	c := dialRaw(t, s.gw.SMTP, ap(a, 40001))
	c.mustReply("220 mx.example.test")
	c.cmd("EHLO client.e2e.test", "250-mx.example.test")
	long := "NOOP " + strings.Repeat("x", 5000)
	c.cmd(long, "500 5.5.2 Error: line too long")
	c.cmd("NOOP", "250 2.0.0 Ok") // Postfix's, relayed: the session goes on
	c.cmd("MAIL FROM:<"+strings.Repeat("a", 3000)+"@example.test>", "500 5.5.2 Error: line too long")
	c.cmd(long, "421 4.7.0 "+gwHost+" Error: too many errors")
	if !c.closed() {
		t.Fatal("the session was not closed after the third error")
	}
	d := disconnect(t, s.env, mark, a)
	if !strings.Contains(d, " noop=1 ") || strings.Contains(d, "mail=") {
		t.Fatalf("Postfix's session: want only EHLO, one NOOP and QUIT:\n%s", d)
	}
	s.gw.alive(t)
}

// testBadBareLF: a message with a bare LF is refused; nothing reaches
// Postfix (the message is spooled for the scanner first) nor the Maildir.
func testBadBareLF(t *testing.T, s *suite) {
	const a = "198.51.100.71"
	tok := uniq("bare-lf")
	mark := s.env.LogMark(t, "postfix")
	c := dialRaw(t, s.gw.SMTP, ap(a, 40001))
	c.mustReply("220 ")
	c.cmd("EHLO client.e2e.test", "250")
	c.cmd("MAIL FROM:<bob@example.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: " + tok + "\r\n\r\nline one\nline two\r\n.\r\n")
	c.mustReply("554 5.5.2 Error: bare <LF> received; lines must end with <CR><LF>")
	// Whether the session goes on (QUIT answered) or is closed is postern's
	// choice; either way the message is gone.
	c.send("QUIT\r\n")
	if r, err := c.reply(); err == nil && !strings.HasPrefix(r, "221 ") {
		t.Fatalf("QUIT after the refused message: %q", r)
	}
	d := disconnect(t, s.env, mark, a)
	if strings.Contains(d, "data=") {
		t.Fatalf("Postfix got DATA for the refused message:\n%s", d)
	}
	noMessage(t, s.env, alice, tok)
	s.gw.alive(t)
}

// testBadSmuggling: SMTP smuggling attempts. The client hides a second
// transaction behind an end-of-data that is not <CRLF>.<CRLF> and
// pipelines it; no part of it may reach Postfix.
func testBadSmuggling(t *testing.T, s *suite) {
	for _, tc := range []struct {
		name, src, end string
	}{
		{"LF.CRLF", "198.51.100.72", "\n.\r\n"},
		{"CRLF.LF", "198.51.100.76", "\r\n.\n"},
		{"LF.LF", "198.51.100.77", "\n.\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := uniq("smuggle")
			mark := s.env.LogMark(t, "postfix")
			c := dialRaw(t, s.gw.SMTP, ap(tc.src, 40001))
			c.mustReply("220 ")
			c.cmd("EHLO client.e2e.test", "250")
			c.cmd("MAIL FROM:<bob@example.test>", "250")
			c.cmd("RCPT TO:<alice@example.test>", "250")
			c.cmd("DATA", "354")
			c.send("Subject: " + tok + " first\r\n\r\nfirst" + tc.end +
				"MAIL FROM:<spoofed@other.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n" +
				"Subject: " + tok + " smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")
			c.mustReply("554 5.5.2 Error: bare <LF> received")
			c.closed() // whatever follows, the session ends (QUIT or close)
			disconnect(t, s.env, mark, tc.src)
			log := postfixSince(t, s.env, mark)
			if l := linesWith(log, "spoofed@other.test"); len(l) > 0 {
				t.Errorf("Postfix saw the smuggled transaction:\n%s", strings.Join(l, "\n"))
			}
			if d := linesWith(log, "disconnect from "+client(tc.src)); strings.Contains(strings.Join(d, ""), "data=") {
				t.Errorf("Postfix got DATA: %s", d)
			}
			noMessage(t, s.env, alice, tok)
			s.gw.alive(t)
		})
	}
}

// testBadGarbage: binary data in command lines is refused by postern (NUL
// and control bytes) and the third error closes the session; a stream of
// random bytes without a line end is dropped.
func testBadGarbage(t *testing.T, s *suite) {
	const a = "198.51.100.73"
	mark := s.env.LogMark(t, "postfix")
	c := dialRaw(t, s.gw.SMTP, ap(a, 40001))
	c.mustReply("220 ")
	c.send("\x00\x01\x02garbage\xff\r\n")
	c.mustReply("500 5.5.2 Error: bad syntax (binary data in a command)")
	c.send("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n") // a TLS ClientHello on the plain port
	c.mustReply("500 5.5.2 Error: bad syntax (binary data in a command)")
	c.send("EHLO \x1b[31mred\r\n")
	c.mustReply("421 4.7.0 " + gwHost + " Error: too many errors")
	if !c.closed() {
		t.Fatal("the session was not closed after the third error")
	}
	disconnect(t, s.env, mark, a)

	// 256 KiB of random bytes without a line end, then the client leaves.
	c = dialRaw(t, s.gw.SMTP, ap(a, 40002))
	c.mustReply("220 ")
	junk := make([]byte, 256<<10)
	rand.Read(junk)
	for i, b := range junk {
		if b == '\n' {
			junk[i] = 'n'
		}
	}
	c.Write(junk)
	c.Close()
	// Bytes above 0x7f are no control characters, but a verb postern does
	// not know never reaches Postfix (which would take a command that does
	// not start with a letter for an attack and hang up): postern answers
	// 502 itself and the session goes on.
	c = dialRaw(t, s.gw.SMTP, ap(a, 40003))
	c.mustReply("220 ")
	c.send("\xff\xfe\xfd high bytes only\r\n")
	c.mustReply("502 5.5.2 Error: command not recognized")
	c.cmd("NOOP", "250")
	c.cmd("QUIT", "221")
	waitPostfix(t, s.env, mark, 3, "disconnect from "+client(a))
	if l := linesWith(postfixSince(t, s.env, mark), client(a), "mail="); len(l) > 0 {
		t.Fatalf("Postfix saw a transaction: %s", l)
	}
	s.gw.alive(t)
}

// testBadUnfinishedData: a client that stops sending in the middle of a
// message is dropped after timeouts.data (2s) with 421; nothing is
// delivered, over DATA (spooled) and BDAT (streamed to Postfix).
func testBadUnfinishedData(t *testing.T, s *suite) {
	const a = "198.51.100.74"
	tok := uniq("unfinished")
	mark := s.env.LogMark(t, "postfix")
	c := dialRaw(t, s.gw.SMTP, ap(a, 40001))
	c.mustReply("220 ")
	c.cmd("EHLO client.e2e.test", "250")
	c.cmd("MAIL FROM:<bob@example.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: " + tok + "\r\n\r\npartial line\r\n")
	start := time.Now()
	c.mustReply("421 4.4.2 " + gwHost + " Error: timeout exceeded")
	if el := time.Since(start); el < 1500*time.Millisecond || el > 10*time.Second {
		t.Fatalf("dropped after %v, want about timeouts.data = 2s", el)
	}
	if !c.closed() {
		t.Fatal("the session was not closed after the timeout")
	}

	c = dialRaw(t, s.gw.SMTP, ap(a, 40002))
	c.mustReply("220 ")
	c.cmd("EHLO client.e2e.test", "250")
	c.cmd("MAIL FROM:<bob@example.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.send("BDAT 1000 LAST\r\nSubject: " + tok + "\r\n\r\nonly part of it\r\n")
	start = time.Now()
	if !c.closed() {
		t.Fatal("the BDAT session was not closed")
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("BDAT session closed after %v, before timeouts.data", el)
	}
	d := waitPostfix(t, s.env, mark, 2, "disconnect from "+client(a))
	if strings.Contains(d[0], "data=") {
		t.Fatalf("Postfix got DATA for the unfinished message:\n%s", d[0])
	}
	noMessage(t, s.env, alice, tok)
	s.gw.alive(t)
}

// testBadSTARTTLSInjection: commands pipelined behind STARTTLS (to be run
// as if they came over TLS) end the session; Postfix never sees them.
func testBadSTARTTLSInjection(t *testing.T, s *suite) {
	const a = "198.51.100.75"
	mark := s.env.LogMark(t, "postfix")
	c := dialRaw(t, s.gw.SMTP, ap(a, 40001))
	c.mustReply("220 ")
	c.cmd("EHLO client.e2e.test", "250")
	c.send("STARTTLS\r\nMAIL FROM:<injected@other.test>\r\n")
	c.mustReply("554 5.5.1 Error: commands sent after STARTTLS before the TLS handshake")
	if !c.closed() {
		t.Fatal("the session was not closed")
	}
	disconnect(t, s.env, mark, a)
	if l := linesWith(postfixSince(t, s.env, mark), "injected@other.test"); len(l) > 0 {
		t.Fatalf("Postfix saw the injected command:\n%s", strings.Join(l, "\n"))
	}
	s.gw.alive(t)
}
