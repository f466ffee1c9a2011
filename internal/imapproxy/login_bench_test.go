package imapproxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/logline"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// dovecotGreeting is Dovecot 2.3's imap-login greeting with its default
// settings: the capabilities come with it.
const dovecotGreeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot (Debian) ready.\r\n"

// startFakeDovecot serves the login dialogue as Dovecot's imap-login and
// imap do it, over a PROXY v2 header: greeting, AUTHENTICATE PLAIN (any
// password), then LOGOUT. It is cheap, so that a benchmark measures the
// proxy.
func startFakeDovecot(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go fakeDovecotSession(c)
		}
	}()
	tb.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func fakeDovecotSession(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if !skipProxyV2(r) {
		return
	}
	if _, err := io.WriteString(c, dovecotGreeting); err != nil {
		return
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(l, "\r\n"), " ")
		switch {
		case strings.HasPrefix(rest, "AUTHENTICATE PLAIN "):
			io.WriteString(c, tag+" OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+] Logged in\r\n")
		case rest == "LOGOUT":
			io.WriteString(c, "* BYE Logging out\r\n"+tag+" OK Logout completed (0.001 + 0.000 secs).\r\n")
			return
		default:
			io.WriteString(c, tag+" BAD Error in IMAP command received by server.\r\n")
		}
	}
}

// skipProxyV2 reads a PROXY v2 header from r; false when there is none.
func skipProxyV2(r *bufio.Reader) bool {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || string(hdr[:12]) != "\r\n\r\n\x00\r\nQUIT\n" {
		return false
	}
	_, err := r.Discard(int(binary.BigEndian.Uint16(hdr[14:])))
	return err == nil
}

// acceptor adapts a netlisten.Listener, as the gateway does.
type acceptor struct{ *netlisten.Listener }

func (a acceptor) Accept() (relay.Conn, error) { return a.Listener.Accept() }

// Dispatch starts the handlers on the listener's goroutines, as postern
// serve's acceptor does.
func (a acceptor) Dispatch(start func(relay.Conn)) error {
	return a.ServeUntil(nil, func(c *netlisten.Conn) { start(c) })
}

// startBenchProxy runs the imap service as postern serve wires it, with
// bench/imap's configuration: the real listener, the engine with the
// IMAP/POP3 triggers on, log lines at info to a file.
func startBenchProxy(tb testing.TB, backend string) string {
	return startBenchProxyOn(tb, backend, nil)
}

// startBenchProxyOn is startBenchProxy with the sessions on loops (nil:
// goroutines).
func startBenchProxyOn(tb testing.TB, backend string, loops *evloop.Group) string {
	return startProxyFailing(tb, backend, loops, 5)
}

// startProxyFailing is startBenchProxyOn blocking an address after
// failedLogins failed logins.
func startProxyFailing(tb testing.TB, backend string, loops *evloop.Group, failedLogins int) string {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	cfgYAML := fmt.Sprintf(`services:
  imap: { listen: ":143", backend: "127.0.0.1:1", plaintext_login: "127.0.0.0/8", max_connections_per_address: 1000000 }
intrusion_prevention:
  block_minutes: 240
  imap_pop3: { connections_per_minute: 100000000, failed_logins: %d }
`, failedLogins)
	if err := os.WriteFile(path, []byte(cfgYAML), 0o644); err != nil {
		tb.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { logf.Close() })
	log := slog.New(logline.New(logf, logline.Options{})) // the gateway's handler
	cfg := Config{Service: service.IMAP, Backend: relay.Dialer{Addr: backend, Proxy: "v2", Limit: relay.NewBackendLimit(nil, nil)},
		PlaintextLogin: func(a netip.Addr) bool { return a.IsLoopback() }, Loops: loops}
	p := New(cfg, eng, func() *policy.Policy { return snap.Policy }, log)
	ln, err := netlisten.Listen(context.Background(), netlisten.Config{Listen: "127.0.0.1:0", MaxPerAddr: 1000000})
	if err != nil {
		tb.Fatal(err)
	}
	ln.SetOwnedSockets(loops != nil) // as the gateway sets it
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ctx, acceptor{ln}, time.Second) }()
	tb.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// benchLogin is one client session as bench/imap's login scenario runs
// it: connect, greeting, LOGIN, LOGOUT, the connection closed.
func benchLogin(tb testing.TB, addr string, buf []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	expect := func(prefix string) {
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), prefix) {
			tb.Fatalf("read %q, %v; want %q", buf[:n], err, prefix)
		}
	}
	expect("* OK [CAPABILITY ")
	io.WriteString(c, "a LOGIN alice@example.test alice-pass-1\r\n")
	expect("a OK ")
	io.WriteString(c, "b LOGOUT\r\n")
	// The BYE and the tagged answer, then the end.
	if _, err := io.ReadAll(c); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkLogin is one IMAP login through the proxy to a Dovecot-like
// backend, one at a time (client, proxy and backend in this process: the
// profile's postern share is what to read).
func BenchmarkLogin(b *testing.B) {
	runLogins(b, startBenchProxy(b, startFakeDovecot(b)))
}

// runLogins runs the benchmark's logins against addr, with the process's
// CPU time per login.
func runLogins(b *testing.B, addr string) {
	buf := make([]byte, 4096)
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		benchLogin(b, addr, buf)
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkLoginEventLoops is BenchmarkLogin with the sessions on event
// loops (event_loops: true).
func BenchmarkLoginEventLoops(b *testing.B) {
	loops, err := evloop.Start(0, nil)
	if err != nil {
		b.Skip(err)
	}
	addr := startBenchProxyOn(b, startFakeDovecot(b), loops)
	b.Cleanup(loops.Close) // after the proxy's cleanup
	runLogins(b, addr)
}

// cpuTime is the process's CPU time (user and system) so far: what a
// login costs whatever the machine's load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestLoginAllocations bounds the memory a login allocates, counted
// across the process (client, proxy and backend of the benchmark): the
// session's buffers (8 KiB to read the client, 4 KiB to write to it, 4 KiB
// to read the backend) are reused, not allocated per login. Before they
// were, a login allocated about 32 KiB here; now about 14 KiB.
func TestLoginAllocations(t *testing.T) {
	addr := startBenchProxy(t, startFakeDovecot(t))
	buf := make([]byte, 4096)
	for range 20 { // warm the pools
		benchLogin(t, addr, buf)
	}
	const n = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		benchLogin(t, addr, buf)
	}
	runtime.ReadMemStats(&after)
	perLogin := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated a login", perLogin)
	if perLogin > 22<<10 {
		t.Errorf("a login allocates %d bytes, want at most %d: are the session buffers reused?", perLogin, 22<<10)
	}
}
