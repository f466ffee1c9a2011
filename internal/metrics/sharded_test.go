package metrics

import (
	"sync"
	"testing"
)

// Increments from many goroutines at once all count.
func TestShardedCounter(t *testing.T) {
	f := newCounterFamily("test_total", "A test.", "k")
	c := f.with("v")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10_000 {
				c.Inc()
			}
		})
	}
	wg.Wait()
	if got := c.value(); got != 80_000 {
		t.Fatalf("%d, want 80000", got)
	}
}
