package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
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

// testSilentClients opens 100 connections from 25 addresses of one /24
// (4 each: the gateway blocks a fifth connection in a minute, I) that
// never say a word after the greeting: postern lets at most
// max_backend_connections_per_network (40 by default) reach Postfix and
// answers the rest itself, so a client of another network is still
// served; closing the silent ones gives the places back.
func testSilentClients(t *testing.T, s *suite) {
	mark := s.env.LogMark(t, "postfix")
	var held []*rawConn
	greeted, refused := 0, 0
	for i := range 100 {
		c := dialRaw(t, s.gw.SMTP, ap(fmt.Sprintf("100.64.7.%d", 10+i%25), uint16(42000+i)))
		r, err := c.reply()
		switch {
		case err == nil && strings.HasPrefix(r, "220 "):
			greeted++
			held = append(held, c)
		case strings.HasPrefix(r, "421 4.7.0 "+gwHost+" Error: too many connections from your network"):
			refused++
			c.Close()
		default:
			t.Fatalf("connection %d: %q %v", i, r, err)
		}
	}
	t.Logf("100 silent connections from 25 addresses of 100.64.7.0/24: %d reached Postfix, %d refused by postern", greeted, refused)
	if greeted != 40 || refused != 60 {
		t.Fatalf("%d greeted, %d refused; want 40 and 60", greeted, refused)
	}
	// Another network delivers meanwhile.
	const other = "100.64.8.1"
	tok := uniq("silent")
	mustQueue(t, "while 40 are silent", swaks(t, s.gw.SMTP, ap(other, 42200),
		"--from", "bob@example.test", "--to", alice, "--header", "Subject: "+tok, "--body", tok))
	s.env.WaitForMessage(t, alice, tok, 10*time.Second)
	if n := len(linesWith(postfixSince(t, s.env, mark), "connect from unknown[100.64.7.")); n > 2*40 {
		t.Fatalf("Postfix saw %d connect/disconnect lines from 100.64.7.0/24, want at most 40 sessions", n)
	}
	for _, c := range held {
		c.Close()
	}
	// The places are free again.
	if !poll(10*time.Second, func() bool {
		c := dialRaw(t, s.gw.SMTP, ap("100.64.7.200", 42300))
		defer c.Close()
		r, _ := c.reply()
		return strings.HasPrefix(r, "220 ")
	}) {
		t.Fatal("the backend places of closed connections were not given back")
	}
}
