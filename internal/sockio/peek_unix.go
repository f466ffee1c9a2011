//go:build unix && (!linux || 386)

package sockio

import "syscall"

// Peek reports whether bytes are queued on the socket fd, without
// consuming them or waiting: recv(2) of one byte with MSG_PEEK and
// MSG_DONTWAIT, through the syscall package: the raw call is made on
// Linux only, and not on linux/386, where recvfrom goes through
// socketcall(2). n is 1 when bytes are queued and 0 at end of stream; a
// socket with nothing queued yet fails with EAGAIN.
func Peek(fd uintptr) (n int, errno syscall.Errno) {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if e, ok := err.(syscall.Errno); ok {
		return 0, e
	}
	if err != nil {
		return 0, syscall.EIO
	}
	return n, 0
}
