package imapproxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestDovecotLoginsInARow logs in to the harness's real Dovecot through
// the gateway as postern serve wires it, session after session, each
// leaving other bytes in the buffers the gateway reuses: a login with
// commands pipelined behind it (relayed to Dovecot after the login), a
// plain one, and one that leaves with a command cut short. Every session
// must see its own answers only.
func TestDovecotLoginsInARow(t *testing.T) {
	env := testenv.Backends(t)
	addr := startBenchProxy(t, env.IMAPProxy)
	pass := env.Users["alice@example.test"]
	for i := range 12 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		line := func() string {
			l, err := r.ReadString('\n')
			if err != nil {
				return "EOF: " + err.Error()
			}
			return strings.TrimRight(l, "\r\n")
		}
		until := func(prefix string) string {
			for range 50 {
				if l := line(); strings.HasPrefix(l, prefix) || strings.HasPrefix(l, "EOF") {
					return l
				}
			}
			return ""
		}
		if g := line(); !strings.HasPrefix(g, "* OK [CAPABILITY ") {
			t.Fatalf("session %d: greeting %q", i, g)
		}
		login := "a LOGIN alice@example.test \"" + pass + "\"\r\n"
		switch i % 3 {
		case 0: // pipelined behind the login: Dovecot answers them
			c.Write([]byte(login + "b SELECT INBOX\r\nc LOGOUT\r\n"))
			if l := until("a "); !strings.HasPrefix(l, "a OK") {
				t.Fatalf("session %d: login %q", i, l)
			}
			if l := until("b "); !strings.HasPrefix(l, "b OK") {
				t.Fatalf("session %d: SELECT %q", i, l)
			}
			if l := until("c "); !strings.HasPrefix(l, "c OK") {
				t.Fatalf("session %d: LOGOUT %q", i, l)
			}
		case 1:
			c.Write([]byte("n NOOP\r\n" + login))
			if l := until("n "); !strings.HasPrefix(l, "n OK") {
				t.Fatalf("session %d: NOOP %q", i, l)
			}
			if l := until("a "); !strings.HasPrefix(l, "a OK") {
				t.Fatalf("session %d: login %q", i, l)
			}
			c.Write([]byte("z LOGOUT\r\n"))
			if l := until("z "); !strings.HasPrefix(l, "z OK") {
				t.Fatalf("session %d: LOGOUT %q", i, l)
			}
		case 2: // leaves with a command half sent and a literal announced
			c.Write([]byte("x NOOP\r\ny LOGIN {5}\r\n"))
			if l := until("x "); !strings.HasPrefix(l, "x OK") {
				t.Fatalf("session %d: NOOP %q", i, l)
			}
		}
		c.Close()
	}
}
