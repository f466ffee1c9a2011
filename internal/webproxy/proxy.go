package webproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/mimic"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
)

// Engine is what the gateway needs of the intrusion prevention engine.
type Engine interface {
	Accept(addr netip.Addr, svc service.Service, closer func()) (*guard.Session, guard.Verdict)
	PasswordFingerprint(account, password string) uint64
}

// Proxy serves one web service.
type Proxy struct {
	cfg    Config
	eng    Engine
	policy func() *policy.Policy
	log    *slog.Logger
	be     *backends
	tr     *http.Transport
	rp     *httputil.ReverseProxy
	dc     *directClient // the direct path; nil: every request takes rp
	bufs   *bufferPool   // copy buffers of both paths
	scheme string        // of the backends

	// failTimes holds how long the backend took to answer recent failed
	// logins; a refused login waits a draw from it.
	failTimes *mimic.Latencies
	// logins is the service's login gate.
	logins *gate.Logins

	// fast is the fast server (fast.go), in front of net/http's on every
	// listener unless the backends are HTTPS (no direct path) or noFast.
	fast      *fastServer
	noFast    bool // tests: net/http's server for every request
	dateCache atomic.Pointer[cachedDate]

	mu    sync.Mutex
	conns map[*clientConn]struct{}
	// emptied, when not nil, is closed once conns becomes empty.
	emptied chan struct{}
}

// New returns a Proxy; policy is read on every request, so a reload takes
// effect at once.
func New(cfg Config, eng Engine, pol func() *policy.Policy, lg *slog.Logger) (*Proxy, error) {
	cfg.defaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, eng: eng, policy: pol, log: lg.With("service", cfg.Service.String()),
		conns: make(map[*clientConn]struct{}), scheme: cfg.Backends[0].Scheme,
		failTimes: mimic.New(cfg.RefusalTime, maxRefusalTime), logins: gate.NewLogins(eng)}
	if cfg.Watch != nil {
		p.logins.Watch(cfg.Watch, cfg.Service.String())
	}
	p.be = newBackends(cfg.Backends, cfg.BackendTLS, cfg.ConnectTimeout)
	p.be.relayed = cfg.Relayed
	p.tr = p.be.transport(cfg.BackendTimeout)
	p.bufs = &bufferPool{}
	if p.scheme == "http" && directPeek {
		p.dc = &directClient{be: p.be, timeout: cfg.BackendTimeout, now: time.Now}
	}
	p.fast = &fastServer{conns: make(map[*fastConn]struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p.tr,
		// 0: a response of known length is buffered as usual; one of unknown
		// length (chunked) or an event stream is flushed after every write.
		FlushInterval:  0,
		ModifyResponse: p.modifyResponse,
		BufferPool:     p.bufs,
		ErrorHandler:   p.backendError,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	return p, nil
}

// handshakeCounter passes net/http's error log on and counts the failed
// TLS handshakes with clients in it: net/http reports them nowhere else
// (the handshake runs inside the server, on a *tls.Conn it needs
// unwrapped).
type handshakeCounter struct {
	io.Writer
	failed func()
}

// handshakeError starts the line net/http logs for a failed handshake.
var handshakeError = []byte("http: TLS handshake error ")

func (h handshakeCounter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, handshakeError) {
		h.failed()
	}
	return h.Writer.Write(p)
}

// Serve answers HTTP (HTTPS with Config.TLS) on ln until ctx is done or ln
// stops accepting (closed, or handed over to the next server after a
// reload). Then it stops accepting and lets requests in flight finish:
// after a hand-over until they end, once ctx is done for up to drain
// (relay.DrainContext); then it closes every connection left (WebSockets
// included). ln yields the connections with their real client address as
// RemoteAddr (netlisten).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	// net/http's own errors (TLS handshakes, malformed requests) go to the
	// structured log at debug level.
	errorLog := slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)
	if p.cfg.HandshakeFailed != nil {
		errorLog = log.New(handshakeCounter{errorLog.Writer(), p.cfg.HandshakeFailed}, "", 0)
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.cfg.HeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
		ErrorLog:          errorLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			switch cc := c.(type) {
			case *clientConn:
				return context.WithValue(ctx, connKey{}, cc)
			case *handoffConn:
				return context.WithValue(ctx, connKey{}, cc.cc)
			case *tlsHandoffConn:
				return context.WithValue(ctx, connKey{}, cc.cc)
			}
			return ctx
		},
	}
	if p.dc != nil && !p.noFast {
		return p.serveWithFast(ctx, ln, drain, srv)
	}
	al := &admitListener{Listener: ln, p: p}
	errc := make(chan error, 1)
	go func() {
		if p.cfg.TLS != nil {
			srv.TLSConfig = p.cfg.TLS.Clone()
			srv.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
			errc <- srv.ServeTLS(al, "", "")
		} else {
			errc <- srv.Serve(al)
		}
	}()
	var err error
	dctx, cancel := relay.DrainContext(ctx, drain)
	defer cancel()
	select {
	case err = <-errc: // ln ended: serve what is in flight to its end
		if serr := srv.Shutdown(dctx); serr != nil {
			srv.Close()
		}
		p.waitHijacked(dctx)
	case <-ctx.Done():
		if serr := srv.Shutdown(dctx); serr != nil {
			srv.Close()
		}
		err = <-errc
	}
	return p.served(err)
}

