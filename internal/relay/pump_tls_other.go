//go:build !linux

package relay

import "net"

// pumpFromTCP is a buffered copy where the socket cannot be read directly.
func pumpFromTCP(dst net.Conn, src *net.TCPConn) (int64, error) {
	return copyBuffered(dst, src)
}
