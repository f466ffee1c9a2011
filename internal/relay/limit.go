package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// ErrBackendLimit is returned when a backend connection would exceed a
// BackendLimit.
var ErrBackendLimit = errors.New("too many backend connections")

// BackendLimit bounds the connections a gateway holds open to its backend:
// in all, and per client network (an IPv4 /24, an IPv6 /64), so that idle
// clients cannot take every process of the mail server behind postern. A
// nil *BackendLimit, or zero fields, bound nothing. Its methods are safe
// for concurrent use.
type BackendLimit struct {
	Max        int // connections in all; 0: no bound
	PerNetwork int // connections per client network; 0: no bound

	mu    sync.Mutex
	total int
	per   map[netip.Prefix]int
}

// NetworkOf is the client network a per-network bound counts: the /24 of
// an IPv4 address, the /64 of an IPv6 one.
func NetworkOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// Acquire takes one connection for client. It returns ErrBackendLimit when
// a bound is reached; otherwise release must be called exactly once when
// the connection ends (LimitConn does it on Close).
func (l *BackendLimit) Acquire(client netip.Addr) (release func(), err error) {
	n, counted, err := l.take(client)
	if err != nil {
		return nil, err
	}
	if !counted {
		return func() {}, nil
	}
	var once sync.Once
	return func() { once.Do(func() { l.give(n) }) }, nil
}

