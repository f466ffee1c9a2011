//go:build unix

package netlisten

import (
	"net"
	"syscall"

	"github.com/postern/postern/internal/sockio"
)

// socketUnread peeks at the socket (MSG_PEEK|MSG_DONTWAIT; a raw system
// call on Linux, see package sockio).
func socketUnread(raw net.Conn) bool {
	if so, ok := raw.(interface{ Unread() (bool, bool) }); ok {
		// A socket of the program's own: asked without a RawConn step,
		// whose function would be an allocation.
		if unread, ok := so.Unread(); ok {
			return unread
		}
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var e syscall.Errno
	rc.Read(func(fd uintptr) bool {
		n, e = sockio.Peek(fd)
		return true // never wait for readiness
	})
	return e == 0 && n > 0
}
