package smtpproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

type harness struct {
	t    *testing.T
	mta  *testMTA
	eng  *guard.Engine
	p    *Proxy
	addr string
	snap *snapshot.Snapshot
	logs *logBuffer // what the proxy logged
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const baseIPS = `services:
  smtp: { listen: ":25", backend: "127.0.0.1:1" }
  submission: { listen: ":587", backend: "127.0.0.1:1" }
intrusion_prevention:
  smtp: { failed_logins: 3, unknown_recipients: 3, relay_denials: 3, rset_count: 3, message_size: 64KB,
          tarpit_accounts: "trap@example.test", dnsbl: [bl.example.org] }
`

type fakeDNSBL map[netip.Addr]string

func (f fakeDNSBL) Listed(ctx context.Context, a netip.Addr, zones []string) (string, string) {
	for _, z := range zones {
		if f[a] == z {
			return z, "listed in test"
		}
	}
	return "", ""
}

// newHarness starts a test MTA, an engine configured by cfgYAML and a
// proxy in front of the MTA.
func newHarness(t *testing.T, cfgYAML string, mutate func(*Config), dnsbl DNSBL) *harness {
	t.Helper()
	h := &harness{t: t, mta: startMTA(t, true)}
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.snap = snap
	h.eng, err = guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.eng.Close() })
	cfg := Config{Service: service.SMTP, Hostname: "gw.example.test", Backend: h.mta.addr, BackendProxy: "v2",
		AllowInsecureAuth: true, Timeouts: Timeouts{Command: 5 * time.Second, Data: 5 * time.Second, Backend: 5 * time.Second},
		Loops: gwtest.Loops(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	env := func() Env {
		return Env{Policy: snap.Policy, DNSBLZones: []string{"bl.example.org"}, LocalDomains: snap.Guard.LocalDomains}
	}
	h.logs = &logBuffer{}
	h.p = New(cfg, h.eng, env, dnsbl, slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h.addr = gwtest.Serve(t, h.p)
	return h
}

// client is a raw SMTP client for exact assertions.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dial connects from the loopback source address src (e.g. "127.0.0.7").
func (h *harness) dial(src string) *client {
	h.t.Helper()
	c := gwtest.DialFrom(h.t, h.addr, src)
	return &client{t: h.t, c: c, r: bufio.NewReader(c)}
}

// read reads one reply and returns its code and full text.
func (c *client) read() (int, string) {
	c.t.Helper()
	var all []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(append(all, "EOF: "+err.Error()), "\n")
		}
		line = strings.TrimRight(line, "\r\n")
		all = append(all, line)
		if len(line) < 4 || line[3] == ' ' {
			code := 0
			fmt.Sscanf(line, "%d", &code)
			return code, strings.Join(all, "\n")
		}
	}
}

func (c *client) expect(code int) string {
	c.t.Helper()
	got, text := c.read()
	if got != code {
		c.t.Fatalf("want %d, got:\n%s", code, text)
	}
	return text
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// closed asserts the server closed the connection (after any last reply).
func (c *client) closed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.r.ReadString('\n'); err != nil {
			return
		}
	}
}

// waitGoroutines polls until the goroutine count is back to at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d > %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
