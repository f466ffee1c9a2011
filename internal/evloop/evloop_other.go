//go:build !linux

package evloop

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// Group is a set of event loops; there are none on this system.
type Group struct{}

// Start returns an error: event loops run on Linux only.
func Start(int, *slog.Logger) (*Group, error) {
	return nil, errors.New("evloop: event loops need Linux")
}

// Stats counts what a Group's handlers did.
type Stats struct {
	// Started counts the handlers started on a loop, Detached those that
	// left it (MayBlock), Ended those that ended on it.
	Started, Detached, Ended atomic.Int64
}

// Stats returns empty counters.
func (g *Group) Stats() *Stats { return &Stats{} }

// Len returns 0.
func (g *Group) Len() int { return 0 }

// SetActive does nothing.
func (g *Group) SetActive(int) {}

// Active returns 0.
func (g *Group) Active() int { return 0 }

// Close does nothing.
func (g *Group) Close() {}

// Go runs handle on a goroutine.
func (g *Group) Go(ctx context.Context, _ Bindable, handle func(ctx context.Context)) {
	go handle(ctx)
}

// task is never made here.
type task struct{}

func (*task) mayBlock()                           {}
func (*task) onLoop() bool                        { return false }
func (*task) bind(Bindable) bool                  { return false }
func (*task) Wait(int, bool, int64) (bool, error) { return false, nil }

// ConnectControl returns nil: the Dialer connects as usual.
func ConnectControl(context.Context, time.Time) func(network, address string, c syscall.RawConn) error {
	return nil
}

func (*task) unbind()                                       {}
func (*task) waitAny(Ready, Ready, time.Time) (bool, error) { return false, nil }

// DialSocket does nothing (on false): no handler runs on a loop here.
func DialSocket(context.Context, netip.AddrPort, time.Time, func(fd int) error) (s *sockio.Socket, on bool, err error) {
	return nil, false, nil
}
