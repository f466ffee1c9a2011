package nftexport

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/store"
)

// fakeSet is a Target that behaves like a kernel interval set: elements
// may not overlap, deleting a missing one fails the whole batch.
type fakeSet struct {
	els    map[Range]time.Duration
	writes int
	fail   error
}

func (f *fakeSet) List() ([]Elem, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	var out []Elem
	for r, t := range f.els {
		out = append(out, Elem{Range: r, Timeout: t})
	}
	return out, nil
}

func (f *fakeSet) Apply(del []Range, add []Elem) error {
	if f.fail != nil {
		return f.fail
	}
	next := make(map[Range]time.Duration, len(f.els))
	for r, t := range f.els {
		next[r] = t
	}
	for _, r := range del {
		if _, ok := next[r]; !ok {
			return fmt.Errorf("delete %s: no such element", r)
		}
		delete(next, r)
	}
	for _, e := range add {
		for r := range next {
			if r.From.Is4() == e.From.Is4() && r.From.Compare(e.To) <= 0 && e.From.Compare(r.To) <= 0 {
				return fmt.Errorf("add %s: overlaps %s", e.Range, r)
			}
		}
		next[e.Range] = e.Timeout
	}
	f.els = next
	f.writes++
	return nil
}

// contents lists the set as "prefix/timeout" strings, sorted.
func (f *fakeSet) contents() string {
	var s []string
	for r, t := range f.els {
		s = append(s, fmt.Sprintf("%s=%s", r, t))
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

type world struct {
	now    time.Time
	blocks []store.Block
	set    *fakeSet
	x      *Exporter
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), set: &fakeSet{els: map[Range]time.Duration{}}}
	bypass := netip.MustParseAddr("192.0.2.99")
	w.x = New(Options{
		Blocks:  func() []store.Block { return slices.Clone(w.blocks) },
		Exclude: func(p netip.Prefix) bool { return p.Contains(bypass) && p.Bits() == p.Addr().BitLen() },
		Target:  w.set,
		Clock:   func() time.Time { return w.now },
	})
	return w
}

func (w *world) block(p string, d time.Duration) {
	b := store.Block{Prefix: netip.MustParsePrefix(p)}
	if d != 0 {
		b.Expires = w.now.Add(d)
	}
	w.blocks = append(w.blocks, b)
}

func (w *world) unblock(p string) {
	w.blocks = slices.DeleteFunc(w.blocks, func(b store.Block) bool { return b.Prefix.String() == p })
}

func check(t *testing.T, what string, err error, set *fakeSet, want string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got := set.contents(); got != want {
		t.Fatalf("%s: set is\n  %s\nwant\n  %s", what, got, want)
	}
}

func TestReconcileAndSync(t *testing.T) {
	w := newWorld(t)
	w.block("198.51.100.7/32", time.Hour)
	w.block("2001:db8::/48", 0)
	w.block("192.0.2.99/32", time.Hour)   // bypassed: never exported
	w.block("203.0.113.5/32", -time.Hour) // expired
	check(t, "start", w.x.Reconcile(), w.set, "198.51.100.7/32=1h0m0s 2001:db8::/48=0s")

	// a new block and an unblock reach the set at the next poll
	w.now = w.now.Add(3 * time.Second)
	w.block("203.0.113.0/24", 10*time.Minute)
	w.unblock("2001:db8::/48")
	check(t, "sync", w.x.Sync(), w.set, "198.51.100.7/32=1h0m0s 203.0.113.0/24=10m0s")

	// nothing changed: no write
	n := w.set.writes
	w.now = w.now.Add(3 * time.Second)
	if err := w.x.Sync(); err != nil || w.set.writes != n {
		t.Fatalf("idle sync wrote the set (%d writes, %v)", w.set.writes-n, err)
	}

	// an escalated block (later expiry) is written again with its new time left
	w.blocks[0].Expires = w.now.Add(24 * time.Hour)
	check(t, "extend", w.x.Sync(), w.set, "198.51.100.7/32=24h0m0s 203.0.113.0/24=10m0s")
}

func TestDriftCorrected(t *testing.T) {
	w := newWorld(t)
	w.block("198.51.100.7/32", time.Hour)
	w.block("2001:db8::1/128", time.Hour)
	check(t, "start", w.x.Reconcile(), w.set, "198.51.100.7/32=1h0m0s 2001:db8::1/128=1h0m0s")
	// by hand: one element removed, one added, one's timeout changed
	delete(w.set.els, RangeOf(netip.MustParsePrefix("2001:db8::1/128")))
	w.set.els[RangeOf(netip.MustParsePrefix("10.9.0.0/16"))] = 0
	w.set.els[RangeOf(netip.MustParsePrefix("198.51.100.7/32"))] = 5 * time.Second
	w.now = w.now.Add(time.Minute)
	check(t, "reconcile", w.x.Reconcile(), w.set, "198.51.100.7/32=59m0s 2001:db8::1/128=59m0s")
}

func TestNestedAndExpiry(t *testing.T) {
	w := newWorld(t)
	w.block("198.51.100.7/32", 2*time.Hour)
	w.block("198.51.100.0/24", time.Hour)
	w.block("::ffff:203.0.113.9/128", time.Minute) // IPv4-mapped: exported as IPv4
	w.block("::ffff:0:0/80", time.Minute)          // IPv4-mapped but wider than IPv4: left out
	check(t, "nested", w.x.Reconcile(), w.set, "198.51.100.0/24=1h0m0s 203.0.113.9/32=1m0s")

	// the kernel lapses the outer block itself; the inner one, which
	// outlives it, comes back at the next poll
	w.now = w.now.Add(time.Hour)
	delete(w.set.els, RangeOf(netip.MustParsePrefix("198.51.100.0/24")))
	delete(w.set.els, RangeOf(netip.MustParsePrefix("203.0.113.9/32")))
	check(t, "outer lapsed", w.x.Sync(), w.set, "198.51.100.7/32=1h0m0s")
}

func TestFailedWriteRecovers(t *testing.T) {
	w := newWorld(t)
	w.block("198.51.100.7/32", time.Hour)
	check(t, "start", w.x.Reconcile(), w.set, "198.51.100.7/32=1h0m0s")
	// removed by hand, then unblocked: the delete fails, the next poll
	// reads the set back
	delete(w.set.els, RangeOf(netip.MustParsePrefix("198.51.100.7/32")))
	w.unblock("198.51.100.7/32")
	w.block("198.51.100.8/32", time.Hour)
	if err := w.x.Sync(); err == nil {
		t.Fatal("sync deleting a missing element did not fail")
	}
	check(t, "recovered", w.x.Sync(), w.set, "198.51.100.8/32=1h0m0s")

	w.set.fail = errors.New("netlink down")
	w.block("198.51.100.9/32", time.Hour)
	if err := w.x.Sync(); err == nil || !strings.Contains(err.Error(), "netlink down") {
		t.Fatalf("sync error = %v", err)
	}
	w.set.fail = nil
	check(t, "back", w.x.Sync(), w.set, "198.51.100.8/32=1h0m0s 198.51.100.9/32=1h0m0s")
}
