package netlisten

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// AfterClose's function runs once, whoever closes the connection: Close
// (the engine's close_all), the listener's shutdown, or already closed.
func TestAfterCloseRunsOnceOnEveryClose(t *testing.T) {
	s := start(t, Config{})
	dial(t, s, "127.0.0.1")
	c := s.accept(t)
	var n atomic.Int32
	c.AfterClose(func() { n.Add(1) })
	if n.Load() != 0 {
		t.Fatal("ran before the close")
	}
	c.Close()
	c.Close()
	if got := n.Load(); got != 1 {
		t.Fatalf("ran %d times after Close, want 1", got)
	}
	c.AfterClose(func() { n.Add(10) }) // closed already: runs now
	if got := n.Load(); got != 11 {
		t.Fatalf("on a closed connection: %d, want 11", got)
	}

	// The listener's shutdown closes what is left, past its deadline.
	dial(t, s, "127.0.0.1")
	c = s.accept(t)
	var forced atomic.Int32
	c.AfterClose(func() { forced.Add(1) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
	if got := forced.Load(); got != 1 {
		t.Fatalf("ran %d times after the listener closed the connection, want 1", got)
	}
	c.Close()
	if got := forced.Load(); got != 1 {
		t.Fatalf("ran again on a later Close: %d", got)
	}
}
