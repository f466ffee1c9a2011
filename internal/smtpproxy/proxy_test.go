package smtpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/testenv"
	"github.com/postern/postern/internal/tlsconf"
)

const msg = "From: a@example.org\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nline one\r\n..leading dot\r\nlast line\r\n"

func TestDeliveryIsRelayedExactly(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	c := h.dial("127.0.0.2")
	greet := c.expect(220)
	if !strings.Contains(greet, "mx.example.test") {
		t.Errorf("the greeting must be the backend's: %q", greet)
	}
	ehlo := c.cmd("EHLO client.example.org", 250)
	for _, want := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "CHUNKING", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN", "SIZE 10485760"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO lacks %s:\n%s", want, ehlo)
		}
	}
	c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc", 250)
	c.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.test", 250)
	c.cmd("DATA", 354)
	c.send(msg + ".\r\n")
	final := c.expect(250)
	if !strings.Contains(final, "queued as TESTX") {
		t.Errorf("the final reply must be the backend's own: %q", final)
	}
	c.cmd("QUIT", 221)
	m := h.mta.messages()
	if len(m) != 1 {
		t.Fatalf("messages: %d", len(m))
	}
	if want := strings.Replace(msg, "\r\n..", "\r\n.", 1); string(m[0].Data) != want {
		t.Errorf("message changed in transit:\n%q\nwant\n%q", m[0].Data, want)
	}
	if m[0].Client != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("the backend must see the client's address through PROXY v2, saw %s", m[0].Client)
	}
	if o := m[0].Opts; o.Body != "8BITMIME" || !o.UTF8 || o.Return != "HDRS" || o.EnvelopeID != "abc" {
		t.Errorf("MAIL parameters not passed through: %+v", o)
	}
}

func TestChunkingAndPipelining(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	c := h.dial("127.0.0.3")
	c.expect(220)
	c.cmd("EHLO x", 250)
	// Pipelined: every reply comes back in order.
	c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(250)
	body := "Subject: chunks\r\n\r\n" + strings.Repeat(strings.Repeat("0123456789", 9)+"\r\n", 500)
	c.send(fmt.Sprintf("BDAT %d\r\n%s", 20000, body[:20000]))
	c.expect(250)
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body)-20000, body[20000:]))
	c.expect(250)
	m := h.mta.messages()
	if len(m) != 1 || string(m[0].Data) != body || len(m[0].To) != 2 {
		t.Fatalf("BDAT message: %d messages, %d bytes", len(m), len(m[0].Data))
	}
}

func TestAuth(t *testing.T) {
	cfg := baseIPS + "login_restrictions:\n  - \"@example.test=127.0.0.0/24\"\n"
	h := newHarness(t, cfg, nil, nil)
	plain := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte("\x00" + u + "\x00" + p)) }

	c := h.dial("127.0.0.4")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("AUTH PLAIN "+plain("alice@example.test", "alice-pass-1"), 235)
	c.cmd("MAIL FROM:<alice@example.test>", 250)
	c.cmd("RCPT TO:<someone@elsewhere.example>", 250) // authenticated: relaying allowed

	c = h.dial("127.0.0.4")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("AUTH LOGIN", 334)
	c.cmd(base64.StdEncoding.EncodeToString([]byte("bob@example.test")), 334)
	c.cmd(base64.StdEncoding.EncodeToString([]byte("bob-pass-2")), 235)

	// A wrong password: the backend's own 535.
	c = h.dial("127.0.0.5")
	c.expect(220)
	c.cmd("EHLO x", 250)
	wrong := c.cmd("AUTH PLAIN "+plain("alice@example.test", "nope"), 535)
	// From outside the login restriction: the same 535, the backend asked with a decoy password.
	c2 := h.dial("127.0.1.9")
	c2.expect(220)
	c2.cmd("EHLO x", 250)
	refused := c2.cmd("AUTH PLAIN "+plain("alice@example.test", "alice-pass-1"), 535)
	if wrong != refused {
		t.Errorf("a refused login must look exactly like a wrong password:\n%q\n%q", wrong, refused)
	}
	// Cancelled and malformed exchanges.
	c2.cmd("AUTH PLAIN", 334)
	c2.cmd("*", 501)
	c2.cmd("AUTH PLAIN !!!notbase64", 501)
	c2.cmd("AUTH CRAM-MD5", 504)
}

