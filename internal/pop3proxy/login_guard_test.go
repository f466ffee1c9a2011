package pop3proxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
)

// countingBackend is a POP3 server offering SASL PLAIN that counts the
// logins reaching it and, while hold is set, keeps each waiting until hold
// is closed. The right password is alice-pass-1.
type countingBackend struct {
	addr   string
	logins atomic.Int32
	mu     sync.Mutex
	hold   chan struct{}
}

func startCountingBackend(t *testing.T) *countingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &countingBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, struct{}{})
			wg.Go(func() { defer c.Close(); b.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		b.mu.Lock()
		if b.hold != nil {
			select {
			case <-b.hold:
			default:
				close(b.hold)
			}
		}
		b.mu.Unlock()
		wg.Wait()
	})
	return b
}

func (b *countingBackend) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	hdr := make([]byte, 16+12) // PROXY v2, TCP over IPv4
	if _, err := io.ReadFull(r, hdr); err != nil {
		return
	}
	io.WriteString(c, "+OK ready\r\n")
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		switch {
		case strings.EqualFold(l, "CAPA"):
			io.WriteString(c, "+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n")
		case strings.HasPrefix(l, "AUTH PLAIN "):
			b.logins.Add(1)
			b.mu.Lock()
			hold := b.hold
			b.mu.Unlock()
			if hold != nil {
				<-hold
			}
			blob, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "AUTH PLAIN "))
			if parts := strings.Split(string(blob), "\x00"); len(parts) == 3 && parts[2] == "alice-pass-1" {
				io.WriteString(c, "+OK Logged in.\r\n")
			} else {
				io.WriteString(c, "-ERR [AUTH] Authentication failed.\r\n")
			}
		case strings.EqualFold(l, "QUIT"):
			io.WriteString(c, "+OK Bye\r\n")
			return
		default:
			io.WriteString(c, "-ERR Unknown command\r\n")
		}
	}
}

func (b *countingBackend) holdLogins() chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = make(chan struct{})
	return b.hold
}

func (b *countingBackend) waitLogins(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.logins.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins reached the backend, want %d", b.logins.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

const guardCfg = "services:\n  pop3: { listen: \":110\", backend: \"127.0.0.1:1\" }\nintrusion_prevention:\n  imap_pop3: { failed_logins: 5 }\n"

// TestBlockReachesOpenPOP3Connections: twenty connections opened before the
// block (close_all off): none of them gets a login to the backend after it,
// the right password included.
func TestBlockReachesOpenPOP3Connections(t *testing.T) {
	be := startCountingBackend(t)
	h := newHarnessIdle(t, guardCfg, be.addr, 5*time.Second)
	var cs []*client
	for range 20 {
		c := h.dial(t, "127.0.0.41")
		c.cmd("")
		cs = append(cs, c)
	}
	for i := range 5 {
		cs[i].cmd("USER alice@example.test")
		if l := cs[i].cmd(fmt.Sprintf("PASS wrong%d", i)); !strings.HasPrefix(l, "-ERR [AUTH]") {
			t.Fatalf("guess %d: %q", i, l)
		}
	}
	for i, c := range cs[5:] {
		c.cmd("USER alice@example.test")
		if l := c.cmd("PASS alice-pass-1"); !strings.HasPrefix(l, "-ERR [SYS/PERM] Blocked (failed logins)") {
			t.Fatalf("connection %d after the block: %q", i+5, l)
		}
		if l := c.cmd(""); l != "EOF" {
			t.Fatalf("connection %d stays open: %q", i+5, l)
		}
	}
	if n := be.logins.Load(); n != 5 {
		t.Fatalf("%d logins reached the backend, want 5", n)
	}
}

// TestConcurrentWrongPOP3Logins: ten wrong logins at once, failed_logins 5:
// exactly five reach the backend.
func TestConcurrentWrongPOP3Logins(t *testing.T) {
	be := startCountingBackend(t)
	h := newHarnessIdle(t, guardCfg, be.addr, 5*time.Second)
	release := be.holdLogins()
	answers := make(chan string, 10)
	var wg sync.WaitGroup
	for i := range 10 {
		c := h.dial(t, "127.0.0.42")
		c.cmd("")
		c.cmd("USER alice@example.test")
		wg.Go(func() { answers <- c.cmd(fmt.Sprintf("PASS wrong%d", i)) })
	}
	be.waitLogins(t, 5)
	close(release)
	wg.Wait()
	close(answers)
	failed, blocked := 0, 0
	for a := range answers {
		switch {
		case strings.HasPrefix(a, "-ERR [AUTH]"):
			failed++
		case strings.HasPrefix(a, "-ERR [SYS/PERM] Blocked"):
			blocked++
		default:
			t.Errorf("answer %q", a)
		}
	}
	if n := be.logins.Load(); n != 5 || failed != 5 || blocked != 5 {
		t.Fatalf("%d logins reached the backend, %d failed, %d blocked; want 5, 5, 5", n, failed, blocked)
	}
}

// TestParallelRightPOP3Logins: five right logins at once are at the backend
// together: none waits.
func TestParallelRightPOP3Logins(t *testing.T) {
	be := startCountingBackend(t)
	h := newHarnessIdle(t, guardCfg, be.addr, 5*time.Second)
	release := be.holdLogins()
	var wg sync.WaitGroup
	for i := range 5 {
		c := h.dial(t, "127.0.0.43")
		c.cmd("")
		c.cmd("USER alice@example.test")
		wg.Go(func() {
			if l := c.cmd("PASS alice-pass-1"); !strings.HasPrefix(l, "+OK") {
				t.Errorf("login %d: %q", i, l)
			}
		})
	}
	be.waitLogins(t, 5)
	close(release)
	wg.Wait()
}

// TestUnansweredLoginCounts: a login the backend took but never answered
// properly (Dovecot dropping a connection in its failure delay when its
// connection queue is full) counts as a failure: the backend may have
// checked the password, and the slot it held must not let one more guess
// through uncounted.
func TestUnansweredLoginCounts(t *testing.T) {
	be := scriptedBackend(t, "Hello? This is not POP3\r\n")
	h := newHarnessIdle(t, strings.Replace(guardCfg, "failed_logins: 5", "failed_logins: 1", 1), be, 5*time.Second)
	c := h.dial(t, "127.0.0.44")
	c.cmd("")
	c.cmd("USER alice@example.test")
	if l := c.cmd("PASS guess"); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Fatalf("answer %q", l)
	}
	if b, ok := h.eng.BlockOf(netip.MustParseAddr("127.0.0.44")); !ok || b.Reason != reason.Login {
		t.Fatalf("the unanswered attempt was not counted: %+v", b)
	}
}
