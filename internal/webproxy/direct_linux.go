package webproxy

import (
	"syscall"
	"unsafe"
)

// directPeek: the idle peek works here, so the direct path is used.
const directPeek = true

// idleClean peeks at an idle backend socket without blocking: true when
// nothing is waiting on it and the backend has not closed it. Bytes
// waiting on an idle connection are an answer nobody asked for; they must
// never be read as the next request's.
func idleClean(rc syscall.RawConn) bool {
	var buf [1]byte
	clean := false
	err := rc.Read(func(fd uintptr) bool {
		// Non-blocking: the raw call does not need the scheduler's notice.
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		clean = errno == syscall.EAGAIN
		return true // never wait for readiness
	})
	return err == nil && clean
}
