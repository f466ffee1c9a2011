package dnsbl

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// answer is what one zone said about one address, as cached and shared.
type answer struct {
	listed bool
	codes  []netip.Addr
	reason string
	err    error
}

// cache holds answers by query name for a fixed time. Every entry lives
// equally long, so insertion order is expiry order: the list runs from the
// oldest entry (front) to the newest (back), expired entries are dropped
// from the front, and when the cache is full the oldest is evicted.
type cache struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	now   func() time.Time
	order *list.List // of *cacheEntry, oldest first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key     string
	expires time.Time
	ans     answer
}

func newCache(ttl time.Duration, max int, now func() time.Time) *cache {
	return &cache{ttl: ttl, max: max, now: now, order: list.New(), byKey: make(map[string]*list.Element)}
}

// get returns the live answer for key, if any.
func (c *cache) get(key string) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return answer{}, false
	}
	ent := e.Value.(*cacheEntry)
	if !c.now().Before(ent.expires) {
		c.order.Remove(e)
		delete(c.byKey, key)
		return answer{}, false
	}
	return ent.ans, true
}

// put stores ans under key for the cache's TTL, replacing an older answer.
func (c *cache) put(key string, ans answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if e, ok := c.byKey[key]; ok {
		c.order.Remove(e)
		delete(c.byKey, key)
	}
	// Drop what has expired, then make room.
	for e := c.order.Front(); e != nil; e = c.order.Front() {
		ent := e.Value.(*cacheEntry)
		if now.Before(ent.expires) && c.order.Len() < c.max {
			break
		}
		c.order.Remove(e)
		delete(c.byKey, ent.key)
	}
	c.byKey[key] = c.order.PushBack(&cacheEntry{key: key, expires: now.Add(c.ttl), ans: ans})
}

// len returns the number of entries held, live or not yet swept.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
