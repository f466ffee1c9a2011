package relay

import (
	"io"
	"net"
)

// pumpFromTCP copies a plain TCP socket into dst (a TLS connection): it
// waits for readability holding no buffer (see waitQueued), then moves the
// bytes queued through a pooled buffer and gives the buffer back.
func pumpFromTCP(dst net.Conn, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, tcpReadBuf))
	}
	w := writerOnly{dst}
	var total int64
	for {
		queued, err := waitQueued(rc)
		if err != nil {
			return total, err
		}
		if queued == 0 {
			return total, nil // end of stream
		}
		bp := tcpReadBufs.Get().(*[]byte)
		n, err := io.CopyBuffer(w, io.LimitReader(src, int64(queued)), *bp)
		tcpReadBufs.Put(bp)
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(queued) {
			return total, io.ErrUnexpectedEOF
		}
	}
}
