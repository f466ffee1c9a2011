package webproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// The fast server serves plain-HTTP connections whose requests are all
// plain GETs and HEADs (see fastparse.go) on the connection's own
// goroutine: it reads the head, asks the same handler (ServeHTTP, so every
// check is the same), forwards on the direct path and writes the answer
// with fastWriter — without net/http's per-request background read,
// context, deadline changes and response copies, which were most of the
// web gateway's CPU per request.
//
// The first request it does not read with certainty (a body, an upgrade,
// a login form, anything unusual, a refused or tarpitted client) ends its
// part: the connection, with the bytes read so far, is handed to
// net/http's server, which serves it from that request on exactly as it
// serves every connection when the fast server is off.

// Connection states of the fast server, for shutdown.
const (
	fastActive int32 = iota // reading a request's head, or serving it
	fastIdle                // waiting for the next request
)

// fastConn is one connection in the fast server.
type fastConn struct {
	p      *Proxy
	cc     *clientConn
	rw     net.Conn // what is read and written: cc, or a *tls.Conn over it
	tls    *tls.ConnectionState
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	remote string
	rdl    time.Time // the read deadline set on rw
	wdl    time.Time // the write deadline set on rw
	wrote  time.Time // when the last answer's last write began (Write), for readHead
	state  atomic.Int32
	w      fastWriter
	keys   []string // scratch for writeFastRequest

	// backend is the backend connection of the request being served,
	// woken (its reads and writes ended) when the client connection
	// closes; stopBackend takes it back, true when it was not woken.
	backend     atomic.Pointer[backendConn]
	stopBackend func() bool

	sw *streamWriter // the handler's writer over w, made once (streamWriter)

	// The watcher (watchClient) reads the client's connection while a
	// slow answer is awaited, to notice a client that goes away.
	watching bool
	watchOn  atomic.Bool   // watching, for tests
	watched  chan struct{} // closed when the watcher has returned
	peeked   bool          // the watcher read a byte: peekByte
	peekByte [1]byte
}

// slowAnswer is how long the backend may take to answer before the fast
// server starts watching the client for going away (net/http's server
// watches every request, at a cost per request; answers this quick do
// without).
const slowAnswer = 50 * time.Millisecond

type watchKey struct{}

// Read is what br reads: the byte the watcher read first, then the
// connection.
func (fc *fastConn) Read(b []byte) (int, error) {
	if fc.peeked && len(b) > 0 {
		fc.peeked = false
		b[0] = fc.peekByte[0]
		return 1, nil
	}
	return fc.rw.Read(b)
}

// Write is what the answer's buffered writer writes to: each write to the
// client gets the write timeout from now (the handler's writes need no
// deadline of their own, see streamWriter).
func (fc *fastConn) Write(p []byte) (int, error) {
	now := time.Now()
	fc.wrote = now
	if err := fc.armWrite(now.Add(fc.p.cfg.WriteTimeout)); err != nil {
		return 0, err
	}
	return fc.rw.Write(p)
}

// watchClient starts the watcher unless it runs or bytes of a next
// request are already buffered (a client sending more has not gone).
func (fc *fastConn) watchClient() {
	if fc.watching || fc.br.Buffered() > 0 || fc.peeked {
		return
	}
	fc.watching = true
	fc.watchOn.Store(true)
	fc.watched = make(chan struct{})
	fc.armRead(time.Time{}, 0)
	go func() {
		defer close(fc.watched)
		n, err := fc.rw.Read(fc.peekByte[:])
		if n == 1 {
			fc.peeked = true // read by the connection's goroutine after <-watched
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return // stopped by stopWatch
		}
		fc.cc.Close() // gone: ends the request's context and the backend exchange
	}()
}

// stopWatch stops the watcher and waits for it.
func (fc *fastConn) stopWatch() {
	if !fc.watching {
		return
	}
	fc.rw.SetReadDeadline(aLongTimeAgo)
	<-fc.watched
	fc.watching = false
	fc.watchOn.Store(false)
	fc.rdl = aLongTimeAgo // re-armed by the next readHead
}

