package relay

import (
	"io"
	"net"
	"sync"

	"github.com/postern/postern/internal/sockio"
)

// Buffer sizes of the relay where TLS sits on one side (the client's TLS
// ends in the gateway, or the backend is reached over TLS), so the kernel
// cannot move the bytes.
const (
	// tlsIdleBuf reads from a TLS connection while bytes come in small
	// pieces (commands): it is what an idle session holds, since a read
	// must be pending to notice the client. tls.Conn keeps the rest of a
	// record's plaintext for the next read, so nothing is lost when a
	// record is larger.
	tlsIdleBuf = 1 << 10
	// tlsReadBuf reads from a TLS connection while a read fills the small
	// buffer (an upload): tls.Conn.Read returns the plaintext of one
	// record at most, and a record carries at most 16 KiB, so a larger
	// buffer is never filled. It is pooled and given back after the first
	// read that does not fill it.
	tlsReadBuf = 16 << 10
	// tcpReadBuf reads from a plain TCP socket into a TLS connection. It
	// is taken from a pool when the socket is readable and given back
	// when it is empty, so an idle session holds none (see pumpFromTCP).
	tcpReadBuf = 32 << 10
)

var (
	tcpReadBufs = sync.Pool{New: func() any { b := make([]byte, tcpReadBuf); return &b }}
	tlsReadBufs = sync.Pool{New: func() any { b := make([]byte, tlsReadBuf); return &b }}
)

// writerOnly and readerOnly hide ReadFrom and WriteTo, which would make
// io.CopyBuffer ignore the buffer it is given and allocate 32 KiB of its
// own for the life of the copy.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// pumpTLS copies src to dst when at least one of them is not a plain TCP
// socket (TLS on it, or bytes read ahead).
func pumpTLS(dst, src net.Conn) (int64, error) {
	if s, ok := tcpOf(src); ok {
		return pumpFromTCP(dst, s)
	}
	return copyFromTLS(dst, src)
}

// copyFromTLS copies src (a TLS connection) to dst through a 1 KiB buffer,
// and a pooled 16 KiB one from a read that fills the small one until a
// read that does not fill the big one (the end of an upload).
func copyFromTLS(dst, src net.Conn) (int64, error) {
	small := make([]byte, tlsIdleBuf)
	buf := small
	var big *[]byte
	fresh := false // big was just taken
	defer func() {
		if big != nil {
			tlsReadBufs.Put(big)
		}
	}()
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			wn, werr := dst.Write(buf[:n])
			total += int64(wn)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		switch {
		case big == nil && n == len(buf):
			big = tlsReadBufs.Get().(*[]byte)
			buf = *big
			fresh = true
		case fresh:
			// The first read into the big buffer returns the rest of the
			// record the small one began: short, but the upload goes on.
			fresh = false
		case big != nil && n < len(buf):
			tlsReadBufs.Put(big)
			big = nil
			buf = small
		}
	}
}

// copyBuffered is io.Copy with a buffer of its own, for where the socket
// cannot be read directly.
func copyBuffered(dst net.Conn, src sockio.TCPSocket) (int64, error) {
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, tcpReadBuf))
}
