//go:build !linux

package relay

import (
	"io"

	"github.com/postern/postern/internal/sockio"
)

// pumpTCP is io.Copy where the kernel's queue cannot be measured.
func pumpTCP(dst, src sockio.TCPSocket) (int64, error) { return io.Copy(dst, src) }
