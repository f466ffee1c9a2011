package netlisten

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 5 * time.Second

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

// waitLog polls the log until it contains want.
func (b *logBuffer) waitLog(t *testing.T, want string) {
	t.Helper()
	waitFor(t, "log containing "+want, func() bool { return strings.Contains(b.String(), want) })
}

// waitFor polls cond until it holds or the test timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not a wait for state
	}
}

// server is a listener under test with a goroutine feeding accepted
// connections to a channel until Accept fails.
type server struct {
	*Listener
	conns   chan *Conn
	done    chan struct{} // closed when Accept has failed
	doneErr error         // Accept's final error, set before done is closed
	logs    *logBuffer
}

func trust(addrs ...string) func(netip.Addr) bool {
	set := map[netip.Addr]bool{}
	for _, a := range addrs {
		set[netip.MustParseAddr(a)] = true
	}
	return func(a netip.Addr) bool { return set[a] }
}

// start listens on 127.0.0.1 with cfg and accepts in the background. The
// listener is shut down and every accepted connection closed at cleanup.
func start(t *testing.T, cfg Config) *server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := Listen(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s := &server{Listener: l, conns: make(chan *Conn, 100), done: make(chan struct{}), logs: logs}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				s.doneErr = err
				close(s.done)
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l.Shutdown(ctx)
		<-s.done
		close(s.conns)
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

// accept returns the next accepted connection.
func (s *server) accept(t *testing.T) *Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(testTimeout):
		t.Fatal("no connection accepted")
		return nil
	}
}

// noAccept checks that no connection is waiting to be taken.
func (s *server) noAccept(t *testing.T) {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Fatalf("unexpected connection from %v", c.ClientAddr())
	default:
	}
}

// dial connects to the server from the loopback address src.
func dial(t *testing.T, s *server, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: testTimeout}
	c, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// proxyHeader returns a PROXY header of the given version for src → dst.
func proxyHeader(t *testing.T, version byte, src, dst string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version,
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	var b bytes.Buffer
	if _, err := h.WriteTo(&b); err != nil {
		t.Fatalf("formatting PROXY v%d header: %v", version, err)
	}
	return b.Bytes()
}

// readLine reads one line with a deadline.
func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	defer c.SetReadDeadline(time.Time{})
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading a line (got %q): %v", line, err)
	}
	return line
}

// writeAll writes b or fails the test.
func writeAll(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectClosed checks that the server closes c without sending anything.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("read %q, want the connection closed", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
}
