package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// notifyConn is a client connection as netlisten.Conn hands it over: it
// exposes its TCP socket (RawTCP) and says when it is closed (AfterClose),
// so a handed-off session waits in the shared poller.
type notifyConn struct {
	*net.TCPConn
	mu      sync.Mutex
	closed  bool
	onClose func()
}

func (c *notifyConn) ClientAddr() netip.AddrPort {
	return c.RemoteAddr().(*net.TCPAddr).AddrPort()
}
func (c *notifyConn) LocalAddrPort() netip.AddrPort {
	return c.LocalAddr().(*net.TCPAddr).AddrPort()
}
func (*notifyConn) Handshake(time.Duration) error             { return errors.New("no TLS") }
func (*notifyConn) StartTLS(*tls.Config, time.Duration) error { return errors.New("no TLS") }
func (c *notifyConn) RawTCP() (sockio.TCPSocket, bool)        { return c.TCPConn, true }
func (c *notifyConn) Close() error {
	err := c.TCPConn.Close()
	c.mu.Lock()
	f := c.onClose
	c.onClose, c.closed = nil, true
	c.mu.Unlock()
	if f != nil {
		f()
	}
	return err
}
func (c *notifyConn) AfterClose(f func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f()
		return
	}
	c.onClose = f
	c.mu.Unlock()
}

// idleRig is a Conns serving handed-off sessions: each accepted client is
// spliced at once to a new backend connection.
type idleRig struct {
	conns  Conns
	ln     *chanAcceptor
	cancel context.CancelFunc
	served chan error
	// per session, in order: the test's ends and the gateway's client side
	handed chan idleEnds
	ctx    func() context.Context // the context each Handoff gets; nil: Serve's
	// preface, if set, is called with the test's backend end before the
	// session is handed off.
	preface func(backend net.Conn)
}

type idleEnds struct {
	client, backend net.Conn
	server          *notifyConn
	ended           chan struct{}
	up, down        *atomic.Int64
}

