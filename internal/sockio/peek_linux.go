//go:build linux && !386

package sockio

import (
	"syscall"
	"unsafe"
)

// Peek reports whether bytes are queued on the socket fd, without
// consuming them or waiting: recv(2) of one byte with MSG_PEEK and
// MSG_DONTWAIT. n is 1 when bytes are queued and 0 at end of stream; a
// socket with nothing queued yet fails with EAGAIN. Call it from a
// syscall.RawConn's Read or Control.
func Peek(fd uintptr) (n int, errno syscall.Errno) {
	var b [1]byte
	return peek(fd, unsafe.Pointer(&b[0]), 1)
}

// peek is recv(2) of up to n bytes at p with MSG_PEEK and MSG_DONTWAIT.
func peek(fd uintptr, p unsafe.Pointer, n int) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(p), uintptr(n),
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}
