//go:build !linux

package relay

import (
	"context"
	"net"
)

// relayOnLoop does nothing: event loops run on Linux only.
func (s *Conns) relayOnLoop(context.Context, net.Conn, net.Conn, []byte, func()) (ended, ran bool) {
	return false, false
}
