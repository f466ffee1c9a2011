package relay

import (
	"io"
	"net"
	"sync"
)

// Buffer sizes of the relay where TLS sits on one side (the client's TLS
// ends in the gateway, or the backend is reached over TLS), so the kernel
// cannot move the bytes.
const (
	// tlsReadBuf reads from a TLS connection: tls.Conn.Read returns the
	// plaintext of one record at most, and a record carries at most
	// 16 KiB, so a larger buffer is never filled. It is held while the
	// session idles (a read must be pending to notice the client).
	tlsReadBuf = 16 << 10
	// tcpReadBuf reads from a plain TCP socket into a TLS connection. It
	// is taken from a pool only once the socket is readable and given
	// back when the bytes queued are written, so an idle session holds
	// none.
	tcpReadBuf = 32 << 10
)

var tcpReadBufs = sync.Pool{New: func() any { b := make([]byte, tcpReadBuf); return &b }}

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
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, tlsReadBuf))
}
