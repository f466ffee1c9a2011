package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// session is a spliced session: client ↔ (proxy side a | proxy side b) ↔ backend.
type session struct {
	client, backend net.Conn
	done            chan error
	up, down        int64
}

func splice(t *testing.T, buffered []byte) *session {
	t.Helper()
	client, pa := tcpPair(t)
	pb, backend := tcpPair(t)
	s := &session{client: client, backend: backend, done: make(chan error, 1)}
	go func() {
		var err error
		s.up, s.down, err = Splice(context.Background(), pa, pb, buffered)
		s.done <- err
	}()
	return s
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestSpliceMovesBytesBothWays(t *testing.T) {
	s := splice(t, []byte("a1 NOOP\r\n"))
	if got := readN(t, s.backend, 9); string(got) != "a1 NOOP\r\n" {
		t.Fatalf("buffered bytes: %q", got)
	}
	exchangeBothWays(t, s.client, s.backend)
	// The client leaving ends the session and closes the backend side.
	s.client.Close()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("Splice: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Splice did not end when the client left")
	}
	if s.up != 9+3<<20+200*2 || s.down != 8<<20+200*2 {
		t.Errorf("counted up %d down %d", s.up, s.down)
	}
	s.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := s.backend.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("backend side after the client left: %d, %v", n, err)
	}
}

// exchangeBothWays checks a relayed pair: a large transfer each way,
// concurrently, arrives intact, and so do 200 small exchanges.
func exchangeBothWays(t *testing.T, client, backend net.Conn) {
	t.Helper()
	big := make([]byte, 8<<20)
	rand.Read(big)
	errc := make(chan error, 2)
	go func() { _, err := backend.Write(big); errc <- err }()
	go func() { _, err := client.Write(big[:3<<20]); errc <- err }()
	if got := readN(t, client, len(big)); !bytes.Equal(got, big) {
		t.Fatal("download corrupted")
	}
	if got := readN(t, backend, 3<<20); !bytes.Equal(got, big[:3<<20]) {
		t.Fatal("upload corrupted")
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		msg := []byte{byte(i), '\n'}
		client.Write(msg)
		if got := readN(t, backend, 2); !bytes.Equal(got, msg) {
			t.Fatalf("exchange %d: %q", i, got)
		}
		backend.Write(msg)
		if got := readN(t, client, 2); !bytes.Equal(got, msg) {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
}

func TestSpliceEndsWithContext(t *testing.T) {
	client, pa := tcpPair(t)
	pb, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Splice(ctx, pa, pb, nil); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not end with its context")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client after cancel: %v", err)
	}
}

// Idle spliced sessions hold their sockets and nothing else: no splice
// pipes (two descriptors each) while no bytes move.
func TestIdleSessionsHoldNoPipes(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts /proc/self/fd")
	}
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	const n = 40
	for range n {
		s := splice(t, nil)
		// Some traffic first, so each direction has spliced once.
		s.client.Write([]byte("x"))
		readN(t, s.backend, 1)
		s.backend.Write([]byte("y"))
		readN(t, s.client, 1)
	}
	// 4 sockets per session (both ends of two connections); Go keeps a
	// few pipes pooled for reuse, never one per idle direction.
	// Pooled pipes the pool dropped (it drops some on purpose under the
	// race detector) are closed by their finalizers after a GC.
	limit := 4*n + 20
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		got := fds() - before
		if got <= limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors for %d idle sessions, want at most %d (4 sockets each and a few pooled pipes)", got, n, limit)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// chanAcceptor hands Serve connections from a channel.
type chanAcceptor struct {
	conns  chan net.Conn
	closed chan struct{}
}

func (a *chanAcceptor) Accept() (Conn, error) {
	select {
	case c := <-a.conns:
		return plainConn{c}, nil
	case <-a.closed:
		return nil, net.ErrClosed
	}
}

// plainConn is a test's connection as a Conn, without TLS.
type plainConn struct{ net.Conn }

func (c plainConn) ClientAddr() netip.AddrPort    { return c.RemoteAddr().(*net.TCPAddr).AddrPort() }
func (c plainConn) LocalAddrPort() netip.AddrPort { return c.LocalAddr().(*net.TCPAddr).AddrPort() }
func (plainConn) Handshake(time.Duration) error   { return errors.New("no TLS") }
func (plainConn) StartTLS(*tls.Config, time.Duration) error {
	return errors.New("no TLS")
}

func (a *chanAcceptor) Close() error {
	select {
	case <-a.closed:
	default:
		close(a.closed)
	}
	return nil
}