func TestFailedLoginsBlock(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	c := h.dial("127.0.0.6")
	c.expect(220)
	c.cmd("EHLO x", 250)
	for i := range 2 {
		c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("\x00alice@example.test\x00guess%d", i))), 535)
	}
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00guess9")), 535)
	c.expect(421) // blocked: closing
	c.closed()
	if b, ok := h.eng.BlockOf(netip.MustParseAddr("127.0.0.6")); !ok || b.Reason != reason.Login || b.Detail != "account alice@example.test" {
		t.Fatalf("block: %+v", b)
	}
	c = h.dial("127.0.0.6")
	if text := c.expect(554); !strings.Contains(text, "5.7.1 Blocked (failed logins)") {
		t.Errorf("refusal at connect: %q", text)
	}
	c.closed()
}

func TestRecipientTriggers(t *testing.T) {
	h := newHarness(t, baseIPS+"local_domains: \"example.test\"\n", nil, nil)
	// P: unknown users.
	c := h.dial("127.0.0.7")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<x@example.org>", 250)
	c.cmd("RCPT TO:<nobody1@example.test>", 550)
	c.cmd("RCPT TO:<nobody2@example.test>", 550)
	if text := c.cmd("RCPT TO:<nobody3@example.test>", 550); !strings.Contains(text, "5.1.1") {
		t.Errorf("the backend's 550 must be relayed: %q", text)
	}
	c.expect(421)
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.7")); b.Reason != reason.UnknownRecipients {
		t.Fatalf("P block: %+v", b)
	}
	// Y: relay denials, by local_domains (postern answers) and by the backend.
	c = h.dial("127.0.0.8")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<x@example.org>", 250)
	for i := range 3 {
		if text := c.cmd(fmt.Sprintf("RCPT TO:<v%d@elsewhere.example>", i), 554); !strings.Contains(text, "Relay access denied") {
			t.Errorf("relay: %q", text)
		}
	}
	c.expect(421)
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.8")); b.Reason != reason.Relay {
		t.Fatalf("Y block: %+v", b)
	}
	// A: a tarpit account blocks at once, and the recipient is not accepted.
	c = h.dial("127.0.0.9")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<x@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("RCPT TO:<trap@example.test>", 550)
	c.expect(421)
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.9")); b.Reason != reason.TarpitAccount {
		t.Fatalf("A block: %+v", b)
	}
	// postmaster without a domain is never a relay attempt.
	c = h.dial("127.0.0.10")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<x@example.org>", 250)
	c.send("RCPT TO:<postmaster>\r\n")
	if code, text := c.read(); code == 554 || strings.Contains(text, "Relay access denied") {
		t.Errorf("postmaster must reach the backend, not be a relay denial: %q", text)
	}
}

func TestRsetAndSize(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	c := h.dial("127.0.0.11")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("RSET", 250)
	c.cmd("RSET", 250)
	c.cmd("RSET", 250)
	c.expect(421)
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.11")); b.Reason != reason.RSET {
		t.Fatalf("R block: %+v", b)
	}
	// DATA's implicit reset is not an RSET: many messages in one session.
	c = h.dial("127.0.0.12")
	c.expect(220)
	c.cmd("EHLO x", 250)
	for range 5 {
		c.cmd("MAIL FROM:<x@example.org>", 250)
		c.cmd("RCPT TO:<alice@example.test>", 250)
		c.cmd("DATA", 354)
		c.send(msg + ".\r\n")
		c.expect(250)
	}
	// M: the connection closes as soon as 64 KB are exceeded; nothing is delivered.
	before := len(h.mta.messages())
	c.cmd("MAIL FROM:<x@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	big := strings.Repeat("x", 998) + "\r\n"
	go func() {
		for range 1000 { // 1 MB offered; postern must stop reading after 64 KB
			if _, err := c.c.Write([]byte(big)); err != nil {
				return
			}
		}
	}()
	if text := c.expect(552); !strings.Contains(text, "5.3.4") {
		t.Errorf("M reply: %q", text)
	}
	c.closed()
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.12")); b.Reason != reason.Size {
		t.Fatalf("M block: %+v", b)
	}
	if n := len(h.mta.messages()); n != before {
		t.Fatalf("a partial message was delivered (%d → %d)", before, n)
	}
}

