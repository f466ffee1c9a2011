package guard

import (
	"net/netip"
	"sync"
	"time"
)

// counterShards spreads cross-session counters over independently locked
// maps, so that events from different addresses rarely contend.
const counterShards = 64

// maxFingerprints is how many distinct wrong passwords are remembered per
// counter, so a retry with the same wrong password counts once.
const maxFingerprints = 8

type counterKey struct {
	p netip.Prefix
	t trigger
}

type counter struct {
	n     int32
	start int64 // unix nanoseconds of the window's first event
	fps   [maxFingerprints]uint64
	nfp   uint8
}

// seen records fingerprint fp and reports whether it was already there.
func (c *counter) seen(fp uint64) bool {
	if fp == 0 {
		return false
	}
	for i := range int(c.nfp) {
		if c.fps[i] == fp {
			return true
		}
	}
	if int(c.nfp) < maxFingerprints {
		c.fps[c.nfp] = fp
		c.nfp++
	} else {
		copy(c.fps[:], c.fps[1:])
		c.fps[maxFingerprints-1] = fp
	}
	return false
}

type counterShard struct {
	mu sync.Mutex
	m  map[counterKey]counter
}

// counters holds the cross-session counters: per block prefix (and per
// enclosing subnet) and trigger, over a fixed window that starts at the
// first event.
type counters struct {
	shards [counterShards]counterShard
}

func newCounters() *counters {
	c := &counters{}
	for i := range c.shards {
		c.shards[i].m = make(map[counterKey]counter)
	}
	return c
}

func (c *counters) shard(p netip.Prefix) *counterShard {
	a := p.Addr().As16()
	h := uint64(a[0])<<56 | uint64(a[1])<<48 | uint64(a[2])<<40 | uint64(a[3])<<32 |
		uint64(a[12])<<24 | uint64(a[13])<<16 | uint64(a[14])<<8 | uint64(a[15])
	h ^= uint64(a[4])<<24 | uint64(a[5])<<16 | uint64(a[6])<<8 | uint64(a[7])
	h *= 0x9E3779B97F4A7C15
	return &c.shards[h>>58]
}

// add counts one event for (p, t) within window and returns the count. A
// non-zero fingerprint already seen in the window is not counted again.
func (c *counters) add(p netip.Prefix, t trigger, now time.Time, window time.Duration, fp uint64) int {
	s := c.shard(p)
	k := counterKey{p, t}
	ns := now.UnixNano()
	s.mu.Lock()
	v := s.m[k]
	if v.n == 0 || ns-v.start >= int64(window) {
		v = counter{start: ns}
	}
	if !v.seen(fp) {
		v.n++
	}
	s.m[k] = v
	n := int(v.n)
	s.mu.Unlock()
	return n
}

// reset forgets every counter inside prefix p (all triggers).
func (c *counters) reset(p netip.Prefix) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k := range s.m {
			if p.Overlaps(k.p) && k.p.Bits() >= p.Bits() {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// sweep drops counters whose window has passed: windows are at most
// maxWindow long. It returns how many counters remain.
func (c *counters) sweep(now time.Time, maxWindow time.Duration) int {
	left := 0
	cut := now.UnixNano() - int64(maxWindow)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, v := range s.m {
			if v.start <= cut {
				delete(s.m, k)
			}
		}
		left += len(s.m)
		s.mu.Unlock()
	}
	return left
}

// accounts tracks, per account, the distinct block prefixes that failed to
// log in within a window: account protection (§6).
type accounts struct {
	mu sync.Mutex
	m  map[string]*accountFailures
}

type accountFailures struct {
	start int64
	from  map[netip.Prefix]struct{}
}

const maxAccountAddrs = 1024

// fail records a failure for account from p and returns the number of
// distinct prefixes that failed in the window.
func (a *accounts) fail(account string, p netip.Prefix, now time.Time, window time.Duration) int {
	ns := now.UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = make(map[string]*accountFailures)
	}
	f := a.m[account]
	if f == nil || ns-f.start >= int64(window) {
		f = &accountFailures{start: ns, from: make(map[netip.Prefix]struct{})}
		a.m[account] = f
	}
	if len(f.from) < maxAccountAddrs {
		f.from[p] = struct{}{}
	}
	return len(f.from)
}

// failing returns the number of distinct prefixes that failed for account
// in the current window.
func (a *accounts) failing(account string, now time.Time, window time.Duration) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.m[account]
	if f == nil || now.UnixNano()-f.start >= int64(window) {
		return 0
	}
	return len(f.from)
}

func (a *accounts) sweep(now time.Time, window time.Duration) {
	cut := now.UnixNano() - int64(window)
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, f := range a.m {
		if f.start <= cut {
			delete(a.m, k)
		}
	}
}