// A handler that hands its session off returns at once; the spliced
// session still counts as live, still gets drained, and Serve waits for it.
func TestHandoffIsTrackedAndDrained(t *testing.T) {
	var conns Conns
	ln := &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{}, 1)
	ended := make(chan struct{})
	var backend net.Conn
	served := make(chan error, 1)
	go func() {
		served <- conns.Serve(ctx, ln, 100*time.Millisecond, func(ctx context.Context, c Conn) {
			pb, be := tcpPair(t)
			backend = be
			conns.Handoff(ctx, c, pb, nil, func() { close(ended) })
			returned <- struct{}{}
		})
	}()
	client, pa := tcpPair(t)
	ln.conns <- pa
	<-returned
	client.Write([]byte("ping"))
	if got := readN(t, backend, 4); string(got) != "ping" {
		t.Fatalf("backend read %q", got)
	}
	// The handler's connection stops counting once the handler has
	// returned (just after it said so); the session counts on.
	for deadline := time.Now().Add(5 * time.Second); conns.Live() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("Live = %d with one handed-off session", conns.Live())
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	cancel() // stop: the session outlives the drain time and is closed
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	select {
	case <-ended:
	default:
		t.Fatal("Serve returned before the handed-off session ended")
	}
	if n := conns.Live(); n != 0 {
		t.Fatalf("Live = %d after the drain", n)
	}
}

type tcpAcc struct{ net.Listener }

func (a tcpAcc) Accept() (Conn, error) {
	c, err := a.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// A handler that panics closes its own connection only: the gateway goes
// on serving, and the panic is counted and logged once.
func TestPanickingHandlerClosesItsConnectionOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var mu sync.Mutex
	conns := &Conns{Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- conns.Serve(ctx, tcpAcc{ln}, time.Second, func(ctx context.Context, c Conn) {
			buf := make([]byte, 1)
			if _, err := c.Read(buf); err != nil {
				return
			}
			if buf[0] == '!' {
				panic("handler bug: boom")
			}
			c.Write([]byte("ok"))
			c.Close() // the gateway's handlers close their connections
		})
	}()
	ask := func(b byte) string {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{b})
		out, _ := io.ReadAll(c)
		return string(out)
	}
	if got := ask('!'); got != "" {
		t.Fatalf("a panicking handler answered %q", got)
	}
	if got := ask('x'); got != "ok" {
		t.Fatalf("after a panic the next connection got %q", got)
	}
	if n := conns.Panics(); n != 1 {
		t.Fatalf("panics counted: %d", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if l := logs.String(); !strings.Contains(l, "panicked") || !strings.Contains(l, "handler bug: boom") || strings.Count(l, "panicked") != 1 {
		t.Fatalf("log: %s", l)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A server whose acceptor stops (handed over after a reload) keeps its
// sessions: they are not drained until the gateway itself stops, and
// Serve returns when the last one ends.
func TestHandedOverServerKeepsItsSessions(t *testing.T) {
	var conns Conns
	ln := &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- conns.Serve(ctx, ln, time.Millisecond, func(ctx context.Context, c Conn) {
			defer c.Close()
			<-release
			c.Write([]byte("still here"))
		})
	}()
	client, pa := tcpPair(t)
	ln.conns <- pa
	ln.Close() // hand-over: no more connections for this server
	// The session goes on although the drain time (1 ms) has long passed.
	select {
	case <-served:
		t.Fatal("Serve returned while its session was live")
	case <-time.After(50 * time.Millisecond):
	}
	if conns.Live() != 1 {
		t.Fatalf("Live = %d, want the session", conns.Live())
	}
	close(release)
	if got := readN(t, client, 10); string(got) != "still here" {
		t.Fatalf("client read %q", got)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its last session")
	}
}

// DrainContext ends drain after its parent, not before.
func TestDrainContext(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	dctx, cancel := DrainContext(parent, 20*time.Millisecond)
	defer cancel()
	select {
	case <-dctx.Done():
		t.Fatal("drain context ended while its parent lives")
	case <-time.After(30 * time.Millisecond):
	}
	stop()
	begin := time.Now()
	select {
	case <-dctx.Done():
		if d := time.Since(begin); d < 15*time.Millisecond {
			t.Errorf("drain context ended %v after its parent, want about 20ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain context did not end after the drain time")
	}
}

// Serve closes the sessions marked to end with its context as soon as
// it ends, without waiting for the drain.
func TestServeEndsMarkedSessions(t *testing.T) {
	var conns Conns
	ln := &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	readErr := make(chan error, 1)
	served := make(chan error, 1)
	go func() {
		served <- conns.Serve(ctx, ln, time.Minute, func(ctx context.Context, c Conn) {
			if !conns.endsWithCtx(c) {
				readErr <- errors.New("not tracked")
				return
			}
			_, err := c.Read(make([]byte, 1))
			readErr <- err
		})
	}()
	client, pa := tcpPair(t)
	defer client.Close()
	ln.conns <- pa
	for deadline := time.Now().Add(5 * time.Second); conns.Live() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("Live = %d", conns.Live())
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	cancel()
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the marked session's read: %v, want closed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the marked session was not closed when the context ended (the drain is a minute)")
	}
	<-served
}