// fastServer holds the fast server's connections.
type fastServer struct {
	stopping atomic.Bool
	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	emptied  chan struct{} // closed when conns becomes empty while waited for
	handoff  *handoffListener
	// tls is the HTTPS listener's configuration (ALPN h2 and http/1.1);
	// nil: plain HTTP.
	tls *tls.Config
	// handedOff counts the connections handed to net/http.
	handedOff atomic.Int64
}

var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	// An answer's writer is taken for the answer only (an idle
	// connection holds none): as large as the copy buffer, so a body read
	// from the backend in one piece leaves with its head in one write.
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
)

// serveFast serves cc until it closes, ends, or is handed to net/http.
func (p *Proxy) serveFast(cc *clientConn) {
	fs := p.fast
	fc := &fastConn{p: p, cc: cc, rw: cc, remote: cc.RemoteAddr().String()}
	fs.mu.Lock()
	if fs.stopping.Load() {
		fs.mu.Unlock()
		cc.Close()
		return
	}
	fs.conns[fc] = struct{}{}
	fs.mu.Unlock()
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), connKey{}, cc))
	ctx = context.WithValue(ctx, watchKey{}, fc)
	fc.ctx = ctx
	fc.stopBackend = func() bool { return fc.backend.Swap(nil) != nil }
	cc.setCancel(func() {
		cancel()
		if bc := fc.backend.Swap(nil); bc != nil {
			bc.wake()
		}
	})
	if fs.tls != nil {
		tc := tls.Server(cc, fs.tls)
		if !fc.handshake(tc) {
			cancel()
			cc.Close()
			fs.remove(fc)
			return
		}
		st := tc.ConnectionState()
		if st.NegotiatedProtocol == "h2" {
			// HTTP/2 is net/http's; nothing has been read past the
			// handshake.
			cancel()
			fs.remove(fc)
			fs.handedOff.Add(1)
			fs.handoff.give(tc)
			return
		}
		fc.rw, fc.tls = tc, &st
	}
	fc.br = fastReaders.Get().(*bufio.Reader)
	fc.br.Reset(fc)
	fc.w = fastWriter{fc: fc, h: make(http.Header)}
	handed := false
	defer func() {
		if !handed {
			cc.Close()
		}
		fc.stopWatch()
		cancel()
		fc.br.Reset(nil)
		fastReaders.Put(fc.br)
		fs.remove(fc)
	}()
	for {
		n, ok := fc.readHead()
		if n < 0 {
			return // closed, timed out, or shutting down
		}
		var req *http.Request
		var wantsClose bool
		if ok {
			req, wantsClose, ok = fc.request(n)
		}
		if !ok {
			handed = fc.handOff()
			return
		}
		fc.br.Discard(n)
		if !fc.serve(req, wantsClose) {
			return
		}
	}
}

// watchBackend has bc woken when the connection closes, as
// context.AfterFunc(fc.ctx, bc.wake) would (the context ends only then),
// and returns the function that stops that. The caller checks the
// context after it: a close before it left bc unwatched, but the context
// ended.
func (fc *fastConn) watchBackend(bc *backendConn) (stop func() bool) {
	fc.backend.Store(bc)
	return fc.stopBackend
}

// streamWriter returns the handler's streamWriter over the connection's
// answer writer, made at its first request.
func (fc *fastConn) streamWriter() *streamWriter {
	if fc.sw == nil {
		fc.sw = &streamWriter{ResponseWriter: &fc.w, rc: http.NewResponseController(&fc.w), d: fc.p.cfg.WriteTimeout, armed: true}
	}
	return fc.sw
}

// remove takes fc out of the server's connections.
func (fs *fastServer) remove(fc *fastConn) {
	fs.mu.Lock()
	delete(fs.conns, fc)
	if len(fs.conns) == 0 && fs.emptied != nil {
		close(fs.emptied)
		fs.emptied = nil
	}
	fs.mu.Unlock()
}

