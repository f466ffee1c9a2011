package imapproxy

import (
	"fmt"
	"strings"
	"testing"
)

// closeOnlyCfg turns refuse_blocked off and keeps close_blocked_connection
// on: a block then closes the connection that made it and refuses new
// connections from the address for the block time, but leaves the
// address's other current connections open.
const closeOnlyCfg = `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
intrusion_prevention:
  refuse_blocked: false
  close_blocked_connection: true
  imap_pop3: { failed_logins: 3 }
`

// TestCloseOnlyRefusesNewConnections: with close_blocked_connection alone,
// the third wrong password closes its connection, and a new connection from
// the address right after is refused at connect: its right password never
// reaches the backend. A connection opened before the block is not closed
// (its login attempts are refused all the same).
func TestCloseOnlyRefusesNewConnections(t *testing.T) {
	h := newHarness(t, closeOnlyCfg, nil)
	const src = "127.0.0.61"
	earlier := h.dial(src)
	earlier.line()
	c := h.dial(src)
	c.line()
	for i := range 3 {
		c.send(fmt.Sprintf("a%d LOGIN alice@example.test wrong%d\r\n", i, i))
		if l := c.until(fmt.Sprintf("a%d ", i)); !strings.HasPrefix(l, fmt.Sprintf("a%d NO", i)) {
			t.Fatalf("guess %d: %q", i, l)
		}
	}
	if l := c.line(); !strings.HasPrefix(l, "* BYE Blocked (failed logins)") {
		t.Fatalf("the connection that made the block: %q", l)
	}
	if !c.closed() {
		t.Fatal("the connection that made the block stays open")
	}

	n := h.dial(src)
	if l := n.line(); !strings.HasPrefix(l, "* BYE Blocked (failed logins)") {
		t.Fatalf("a new connection after the block: %q, want the refusal at connect", l)
	}
	if !n.closed() {
		t.Fatal("the refused connection stays open")
	}

	// The earlier connection is still open: it answers a command that
	// needs no login.
	earlier.send("e1 CAPABILITY\r\n")
	if l := earlier.until("e1 "); !strings.HasPrefix(l, "e1 OK") {
		t.Fatalf("the connection opened before the block: %q", l)
	}
	earlier.send("e2 LOGIN alice@example.test alice-pass-1\r\n")
	if l := earlier.line(); !strings.HasPrefix(l, "* BYE Blocked (failed logins)") {
		t.Fatalf("a login on the earlier connection after the block: %q", l)
	}
	if got := h.be.logins.Load(); got != 3 {
		t.Fatalf("%d logins reached the backend, want the 3 wrong ones", got)
	}
}
