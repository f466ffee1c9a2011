package fcrdnstest

import (
	"context"
	"errors"
	"net/netip"
	"sync"
)

// ErrNoPTR is what Names answers for an address it has no name for.
var ErrNoPTR = errors.New("no PTR record")

// Names is a name resolver over a fixed table (address → verified name)
// that counts its lookups: tests of host masks without DNS.
type Names struct {
	mu    sync.Mutex
	names map[netip.Addr]string
	calls int
}

// NewNames returns a Names answering from names.
func NewNames(names map[netip.Addr]string) *Names { return &Names{names: names} }

// VerifiedName returns the table's name for a, or ErrNoPTR.
func (n *Names) VerifiedName(_ context.Context, a netip.Addr) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls++
	if name, ok := n.names[a]; ok {
		return name, nil
	}
	return "", ErrNoPTR
}

// Calls returns the lookups made so far.
func (n *Names) Calls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

// Reset sets the lookup count back to zero.
func (n *Names) Reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = 0
}

// Set gives a the name name.
func (n *Names) Set(a netip.Addr, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names[a] = name
}