// handshake runs the TLS handshake within the header timeout, as
// net/http's server does, and answers a plaintext HTTP request as it does;
// false when it failed (told to Config.HandshakeFailed).
func (fc *fastConn) handshake(tc *tls.Conn) bool {
	p := fc.p
	// Bounded by a deadline; fc.ctx ends only when cc is closed, which
	// ends the handshake too.
	err := tlsconf.Handshake(tc, p.cfg.HeaderTimeout)
	if err == nil {
		return true
	}
	reason := err.Error()
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && recordLooksLikeHTTP(re.RecordHeader) {
		io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		reason = "client sent an HTTP request to an HTTPS server"
	}
	p.log.Debug("http: TLS handshake error", "client", fc.remote, "err", reason)
	if p.cfg.HandshakeFailed != nil {
		p.cfg.HandshakeFailed()
	}
	return false
}

// recordLooksLikeHTTP is net/http's test of a TLS record header.
func recordLooksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// readHead waits for the next request head: n is its length in br, or -1
// when the connection is to end (closed, timed out, shutting down); ok is
// false when the bytes are not a head the fast reader takes (too long for
// its buffer, or not complete before an error).
func (fc *fastConn) readHead() (n int, ok bool) {
	p := fc.p
	now := fc.wrote // the answer just written: a clock reading saved
	fc.wrote = time.Time{}
	if fc.br.Buffered() == 0 {
		if now.IsZero() {
			now = time.Now()
		}
		fc.armRead(now.Add(p.cfg.IdleTimeout), p.cfg.IdleTimeout)
		fc.state.Store(fastIdle)
		if p.fast.isStopping() {
			return -1, false
		}
		if _, err := fc.br.Peek(1); err != nil {
			return -1, false
		}
		fc.state.Store(fastActive)
	}
	headerDeadline := false
	for {
		b, _ := fc.br.Peek(fc.br.Buffered())
		if n := headEnd(b); n >= 0 {
			return n, true
		}
		if len(b) >= fc.br.Size() {
			return 0, false // longer than the fast path's buffer: net/http's
		}
		if !headerDeadline {
			headerDeadline = true
			fc.armRead(time.Now().Add(p.cfg.HeaderTimeout), 0)
		}
		if _, err := fc.br.Peek(len(b) + 1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || fc.br.Buffered() == 0 {
				return -1, false // net/http closes a slow head without an answer too
			}
			return 0, false // cut short: net/http answers what it can
		}
	}
}

// request reads the head of n bytes and decides whether the fast server
// serves it; wantsClose: the connection ends after the answer
// (fastHead.wantsClose).
func (fc *fastConn) request(n int) (req *http.Request, wantsClose, ok bool) {
	b, _ := fc.br.Peek(n)
	h, ok := parseFastHead(b)
	if !ok {
		return nil, false, false
	}
	req, ok = h.request(fc.ctx, fc.remote, fc.tls)
	if !ok {
		return nil, false, false
	}
	p, cc := fc.p, fc.cc
	if cc.refusal != "" || cc.delay() > 0 || !p.direct(req) || p.loginForm(req) != nil {
		return nil, false, false
	}
	return req, h.wantsClose, true
}

