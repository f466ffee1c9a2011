package netlisten

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// DefaultProxyHeaderTimeout is how long a trusted peer has to send its
// PROXY header when Config.ProxyHeaderTimeout is zero.
const DefaultProxyHeaderTimeout = 5 * time.Second

// Config of one listener.
type Config struct {
	// Listen is the TCP address to listen on: ":25", "127.0.0.1:2525",
	// "[::1]:143".
	Listen string
	// Trusted reports the peers (load balancers) that must open their
	// connections with a PROXY v1 or v2 header; nil: none. Other peers must
	// not: a header from an untrusted peer is not parsed and reaches the
	// protocol as ordinary bytes. It receives the peer address unmapped and
	// without zone, and must be safe for concurrent use.
	Trusted func(netip.Addr) bool
	// ProxyHeaderTimeout is how long a trusted peer has to send its header
	// (DefaultProxyHeaderTimeout if zero).
	ProxyHeaderTimeout time.Duration
	// TLS, when set, makes every connection implicit TLS (smtps, imaps,
	// pop3s). The handshake happens after the PROXY header, on the first
	// Read or Write or with Conn.Handshake.
	TLS *tls.Config
	// MaxPerAddr limits the concurrent connections per client address
	// (after PROXY resolution), and for IPv6 per /64: the addresses of one
	// /64 share the limit; 0: unlimited.
	MaxPerAddr int
	// MaxConns limits the total of concurrent connections; 0: unlimited.
	// Counted, like MaxPerAddr, are the connections returned by Accept (or
	// ready for it) and not yet closed; not those still sending their PROXY
	// header (bounded by ProxyHeaderTimeout) or being refused.
	MaxConns int
	// Logger receives header failures and accept errors; nil: discard.
	Logger *slog.Logger
	// HandshakeFailed, when set, is called after each failed TLS
	// handshake (Conn.Handshake, Conn.StartTLS), for metrics.
	HandshakeFailed func()
	// EarlyTalker, when set, is called for each connection a gateway
	// reports with NoteEarlyTalker, for metrics.
	EarlyTalker func()
}

// Listener accepts connections whose RemoteAddr is the real client (from
// the PROXY header when the peer is trusted). Its methods are safe for
// concurrent use.
type Listener struct {
	ln    net.Listener
	owned atomic.Pointer[sockio.Acceptor] // set: accept owned sockets with it (SetOwnedSockets); the accept loop's alone
	// loopRun starts the accept loop on an event loop (SetAcceptOnLoop;
	// nil: it stays on its goroutine); loopAcc is the Acceptor last bound
	// to a loop, which Close wakes.
	loopRun atomic.Pointer[func(func(context.Context))]
	loopAcc atomic.Pointer[sockio.Acceptor]
	// lnFile is a duplicate of ln's socket that waits in the runtime's
	// poller, for accepting owned sockets (Go's listener has no RawConn
	// that waits); guarded by mu, closed with ln.
	lnFile *os.File
	cfg    Config
	log    *slog.Logger
	addr   string // for logs

	stop   context.Context // done once the listener stops accepting
	cancel context.CancelFunc
	ready  chan *Conn // connections for Accept

	// start is the running ServeUntil's function (nil: none); startSet is
	// closed when one is set, startFree when it is unset. startMu is held
	// while start runs, so that ServeUntil returns only once no call is
	// under way.
	startMu   sync.Mutex
	start     func(*Conn)
	startSet  chan struct{}
	startFree chan struct{}
	failed    chan struct{} // closed when the accept loop ends on a permanent error
	fail      error         // that error; written before failed is closed

	// wg counts the accept loop, header readers and over-limit functions.
	wg        sync.WaitGroup
	overLimit atomic.Pointer[OverLimitFunc]
	refusing  atomic.Int32
	closeOnce sync.Once
	closeErr  error

	// tls is the implicit-TLS configuration of new connections (nil:
	// plaintext); SetTLS replaces it.
	tls atomic.Pointer[tls.Config]

	warnMu sync.Mutex
	warned map[netip.Addr]struct{} // trusted peers whose header failure was logged (firstWarning)

	mu         sync.Mutex
	maxConns   int // Config.MaxConns until SetLimits
	maxPerAddr int // Config.MaxPerAddr until SetLimits
	stopped    bool
	conns      connList           // holding a slot
	perAddr    map[netip.Addr]int // by limitKey
	drained    chan struct{}      // closed when conns becomes empty; nil if nobody waits
}

