package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/evloop"
)

// Conn is a client connection as the gateways take it: the listener's
// (netlisten.Conn), which knows the real client and upgrades to TLS in
// place.
type Conn interface {
	net.Conn
	// ClientAddr is the real client (from a PROXY header when the peer is
	// a trusted load balancer).
	ClientAddr() netip.AddrPort
	// LocalAddrPort is the address the client connected to.
	LocalAddrPort() netip.AddrPort
	// Handshake runs an implicit-TLS connection's handshake now, giving
	// up after timeout.
	Handshake(timeout time.Duration) error
	// StartTLS upgrades a plaintext connection in place and runs the
	// server handshake, giving up after timeout; the caller's readers
	// must hold nothing buffered, and be fresh afterwards.
	StartTLS(cfg *tls.Config, timeout time.Duration) error
}

// Acceptor is a listener of client connections that knows each one's real
// client address (from a PROXY header when the peer is trusted).
type Acceptor interface {
	Accept() (Conn, error)
	Close() error
}

// Dispatcher is an Acceptor that can start the handlers itself, on the
// goroutine that accepted each connection, saving Serve's goroutine the
// wake-up per connection that Accept costs.
type Dispatcher interface {
	// Dispatch calls start for each accepted connection until the
	// acceptor stops (when Accept would return an error, and with that
	// error); start does not block. When Dispatch returns, no call of
	// start is running or will be made.
	Dispatch(start func(Conn)) error
}

// Loopable is a connection whose handler can run on an event loop
// (netlisten.Conn): every wait of its reads and writes can go to the loop
// when it is Waitable.
type Loopable interface {
	evloop.Bindable
	// Waitable reports whether the connection's waits can go to a loop.
	Waitable() bool
}

// Handler serves one connection to its end. A handler that Conns runs on
// an event loop (Conns.Loops) calls evloop.MayBlock with its ctx before
// it waits for anything but its connections' sockets.
type Handler func(ctx context.Context, conn Conn)

// Conns runs a handler per accepted connection and keeps count of them.
type Conns struct {
	// Log receives the report of a handler that panicked; nil: slog's
	// default logger.
	Log *slog.Logger
	// Loops, when set, runs the handlers of plain TCP connections
	// (Loopable) on event loops instead of a goroutine each. Set it
	// before Serve.
	Loops *evloop.Group

	mu sync.Mutex
	// conns are the connections and handed-off sessions; true: closed
	// when Serve's context ends (endsWithCtx).
	conns map[io.Closer]bool
	// ctxEnded: Serve's context has ended and closeWithCtx has run.
	ctxEnded bool
	wg       sync.WaitGroup
	panics   atomic.Int64
	// ctx is Serve's context, which ends every handed-off session.
	ctx context.Context
	// idle watches the handed-off sessions between plain TCP sockets
	// (Linux); idleFailed: it could not start, sessions use goroutines.
	idle       *idlePoller
	idleFailed bool
}

// Panics returns how many handlers have panicked. Each panic closed its
// own connection only.
func (s *Conns) Panics() int64 { return s.panics.Load() }

// recovered ends a handler that panicked: its connection is closed, the
// panic and its stack are logged once and counted, and the gateway goes on.
// Call it deferred.
func (s *Conns) recovered(conn net.Conn, client netip.AddrPort) {
	v := recover()
	if v == nil {
		return
	}
	s.panics.Add(1)
	conn.Close()
	buf := make([]byte, 32<<10)
	buf = buf[:runtime.Stack(buf, false)]
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	log.Error("a connection handler panicked: that connection is closed", "client", client.Addr().String(),
		"panic", fmt.Sprint(v), "stack", string(buf))
}

