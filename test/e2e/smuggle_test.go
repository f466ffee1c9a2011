package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
)

// testSmuggling sends the command spellings that Postfix executes but an
// earlier postern did not recognise (a TAB after the verb, leading
// blanks, lower case) through the gateway in front of the real Postfix:
// each meets the same check as its plain spelling.
func testSmuggling(t *testing.T, s *suite) {
	const src = "198.51.100.110"
	carol := func(pass string) string {
		return base64.StdEncoding.EncodeToString([]byte("\x00carol@other.test\x00" + pass))
	}
	c := dialRaw(t, s.gw.SMTP, ap(src, 41001))
	c.mustReply("220")
	c.cmd("EHLO\tclient.example", "250")
	// AUTH needs TLS on port 25 however it is spelt.
	c.cmd("AUTH\tPLAIN "+carol("carol-pass-3"), "538 5.7.11")
	c.cmd(" auth plain "+carol("carol-pass-3"), "538 5.7.11")
	// XCLIENT and XFORWARD never reach Postfix from a client.
	for _, l := range []string{"XCLIENT\tADDR=192.0.2.1", "XCLIENT\tLOGIN=bob@example.test", " xclient NAME=x", "XFORWARD\tADDR=192.0.2.1"} {
		if r := c.cmd(l, "550"); r != "550 5.7.0 Error: insufficient authorization" {
			t.Errorf("%q: %q, want postern's refusal", l, r)
		}
	}
	c.cmd("VRFY\talice@example.test", "502")
	c.cmd("MAIL\tFROM:<x@example.org>", "250")
	if r := c.cmd("RCPT\tTO:<victim@elsewhere.example>", "554"); !strings.Contains(r, "Relay access denied") {
		t.Errorf("RCPT with a TAB: %q", r)
	}
	c.cmd("QUIT", "221")

	// Over TLS, AUTH with a TAB meets the login restriction and counts.
	const out = "198.51.100.111"
	c = dialRaw(t, s.gw.SMTP, ap(out, 41002))
	c.mustReply("220")
	c.cmd("EHLO x", "250")
	c.cmd("STARTTLS", "220")
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &rawConn{t: t, Conn: tc, r: bufio.NewReader(tc)}
	c.cmd("ehlo\tx", "250")
	c.cmd("AUTH\tPLAIN\t"+carol("carol-pass-3"), "535 5.7.8")
	c.cmd("\tAuTh PLAIN "+carol("guess-2"), "535 5.7.8")
	c.cmd("AUTH PLAIN\t"+carol("guess-3")+"\t", "535 5.7.8")
	c.mustReply("421 4.7.1")
	s.gw.wantBlock(t, out, "L", "smtp", "account carol@other.test")
}
