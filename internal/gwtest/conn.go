package gwtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/sockio"
	"github.com/postern/postern/internal/tlsconf"
)

// Conn adapts a plain connection (a test's TCP connection, a pipe) to
// relay.Conn: the client is the peer, and StartTLS upgrades it in place
// as the listener's connection does.
type Conn struct {
	raw net.Conn
	tls atomic.Pointer[tls.Conn] // set by StartTLS
}

// NewConn wraps c; a TCP connection reads and writes through sockio, as
// the listener's do, and can run on an event loop.
func NewConn(c net.Conn) *Conn {
	if t, ok := c.(*net.TCPConn); ok {
		c = sockio.New(t)
	}
	return &Conn{raw: c}
}

// Waitable reports whether the connection's waits can go to an event
// loop: a TCP connection without TLS.
func (c *Conn) Waitable() bool {
	_, ok := c.raw.(*sockio.Conn)
	return ok && c.tls.Load() == nil
}

// Sock returns the sockio connection beneath a TCP connection without TLS.
func (c *Conn) Sock() (*sockio.Conn, bool) {
	s, ok := c.raw.(*sockio.Conn)
	return s, ok && c.tls.Load() == nil
}

// SetWaiter makes w wait for the TCP connection's socket.
func (c *Conn) SetWaiter(w sockio.Waiter) {
	if s, ok := c.raw.(*sockio.Conn); ok {
		s.SetWaiter(w)
	}
}

func (c *Conn) cur() net.Conn {
	if t := c.tls.Load(); t != nil {
		return t
	}
	return c.raw
}

// Read reads from the connection, through TLS once it has it.
func (c *Conn) Read(b []byte) (int, error) { return c.cur().Read(b) }

// Write writes to the connection, through TLS once it has it.
func (c *Conn) Write(b []byte) (int, error) { return c.cur().Write(b) }

// Close closes the connection.
func (c *Conn) Close() error { return c.cur().Close() }

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// ClientAddr returns the peer (zero for a pipe).
func (c *Conn) ClientAddr() netip.AddrPort { return addrPort(c.raw.RemoteAddr()) }

// LocalAddrPort returns the local address (zero for a pipe).
func (c *Conn) LocalAddrPort() netip.AddrPort { return addrPort(c.raw.LocalAddr()) }

// Handshake fails: a plain connection has no implicit TLS.
func (c *Conn) Handshake(time.Duration) error {
	return errors.New("gwtest: TLS handshake on a connection without TLS")
}

// StartTLS upgrades the connection in place and runs the server handshake.
func (c *Conn) StartTLS(cfg *tls.Config, timeout time.Duration) error {
	t := tls.Server(c.raw, cfg)
	if !c.tls.CompareAndSwap(nil, t) {
		return errors.New("gwtest: StartTLS on a connection that already has TLS")
	}
	// A deadline bounds it, as netlisten's does.
	if err := tlsconf.Handshake(t, timeout); err != nil {
		return fmt.Errorf("gwtest: TLS handshake: %w", err)
	}
	return nil
}

// Acceptor serves a test's plain listener to a gateway.
type Acceptor struct{ net.Listener }

// Accept returns the next connection, wrapped.
func (a Acceptor) Accept() (relay.Conn, error) {
	c, err := a.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}
