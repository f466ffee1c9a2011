package dnsbl

import (
	"context"
	"sync"
	"time"
)

// flights runs at most one lookup per key at a time and lets every caller
// asking for the same key while it runs wait for its answer.
//
// The lookup runs in a goroutine owned by the flight, on a context that is
// detached from the first caller (so one caller giving up does not fail the
// others) but bounded by the lookup timeout, and cancelled as soon as the
// last waiting caller has gone. The goroutine therefore always ends within
// the timeout.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done    chan struct{} // closed when ans is set
	ans     answer
	waiters int
	cancel  context.CancelFunc
}

// do returns the answer of fn for key, running fn unless a call for key is
// already under way. fn gets a context that ends after timeout. If ctx ends
// first, do returns ctx's error and stops waiting.
func (g *flights) do(ctx context.Context, key string, timeout time.Duration, fn func(context.Context) answer) (answer, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f, ok := g.m[key]
	if !ok {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		f = &flight{done: make(chan struct{}), cancel: cancel}
		g.m[key] = f
		go func() {
			defer cancel()
			ans := fn(fctx)
			g.mu.Lock()
			if g.m[key] == f {
				delete(g.m, key)
			}
			g.mu.Unlock()
			f.ans = ans
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.ans, nil
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants the answer any more: stop the lookup, and let
			// the next caller start afresh.
			f.cancel()
			if g.m[key] == f {
				delete(g.m, key)
			}
		}
		g.mu.Unlock()
		return answer{}, ctx.Err()
	}
}

// waiting reports how many callers wait for key (for tests).
func (g *flights) waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f.waiters
	}
	return 0
}
