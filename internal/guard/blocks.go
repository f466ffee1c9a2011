package guard

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"

	"github.com/postern/postern/internal/store"
)

// entry is one block in the in-memory table. Its record is immutable; the
// hit count and last-seen time change atomically as refused connections
// and further events arrive.
type entry struct {
	rec   store.Block
	hits  atomic.Int64
	last  atomic.Int64 // unix nanoseconds
	dirty atomic.Bool  // hits or last changed since the store last saw them
}

func newEntry(b store.Block) *entry {
	e := &entry{rec: b}
	e.hits.Store(b.Hits)
	e.last.Store(b.LastSeen.UnixNano())
	return e
}

// block returns the entry as a record with its current counters.
func (e *entry) block() store.Block {
	b := e.rec
	b.Hits = e.hits.Load()
	b.LastSeen = time.Unix(0, e.last.Load()).UTC()
	return b
}

func (e *entry) hit(now time.Time) {
	e.hits.Add(1)
	e.last.Store(now.UnixNano())
	e.dirty.Store(true)
}

func (e *entry) active(now time.Time) bool { return !e.rec.Expired(now) }

// blockTable is an immutable longest-prefix table of blocks. Writers make a
// modified copy (sharing untouched nodes) and publish it atomically.
type blockTable = bart.Table[*entry]

// activeBlock returns the active block covering addr, if any: the most
// specific one that has not expired.
func activeBlock(t *blockTable, addr netip.Addr, now time.Time) (*entry, bool) {
	if !t.Contains(addr) {
		return nil, false
	}
	if e, ok := t.Lookup(addr); ok && e.active(now) {
		return e, true
	}
	// The most specific block has expired; a wider one may still hold.
	for _, e := range t.Supernets(netip.PrefixFrom(addr, addr.BitLen())) {
		if e.active(now) {
			return e, true
		}
	}
	return nil, false
}
