package netlisten

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/sockio"
	"github.com/postern/postern/internal/tlsconf"
)

// Conn is one client connection. It implements net.Conn; RemoteAddr and
// LocalAddr report the real client and the address it connected to (from
// the PROXY header when the peer is a trusted load balancer).
//
// Read and Write go through TLS once the connection has it (implicit TLS or
// after StartTLS). Reads and Writes may run concurrently with each other as
// on any net.Conn, but not with StartTLS or Handshake.
//
// Conn does not embed the socket: StartTLS replaces the layer Reads and
// Writes go through, and a promoted field would let a caller read past TLS.
type Conn struct {
	raw  net.Conn // the TCP socket
	base net.Conn // raw, or the PROXY reader holding bytes that came with the header
	cur  atomic.Pointer[layer]
	// plain is cur's layer before TLS, kept here rather than allocated.
	plain layer
	// sc is base's storage when raw is a socket of the program's own.
	sc sockio.Conn

	client  netip.AddrPort
	local   netip.AddrPort
	proxied bool

	// owner is the Listener whose slot this connection holds; nil for a
	// connection over a limit. Set before the Conn is shared.
	owner  *Listener
	closed atomic.Bool
	// The owner's live connections, under its mu (connList).
	prev, next *Conn
	listed     bool
	// onClose runs once after the connection is closed (AfterClose).
	onClose atomic.Pointer[func()]
}

// layer is what Reads and Writes go through.
type layer struct {
	rw  net.Conn  // base, or a TLS connection over it
	tls *tls.Conn // rw when it is TLS
}

// newConn makes the connection over raw, read and written through base;
// a nil base, with raw a socket of the program's own (sockio.Socket), is
// its sockio.Conn kept in the connection's own struct.
func newConn(raw, base net.Conn, client, local netip.AddrPort, proxied bool, tlsCfg *tls.Config) *Conn {
	c := &Conn{raw: raw, base: base, client: client, local: local, proxied: proxied}
	if base == nil {
		c.sc.InitOwned(raw.(*sockio.Socket))
		base, c.base = &c.sc, &c.sc
	}
	if tlsCfg != nil {
		t := tls.Server(base, tlsCfg)
		c.cur.Store(&layer{rw: t, tls: t})
	} else {
		c.plain = layer{rw: base}
		c.cur.Store(&c.plain)
	}
	return c
}

// Read reads from the connection, through TLS when it has TLS.
func (c *Conn) Read(b []byte) (int, error) { return c.cur.Load().rw.Read(b) }

// Write writes to the connection, through TLS when it has TLS.
func (c *Conn) Write(b []byte) (int, error) { return c.cur.Load().rw.Write(b) }

// Close closes the connection (sending a TLS close_notify when a TLS
// session is established) and releases its connection slot. The slot is
// released exactly once; later calls return net.ErrClosed.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	err := c.cur.Load().rw.Close()
	c.release()
	c.closeHook()
	return err
}

// AfterClose makes f run once after the connection is closed, by Close or
// by the listener (a gateway that stops), on the goroutine that closed it;
// at once when it is closed already. A relay that watches the socket
// without a goroutine of its own learns this way that its session ended. A
// later call replaces an f that has not run.
func (c *Conn) AfterClose(f func()) {
	c.onClose.Store(&f)
	if c.closed.Load() {
		c.closeHook()
	}
}

func (c *Conn) closeHook() {
	if f := c.onClose.Swap(nil); f != nil {
		(*f)()
	}
}

// forceClose closes the socket without a TLS close_notify (which could
// wait for a peer that does not read). It reports whether it, rather than
// an earlier Close, closed the connection.
func (c *Conn) forceClose() bool {
	first := c.closed.CompareAndSwap(false, true)
	if s, ok := c.base.(*sockio.Conn); ok {
		s.Close() // wakes a Waiter too
	} else {
		c.raw.Close()
	}
	if first {
		c.release()
		c.closeHook()
	}
	return first
}

func (c *Conn) release() {
	if c.owner != nil {
		c.owner.release(c)
	}
}

// LocalAddr returns the address the client connected to, as a
// *net.TCPAddr.
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.local) }

// RemoteAddr returns the real client's address, as a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.client) }

// SetDeadline sets the read and write deadlines of the connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.cur.Load().rw.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.cur.Load().rw.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.cur.Load().rw.SetWriteDeadline(t) }