func TestContentRulesAndDNSBL(t *testing.T) {
	cfg := strings.Replace(baseIPS, "dnsbl: [bl.example.org] }", "dnsbl: [bl.example.org], content_rules: true }", 1)
	bl := fakeDNSBL{netip.MustParseAddr("127.0.0.21"): "bl.example.org"}
	h := newHarness(t, cfg, func(c *Config) {
		c.ContentRules = []ContentRule{{Name: "casino", Header: regexp.MustCompile(`(?i)^subject:.*casino`)}, {Name: "viagra", Body: regexp.MustCompile(`(?i)v1agra`)}}
	}, bl)
	c := h.dial("127.0.0.21")
	if text := c.expect(554); !strings.Contains(text, "blocked using bl.example.org") {
		t.Fatalf("DNSBL refusal: %q", text)
	}
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.21")); b.Reason != reason.DNSBL {
		t.Fatalf("D block: %+v", b)
	}
	for i, m := range []string{"Subject: Big CASINO win\r\n\r\nhi\r\n", "Subject: hi\r\n\r\nbuy v1agra now\r\n"} {
		src := fmt.Sprintf("127.0.0.%d", 22+i)
		c := h.dial(src)
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("MAIL FROM:<x@example.org>", 250)
		c.cmd("RCPT TO:<alice@example.test>", 250)
		c.cmd("DATA", 354)
		c.send(m + ".\r\n")
		c.expect(554)
		c.closed()
		if b, _ := h.eng.BlockOf(netip.MustParseAddr(src)); b.Reason != reason.Content {
			t.Fatalf("C block %d: %+v", i, b)
		}
	}
	if n := len(h.mta.messages()); n != 0 {
		t.Fatalf("%d rejected messages were delivered", n)
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, baseIPS, func(c *Config) { c.MaxLineLength = 512 }, nil)
	base := runtime.NumGoroutine()
	fds := openFDs(t)
	c := h.dial("127.0.0.30")
	c.expect(220)
	c.cmd(strings.Repeat("A", 5000), 500)   // over-long line
	c.cmd("NOOP \x00\x01\x02 garbage", 500) // binary
	c.cmd("MAIL FROM:<x@example.org>", 502) // out of sequence: the backend says so
	c.cmd("XCLIENT ADDR=1.2.3.4", 550)      // never passed to the backend
	c.cmd("VRFY alice", 502)
	c.cmd(strings.Repeat("B", 600), 421) // third error closes
	c.closed()

	// Bare LF inside DATA: refused, nothing delivered (no SMTP smuggling).
	c = h.dial("127.0.0.31")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<x@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n")
	if text := c.expect(554); !strings.Contains(text, "bare <LF>") {
		t.Errorf("bare LF: %q", text)
	}
	c.closed()
	if n := len(h.mta.messages()); n != 0 {
		t.Fatalf("a message with bare LF was delivered")
	}

	// STARTTLS with pipelined commands after it (injection): refused.
	// (No TLS configured here: STARTTLS is simply not offered.)
	c = h.dial("127.0.0.32")
	c.expect(220)
	c.cmd("STARTTLS", 502)

	// A client that never finishes DATA is timed out.
	h2 := newHarness(t, baseIPS, func(c *Config) { c.Timeouts.Data = 300 * time.Millisecond }, nil)
	c = h2.dial("127.0.0.33")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<x@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: never ends\r\n")
	c.expect(421)
	c.closed()
	if n := len(h2.mta.messages()); n != 0 {
		t.Fatal("an unfinished message was delivered")
	}
	c.c.Close()
	waitGoroutines(t, base+20)
	// No descriptor leak: every client and backend connection was closed
	// (the second harness's listeners and MTA add a handful).
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > fds+12 {
		if time.Now().After(deadline) {
			t.Fatalf("file descriptors: %d before, %d after", fds, openFDs(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func TestBackendFailures(t *testing.T) {
	// Down: nothing listens.
	h := newHarness(t, baseIPS, func(c *Config) { c.Backend = testenv.RefusingAddr(t) }, nil)
	c := h.dial("127.0.0.40")
	if text := c.expect(421); !strings.Contains(text, "4.3.0") {
		t.Errorf("backend down: %q", text)
	}
	// Garbage and hangs.
	for _, tc := range []struct {
		name   string
		script func(net.Conn)
		want   int
	}{
		{"garbage greeting", func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) }, 421},
		{"silent", func(c net.Conn) { time.Sleep(3 * time.Second) }, 421},
		{"dies after DATA", func(c net.Conn) {
			c.Write([]byte("220 fake ESMTP\r\n"))
			buf := make([]byte, 4096)
			replies := []string{"250 fake\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n", "354 go\r\n"}
			for _, r := range replies {
				c.Read(buf)
				c.Write([]byte(r))
			}
			c.Read(buf)
			c.Close() // mid-message
		}, 451},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scriptedBackend(t, tc.script)
			h := newHarness(t, baseIPS, func(c *Config) {
				c.Backend, c.BackendProxy, c.Timeouts.Backend = addr, "none", time.Second
			}, nil)
			c := h.dial("127.0.0.41")
			if tc.want == 451 {
				c.expect(220)
				c.cmd("EHLO x", 250)
				c.cmd("MAIL FROM:<x@example.org>", 250)
				c.cmd("RCPT TO:<alice@example.test>", 250)
				c.cmd("DATA", 354)
				c.send(msg + strings.Repeat("filler line\r\n", 3000) + ".\r\n")
			}
			if code, text := c.read(); code != tc.want {
				t.Fatalf("want %d, got %q", tc.want, text)
			}
		})
	}
}

