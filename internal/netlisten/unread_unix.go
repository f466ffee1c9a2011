//go:build unix && !linux

package netlisten

import (
	"net"
	"syscall"
)

// socketUnread peeks at the socket (MSG_PEEK|MSG_DONTWAIT).
func socketUnread(raw net.Conn) bool {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness
	})
	return n > 0
}
