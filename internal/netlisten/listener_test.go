package netlisten

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestListenErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]Config{
		"no address":          {},
		"bad address":         {Listen: "127.0.0.1:notaport"},
		"negative timeout":    {Listen: "127.0.0.1:0", ProxyHeaderTimeout: -time.Second},
		"negative per-addr":   {Listen: "127.0.0.1:0", MaxPerAddr: -1},
		"negative max":        {Listen: "127.0.0.1:0", MaxConns: -1},
		"TLS without a cert":  {Listen: "127.0.0.1:0", TLS: &tls.Config{}},
		"address not on host": {Listen: "192.0.2.1:0"},
	} {
		if l, err := Listen(ctx, cfg); err == nil {
			l.Close()
			t.Errorf("%s: Listen succeeded", name)
		} else if !strings.HasPrefix(err.Error(), "netlisten: ") {
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
}

func TestShutdownIdle(t *testing.T) {
	s := start(t, Config{})
	n, err := s.Shutdown(context.Background())
	if n != 0 || err != nil {
		t.Fatalf("Shutdown = %d, %v; want 0, nil", n, err)
	}
	if _, err := s.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Shutdown = %v, want net.ErrClosed", err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("dial after Shutdown succeeded")
	}
	if n, err := s.Shutdown(context.Background()); n != 0 || err != nil {
		t.Errorf("second Shutdown = %d, %v", n, err)
	}
}

func TestShutdownDrain(t *testing.T) {
	s := start(t, Config{})
	ca := dial(t, s, "127.0.0.12")
	a := s.accept(t)
	cb := dial(t, s, "127.0.0.13")
	b := s.accept(t)

	// a's session ends when its client says QUIT; b's never does.
	aDone := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(a, make([]byte, len("QUIT\r\n")))
		a.Write([]byte("221 bye\r\n"))
		a.Close()
		aDone <- err
	}()
	bDone := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 1))
		bDone <- err
	}()

	type result struct {
		n   int
		err error
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res := make(chan result, 1)
	go func() {
		n, err := s.Shutdown(ctx)
		res <- result{n, err}
	}()

	// Shutdown stops accepting first.
	select {
	case <-s.done:
		if !errors.Is(s.doneErr, net.ErrClosed) {
			t.Errorf("Accept during Shutdown = %v, want net.ErrClosed", s.doneErr)
		}
	case <-time.After(testTimeout):
		t.Fatal("Accept still running during Shutdown")
	}

	// a finishes within the context: not forced.
	writeAll(t, ca, []byte("QUIT\r\n"))
	if got := readLine(t, ca); got != "221 bye\r\n" {
		t.Errorf("client a read %q", got)
	}
	if err := <-aDone; err != nil {
		t.Errorf("session a: %v", err)
	}

	// b lingers: closed at the deadline and counted.
	var r result
	select {
	case r = <-res:
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return")
	}
	if r.n != 1 || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %d, %v; want 1, context.DeadlineExceeded", r.n, r.err)
	}
	if err := <-bDone; err == nil {
		t.Error("session b's Read returned no error after Shutdown")
	}
	expectClosed(t, cb)
	if live, _ := s.Stats(); live != 0 {
		t.Errorf("Stats live = %d after Shutdown", live)
	}
	if err := b.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Close after a forced close = %v, want net.ErrClosed", err)
	}
}

