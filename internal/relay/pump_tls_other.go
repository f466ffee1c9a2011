//go:build !linux

package relay

import (
	"net"

	"github.com/postern/postern/internal/sockio"
)

// pumpFromTCP is a buffered copy where the socket cannot be read directly.
func pumpFromTCP(dst net.Conn, src sockio.TCPSocket) (int64, error) {
	return copyBuffered(dst, src)
}
