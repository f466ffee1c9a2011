package console

import (
	"sync/atomic"
	"testing"
	"time"
)

// One poller serves every subscriber, each gets the change, and the
// poller stops when the last one leaves.
func TestFeedSharedPoller(t *testing.T) {
	var v, calls atomic.Uint64
	f := &feed{version: func() uint64 { calls.Add(1); return v.Load() }, every: time.Millisecond}
	a, leaveA := f.subscribe()
	b, leaveB := f.subscribe()
	v.Store(7)
	for _, ch := range []<-chan uint64{a, b} {
		select {
		case got := <-ch:
			if got != 7 {
				t.Fatalf("version %d, want 7", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no update")
		}
	}
	leaveA()
	leaveB()
	stopped := make(chan struct{})
	go func() { f.wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not stop after the last subscriber left")
	}
	f.mu.Lock()
	running := f.running
	f.mu.Unlock()
	if running {
		t.Fatal("still marked running")
	}
}
