package relay

import (
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// pumpTCP moves bytes from src to dst with splice(2), but only while there
// are bytes to move. io.Copy between two TCP sockets would splice too, but
// it takes a pipe (two descriptors, up to 1 MiB of kernel buffers) as it
// starts waiting and keeps it while the connection is idle: a logged-in
// IMAP client idles for hours, and 10,000 of them would hold 40,000 extra
// descriptors. pumpTCP waits for readability holding nothing, asks the
// kernel how many bytes are queued, and splices exactly those (Go's splice
// path returns the pipe to its pool when a limited copy completes).
func pumpTCP(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}
	var total int64
	for {
		queued, err := waitQueued(rc)
		if err != nil {
			return total, err
		}
		if queued == 0 {
			return total, nil // end of stream
		}
		n, err := io.Copy(dst, io.LimitReader(src, int64(queued)))
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(queued) {
			return total, io.ErrUnexpectedEOF
		}
	}
}

// waitQueued waits until the socket is readable and returns the number of
// bytes queued on it; 0 means the peer closed its side.
func waitQueued(rc interface {
	Read(func(fd uintptr) bool) error
}) (int, error) {
	var queued int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // nothing yet: wait for readability
		case err != nil:
			serr = err
		case n > 0:
			queued, serr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if serr == nil && queued <= 0 {
				queued = n // never report end of stream for a readable socket
			}
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: serr}
	}
	return queued, nil
}
