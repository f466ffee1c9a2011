package gwtest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Arrivals counts the logins that reach a test backend and, while held,
// keeps each one waiting until the hold is released: tests see how many
// attempts postern let through at once. The zero value is ready.
type Arrivals struct {
	n    atomic.Int32
	mu   sync.Mutex
	hold chan struct{}
}

// Arrive counts one login; the backend calls it, and it waits while a
// hold is on.
func (a *Arrivals) Arrive() {
	a.n.Add(1)
	a.mu.Lock()
	hold := a.hold
	a.mu.Unlock()
	if hold != nil {
		<-hold
	}
}

// Hold keeps arriving logins waiting until the returned channel is closed.
func (a *Arrivals) Hold() chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hold = make(chan struct{})
	return a.hold
}

// Count returns the logins that arrived.
func (a *Arrivals) Count() int32 { return a.n.Load() }

// Wait polls (10 s at most) until n logins arrived.
func (a *Arrivals) Wait(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for a.n.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins reached the backend, want %d", a.n.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}
