package imapproxy

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

const testMessage = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: hello imap\r\n\r\nThe body.\r\n"

// testIMAP is an in-process IMAP server (go-imap v2 imapmemserver) behind
// a PROXY v2 listener, standing in for Dovecot.
type testIMAP struct {
	addr string
	mu   sync.Mutex
	seen []netip.Addr
	// logins counts the login attempts that reached the server.
	logins atomic.Int32
}

func startIMAP(t *testing.T) *testIMAP {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice@example.test", "alice-pass-1")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append("INBOX", literalOf(testMessage), &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	b := &testIMAP{}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			ap, _ := netip.ParseAddrPort(c.NetConn().RemoteAddr().String())
			b.mu.Lock()
			b.seen = append(b.seen, ap.Addr())
			b.mu.Unlock()
			return counting(mem.NewSession(), b), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapSASLIR: {}, imap.CapLiteralPlus: {}, imap.CapIdle: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }, ReadHeaderTimeout: 5 * time.Second}
	b.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(pl) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return b
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...interface{}) {}

type memLiteral struct{ *strings.Reader }

func (l memLiteral) Size() int64 { return int64(l.Len()) }

func literalOf(s string) imap.LiteralReader { return memLiteral{strings.NewReader(s)} }

func (b *testIMAP) clients() []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]netip.Addr(nil), b.seen...)
}

type harness struct {
	t    *testing.T
	be   *testIMAP
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

const baseCfg = `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
intrusion_prevention:
  imap_pop3: { failed_logins: 3 }
`

func newHarness(t *testing.T, cfgYAML string, mutate func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, be: startIMAP(t)}
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.eng, err = guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.eng.Close() })
	cfg := Config{Service: service.IMAP, Backend: relay.Dialer{Addr: h.be.addr, Proxy: "v2"}, PlaintextLogin: func(netip.Addr) bool { return true },
		PreAuthIdle: 5 * time.Second, BackendTimeout: 5 * time.Second, Loops: gwtest.Loops(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	h.logs = &logBuffer{}
	p := New(cfg, h.eng, func() *policy.Policy { return snap.Policy }, slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h.addr = gwtest.Serve(t, p)
	return h
}

// client is a raw IMAP client for exact assertions.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (h *harness) dial(src string) *client {
	h.t.Helper()
	c := gwtest.DialFrom(h.t, h.addr, src)
	return &client{t: h.t, c: c, r: bufio.NewReader(c)}
}

func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "EOF: " + err.Error()
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// until reads lines until one starts with prefix and returns it.
func (c *client) until(prefix string) string {
	c.t.Helper()
	for range 100 {
		l := c.line()
		if strings.HasPrefix(l, prefix) || strings.HasPrefix(l, "EOF") {
			return l
		}
	}
	c.t.Fatalf("no line starting with %q", prefix)
	return ""
}

func (c *client) closed() bool {
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 100 {
		if _, err := c.r.ReadString('\n'); err != nil {
			return true
		}
	}
	return false
}
