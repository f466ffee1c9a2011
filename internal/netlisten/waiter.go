package netlisten

import "github.com/postern/postern/internal/sockio"

// Waitable reports whether every wait of the connection's reads and writes
// can go to a sockio.Waiter (SetWaiter): a plain TCP connection that no
// PROXY reader or TLS layer stands in front of.
func (c *Conn) Waitable() bool {
	cur := c.cur.Load()
	if cur.tls != nil {
		return false
	}
	_, ok := cur.rw.(*sockio.Conn)
	return ok
}

// SetWaiter makes w wait for the socket's readiness in Read and Write
// (nil: the runtime's poller, as by default), when the connection is
// Waitable; Close wakes w.
func (c *Conn) SetWaiter(w sockio.Waiter) {
	if s, ok := c.base.(*sockio.Conn); ok {
		s.SetWaiter(w)
	}
}

// Sock returns the sockio connection beneath when reads and writes go
// straight to it (no TLS, nothing read ahead): for a relay on an event
// loop.
func (c *Conn) Sock() (*sockio.Conn, bool) {
	if c.cur.Load().tls != nil {
		return nil, false
	}
	s, ok := c.base.(*sockio.Conn)
	return s, ok
}
