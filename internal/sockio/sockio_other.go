//go:build !linux

package sockio

import (
	"errors"
	"net"
	"net/netip"
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

// SetWaiter does nothing here: there are no event loops.
func (*Acceptor) SetWaiter(Waiter) {}

// Wake does nothing here.
func (*Acceptor) Wake() {}

// ListenerFile is not available here: there are no owned sockets.
func ListenerFile(net.Listener) (*os.File, error) { return nil, errors.ErrUnsupported }

// Socket is a socket whose descriptor the program owns. None is made on
// this system (sockets of the program's own are Linux only): the type is
// here so that the code that looks for one compiles.
type Socket struct{ TCPSocket }

// Unread reports nothing known: there are no owned sockets here.
func (*Socket) Unread() (unread, ok bool) { return false, false }

// Conn reads and writes a Socket. None is made on this system; see Socket.
type Conn struct{ TCPSocket }

// InitOwned makes c read and write s.
func (c *Conn) InitOwned(s *Socket) { c.TCPSocket = s }

// RawTCP returns the socket beneath.
func (c *Conn) RawTCP() (TCPSocket, bool) { return c.TCPSocket, c.TCPSocket != nil }

// SetWaiter does nothing: there are no event loops here.
func (*Conn) SetWaiter(Waiter) {}

// WriteRead is not available here.
func (*Conn) WriteRead(w, r []byte, idle bool) (nw, nr int, err error) {
	return 0, 0, errors.ErrUnsupported
}

// LocalAddrPort returns the zero address: see Socket.
func (*Socket) LocalAddrPort() netip.AddrPort { return netip.AddrPort{} }

// RemoteAddrPort returns the zero address: see Socket.
func (*Socket) RemoteAddrPort() netip.AddrPort { return netip.AddrPort{} }
