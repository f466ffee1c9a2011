package relay

import (
	"net"

	"github.com/postern/postern/internal/sockio"
)

// rawTCPer is a connection that can hand out its TCP socket when nothing
// sits between the two (no TLS, no bytes read ahead): netlisten.Conn,
// sockio.Conn.
type rawTCPer interface {
	RawTCP() (sockio.TCPSocket, bool)
}

// tcpOf returns c's TCP socket when bytes may move on it directly: Go's
// *net.TCPConn or an owned sockio.Socket.
func tcpOf(c net.Conn) (sockio.TCPSocket, bool) {
	switch c := c.(type) {
	case *net.TCPConn:
		return c, true
	case rawTCPer:
		return c.RawTCP()
	}
	return nil, false
}

// pump copies src to dst until src ends or either fails. Between two
// plain TCP sockets it holds nothing while src is idle (see pumpTCP);
// otherwise (TLS on either side) it is a buffered copy (see pumpTLS).
func pump(dst, src net.Conn) (int64, error) {
	if d, ok := tcpOf(dst); ok {
		if s, ok := tcpOf(src); ok {
			return pumpTCP(d, s)
		}
	}
	return pumpTLS(dst, src)
}