// serve answers req, and ends the connection after it when wantsClose;
// false when the connection is to end.
func (fc *fastConn) serve(req *http.Request, wantsClose bool) (keep bool) {
	w := &fc.w
	w.reset(req, wantsClose)
	fc.bw = fastWriters.Get().(*bufio.Writer)
	fc.bw.Reset(fc)
	defer func() {
		fc.bw.Reset(nil)
		fastWriters.Put(fc.bw)
		fc.bw = nil
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				fc.p.log.Error("panic serving a request", "client", fc.cc.addr.String(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
			keep = false
		}
	}()
	fc.p.ServeHTTP(w, req)
	fc.stopWatch()
	w.finish()
	return !w.closeAfter && w.err == nil && !fc.p.fast.isStopping()
}

// handOff gives the connection, with what was read of it, to net/http's
// server; false when that server has stopped (the connection is closed).
func (fc *fastConn) handOff() bool {
	var pre []byte
	if n := fc.br.Buffered(); n > 0 {
		b, _ := fc.br.Peek(n)
		pre = append([]byte(nil), b...)
	}
	// net/http sets the deadlines it wants; none of the fast server's may
	// be left.
	if err := fc.rw.SetDeadline(time.Time{}); err != nil {
		return false
	}
	fc.p.fast.handedOff.Add(1)
	hc := &handoffConn{Conn: fc.rw, cc: fc.cc, pre: pre}
	if fc.tls != nil {
		return fc.p.fast.handoff.give(&tlsHandoffConn{handoffConn: hc, state: *fc.tls})
	}
	return fc.p.fast.handoff.give(hc)
}

// armRead sets the read deadline to t unless the one set is no later and
// at most slack earlier (re-arming a timer per request costs more than a
// deadline that ends a little early).
func (fc *fastConn) armRead(t time.Time, slack time.Duration) {
	if !fc.rdl.IsZero() && !fc.rdl.After(t) && t.Sub(fc.rdl) <= slack/64 {
		return
	}
	fc.rdl = t
	fc.rw.SetReadDeadline(t)
}

// armWrite sets the write deadline to t unless the one set is no later
// and at most 1/64 of the write timeout earlier.
func (fc *fastConn) armWrite(t time.Time) error {
	if !fc.wdl.IsZero() && !fc.wdl.After(t) && t.Sub(fc.wdl) <= fc.p.cfg.WriteTimeout/64 {
		return nil
	}
	fc.wdl = t
	return fc.rw.SetWriteDeadline(t)
}

func (fs *fastServer) isStopping() bool { return fs.stopping.Load() }

// stop makes every connection end after the request it serves, and wakes
// the ones waiting for a request.
func (fs *fastServer) stop() {
	fs.mu.Lock()
	fs.stopping.Store(true)
	var idle []*fastConn
	for fc := range fs.conns {
		if fc.state.Load() == fastIdle {
			idle = append(idle, fc)
		}
	}
	fs.mu.Unlock()
	for _, fc := range idle {
		fc.cc.SetReadDeadline(aLongTimeAgo)
	}
}

// wait waits until every connection has left the fast server or ctx is
// done.
func (fs *fastServer) wait(ctx context.Context) {
	fs.mu.Lock()
	if len(fs.conns) == 0 {
		fs.mu.Unlock()
		return
	}
	if fs.emptied == nil {
		fs.emptied = make(chan struct{})
	}
	emptied := fs.emptied
	fs.mu.Unlock()
	select {
	case <-emptied:
	case <-ctx.Done():
	}
}

// handoffConn is a connection handed to net/http's server: pre, the bytes
// the fast server read but did not serve, come first.
type handoffConn struct {
	net.Conn // cc, or a *tls.Conn over it
	cc       *clientConn
	pre      []byte
}

func (c *handoffConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// tlsHandoffConn is a handoffConn over TLS: net/http's server takes the
// connection state from it (Request.TLS).
type tlsHandoffConn struct {
	*handoffConn
	state tls.ConnectionState
}

// ConnectionState returns the TLS state of the connection.
func (c *tlsHandoffConn) ConnectionState() tls.ConnectionState { return c.state }

// handoffListener is the listener net/http's server accepts from: the
// connections the fast server hands over.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// give hands c to the server, or closes it and returns false once the
// listener is closed.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// date returns the Date header value for now, formatted once a second.
func (p *Proxy) date() string {
	now := time.Now()
	sec := now.Unix()
	if d := p.dateCache.Load(); d != nil && d.sec == sec {
		return d.text
	}
	d := &cachedDate{sec: sec, text: now.UTC().Format(http.TimeFormat)}
	p.dateCache.Store(d)
	return d.text
}

type cachedDate struct {
	sec  int64
	text string
}

// acceptFast accepts connections for the fast server until ln fails.
// Temporary errors are retried with backoff, as net/http's server does.
func (p *Proxy) acceptFast(ln net.Listener, wg *sync.WaitGroup) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		cc := p.admit(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.serveFast(cc)
		}()
	}
}
