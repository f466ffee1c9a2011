package pop3proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestDovecotLoginsInARow logs in to the harness's real Dovecot POP3
// through the gateway, session after session, each leaving other bytes in
// the buffers the gateway reuses: a login with a command pipelined behind
// it (relayed to Dovecot after the login), a plain one, and one that
// leaves with a command cut short. Every session must see its own answers
// only.
func TestDovecotLoginsInARow(t *testing.T) {
	env := testenv.Backends(t)
	h := newHarnessIdle(t, cfg, env.POP3Proxy, 5*time.Second)
	pass := env.Users["alice@example.test"]
	for i := range 12 {
		c := h.dial(t, "127.0.0.1")
		if g := c.cmd(""); !strings.HasPrefix(g, "+OK") {
			t.Fatalf("session %d: greeting %q", i, g)
		}
		switch i % 3 {
		case 0: // pipelined behind the login: Dovecot answers it
			if l := c.cmd("USER alice@example.test"); !strings.HasPrefix(l, "+OK") {
				t.Fatalf("session %d: USER %q", i, l)
			}
			c.c.Write([]byte("PASS " + pass + "\r\nSTAT\r\n"))
			if l := c.cmd(""); !strings.HasPrefix(l, "+OK") {
				t.Fatalf("session %d: PASS %q", i, l)
			}
			if l := c.cmd(""); !strings.HasPrefix(l, "+OK ") {
				t.Fatalf("session %d: STAT %q", i, l)
			}
			if l := c.cmd("QUIT"); !strings.HasPrefix(l, "+OK") {
				t.Fatalf("session %d: QUIT %q", i, l)
			}
		case 1:
			if l := c.cmd("CAPA"); !strings.HasPrefix(l, "+OK") {
				t.Fatalf("session %d: CAPA %q", i, l)
			}
			for l := c.cmd(""); l != "."; l = c.cmd("") {
				if l == "EOF" {
					t.Fatalf("session %d: CAPA cut short", i)
				}
			}
			c.cmd("USER alice@example.test")
			if l := c.cmd("PASS " + pass); !strings.HasPrefix(l, "+OK") {
				t.Fatalf("session %d: PASS %q", i, l)
			}
			if l := c.cmd("QUIT"); !strings.HasPrefix(l, "+OK") {
				t.Fatalf("session %d: QUIT %q", i, l)
			}
		case 2: // leaves with a command half sent
			if l := c.cmd("NOOP"); l == "EOF" {
				t.Fatalf("session %d: NOOP %q", i, l)
			}
			c.c.Write([]byte("USER alice@exa"))
		}
		c.c.Close()
	}
}
