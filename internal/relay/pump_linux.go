package relay

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/postern/postern/internal/sockio"
)

// pumpTCP moves bytes from src to dst with splice(2), but only while there
// are bytes to move. io.Copy between two TCP sockets would splice too, but
// it takes a pipe (two descriptors, up to 1 MiB of kernel buffers) as it
// starts waiting and keeps it while the connection is idle: a logged-in
// IMAP client idles for hours, and 10,000 of them would hold 40,000 extra
// descriptors. pumpTCP waits for readability holding nothing, asks the
// kernel how many bytes are queued, and splices exactly those through a
// pipe that goes back to a pool when they are moved (sockio.Splice; its
// system calls are raw ones, see package sockio).
func pumpTCP(dst, src sockio.TCPSocket) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}
	drc, err := dst.SyscallConn()
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
		n, err := spliceN(dst, src, drc, rc, int64(queued))
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(queued) {
			return total, io.ErrUnexpectedEOF
		}
	}
}

// spliceN moves n bytes from src to dst in the kernel (sockio.Splice: raw
// splice(2) calls through a pooled pipe), or copies them when no pipe can
// be had.
func spliceN(dst, src sockio.TCPSocket, drc, rc syscall.RawConn, n int64) (int64, error) {
	moved, err := sockio.Splice(drc, rc, n)
	if errors.Is(err, sockio.ErrNoPipe) {
		return io.Copy(dst, io.LimitReader(src, n))
	}
	return moved, err
}

// waitQueued waits until the socket is readable and returns the number of
// bytes queued on it; 0 means the peer closed its side.
func waitQueued(rc interface {
	Read(func(fd uintptr) bool) error
}) (int, error) {
	var queued int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		queued, serr = queuedNow(fd)
		return serr != syscall.EAGAIN // nothing yet: wait for readability
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: serr}
	}
	return queued, nil
}

// queuedNow returns the number of bytes queued on the socket fd, 0 when
// its peer closed its side, and EAGAIN when nothing is queued yet; raw
// system calls (sockio.Peek, sockio.Queued) for a RawConn's Read.
func queuedNow(fd uintptr) (int, error) {
	n, e := sockio.Peek(fd)
	if e != 0 {
		return 0, e
	}
	if n == 0 {
		return 0, nil
	}
	queued, e := sockio.Queued(fd)
	if e != 0 {
		return 0, e
	}
	if queued <= 0 {
		queued = n // never report end of stream for a readable socket
	}
	return queued, nil
}