func TestXCLIENTBackend(t *testing.T) {
	var gotXCLIENT string
	addr := scriptedBackend(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		c.Write([]byte("220 fake\r\n"))
		n, _ := c.Read(buf) // EHLO from postern
		if !bytes.HasPrefix(buf[:n], []byte("EHLO ")) {
			return
		}
		c.Write([]byte("250-fake\r\n250 XCLIENT ADDR PORT NAME\r\n"))
		n, _ = c.Read(buf)
		gotXCLIENT = string(buf[:n])
		c.Write([]byte("220 fake after xclient\r\n"))
		c.Read(buf)
		c.Write([]byte("221 bye\r\n"))
	})
	h := newHarness(t, baseIPS, func(c *Config) { c.Backend, c.BackendProxy = addr, "xclient" }, nil)
	c := h.dial("127.0.0.42")
	if text := c.expect(220); !strings.Contains(text, "after xclient") {
		t.Fatalf("greeting after XCLIENT: %q", text)
	}
	c.cmd("QUIT", 221)
	if !strings.HasPrefix(gotXCLIENT, "XCLIENT ADDR=127.0.0.42 PORT=") {
		t.Fatalf("XCLIENT line: %q", gotXCLIENT)
	}
}

func TestSubmissionRequiresAuth(t *testing.T) {
	h := newHarness(t, baseIPS, func(c *Config) { c.Service, c.RequireAuth = service.Submission, true }, nil)
	c := h.dial("127.0.0.43")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<alice@example.test>", 530)
}

// scriptedBackend serves one connection with script.
func scriptedBackend(t *testing.T, script func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		script(c)
		c.Close()
	}()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return ln.Addr().String()
}

// serverTLS returns a server configuration with a self-signed certificate
// for gw.example.test and 127.0.0.1, and the certificate's file.
func serverTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	certFile, keyFile, err := tlsconf.SelfSigned(t.TempDir(), []string{"gw.example.test", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certs.ServerConfig(), certFile
}

func TestStartTLS(t *testing.T) {
	srvTLS, certFile := serverTLS(t)
	h := newHarness(t, baseIPS, func(c *Config) { c.TLS, c.AllowInsecureAuth = srvTLS, false }, nil)
	c := h.dial("127.0.0.50")
	c.expect(220)
	ehlo := c.cmd("EHLO x", 250)
	if !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Fatalf("before TLS: STARTTLS offered, AUTH not:\n%s", ehlo)
	}
	c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNzLTE=", 538)
	c.cmd("STARTTLS", 220)
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c.c, &tls.Config{ServerName: "gw.example.test", RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	ehlo = c.cmd("EHLO x", 250)
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("after TLS: AUTH offered, STARTTLS not:\n%s", ehlo)
	}
	c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNzLTE=", 235)
	c.cmd("MAIL FROM:<alice@example.test>", 250)
	c.cmd("RCPT TO:<bob@example.test>", 250)
	c.cmd("DATA", 354)
	c.send(msg + ".\r\n")
	c.expect(250)

	// Commands pipelined behind STARTTLS are an injection attempt.
	c = h.dial("127.0.0.51")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.send("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
	c.expect(554)
	c.closed()
}
