package relay

import (
	"net"
	"os"
	"syscall"

	"github.com/postern/postern/internal/sockio"
)

// pumpFromTCP copies a plain TCP socket into dst (a TLS connection). It
// reads the socket directly (non-blocking) into a pooled buffer and writes
// what it read to dst; when the socket has nothing more (EAGAIN) the
// buffer goes back to the pool before the goroutine waits for
// readability, so an idle session holds none. The system calls are those
// of io.Copy: one read per burst of data and one that finds the socket
// empty. The reads are raw system calls (sockio.Read).
func pumpFromTCP(dst net.Conn, src sockio.TCPSocket) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return copyBuffered(dst, src)
	}
	var bp *[]byte
	defer func() {
		if bp != nil {
			tcpReadBufs.Put(bp)
		}
	}()
	var total int64
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			if bp == nil {
				bp = tcpReadBufs.Get().(*[]byte)
			}
			var e syscall.Errno
			n, e = sockio.Read(fd, *bp)
			if e == syscall.EAGAIN {
				tcpReadBufs.Put(bp)
				bp = nil
				return false // nothing queued: wait holding no buffer
			}
			if e != 0 {
				rerr = os.NewSyscallError("read", e)
			}
			return true
		})
		if err != nil {
			return total, err
		}
		if rerr != nil {
			return total, &net.OpError{Op: "read", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(), Err: rerr}
		}
		if n <= 0 {
			return total, nil // end of stream
		}
		wn, werr := dst.Write((*bp)[:n])
		total += int64(wn)
		if werr != nil {
			return total, werr
		}
	}
}
