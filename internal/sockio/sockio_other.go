//go:build !linux

package sockio

import "net"

// New returns c: raw system calls are used on Linux only.
func New(c *net.TCPConn) net.Conn { return c }

// Wrap returns c: raw system calls are used on Linux only.
func Wrap(c net.Conn) net.Conn { return c }

// AsTCPSocket returns c as a TCPSocket when it is a *net.TCPConn.
func AsTCPSocket(c net.Conn) (TCPSocket, bool) {
	t, ok := c.(*net.TCPConn)
	return t, ok
}
