//go:build !linux

package relay

import (
	"io"
	"net"
)

// pumpTCP is io.Copy where the kernel's queue cannot be measured.
func pumpTCP(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) }