// Every connection closes within the context: nothing is forced.
func TestShutdownAllDrain(t *testing.T) {
	s := start(t, Config{})
	dial(t, s, "127.0.0.14")
	a := s.accept(t)
	res := make(chan int, 1)
	go func() {
		n, _ := s.Shutdown(context.Background())
		res <- n
	}()
	<-s.done // stopped accepting
	a.Close()
	select {
	case n := <-res:
		if n != 0 {
			t.Errorf("Shutdown forced %d", n)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
}

// flakyListener returns queued errors from Accept before accepting.
type flakyListener struct {
	net.Listener
	errs chan error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	select {
	case err := <-f.errs:
		return nil, err
	default:
	}
	return f.Listener.Accept()
}

func serveFlaky(t *testing.T, errs ...error) (*Listener, *logBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyListener{Listener: ln, errs: make(chan error, len(errs))}
	for _, e := range errs {
		f.errs <- e
	}
	logs := &logBuffer{}
	cfg := Config{Listen: ln.Addr().String(), Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := checkConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	l := serve(f, cfg)
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	return l, logs
}

func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	l, logs := serveFlaky(t, opErr(syscall.EMFILE), opErr(syscall.ECONNABORTED), opErr(syscall.ENFILE))
	c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept = %v, want the temporary errors retried", err)
	}
	defer sc.Close()
	if n := strings.Count(logs.String(), "accept failed; retrying"); n != 3 {
		t.Errorf("logged %d retries, want 3:\n%s", n, logs)
	}
}

func TestAcceptPermanentError(t *testing.T) {
	boom := errors.New("boom")
	l, logs := serveFlaky(t, boom)
	_, err := l.Accept()
	if !errors.Is(err, boom) || errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept = %v, want boom", err)
	}
	if !strings.Contains(logs.String(), "listener failed") {
		t.Errorf("failure not logged:\n%s", logs)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
}

func TestNetListener(t *testing.T) {
	s := start(t, Config{})
	nl := s.NetListener()
	if nl.Addr().String() != s.Addr().String() {
		t.Errorf("Addr = %v", nl.Addr())
	}
	if err := nl.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := nl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v", err)
	}
}

// After Shutdown and closing the clients, no goroutine of the listener is
// left: not the accept loop, a header reader waiting on a silent load
// balancer, an over-limit function, a connection waiting for Accept, or a
// handshake.
func TestNoGoroutineLeak(t *testing.T) {
	srvCfg, cliCfg := testCerts(t)
	before := runtime.NumGoroutine()
	var clients []net.Conn
	dialFrom := func(l *Listener, src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: testTimeout}
		c, err := d.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		return c
	}
	ctx := context.Background()
	l, err := Listen(ctx, Config{Listen: "127.0.0.1:0", Trusted: trust("127.0.0.1"), MaxPerAddr: 1})
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{}, 1)
	l.SetOverLimit(func(c *Conn, reason string) {
		c.Write([]byte("421 too many\r\n"))
		refused <- struct{}{}
	})
	tl, err := Listen(ctx, Config{Listen: "127.0.0.1:0", TLS: srvCfg})
	if err != nil {
		t.Fatal(err)
	}

	dialFrom(l, "127.0.0.1") // silent load balancer: header reader pending
	c := dialFrom(l, "127.0.0.1")
	writeAll(t, c, proxyHeader(t, 2, "203.0.113.7:1", "192.0.2.1:25"))
	kept, err := l.Accept() // left open: forced at Shutdown
	if err != nil {
		t.Fatal(err)
	}
	_ = kept
	dialFrom(l, "127.0.0.15")
	kept2, err := l.Accept() // left open too
	if err != nil {
		t.Fatal(err)
	}
	_ = kept2
	dialFrom(l, "127.0.0.15") // over the limit: refused
	select {
	case <-refused:
	case <-time.After(testTimeout):
		t.Fatal("no refusal")
	}
	// Never taken by Accept: Shutdown closes it when it stops accepting.
	dialFrom(l, "127.0.0.16")
	waitFor(t, "the last connection to wait for Accept", func() bool { live, _ := l.Stats(); return live == 3 })

	tc := tls.Client(dialFrom(tl, "127.0.0.3"), cliCfg)
	sc, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	hs := make(chan error, 1)
	go func() { hs <- tc.Handshake() }()
	if err := sc.Handshake(testTimeout); err != nil {
		t.Fatal(err)
	}
	<-hs
	dialFrom(tl, "127.0.0.4") // never handshakes
	stalled, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := stalled.Handshake(50 * time.Millisecond); err == nil {
		t.Fatal("handshake with a silent client succeeded")
	}
	stalled.Close()

	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	n, err := l.Shutdown(sctx)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Shutdown took %v: waited for the silent load balancer?", d)
	}
	if n != 2 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %d, %v; want 2 forced (the open connections)", n, err)
	}
	if n, err := tl.Shutdown(sctx); n != 1 || err == nil {
		t.Errorf("TLS listener Shutdown = %d, %v; want 1 forced", n, err)
	}
	for _, c := range clients {
		c.Close()
	}
	tc.Close()

	deadline := time.Now().Add(testTimeout)
	for {
		after := runtime.NumGoroutine()
		if after <= before {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}