// ClientAddr returns the real client: the PROXY header's source when the
// peer is a trusted load balancer, otherwise the peer. An IPv4-mapped IPv6
// address is returned as IPv4, and the IPv6 zone is dropped.
func (c *Conn) ClientAddr() netip.AddrPort { return c.client }

// LocalAddrPort returns the address the client connected to: the PROXY
// header's destination when the peer is a trusted load balancer, otherwise
// the listening socket's address. Unmapped like ClientAddr.
func (c *Conn) LocalAddrPort() netip.AddrPort { return c.local }

// Proxied reports whether ClientAddr and LocalAddrPort come from a PROXY
// header. It is false for direct clients and for a trusted peer's LOCAL
// header (a health check).
func (c *Conn) Proxied() bool { return c.proxied }

// TLS returns the state of the connection's TLS session, or nil when it
// has none or its handshake has not completed yet. It waits for a
// handshake running in another goroutine.
func (c *Conn) TLS() *tls.ConnectionState {
	t := c.cur.Load().tls
	if t == nil {
		return nil
	}
	st := t.ConnectionState()
	if !st.HandshakeComplete {
		return nil
	}
	return &st
}

// Handshake runs the TLS handshake of an implicit-TLS connection now, if it
// has not run yet, giving up after timeout (none if timeout <= 0). Without
// it the handshake runs on the first Read or Write, bounded only by the
// connection's deadlines. The timeout is a deadline on the connection:
// after a handshake that succeeded the connection has no deadline, after a
// failure it is unusable: Close it.
func (c *Conn) Handshake(timeout time.Duration) error {
	t := c.cur.Load().tls
	if t == nil {
		return errors.New("netlisten: TLS handshake on a connection without TLS")
	}
	return c.observed(handshake(t, timeout))
}

// StartTLS upgrades a plaintext connection in place (SMTP STARTTLS, IMAP
// STARTTLS, POP3 STLS) and runs the server handshake, giving up after
// timeout (none if timeout <= 0). Later Reads and Writes go through TLS.
// As with Handshake, the timeout is a deadline on the connection, which
// has none after a handshake that succeeded. After a failure the
// connection is unusable: Close it.
//
// Buffering contract: Conn itself keeps no plaintext the caller has not
// read that could leak into the TLS session (bytes the load balancer sent
// along with the PROXY header are read by TLS, which rejects them as
// garbage). But the caller's own reader (bufio.Reader, textproto.Reader)
// may hold bytes the client pipelined after the STARTTLS command. Before
// calling StartTLS, the caller must check that its reader has nothing
// buffered (bufio.Reader.Buffered() == 0); if it has, those bytes were sent
// in plaintext and must never be interpreted after the upgrade (the
// STARTTLS command-injection attack, CVE-2011-0411): discard them and log
// it, or close the connection. After StartTLS, read through a fresh reader
// (or Reset the old one) on this Conn.
//
// StartTLS must not run concurrently with Read, Write or Handshake.
func (c *Conn) StartTLS(cfg *tls.Config, timeout time.Duration) error {
	if cfg == nil {
		return errors.New("netlisten: StartTLS without a TLS configuration")
	}
	if c.closed.Load() {
		return fmt.Errorf("netlisten: StartTLS: %w", net.ErrClosed)
	}
	cur := c.cur.Load()
	if cur.tls != nil {
		return errors.New("netlisten: StartTLS on a connection that already has TLS")
	}
	t := tls.Server(c.base, cfg)
	if !c.cur.CompareAndSwap(cur, &layer{rw: t, tls: t}) {
		return errors.New("netlisten: StartTLS ran concurrently with another StartTLS")
	}
	return c.observed(handshake(t, timeout))
}

// handshake runs t's handshake within timeout (tlsconf.Handshake: a
// deadline on the connection, cleared after a handshake that succeeded).
func handshake(t *tls.Conn, timeout time.Duration) error {
	if err := tlsconf.Handshake(t, timeout); err != nil {
		return fmt.Errorf("netlisten: TLS handshake: %w", err)
	}
	return nil
}

// ReadFrom lets io.Copy into a plain (not TLS) connection use the
// kernel's splice(2) when the source is a TCP connection.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.cur.Load().rw.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// WriteTo lets io.Copy out of a plain (not TLS) connection use splice(2)
// when the destination is a TCP connection.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.cur.Load().rw.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c})
}