func newIdleRig(t *testing.T, buffered []byte, hctx func() context.Context) *idleRig {
	t.Helper()
	r := &idleRig{ln: &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})},
		served: make(chan error, 1), handed: make(chan idleEnds, 1), ctx: hctx}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	acc := notifyAcceptor{r.ln}
	go func() {
		r.served <- r.conns.Serve(ctx, acc, 50*time.Millisecond, func(ctx context.Context, c Conn) {
			pb, be := tcpPair(t)
			e := idleEnds{backend: be, server: c.(*notifyConn), ended: make(chan struct{}),
				up: new(atomic.Int64), down: new(atomic.Int64)}
			backend := &limitedConn{Conn: pb, release: func() {}, relayed: func(up, down int64) {
				e.up.Store(up)
				e.down.Store(down)
			}}
			if r.ctx != nil {
				ctx = r.ctx()
			}
			if r.preface != nil {
				r.preface(be)
			}
			r.conns.Handoff(ctx, c, backend, buffered, func() { close(e.ended) })
			r.handed <- e
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.served:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return r
}

// notifyAcceptor hands Serve its connections as notifyConns.
type notifyAcceptor struct{ *chanAcceptor }

func (a notifyAcceptor) Accept() (Conn, error) {
	select {
	case c := <-a.conns:
		return &notifyConn{TCPConn: c.(*net.TCPConn)}, nil
	case <-a.closed:
		return nil, net.ErrClosed
	}
}

// open starts one session and returns its ends once it is handed off.
func (r *idleRig) open(t *testing.T) idleEnds {
	t.Helper()
	client, pa := tcpPair(t)
	r.ln.conns <- pa
	select {
	case e := <-r.handed:
		e.client = client
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no hand-off")
	}
	return idleEnds{}
}

func waitEnded(t *testing.T, e idleEnds, why string) {
	t.Helper()
	select {
	case <-e.ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the session did not end when %s", why)
	}
}

func expectEOF(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("%s: read %d, %v; want end of stream", what, n, err)
	}
}

// Bytes move both ways through the poller, large and small, pipelined
// bytes first; the counts are reported when the client leaves, which
// closes the backend side.
func TestIdleHandoffMovesBytesBothWays(t *testing.T) {
	r := newIdleRig(t, []byte("a1 NOOP\r\n"), nil)
	e := r.open(t)
	if got := readN(t, e.backend, 9); string(got) != "a1 NOOP\r\n" {
		t.Fatalf("buffered bytes: %q", got)
	}
	exchangeBothWays(t, e.client, e.backend)
	waitLive(t, &r.conns, 1)
	e.client.Close()
	waitEnded(t, e, "the client left")
	if up, down := e.up.Load(), e.down.Load(); up != 9+3<<20+200*2 || down != 8<<20+200*2 {
		t.Errorf("counted up %d down %d", up, down)
	}
	expectEOF(t, e.backend, "backend after the client left")
	waitLive(t, &r.conns, 0)
}

// The backend closing (an IMAP LOGOUT) ends the session too; so does the
// client closing its sending side only (as Splice: either end of stream
// ends the session).
func TestIdleHandoffEndsAtEitherEndOfStream(t *testing.T) {
	r := newIdleRig(t, nil, nil)
	e := r.open(t)
	e.backend.Write([]byte("* BYE\r\n"))
	e.backend.Close()
	if got := readN(t, e.client, 7); string(got) != "* BYE\r\n" {
		t.Fatalf("client read %q", got)
	}
	expectEOF(t, e.client, "client after the backend left")
	waitEnded(t, e, "the backend left")

	e = r.open(t)
	e.client.(*net.TCPConn).CloseWrite()
	waitEnded(t, e, "the client closed its side")
	expectEOF(t, e.backend, "backend after the client's half-close")
}

// A backend that says goodbye and closes at once (its last line and its
// end of stream arrive together, as Dovecot's BYE does): the line is
// moved and the session ends in the same turn, without waking again for
// the end of stream.
func TestIdleHandoffEndsWithTheLastLine(t *testing.T) {
	r := newIdleRig(t, nil, nil)
	r.preface = func(be net.Conn) {
		be.Write([]byte("* BYE Logging out\r\na2 OK Logout completed.\r\n"))
		be.Close()
	}
	p := r.conns.idlePoller()
	inline0, spawned0 := p.inline.Load(), p.spawned.Load()
	e := r.open(t)
	const last = "* BYE Logging out\r\na2 OK Logout completed.\r\n"
	if got := readN(t, e.client, len(last)); string(got) != last {
		t.Fatalf("client read %q", got)
	}
	expectEOF(t, e.client, "client after the backend left")
	waitEnded(t, e, "the backend left")
	// The poller counts its turn after the turn, which ends the session:
	// the client can see the end before the count.
	deadline := time.Now().Add(10 * time.Second)
	for p.inline.Load() == inline0 && p.spawned.Load() == spawned0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if turns, spawned := p.inline.Load()-inline0, p.spawned.Load()-spawned0; turns != 1 || spawned != 0 {
		t.Errorf("the last line and the end of stream took %d turns inline and %d on goroutines; want one inline", turns, spawned)
	}
	if down := e.down.Load(); down != int64(len(last)) {
		t.Errorf("counted %d bytes down; want %d", down, len(last))
	}
}

// Closing the gateway's client connection from elsewhere — the engine's
// close_all when the address is blocked — ends an idle session at once
// and closes the backend side.
func TestIdleHandoffEndsWhenClientClosedElsewhere(t *testing.T) {
	r := newIdleRig(t, nil, nil)
	e := r.open(t)
	e.client.Write([]byte("x"))
	readN(t, e.backend, 1)
	e.server.Close() // what guard's closer does
	waitEnded(t, e, "its client connection was closed")
	expectEOF(t, e.backend, "backend")
	expectEOF(t, e.client, "client")
	waitLive(t, &r.conns, 0)
}

// Sessions end with the context their Handoff got: Serve's (the gateway
// stops) or another.
func TestIdleHandoffEndsWithContext(t *testing.T) {
	own, cancelOwn := context.WithCancel(context.Background())
	defer cancelOwn()
	r := newIdleRig(t, nil, func() context.Context { return own })
	e := r.open(t)
	cancelOwn()
	waitEnded(t, e, "its context ended")
	expectEOF(t, e.client, "client")

	r = newIdleRig(t, nil, nil)
	e = r.open(t)
	r.cancel()
	select {
	case <-r.served:
		r.served <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	waitEnded(t, e, "Serve's context ended")
	expectEOF(t, e.backend, "backend")
}

// Idle handed-off sessions hold no goroutine and no pipe: the number of
// goroutines does not grow with them, and the descriptors are their
// sockets (plus one epoll descriptor for them all).
func TestIdleHandoffHoldsNoGoroutines(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	r := newIdleRig(t, nil, nil)
	warm := r.open(t) // the poller runs
	warm.client.Write([]byte("w"))
	readN(t, warm.backend, 1)
	const n = 40
	settle := func(limit int, what func() int) int {
		deadline := time.Now().Add(5 * time.Second)
		for {
			runtime.GC()
			got := what()
			if got <= limit || time.Now().After(deadline) {
				return got
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
	runtime.GC()
	g0 := runtime.NumGoroutine()
	f0 := fds()
	for range n {
		e := r.open(t)
		e.client.Write([]byte("x"))
		readN(t, e.backend, 1)
		e.backend.Write([]byte("y"))
		readN(t, e.client, 1)
	}
	// tcpPair's accept goroutines have exited; a few may still be on
	// their way out.
	if g := settle(g0+3, runtime.NumGoroutine); g > g0+3 {
		t.Errorf("%d goroutines for %d idle sessions (%d before): want none per session", g-g0, n, g0)
	}
	// 4 sockets per session (both ends of two connections, the test's
	// ends included) and a few pooled pipes.
	if got := settle(f0+4*n+20, fds) - f0; got > 4*n+20 {
		t.Errorf("%d descriptors for %d idle sessions, want at most %d", got, n, 4*n+20)
	}
}

// BenchmarkHandoffDownload moves 4 MiB per operation from the backend to
// the client of one handed-off session: through the shared poller
// (poller) and through Splice's two goroutines (goroutines), for CPU per
// byte of an active transfer (a FETCH).
func BenchmarkHandoffDownload(b *testing.B) {
	for _, mode := range []string{"poller", "goroutines"} {
		b.Run(mode, func(b *testing.B) {
			var conns Conns
			ln := &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			backends := make(chan net.Conn, 1)
			go func() {
				served <- conns.Serve(ctx, acceptorFor(mode, ln), time.Second, func(ctx context.Context, c Conn) {
					pb, be := tcpPair(b)
					conns.Handoff(ctx, c, pb, nil, nil)
					backends <- be
				})
			}()
			client, pa := tcpPair(b)
			ln.conns <- pa
			backend := <-backends
			chunk := make([]byte, 4<<20)
			buf := make([]byte, 256<<10)
			b.SetBytes(int64(len(chunk)))
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				errc := make(chan error, 1)
				go func() { _, err := backend.Write(chunk); errc <- err }()
				for got := 0; got < len(chunk); {
					n, err := client.Read(buf)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// The process's CPU time (both ends and the relay) per
			// operation: a figure the machine's load does not skew as it
			// does ns/op.
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
			cancel()
			<-served
		})
	}
}

func acceptorFor(mode string, ln *chanAcceptor) Acceptor {
	if mode == "poller" {
		return notifyAcceptor{ln}
	}
	return ln
}

// A client closed before the hand-off (blocked between the login and the
// splice) ends the session at once: the backend is closed, done runs.
func TestIdleHandoffOfClosedClient(t *testing.T) {
	var conns Conns
	ln := &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	defer func() { cancel(); <-served }()
	ended := make(chan struct{})
	backends := make(chan net.Conn, 1)
	go func() {
		served <- conns.Serve(ctx, notifyAcceptor{ln}, time.Second, handleClosed(t, &conns, backends, ended))
	}()
	_, pa := tcpPair(t)
	ln.conns <- pa
	be := <-backends
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the session of a closed client did not end")
	}
	be.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(be); err != nil {
		t.Errorf("backend: %v, want an end of stream", err)
	}
	waitLive(t, &conns, 0)
}

// handleClosed closes its client, then hands the session off.
func handleClosed(t *testing.T, conns *Conns, backends chan<- net.Conn, ended chan struct{}) Handler {
	return func(ctx context.Context, c Conn) {
		pb, be := tcpPair(t)
		backends <- be
		c.Close()
		conns.Handoff(ctx, c, pb, []byte("a1 NOOP\r\n"), func() { close(ended) })
	}
}

// waitLive waits until conns counts n live connections: a handler's
// connection stops counting only once the handler has returned.
func waitLive(t *testing.T, conns *Conns, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); conns.Live() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("Live = %d, want %d", conns.Live(), n)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

// A session that wakes for a few bytes the other side takes at once (a
// command, an answer) has them moved by the poller's goroutine itself: no
// goroutine is started for them. A transfer still is.
func TestIdleHandoffMovesSmallTurnsInline(t *testing.T) {
	r := newIdleRig(t, nil, nil)
	e := r.open(t)
	e.client.Write([]byte("w\n")) // the poller runs
	readN(t, e.backend, 2)
	p := r.conns.idlePoller()
	inline0, spawned0, polls0 := p.inline.Load(), p.spawned.Load(), p.polls.Load()
	for i := range 100 {
		msg := []byte(fmt.Sprintf("a%d NOOP\r\n", i))
		e.client.Write(msg)
		if got := readN(t, e.backend, len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("command %d: %q", i, got)
		}
		ans := []byte(fmt.Sprintf("a%d OK NOOP completed\r\n", i))
		e.backend.Write(ans)
		if got := readN(t, e.client, len(ans)); !bytes.Equal(got, ans) {
			t.Fatalf("answer %d: %q", i, got)
		}
	}
	// A turn is counted once its bytes are written: the last count may
	// come after the bytes were read.
	deadline := time.Now().Add(10 * time.Second)
	for p.inline.Load()-inline0 < 200 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling interval
	}
	if inline, spawned := p.inline.Load()-inline0, p.spawned.Load()-spawned0; inline < 200 || spawned != 0 {
		t.Errorf("200 small turns: %d inline, %d on goroutines; want all inline", inline, spawned)
	}
	// One read of the epoll descriptor a wake: none that finds nothing
	// before the poller waits again (a few more when Go's poller reports
	// an event that an earlier read already took).
	if polls := p.polls.Load() - polls0; polls > 200+20 {
		t.Errorf("200 turns read the epoll descriptor %d times; want about one read a turn", polls)
	}
	big := make([]byte, 1<<20)
	rand.Read(big)
	go e.backend.Write(big)
	if got := readN(t, e.client, len(big)); !bytes.Equal(got, big) {
		t.Fatal("transfer corrupted")
	}
	if p.spawned.Load() == spawned0 {
		t.Error("a 1 MiB transfer moved without a goroutine")
	}
	e.client.Close()
	waitEnded(t, e, "the client left")
}

// Small writes toward a backend that does not read fill its socket: the
// poller's goroutine writes what the socket takes and hands the rest of
// what it read to a goroutine, which writes it first once the backend
// reads and then moves what follows; every byte arrives once, in order,
// and is counted once.
func TestIdleHandoffInlineToFullDestination(t *testing.T) {
	r := newIdleRig(t, nil, nil)
	e := r.open(t)
	p := r.conns.idlePoller()
	const chunk, most = 15000, 64 << 20 // chunk < inlineMax
	want := make([]byte, most)
	rand.Read(want)
	turns := func() int64 { return p.inline.Load() + p.spawned.Load() }
	spawned0 := p.spawned.Load()
	// One small chunk per turn until a turn finds the backend's socket
	// full and leaves the rest to a goroutine.
	sent := 0
	for p.spawned.Load() == spawned0 {
		if sent+chunk > most {
			t.Fatalf("%d bytes sent, the backend's socket never filled", sent)
		}
		before := turns()
		if _, err := e.client.Write(want[sent : sent+chunk]); err != nil {
			t.Fatal(err)
		}
		sent += chunk
		deadline := time.Now().Add(10 * time.Second)
		for turns() == before {
			if time.Now().After(deadline) {
				t.Fatal("no turn moved the chunk")
			}
			time.Sleep(100 * time.Microsecond) // polling interval
		}
	}
	if p.inline.Load() == 0 {
		t.Fatal("no turn ran inline")
	}
	errc := make(chan error, 1)
	go func() { _, err := e.client.Write(want[sent : sent+4<<20]); errc <- err }()
	total := sent + 4<<20
	if got := readN(t, e.backend, total); !bytes.Equal(got, want[:total]) {
		t.Fatal("bytes lost, repeated or reordered")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	e.client.Close()
	waitEnded(t, e, "the client left")
	if up := e.up.Load(); up != int64(total) {
		t.Errorf("counted %d bytes up, want %d", up, total)
	}
	t.Logf("the backend's socket filled after %d bytes in %d-byte turns", sent, chunk)
}
