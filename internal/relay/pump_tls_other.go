//go:build !linux

package relay

import (
	"io"
	"net"
)

// pumpFromTCP is a buffered copy where the kernel's queue cannot be
// measured.
func pumpFromTCP(dst net.Conn, src *net.TCPConn) (int64, error) {
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, make([]byte, tcpReadBuf))
}