// Listen opens a TCP listener as configured and starts accepting. ctx
// bounds opening the socket only (as with net.ListenConfig); stop the
// listener with Shutdown or Close.
func Listen(ctx context.Context, cfg Config) (*Listener, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	lc := listenConfig()
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("netlisten: listen on %s: %w", cfg.Listen, err)
	}
	return serve(ln, cfg), nil
}

func checkConfig(cfg *Config) error {
	switch {
	case cfg.Listen == "":
		return errors.New("netlisten: no listen address")
	case cfg.ProxyHeaderTimeout < 0:
		return fmt.Errorf("netlisten: %s: negative PROXY header timeout %v", cfg.Listen, cfg.ProxyHeaderTimeout)
	case cfg.MaxPerAddr < 0:
		return fmt.Errorf("netlisten: %s: negative per-address connection limit %d", cfg.Listen, cfg.MaxPerAddr)
	case cfg.MaxConns < 0:
		return fmt.Errorf("netlisten: %s: negative connection limit %d", cfg.Listen, cfg.MaxConns)
	case cfg.TLS != nil && len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil:
		return fmt.Errorf("netlisten: %s: TLS configuration without a certificate", cfg.Listen)
	}
	if cfg.ProxyHeaderTimeout == 0 {
		cfg.ProxyHeaderTimeout = DefaultProxyHeaderTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// serve wraps an open listener and starts its accept loop; cfg has been
// checked.
func serve(ln net.Listener, cfg Config) *Listener {
	stop, cancel := context.WithCancel(context.Background())
	l := &Listener{
		ln:     ln,
		cfg:    cfg,
		log:    cfg.Logger,
		addr:   ln.Addr().String(),
		stop:   stop,
		cancel: cancel,
		ready:  make(chan *Conn),

		startSet: make(chan struct{}),
		failed:   make(chan struct{}),
		perAddr:  make(map[netip.Addr]int),

		maxConns:   cfg.MaxConns,
		maxPerAddr: cfg.MaxPerAddr,
	}
	l.tls.Store(cfg.TLS)
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// SetOwnedSockets makes the connections accepted from now on (on) sockets
// whose descriptors the program owns (sockio.Socket: accepted, set up and
// later closed with raw system calls, and never registered with the
// runtime's poller while an event loop serves them), or Go's (off, the
// default). A listener whose sessions run on event loops turns it on; a
// connection whose session leaves its loop, or that a trusted peer opens
// with a PROXY header, is handed to the runtime's poller when it first
// waits, as any os.File.
// Where the system has no owned sockets, or the listener cannot give its
// socket, connections stay Go's (and the reason is logged once).
func (l *Listener) SetOwnedSockets(on bool) {
	if !on {
		l.owned.Store(nil)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || l.owned.Load() != nil {
		return
	}
	if l.lnFile == nil {
		f, err := sockio.ListenerFile(l.ln)
		if err != nil {
			l.log.Warn("netlisten: connections stay Go's sockets", "listen", l.addr, "err", err)
			return
		}
		l.lnFile = f
	}
	rc, err := l.lnFile.SyscallConn()
	if err != nil {
		l.log.Warn("netlisten: connections stay Go's sockets", "listen", l.addr, "err", err)
		return
	}
	l.owned.Store(sockio.NewAcceptor(rc))
}

// SetAcceptOnLoop makes run start the accept loop on an event loop while
// the listener accepts owned sockets (SetOwnedSockets): run(handle) runs
// handle as a handler on a loop (evloop.Group.Go), where the accept loop
// waits for the listening socket with the loop and starts each
// connection without waking a goroutine first. nil keeps the accept loop
// on a goroutine of its own (the default); a change takes effect at the
// next connection.
func (l *Listener) SetAcceptOnLoop(run func(handle func(ctx context.Context))) {
	if run == nil {
		l.loopRun.Store(nil)
		return
	}
	l.loopRun.Store(&run)
}

// Addr returns the listener's network address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Accept returns the next connection within the limits, its PROXY header
// (if any) already read. It returns an error wrapping net.ErrClosed once
// the listener is closed, and the accept loop's error if it ended on a
// permanent error (the listener should then be closed). Temporary errors
// (too many open files, aborted connections) are retried with backoff and
// logged, not returned.
func (l *Listener) Accept() (*Conn, error) { return l.AcceptUntil(nil) }

// AcceptUntil is Accept that also returns, with an error wrapping
// net.ErrClosed, once stop is closed; the listener goes on accepting for
// other callers. A gateway hands a listener from one server to the next
// this way without closing the socket.
func (l *Listener) AcceptUntil(stop <-chan struct{}) (*Conn, error) {
	select {
	case <-stop:
		return nil, fmt.Errorf("netlisten: accept on %s: handed over: %w", l.addr, net.ErrClosed)
	case <-l.stop.Done():
		return nil, fmt.Errorf("netlisten: accept on %s: %w", l.addr, net.ErrClosed)
	default:
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-stop:
		return nil, fmt.Errorf("netlisten: accept on %s: handed over: %w", l.addr, net.ErrClosed)
	case <-l.stop.Done():
		return nil, fmt.Errorf("netlisten: accept on %s: %w", l.addr, net.ErrClosed)
	case <-l.failed:
		return nil, l.fail
	}
}

// SetTLS replaces the implicit-TLS configuration for connections accepted
// from now on (a listener opened without TLS stays plaintext: cfg must be
// nil then, and a TLS listener cannot become plaintext).
func (l *Listener) SetTLS(cfg *tls.Config) error {
	if (cfg == nil) != (l.tls.Load() == nil) {
		return fmt.Errorf("netlisten: %s: implicit TLS cannot be switched on or off on an open listener", l.addr)
	}
	if cfg != nil && len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil {
		return fmt.Errorf("netlisten: %s: TLS configuration without a certificate", l.addr)
	}
	l.tls.Store(cfg)
	return nil
}

// Close stops accepting: it closes the listening socket, and connections
// not yet returned by Accept. Connections already returned stay open.
// Close does not wait for the listener's goroutines; Shutdown does.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.stopped = true
		f := l.lnFile
		l.mu.Unlock()
		l.cancel()
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = fmt.Errorf("netlisten: closing %s: %w", l.addr, err)
		}
		if f != nil {
			f.Close() // the duplicate: the socket stops listening with it
		}
		if a := l.loopAcc.Load(); a != nil {
			a.Wake() // an accept loop waiting on an event loop
		}
	})
	return l.closeErr
}

