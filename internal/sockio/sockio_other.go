//go:build !linux

package sockio

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// New returns c: raw system calls are used on Linux only.
func New(c *net.TCPConn) net.Conn { return c }

// Wrap returns c: raw system calls are used on Linux only.
func Wrap(c net.Conn) net.Conn { return c }

// AsTCPSocket returns c as a TCPSocket when it is a *net.TCPConn.
func AsTCPSocket(c net.Conn) (TCPSocket, bool) {
	t, ok := c.(*net.TCPConn)
	return t, ok
}

// Acceptor is not available here: the caller accepts with its listener.
type Acceptor struct{}

// NewAcceptor returns an Acceptor that accepts nothing.
func NewAcceptor(syscall.RawConn) *Acceptor { return &Acceptor{} }

// Accept is not available here: the caller accepts with its listener.
func (*Acceptor) Accept() (net.Conn, error) { return nil, errors.ErrUnsupported }

// ListenerFile is not available here: there are no owned sockets.
func ListenerFile(net.Listener) (*os.File, error) { return nil, errors.ErrUnsupported }
