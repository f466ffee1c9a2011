package pop3proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/pop3mem"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

const testMessage = "From: bob@example.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"

type harness struct {
	be   *pop3mem.Server
	eng  *guard.Engine
	addr string
	logs *logBuffer // what the proxy logged
}

// logBuffer collects log output; safe for the proxy's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newHarness(t *testing.T, cfgYAML string) *harness {
	t.Helper()
	return newHarnessIdle(t, cfgYAML, "", 5*time.Second)
}

// newHarnessIdle is newHarness with another backend (backend "": the
// in-memory one) and pre-login idle timeout.
func newHarnessIdle(t *testing.T, cfgYAML, backend string, idle time.Duration) *harness {
	t.Helper()
	be := pop3mem.New(pop3mem.Options{RequireProxyHeader: true, AllowPlaintextAuth: true})
	be.AddUser("alice@example.test", "alice-pass-1")
	if err := be.AddMessage("alice@example.test", []byte(testMessage)); err != nil {
		t.Fatal(err)
	}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(bl)
	t.Cleanup(func() { be.Close() })
	path := filepath.Join(t.TempDir(), "postern.yaml")
	os.WriteFile(path, []byte(cfgYAML), 0o644)
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	if backend == "" {
		backend = bl.Addr().String()
	}
	logs := &logBuffer{}
	p := New(Config{Service: service.POP3, Backend: relay.Dialer{Addr: backend, Proxy: "v2"},
		PlaintextLogin: func(netip.Addr) bool { return true }, PreAuthIdle: idle, Loops: gwtest.Loops(t)},
		eng, func() *policy.Policy { return snap.Policy }, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	addr := gwtest.Serve(t, p)
	return &harness{be: be, eng: eng, addr: addr, logs: logs}
}

type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (h *harness) dial(t *testing.T, src string) *client {
	c := gwtest.DialFrom(t, h.addr, src)
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) cmd(line string) string {
	if line != "" {
		c.c.Write([]byte(line + "\r\n"))
	}
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "EOF"
	}
	return strings.TrimRight(l, "\r\n")
}

const cfg = "services:\n  pop3: { listen: \":110\", backend: \"127.0.0.1:1\" }\nintrusion_prevention:\n  imap_pop3: { failed_logins: 3 }\n"

func TestLoginAndRetrieve(t *testing.T) {
	h := newHarness(t, cfg)
	for _, login := range [][]string{
		{"USER alice@example.test", "PASS alice-pass-1"},
		{"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pass-1"))},
	} {
		c := h.dial(t, "127.0.0.2")
		if g := c.cmd(""); !strings.HasPrefix(g, "+OK") {
			t.Fatalf("greeting %q", g)
		}
		var last string
		for _, l := range login {
			last = c.cmd(l)
		}
		if !strings.HasPrefix(last, "+OK") {
			t.Fatalf("login: %q", last)
		}
		if r := c.cmd("RETR 1"); !strings.HasPrefix(r, "+OK") {
			t.Fatalf("RETR: %q", r)
		}
		var body strings.Builder
		for {
			l, _ := c.r.ReadString('\n')
			if l == ".\r\n" || l == "" {
				break
			}
			body.WriteString(strings.TrimPrefix(l, "."))
		}
		if body.String() != testMessage {
			t.Fatalf("message changed: %q", body.String())
		}
		c.cmd("QUIT")
	}
	recs := h.be.Logins()
	if len(recs) == 0 || recs[0].Client.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("backend must see the client address: %+v", recs)
	}
}

func TestFailuresBlockAndRestriction(t *testing.T) {
	h := newHarness(t, cfg+"login_restrictions: [ \"*=127.0.0.0/24\" ]\n")
	c := h.dial(t, "127.0.1.5")
	c.cmd("")
	c.cmd("USER alice@example.test")
	refused := c.cmd("PASS alice-pass-1")
	c2 := h.dial(t, "127.0.0.5")
	c2.cmd("")
	c2.cmd("USER alice@example.test")
	wrong := c2.cmd("PASS nope")
	if refused != wrong || !strings.HasPrefix(wrong, "-ERR") {
		t.Fatalf("a refused login must read like a wrong password: %q %q", refused, wrong)
	}
	for _, p := range []string{"nope2", "nope3"} {
		c2.cmd("USER alice@example.test")
		c2.cmd("PASS " + p)
	}
	if l := c2.cmd(""); !strings.Contains(l, "Blocked (failed logins)") {
		t.Fatalf("after the threshold: %q", l)
	}
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.5")); b.Reason != reason.Login {
		t.Fatalf("block: %+v", b)
	}
	c3 := h.dial(t, "127.0.0.5")
	if l := c3.cmd(""); !strings.HasPrefix(l, "-ERR [SYS/PERM] Blocked") {
		t.Fatalf("refused at connect: %q", l)
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, cfg)
	c := h.dial(t, "127.0.0.6")
	c.cmd("")
	if l := c.cmd(strings.Repeat("x", 5000)); !strings.HasPrefix(l, "-ERR Line too long") {
		t.Fatalf("long line: %q", l)
	}
	if l := c.cmd("STAT"); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("STAT before login: %q", l)
	}
	if l := c.cmd("PASS x"); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("PASS without USER: %q", l)
	}
	if l := c.cmd("CAPA"); l != "+OK" {
		t.Fatalf("CAPA: %q", l)
	}
}

// Found by the end-to-end suite: commands sent before the greeting were
// logged as an early talker only when they had arrived together with the
// connection's first bytes (a read deadline already past never reads).
// The client's bytes race with postern's backend round trips, so up to five
// connections try; before the fix none was ever noticed.
func TestEarlyTalkerLogged(t *testing.T) {
	h := newHarness(t, cfg)
	for range 5 {
		c := h.dial(t, "127.0.0.15")
		c.c.Write([]byte("QUIT\r\n"))
		if l := c.cmd(""); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("greeting: %q", l)
		}
		if l := c.cmd(""); l != "+OK Logging out." {
			t.Fatalf("QUIT: %q", l)
		}
		if strings.Contains(h.logs.String(), "early talker") {
			return
		}
	}
	t.Fatalf("no early talker logged:\n%s", h.logs.String())
}
