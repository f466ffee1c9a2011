//go:build !linux

package relay

import (
	"context"
	"net"
)

// idlePoller exists on Linux only; elsewhere every handed-off session
// splices on goroutines.
type idlePoller struct{}

func (s *Conns) handoffIdle(context.Context, net.Conn, net.Conn, []byte, func()) bool { return false }

func (s *Conns) closeIdle() {}

func (s *Conns) stopIdle() {}
