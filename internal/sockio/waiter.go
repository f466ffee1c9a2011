package sockio

import (
	"net"
	"syscall"
)

// Waiter waits for a socket's readiness on behalf of a Conn whose reads
// and writes run on an event loop (internal/evloop) rather than on a
// goroutine of their own: the loop watches the socket and resumes the
// code that reads or writes when it may go on.
type Waiter interface {
	// Wait waits until the socket fd may be readable (write false) or
	// writable, the deadline passes (on the clock of Mono and MonoNow;
	// 0: none), or Wake is
	// called. It returns os.ErrDeadlineExceeded after the deadline. It
	// reports false when the Waiter no longer runs the calling code (the
	// code moved to a goroutine of its own): the caller waits itself.
	//
	// A Conn whose last read emptied the socket (it returned less than
	// asked) waits before reading again, without a read that would find
	// nothing: Wait must then report bytes that arrived since that read,
	// as an edge-triggered watcher of the socket does.
	Wait(fd int, write bool, deadline int64) (bool, error)
	// Wake ends a Wait of the connection's code early: the socket fd was
	// closed, or (fd -1) it was closed before or a deadline was set in
	// the past. Any goroutine may call it.
	Wake(fd int)
}

// waiterRef holds a Waiter for an atomic pointer.
type waiterRef struct{ w Waiter }

// TCPSocket is a connected TCP socket as a relay moves bytes on it: Go's
// *net.TCPConn, or a Socket whose descriptor the program owns (Linux).
type TCPSocket interface {
	net.Conn
	CloseWrite() error
	SyscallConn() (syscall.RawConn, error)
}