// serveWithFast is Serve with the fast server in front: it accepts (and
// runs the TLS handshakes of an HTTPS listener), and hands to srv the
// connections it does not serve itself.
func (p *Proxy) serveWithFast(ctx context.Context, ln net.Listener, drain time.Duration, srv *http.Server) error {
	p.fast.handoff = newHandoffListener(ln.Addr())
	if p.cfg.TLS != nil {
		// The fast server runs the handshakes; net/http's server gets
		// HTTP/2 connections and HTTP/1 ones it hands over, all TLS.
		p.fast.tls = p.cfg.TLS.Clone()
		p.fast.tls.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = p.fast.tls
	}
	var conns sync.WaitGroup
	errc := make(chan error, 1)
	go func() { errc <- p.acceptFast(ln, &conns) }()
	srvc := make(chan error, 1)
	go func() { srvc <- srv.Serve(p.fast.handoff) }()
	var err error
	dctx, cancel := relay.DrainContext(ctx, drain)
	defer cancel()
	select {
	case err = <-errc: // ln ended: serve what is in flight to its end
		p.fast.stop()
		p.fast.wait(dctx)
		if serr := srv.Shutdown(dctx); serr != nil {
			srv.Close()
		}
		p.waitHijacked(dctx)
	case <-ctx.Done():
		ln.Close()
		err = <-errc
		p.fast.stop()
		p.fast.wait(dctx)
		if serr := srv.Shutdown(dctx); serr != nil {
			srv.Close()
		}
	}
	<-srvc
	p.closeAll()
	conns.Wait()
	return p.served(err)
}

// served ends Serve: every connection left is closed, and so are the
// idle backend connections.
func (p *Proxy) served(err error) error {
	p.closeAll()
	p.tr.CloseIdleConnections()
	if p.dc != nil {
		p.dc.closeIdle()
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Live returns the number of client connections open.
func (p *Proxy) Live() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// waitHijacked waits until every client connection has closed (after
// Shutdown only hijacked ones, WebSockets, can be left) or ctx is done.
func (p *Proxy) waitHijacked(ctx context.Context) {
	for {
		p.mu.Lock()
		if len(p.conns) == 0 {
			p.mu.Unlock()
			return
		}
		if p.emptied == nil {
			p.emptied = make(chan struct{})
		}
		emptied := p.emptied
		p.mu.Unlock()
		select {
		case <-emptied:
		case <-ctx.Done():
			return
		}
	}
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	cs := make([]*clientConn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

type connKey struct{}

// clientConn is one client connection with its engine session.
type clientConn struct {
	net.Conn
	p    *Proxy
	addr netip.Addr
	// trusted: the peer is a trusted upstream (its PROXY header gave addr).
	trusted bool
	gs      *guard.Session // nil when refused at accept
	refusal string         // why the connection was refused at accept
	tarpit  atomic.Int64   // time.Duration: the engine's delay before each answer (HTTP/2 streams share it)
	// closeNext: an HTTP/2 connection the engine wants closed, closed at
	// its next request (closing it at once could cut the answer on its
	// way out); every request is checked against the blocks meanwhile.
	closeNext atomic.Bool
	// cancel, when set, ends the context of the fast server's requests
	// on this connection.
	cancel atomic.Pointer[context.CancelFunc]
	once   sync.Once
	// fwd is the last request's forwarding values (most requests of a
	// connection have the same Host).
	fwd atomic.Pointer[forwardedFor]
}

// setCancel makes Close call cancel.
func (c *clientConn) setCancel(cancel context.CancelFunc) { c.cancel.Store(&cancel) }

// Close closes the connection and ends its session.
func (c *clientConn) Close() error {
	err := c.Conn.Close()
	if f := c.cancel.Load(); f != nil {
		(*f)()
	}
	c.once.Do(func() {
		if c.gs != nil {
			c.gs.Close()
		}
		c.p.mu.Lock()
		delete(c.p.conns, c)
		if len(c.p.conns) == 0 && c.p.emptied != nil {
			close(c.p.emptied)
			c.p.emptied = nil
		}
		c.p.mu.Unlock()
	})
	return err
}

// admitListener admits each connection with the engine as it is accepted.
type admitListener struct {
	net.Listener
	p *Proxy
}

func (l *admitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.p.admit(c), nil
}

// admit asks the engine about a new connection. A refused one is still
// served, with a 403 page for every request, so the client learns why.
func (p *Proxy) admit(c net.Conn) *clientConn {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	cc := &clientConn{Conn: c, p: p, addr: ap.Addr().Unmap()}
	if px, ok := c.(interface{ Proxied() bool }); ok && px.Proxied() {
		cc.trusted = true
	} else if p.cfg.Trusted != nil && p.cfg.Trusted(cc.addr) {
		cc.trusted = true
	}
	p.mu.Lock()
	p.conns[cc] = struct{}{}
	p.mu.Unlock()
	gs, v := p.eng.Accept(cc.addr, p.cfg.Service, func() { c.Close() })
	cc.gs = gs
	if v.Delay > 0 {
		cc.tarpit.Store(int64(v.Delay))
	}
	if gate.Ends(v.Decision) {
		cc.refusal = v.Refusal()
		if v.Quiet && p.cfg.TLS != nil {
			// Refused again and again: closed before the TLS handshake,
			// which answering with the page would cost each time.
			cc.Close()
		}
	}
	return cc
}

// String describes the proxy for logs.
func (p *Proxy) String() string { return fmt.Sprintf("web gateway → %v", p.cfg.Backends) }

// bufferPool reuses the ReverseProxy's 32 KiB copy buffers (without one it
// allocates a buffer per response).
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte { return *b.get() }

// get and put are Get and Put without the allocation Put makes for the
// pointer it pools.
func (b *bufferPool) get() *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, 32<<10)
	return &buf
}

func (b *bufferPool) put(buf *[]byte) { b.p.Put(buf) }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) == 32<<10 {
		buf = buf[:cap(buf)]
		b.p.Put(&buf)
	}
}

// delay returns the tarpit delay of the connection.
func (c *clientConn) delay() time.Duration { return time.Duration(c.tarpit.Load()) }
