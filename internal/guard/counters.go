package guard

import (
	"net/netip"
	"sync"
	"time"
)

// counterShards spreads cross-session counters over independently locked
// maps, so that events from different addresses rarely contend. Every
// counter of one prefix lives in the same shard.
const counterShards = 64

// DefaultMaxCounters bounds the cross-session counters (about 120 bytes
// each in the maps, so about 31 MB at the cap): beyond it a new counter
// evicts an old one, preferring expired counters and then those farthest
// from their threshold.
const DefaultMaxCounters = 1 << 18

// evictSample is how many counters of a full shard are looked at to choose
// the one to evict.
const evictSample = 8

// maxFingerprints is how many distinct wrong passwords are remembered per
// counter, so a retry with the same wrong password counts once.
const maxFingerprints = 8

// counterKey is a prefix, a protocol group and a trigger, packed small.
// Each group counts its own events; groupAll holds the counters shared by
// every group (failed_logins_across_groups, refusals).
type counterKey struct {
	a    [16]byte
	bits uint8
	v4   bool
	g    Group
	t    trigger
}

func keyOf(p netip.Prefix, g Group, t trigger) counterKey {
	return counterKey{a: p.Addr().As16(), bits: uint8(p.Bits()), v4: p.Addr().Is4(), g: g, t: t}
}

// counter is one window of events. Its window ends at end, its own: a
// connections-per-minute counter lives for a minute, not the block time.
type counter struct {
	n     int32
	limit int32 // the threshold at the last event, for eviction
	end   int64 // unix nanoseconds at which the window ends
	fps   *fingerprints
}

// fingerprints are the distinct wrong passwords of a counter (failed
// logins only; other triggers have none).
type fingerprints struct {
	fp [maxFingerprints]uint64
	n  uint8
}

// seen records fingerprint fp and reports whether it was already there.
func (f *fingerprints) seen(fp uint64) bool {
	if fp == 0 {
		return false
	}
	for i := range int(f.n) {
		if f.fp[i] == fp {
			return true
		}
	}
	if int(f.n) < maxFingerprints {
		f.fp[f.n] = fp
		f.n++
	} else {
		copy(f.fp[:], f.fp[1:])
		f.fp[maxFingerprints-1] = fp
	}
	return false
}

type counterShard struct {
	mu sync.Mutex
	m  map[counterKey]counter
}

// counters holds the cross-session counters: per block prefix (and per
// enclosing subnet), protocol group and trigger, over a fixed window that starts at the
// first event. Their number is bounded (perShard per shard).
type counters struct {
	shards   [counterShards]counterShard
	perShard int
}

func newCounters(limit int) *counters {
	if limit <= 0 {
		limit = DefaultMaxCounters
	}
	c := &counters{perShard: max(1, limit/counterShards)}
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
	h ^= uint64(p.Bits()) << 20
	h *= 0x9E3779B97F4A7C15
	return &c.shards[h>>58]
}

// add counts one event for (p, g, t) within window and returns the count.
// limit is the trigger's threshold (it ranks counters for eviction). A
// non-zero fingerprint already seen in the window is not counted again.
func (c *counters) add(p netip.Prefix, g Group, t trigger, now time.Time, window time.Duration, limit int, fp uint64) int {
	n, _ := c.count(p, g, t, now, window, limit, fp)
	return n
}

// count is add that also reports whether the event was counted (a
// fingerprint seen before is not).
func (c *counters) count(p netip.Prefix, g Group, t trigger, now time.Time, window time.Duration, limit int, fp uint64) (int, bool) {
	s := c.shard(p)
	k := keyOf(p, g, t)
	ns := now.UnixNano()
	s.mu.Lock()
	v, ok := s.m[k]
	if !ok && len(s.m) >= c.perShard {
		s.evict(ns)
	}
	if v.n == 0 || ns >= v.end {
		v = counter{end: ns + int64(window), fps: v.fps}
		if v.fps != nil {
			*v.fps = fingerprints{}
		}
	}
	if fp != 0 && v.fps == nil {
		v.fps = new(fingerprints)
	}
	counted := fp == 0 || !v.fps.seen(fp)
	if counted {
		v.n++
	}
	v.limit = int32(min(limit, 1<<30))
	s.m[k] = v
	n := int(v.n)
	s.mu.Unlock()
	return n, counted
}

// evict drops one counter of a full shard: an expired one if the sample
// holds one, else the one with the lowest count relative to its threshold,
// so that the counters of addresses about to be blocked stay. s.mu is held.
func (s *counterShard) evict(now int64) {
	var victim counterKey
	best := -1.0
	i := 0
	for k, v := range s.m {
		if now >= v.end {
			delete(s.m, k)
			return
		}
		score := float64(v.n) / float64(max(v.limit, 1))
		if best < 0 || score < best {
			victim, best = k, score
		}
		if i++; i == evictSample {
			break
		}
	}
	if best >= 0 {
		delete(s.m, victim)
	}
}

// get returns the count of (p, g, t) in its current window, without
// counting.
func (c *counters) get(p netip.Prefix, g Group, t trigger, now time.Time) int {
	s := c.shard(p)
	s.mu.Lock()
	v := s.m[keyOf(p, g, t)]
	s.mu.Unlock()
	if now.UnixNano() >= v.end {
		return 0
	}
	return int(v.n)
}

// resetPrefix forgets the counters of exactly prefix p (all groups, the
// shared ones included, and all triggers; not the refusals): what a new
// block of p does, in constant time whatever the number of counters.
// Counters of longer prefixes inside p (a block of a whole subnet) are
// left to expire with their windows.
func (c *counters) resetPrefix(p netip.Prefix) {
	s := c.shard(p)
	s.mu.Lock()
	for _, k := range countedKeys {
		delete(s.m, keyOf(p, k.g, k.t))
	}
	s.mu.Unlock()
}

// countedKeys are the (group, trigger) pairs that can have a counter: every
// trigger in smtp, connections and failed logins in imap_pop3 and web (the
// configuration refuses the others there), failed logins across groups. A
// new block deletes these keys only, not every pair.
var countedKeys = [...]struct {
	g Group
	t trigger
}{
	{GroupSMTP, trigI}, {GroupSMTP, trigL}, {GroupSMTP, trigP}, {GroupSMTP, trigY}, {GroupSMTP, trigR},
	{GroupSMTP, trigS}, {GroupSMTP, trigD}, {GroupSMTP, trigM}, {GroupSMTP, trigA}, {GroupSMTP, trigC},
	{GroupMail, trigI}, {GroupMail, trigL}, {GroupWeb, trigI}, {GroupWeb, trigL}, {groupAll, trigL},
}

// reset forgets every counter inside prefix p (all groups and triggers); it scans
// every counter (for an administrator's unblock, not on the event path).
func (c *counters) reset(p netip.Prefix) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k := range s.m {
			kp := netip.PrefixFrom(addrOfKey(k), int(k.bits))
			if p.Overlaps(kp) && kp.Bits() >= p.Bits() {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

func addrOfKey(k counterKey) netip.Addr {
	a := netip.AddrFrom16(k.a)
	if k.v4 {
		a = a.Unmap()
	}
	return a
}

// sweep drops counters whose window has ended. It returns how many
// counters remain.
func (c *counters) sweep(now time.Time) int {
	left := 0
	ns := now.UnixNano()
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, v := range s.m {
			if ns >= v.end {
				delete(s.m, k)
			}
		}
		left += len(s.m)
		s.mu.Unlock()
	}
	return left
}

// len returns the number of counters.
func (c *counters) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// accounts tracks, per account, the distinct block prefixes that failed to
// log in within a window: account protection.
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