// take is Acquire without the function: counted says the connection is
// counted under client's network n, and must be given back (give) once.
// A Dialer's connections give it back themselves, which costs no
// allocation.
func (l *BackendLimit) take(client netip.Addr) (n netip.Prefix, counted bool, err error) {
	if l == nil {
		return netip.Prefix{}, false, nil
	}
	n = NetworkOf(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max <= 0 && l.PerNetwork <= 0 {
		return n, false, nil
	}
	if l.Max > 0 && l.total >= l.Max || l.PerNetwork > 0 && l.per[n] >= l.PerNetwork {
		return n, false, ErrBackendLimit
	}
	if l.per == nil {
		l.per = make(map[netip.Prefix]int)
	}
	l.total++
	l.per[n]++
	return n, true, nil
}

// give gives back one connection take counted under n.
func (l *BackendLimit) give(n netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[n]--; l.per[n] <= 0 {
		delete(l.per, n)
	}
}

// InUse returns the connections held in all and by client's network.
func (l *BackendLimit) InUse(client netip.Addr) (total, network int) {
	if l == nil {
		return 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.per[NetworkOf(client)]
}

// LimitConn returns c, calling release when it is closed. The splice still
// reaches the TCP socket beneath (RawTCP).
func LimitConn(c net.Conn, release func()) net.Conn {
	return &limitedConn{Conn: c, release: release}
}

// ownedLimitedConn is a limitedConn over a socket of an event loop's own
// and that socket's sockio.Conn, in one allocation (Dialer.dial).
type ownedLimitedConn struct {
	lc limitedConn
	sc sockio.Conn
}

type limitedConn struct {
	net.Conn
	// The place given back once (giveBack): under limit, counted in
	// network (a Dialer's), or by release (LimitConn's).
	limit    *BackendLimit
	network  netip.Prefix
	release  func()
	released atomic.Bool
	relayed  func(up, down int64) // Dialer.Relayed

	// held is a PROXY header not sent yet (Dialer.HoldHeader): the first
	// Read sends it with WriteRead, the first Write, RawTCP or
	// WriteReaderOf before anything else, within heldTimeout. Only the
	// dialogue's goroutine reads or writes before the header is gone.
	held        []byte
	heldTimeout time.Duration
}

// Read reads the backend; a held PROXY header goes out with it.
func (c *limitedConn) Read(p []byte) (int, error) {
	if c.held == nil {
		return c.Conn.Read(p)
	}
	h := c.held
	c.held = nil
	c.Conn.SetWriteDeadline(time.Now().Add(c.heldTimeout))
	nw, nr, err := c.Conn.(WriteReader).WriteRead(h, p, false)
	c.Conn.SetWriteDeadline(time.Time{})
	if nw < len(h) && err != nil {
		return nr, fmt.Errorf("sending PROXY header to backend: %w", err)
	}
	return nr, err
}

// Write writes to the backend, after a held PROXY header.
func (c *limitedConn) Write(p []byte) (int, error) {
	if err := c.sendHeld(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// sendHeld writes the held PROXY header, if any, on its own.
func (c *limitedConn) sendHeld() error {
	if c.held == nil {
		return nil
	}
	h := c.held
	c.held = nil
	return writeHeader(c.Conn, h, c.heldTimeout)
}

// reportRelayed tells the Dialer's Relayed what a splice over c moved.
func reportRelayed(c net.Conn, up, down int64) {
	if _, own := c.(*limitedConn); !own { // the usual one: no interface lookup
		if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = tc.NetConn()
		}
	}
	if lc, ok := c.(*limitedConn); ok && lc.relayed != nil {
		lc.relayed(up, down)
	}
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.giveBack()
	return err
}

// giveBack gives c's place under its bound back, the first time only.
func (c *limitedConn) giveBack() {
	if c.released.Swap(true) {
		return
	}
	switch {
	case c.limit != nil:
		c.limit.give(c.network)
	case c.release != nil:
		c.release()
	}
}

// WriteReader sends a request with the first read of its answer, which
// then waits for the answer without a read that finds nothing first
// (sockio.Conn.WriteRead).
type WriteReader interface {
	WriteRead(w, r []byte, idle bool) (nw, nr int, err error)
}

// WriteReaderOf returns c's WriteRead when c, a connection from
// Dialer.Dial, reads and writes its socket directly (no TLS); nil
// otherwise. A PROXY header c still holds is sent first.
func WriteReaderOf(c net.Conn) WriteReader {
	if lc, ok := c.(*limitedConn); ok {
		if lc.sendHeld() != nil {
			return nil
		}
		c = lc.Conn
	}
	if sc, ok := c.(*sockio.Conn); ok { // the usual one, without the interface table's lookup
		return sc
	}
	wr, _ := c.(WriteReader)
	return wr
}

// RawTCP hands out the socket beneath, for the splice.
func (c *limitedConn) RawTCP() (sockio.TCPSocket, bool) {
	if c.sendHeld() != nil {
		return nil, false
	}
	return tcpOf(c.Conn)
}

// ReleaseLimit gives back c's place under its BackendLimit before c is
// closed: a logged-in IMAP or POP3 session no longer holds the backend's
// login process. c is a connection from Dialer.Dial, possibly under TLS.
func ReleaseLimit(c net.Conn) {
	if lc, ok := c.(*limitedConn); ok { // the usual one: without TLS, no interface lookup
		lc.giveBack()
		return
	}
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		lc.giveBack()
	}
}

// SetBounds changes the bounds (as Max and PerNetwork) for connections
// acquired from now on; connections held stay counted, so after a reload
// the new bounds apply to the connections already open too.
func (l *BackendLimit) SetBounds(max, perNetwork int) {
	l.mu.Lock()
	l.Max, l.PerNetwork = max, perNetwork
	l.mu.Unlock()
}

// Default bounds of backend connections for the mail services: below the
// 100 processes that Postfix (default_process_limit) and Dovecot's login
// services start by default.
const (
	DefaultMaxBackend        = 80
	DefaultMaxBackendNetwork = 40
)

// NewBackendLimit returns the bounds configured for a service: max and
// perNetwork as configured (nil: the default; 0: no bound).
func NewBackendLimit(max, perNetwork *int) *BackendLimit {
	l := &BackendLimit{Max: DefaultMaxBackend, PerNetwork: DefaultMaxBackendNetwork}
	if max != nil {
		l.Max = *max
	}
	if perNetwork != nil {
		l.PerNetwork = *perNetwork
	}
	return l
}
