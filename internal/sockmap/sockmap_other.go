//go:build !linux

package sockmap

import (
	"context"
	"errors"
	"net"
)

// ErrUnsupported is returned by Load where the platform has no BPF sockmap.
var ErrUnsupported = errors.New("sockmap: BPF sockmap needs Linux")

// ErrFallback is wrapped by the errors of a Relay that did not move the
// session into the kernel.
var ErrFallback = errors.New("sockmap: session left to user space")

// Options size a Kernel.
type Options struct {
	MaxSessions int // sessions relayed in the kernel at once
}

// Kernel is unavailable on this platform.
type Kernel struct{}

// Load always fails on this platform.
func Load(Options) (*Kernel, error) { return nil, ErrUnsupported }

// Close does nothing.
func (k *Kernel) Close() error { return nil }

// Relay always fails on this platform, before anything moved.
func (k *Kernel) Relay(context.Context, *net.TCPConn, *net.TCPConn, []byte) (int64, int64, error) {
	return 0, 0, errors.Join(ErrFallback, ErrUnsupported)
}
