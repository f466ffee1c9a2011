package smtpproxy

import (
	"bufio"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/evloop"
)

// TestSessionsOnEventLoops: with Config.Loops, a whole SMTP session —
// greeting, EHLO, a message relayed with DATA and with BDAT, QUIT — runs
// on an event loop and ends there; a session that asks for STARTTLS, one
// that has DNS lists looked up, and one under a policy with host masks
// leave the loop before they wait for what the loop does not watch, and
// still work.
func TestSessionsOnEventLoops(t *testing.T) {
	loops, err := evloop.Start(2, nil)
	if err != nil {
		t.Skip(err) // not Linux
	}
	st := loops.Stats()
	wait := func(what string, counter interface{ Load() int64 }, n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); counter.Load() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d, want %d", what, counter.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	srvTLS, _ := serverTLS(t)
	h := newHarness(t, baseIPS, func(c *Config) { c.Loops, c.TLS = loops, srvTLS }, nil)
	t.Cleanup(loops.Close) // after the proxy's cleanup: sessions end first

	// A delivery by DATA and one by BDAT, all on the loop.
	c := h.dial("127.0.0.61")
	c.expect(220)
	c.cmd("EHLO client.example.org", 250)
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	c.send(msg + ".\r\n")
	c.expect(250)
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.send("BDAT 9 LAST\r\nSubject:x")
	c.expect(250)
	c.cmd("QUIT", 221)
	c.closed()
	wait("sessions ended on their loop", &st.Ended, 1)
	if n := len(h.mta.messages()); n != 2 {
		t.Fatalf("%d messages at the backend, want 2", n)
	}
	if st.Started.Load() != 1 || st.Detached.Load() != 0 {
		t.Fatalf("on the loops: %d started, %d left them; want 1 and 0", st.Started.Load(), st.Detached.Load())
	}

	// STARTTLS: the handshake is off the loop, the session goes on.
	c = h.dial("127.0.0.62")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("STARTTLS", 220)
	tc := tls.Client(c.c, &tls.Config{ServerName: "gw.example.test", InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	c.cmd("EHLO x", 250)
	c.cmd("QUIT", 221)
	wait("sessions that left their loop", &st.Detached, 1)

	// DNS lists to look up: off the loop before the lookup.
	h2 := newHarness(t, baseIPS, func(c *Config) { c.Loops = loops }, fakeDNSBL{})
	c = h2.dial("127.0.0.63")
	c.expect(220)
	c.cmd("QUIT", 221)
	wait("sessions that left their loop", &st.Detached, 2)

	// Host masks in the policy: off the loop before the access checks.
	masks := strings.Replace(baseIPS, `smtp: { listen: ":25", backend: "127.0.0.1:1" }`,
		`smtp: { listen: ":25", backend: "127.0.0.1:1", deny: "*.denied.example" }`, 1)
	h3 := newHarness(t, masks+`dns: { resolver: "127.0.0.1:1", timeout: 200ms }
`, func(c *Config) { c.Loops = loops }, nil)
	if !h3.snap.Policy.HasHostMasks() {
		t.Fatal("the policy has no host masks")
	}
	c = h3.dial("127.0.0.64")
	if greet := c.expect(220); !strings.Contains(greet, "mx.example.test") {
		t.Errorf("greeting under host masks: %q", greet)
	}
	c.cmd("QUIT", 221)
	wait("sessions that left their loop", &st.Detached, 3)
	if st.Started.Load() != 4 {
		t.Errorf("%d sessions started on the loops, want 4", st.Started.Load())
	}
}