// Serve handles connections from ln until ctx is done or ln stops
// accepting (closed, failed, or handed over to the next server after a
// reload); if ln is a Dispatcher, the handlers start on its goroutines.
// The sessions it started go on after that; once ctx is done they get
// drain to finish (DrainContext), then the rest are closed. Serve
// returns when every session has ended, with ln's error if it failed.
func (s *Conns) Serve(ctx context.Context, ln Acceptor, drain time.Duration, handle Handler) error {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[io.Closer]bool)
	}
	s.ctx = ctx
	s.ctxEnded = false
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	// Handed-off sessions end with ctx, as Splice's do.
	stopIdle := context.AfterFunc(ctx, func() {
		s.closeIdle()
		s.closeWithCtx()
	})
	defer stopIdle()
	defer s.stopIdle()
	start := func(conn Conn) {
		s.track(conn, true)
		s.wg.Add(1)
		if lc, ok := conn.(Loopable); ok && s.Loops != nil && lc.Waitable() {
			s.Loops.Go(ctx, lc, func(ctx context.Context) {
				defer s.wg.Done()
				defer s.track(conn, false)
				defer s.recovered(conn, conn.ClientAddr())
				handle(ctx, conn)
			})
			return
		}
		go func() {
			defer s.wg.Done()
			defer s.track(conn, false)
			defer s.recovered(conn, conn.ClientAddr())
			handle(ctx, conn)
		}()
	}
	var aerr error
	if d, ok := ln.(Dispatcher); ok {
		aerr = d.Dispatch(start)
	} else {
		for {
			conn, err := ln.Accept()
			if err != nil {
				aerr = err
				break
			}
			start(conn)
		}
	}
	var err error
	if ctx.Err() == nil && !errors.Is(aerr, net.ErrClosed) {
		err = aerr
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	dctx, cancel := DrainContext(ctx, drain)
	defer cancel()
	select {
	case <-done:
	case <-dctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	return err
}

// DrainContext returns a context that ends drain after ctx ends: the
// time live sessions get to finish once the gateway stops. Every gateway
// (and the web gateway's HTTP server) drains by it. Call cancel when the
// sessions have ended.
func DrainContext(ctx context.Context, drain time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var (
		mu    sync.Mutex
		timer *time.Timer
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if dctx.Err() == nil {
			timer = time.AfterFunc(drain, cancel)
		}
	})
	return dctx, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

func (s *Conns) track(c io.Closer, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = make(map[io.Closer]bool)
	}
	if add {
		s.conns[c] = false
	} else {
		delete(s.conns, c)
	}
}

// endsWithCtx marks c, a connection s tracks, to be closed when Serve's
// context ends, as a handed-off session is: one lock and no allocation,
// where context.AfterFunc would register with the gateway's context
// shared by every session. It reports false, doing nothing, when s does
// not track c; once the context has ended it closes c at once.
func (s *Conns) endsWithCtx(c io.Closer) bool {
	s.mu.Lock()
	if _, ok := s.conns[c]; !ok {
		s.mu.Unlock()
		return false
	}
	if s.ctxEnded {
		s.mu.Unlock()
		c.Close()
		return true
	}
	s.conns[c] = true
	s.mu.Unlock()
	return true
}

// closeWithCtx closes the connections endsWithCtx marked: Serve's
// context has ended.
func (s *Conns) closeWithCtx() {
	s.mu.Lock()
	s.ctxEnded = true
	var end []io.Closer
	for c, marked := range s.conns {
		if marked {
			end = append(end, c)
		}
	}
	s.mu.Unlock()
	for _, c := range end {
		c.Close()
	}
}

// Handoff runs a logged-in session's splice (see Splice) that s tracks
// like a handled connection — drain closes it, Live counts it, it ends
// with ctx — so that the handler can return and free its goroutine, whose
// stack grew during the pre-login dialogue. done, if not nil, runs when
// the session has ended. Call it only from a handler s is serving.
//
// On Linux, between two plain TCP sockets and a client that reports its
// closing (netlisten.Conn: the engine's close_all closes it), the session
// holds no goroutine while idle: its sockets wait in an epoll set that s
// shares among its sessions, and bytes move with splice(2) on a goroutine
// that lives while they do. Otherwise (TLS on either side) Splice runs on
// two goroutines.
func (s *Conns) Handoff(ctx context.Context, client, backend net.Conn, buffered []byte, done func()) {
	// On an event loop, the bytes that follow the login at once move on
	// the loop.
	if ended, ran := s.relayOnLoop(ctx, client, backend, buffered, done); ended {
		return
	} else if ran {
		buffered = nil // written
	}
	// The relay waits for its sockets itself, on goroutines or the idle
	// poller, while the handler may still be running on its loop.
	evloop.Release(ctx)
	if s.handoffIdle(ctx, client, backend, buffered, done) {
		return
	}
	s.track(backend, true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.track(backend, false)
		if done != nil {
			defer done()
		}
		defer backend.Close()
		defer s.recovered(client, netip.AddrPort{})
		up, down, _ := Splice(ctx, client, backend, buffered)
		reportRelayed(backend, up, down)
	}()
}

// Live returns the number of connections being served.
func (s *Conns) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
