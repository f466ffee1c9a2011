package console

import (
	"sync"
	"time"
)

// feed watches the block table for every open live page at once: one
// poller, whatever the number of pages, so the cost of looking does not
// grow with the viewers. The poller runs while someone listens and stops
// on the tick after the last one leaves.
type feed struct {
	version func() uint64
	every   time.Duration

	mu      sync.Mutex
	subs    map[chan uint64]struct{}
	running bool
	wg      sync.WaitGroup // the poller
}

// subscribe returns a channel that receives the table's version each
// time it changes (the latest one; a slow reader misses intermediate
// ones), and the function that ends the subscription.
func (f *feed) subscribe() (<-chan uint64, func()) {
	ch := make(chan uint64, 1)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[chan uint64]struct{}{}
	}
	f.subs[ch] = struct{}{}
	if !f.running {
		f.running = true
		f.wg.Add(1)
		go f.poll(f.version()) // the baseline is the table as the subscriber saw it
	}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}
}

func (f *feed) poll(last uint64) {
	defer f.wg.Done()
	t := time.NewTicker(f.every)
	defer t.Stop()
	for range t.C {
		f.mu.Lock()
		if len(f.subs) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		v := f.version()
		if v == last {
			continue
		}
		last = v
		f.mu.Lock()
		for ch := range f.subs {
			select {
			case <-ch: // drop the stale version
			default:
			}
			ch <- v
		}
		f.mu.Unlock()
	}
}

// wait waits for the poller to stop (after the last subscriber left).
func (f *feed) wait() { f.wg.Wait() }
