package netlisten

import (
	"bufio"
	"net"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// Unread reports, without blocking and without consuming anything,
// whether the client has sent bytes that nobody has read yet: bytes that
// came in with the PROXY header, or bytes waiting in the socket. Protocol
// front-ends ask it just before their greeting to spot early talkers
// (clients that speak before the server has), a mark of spam software.
// Before a TLS handshake the bytes may be the handshake itself; ask after it.
func (c *Conn) Unread() bool {
	if p, ok := c.base.(*prefixConn); ok && len(p.prefix) > 0 {
		return true
	}
	return socketUnread(c.raw)
}

// prefixConn is a connection whose first bytes were read ahead: the bytes
// a PROXY header reader had buffered beyond the header.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// takeBuffered returns pc with the bytes its reader holds beyond the PROXY
// header moved into a prefixConn, so that Unread can see them. A read with
// a deadline already past returns buffered bytes without touching the
// socket, and fails at once when there are none.
func takeBuffered(pc net.Conn, raw net.Conn) net.Conn {
	raw.SetReadDeadline(time.Unix(1, 0))
	defer raw.SetReadDeadline(time.Time{})
	buf := make([]byte, 256) // the PROXY reader's buffer size
	n, _ := pc.Read(buf)     // an error other than the deadline recurs on the next Read
	if n == 0 {
		return pc
	}
	return &prefixConn{Conn: pc, prefix: buf[:n]}
}

// RawTCP returns the connection's TCP socket when bytes may move on it
// directly: no TLS and nothing read ahead of it. A relay uses it to move
// bytes with splice(2) while holding no buffer when idle.
func (c *Conn) RawTCP() (sockio.TCPSocket, bool) {
	if c.cur.Load().tls != nil {
		return nil, false
	}
	if p, ok := c.base.(*prefixConn); ok && len(p.prefix) > 0 {
		return nil, false
	}
	return sockio.AsTCPSocket(c.raw)
}

// earlyTalkerWait is how long SpokeFirst watches a connection that cannot
// tell by itself (a plain TCP connection, as in tests).
const earlyTalkerWait = time.Millisecond

// SpokeFirst reports whether the client sent bytes before the server's
// greeting (an early talker, a mark of spam software): bytes r has
// buffered, or bytes not read yet on conn. For a *Conn it asks Unread and
// never waits; any other connection is watched for a millisecond (a
// deadline already past would fail before looking at the socket). It
// consumes nothing.
func SpokeFirst(conn net.Conn, r *bufio.Reader) bool {
	if r.Buffered() > 0 {
		return true
	}
	if c, ok := conn.(*Conn); ok {
		return c.Unread()
	}
	conn.SetReadDeadline(time.Now().Add(earlyTalkerWait))
	defer conn.SetReadDeadline(time.Time{})
	_, err := r.Peek(1)
	return err == nil
}
