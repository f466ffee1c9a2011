package imapproxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

// countingSession counts the logins that reach the test server and holds
// them while the server's hold channel is set. It keeps every optional
// interface of the in-memory session (NAMESPACE, MOVE).
type countingSession struct {
	imapserver.SessionIMAP4rev2
	b *testIMAP
}

func counting(s imapserver.Session, b *testIMAP) imapserver.Session {
	rev2, ok := s.(imapserver.SessionIMAP4rev2)
	if !ok {
		return s
	}
	return countingSession{rev2, b}
}

func (s countingSession) Login(user, pass string) error {
	s.b.logins.Add(1)
	s.b.mu.Lock()
	hold := s.b.hold
	s.b.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return s.SessionIMAP4rev2.Login(user, pass)
}

func (b *testIMAP) holdLogins() chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = make(chan struct{})
	return b.hold
}

// waitLogins polls until n logins have reached the test server.
func (b *testIMAP) waitLogins(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.logins.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins reached the server, want %d", b.logins.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

const guardCfg = `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
intrusion_prevention:
  imap_pop3: { failed_logins: 5 }
`

// TestBlockReachesOpenIMAPConnections: twenty connections opened before the
// block (close_all off): after the fifth failure none of them gets a login
// to the backend, the right password included.
func TestBlockReachesOpenIMAPConnections(t *testing.T) {
	h := newHarness(t, guardCfg, nil)
	var cs []*client
	for range 20 {
		c := h.dial("127.0.0.31")
		c.line()
		cs = append(cs, c)
	}
	for i := range 5 {
		cs[i].send(fmt.Sprintf("a%d LOGIN alice@example.test wrong%d\r\n", i, i))
		if l := cs[i].until(fmt.Sprintf("a%d ", i)); !strings.HasPrefix(l, fmt.Sprintf("a%d NO", i)) {
			t.Fatalf("guess %d: %q", i, l)
		}
	}
	for i, c := range cs[5:] {
		c.send("b1 LOGIN alice@example.test alice-pass-1\r\n")
		if l := c.line(); !strings.HasPrefix(l, "* BYE Blocked (failed logins)") {
			t.Fatalf("connection %d after the block: %q", i+5, l)
		}
		if !c.closed() {
			t.Fatalf("connection %d stays open after a refused attempt", i+5)
		}
	}
	if n := h.be.logins.Load(); n != 5 {
		t.Fatalf("%d logins reached the backend, want 5", n)
	}
}

// TestConcurrentWrongIMAPLogins: ten wrong logins at once on ten
// connections, failed_logins 5: exactly five reach the backend.
func TestConcurrentWrongIMAPLogins(t *testing.T) {
	h := newHarness(t, guardCfg, nil)
	release := h.be.holdLogins()
	var wg sync.WaitGroup
	answers := make(chan string, 10)
	for i := range 10 {
		c := h.dial("127.0.0.32")
		c.line()
		wg.Go(func() {
			c.send(fmt.Sprintf("a LOGIN alice@example.test wrong%d\r\n", i))
			answers <- c.line()
		})
	}
	h.be.waitLogins(t, 5)
	close(release)
	wg.Wait()
	close(answers)
	no, bye := 0, 0
	for a := range answers {
		switch {
		case strings.HasPrefix(a, "a NO"):
			no++
		case strings.HasPrefix(a, "* BYE Blocked"):
			bye++
		default:
			t.Errorf("answer %q", a)
		}
	}
	if n := h.be.logins.Load(); n != 5 || no != 5 || bye != 5 {
		t.Fatalf("%d logins reached the backend, %d NO, %d BYE; want 5, 5, 5", n, no, bye)
	}
}

// TestParallelRightIMAPLogins: five right logins at once with
// failed_logins 5 are all at the backend together: none waits.
func TestParallelRightIMAPLogins(t *testing.T) {
	h := newHarness(t, guardCfg, nil)
	release := h.be.holdLogins()
	var wg sync.WaitGroup
	for i := range 5 {
		c := h.dial("127.0.0.33")
		c.line()
		wg.Go(func() {
			c.send("a LOGIN alice@example.test alice-pass-1\r\n")
			if l := c.until("a "); !strings.HasPrefix(l, "a OK") {
				t.Errorf("login %d: %q", i, l)
			}
		})
	}
	h.be.waitLogins(t, 5) // all five held in the backend at once
	close(release)
	wg.Wait()
}