// Shutdown stops accepting, then waits for the live connections to be
// closed by their owners until ctx is done, then closes the rest and
// returns how many it closed. It returns when the listener's goroutines
// have exited. The error is ctx's if it ended before the drain, else
// Close's.
func (l *Listener) Shutdown(ctx context.Context) (int, error) {
	err := l.Close()
	forced := 0
	for {
		l.mu.Lock()
		if l.conns.n == 0 {
			l.mu.Unlock()
			break
		}
		if l.drained == nil {
			l.drained = make(chan struct{})
		}
		drained := l.drained
		l.mu.Unlock()
		select {
		case <-drained:
			continue
		case <-ctx.Done():
		}
		err = ctx.Err()
		forced = l.closeAll()
		break
	}
	l.wg.Wait()
	return forced, err
}

// closeAll closes every connection holding a slot and returns how many it
// closed.
func (l *Listener) closeAll() int {
	l.mu.Lock()
	conns := make([]*Conn, 0, l.conns.n)
	for c := l.conns.head; c != nil; c = c.next {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	n := 0
	for _, c := range conns {
		if c.forceClose() {
			n++
		}
	}
	return n
}

// NetListener returns l as a net.Listener, for servers that take one
// (net/http, go-smtp). Its Accept returns *Conn values.
func (l *Listener) NetListener() net.Listener { return netListener{l} }

type netListener struct{ l *Listener }

func (n netListener) Accept() (net.Conn, error) {
	c, err := n.l.Accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (n netListener) Close() error   { return n.l.Close() }
func (n netListener) Addr() net.Addr { return n.l.Addr() }
