// Package nftexport keeps two nftables sets (one of IPv4 addresses, one of
// IPv6 addresses, both "flags interval, timeout") in step with the
// intrusion prevention engine's block table, so that other services on the
// host refuse blocked addresses in the kernel. It reads the engine's blocks
// by polling them (never from the accept path) and writes the sets through
// a Target: netlink in production, a fake in tests.
package nftexport

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/postern/postern/internal/store"
)

// Range is one element of a set: the addresses From to To, both included,
// of one family.
type Range struct {
	From, To netip.Addr
}

// RangeOf returns the range of the addresses of p (the zero Range for an
// invalid prefix).
func RangeOf(p netip.Prefix) Range {
	if !p.IsValid() {
		return Range{}
	}
	p = p.Masked()
	return Range{From: p.Addr(), To: lastAddr(p)}
}

// String writes the range as a prefix when it is one, else as from-to.
func (r Range) String() string {
	for bits := 0; bits <= r.From.BitLen(); bits++ {
		p := netip.PrefixFrom(r.From, bits)
		if p.Masked().Addr() == r.From && lastAddr(p) == r.To {
			return p.String()
		}
	}
	return r.From.String() + "-" + r.To.String()
}

// lastAddr is the last address of p (p masked).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Elem is a range in a set with the time it has left: zero for an element
// without timeout.
type Elem struct {
	Range
	Timeout time.Duration
}

// Target is the pair of sets the exporter writes.
type Target interface {
	// List returns every element of both sets, with its time left.
	List() ([]Elem, error)
	// Apply deletes del and then adds add, at once where the target can.
	Apply(del []Range, add []Elem) error
}

// Options configure an Exporter.
type Options struct {
	// Blocks returns the engine's block table (expired blocks included).
	Blocks func() []store.Block
	// Exclude reports a block that must stay out of the sets (a bypassed
	// address). Nil excludes nothing.
	Exclude func(netip.Prefix) bool
	// Target is the sets written.
	Target Target
	// Clock is the time source; nil is time.Now.
	Clock func() time.Time
	// Log receives what the exporter does; nil discards.
	Log *slog.Logger
	// Poll is how often the block table is compared with what was
	// written (default 3s); Resync how often the sets are read back and
	// corrected (default one minute).
	Poll, Resync time.Duration
}

// Slack is how far the time left of an element may differ from its
// block's before the element is written again.
const Slack = 2 * time.Second

// Exporter writes the block table into a Target. Its methods are called
// from one goroutine (Run's).
type Exporter struct {
	o       Options
	written map[Range]time.Time // what was written and when it lapses (zero: never)
	dirty   bool                // written is not known to match the target
}

// New returns an exporter; call Reconcile, then Run.
func New(o Options) *Exporter {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = 3 * time.Second
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	return &Exporter{o: o, dirty: true}
}

// want is one desired element and when it lapses (zero: never).
type want struct {
	r       Range
	expires time.Time
}

// desired returns the elements the block table asks for at now: active,
// not excluded blocks, a block inside another one left out (the outer
// covers it; if it outlives the outer, it comes back when the outer
// lapses), sorted.
func (x *Exporter) desired(now time.Time) []want {
	blocks := x.o.Blocks()
	ps := make([]store.Block, 0, len(blocks))
	for _, b := range blocks {
		if b.Expired(now) || !b.Prefix.IsValid() {
			continue
		}
		b.Prefix = netip.PrefixFrom(b.Prefix.Addr().Unmap(), b.Prefix.Bits()-unmapBits(b.Prefix)).Masked()
		if !b.Prefix.IsValid() { // an IPv4-mapped network wider than IPv4
			continue
		}
		if x.o.Exclude != nil && x.o.Exclude(b.Prefix) {
			continue
		}
		ps = append(ps, b)
	}
	sort.Slice(ps, func(i, j int) bool {
		a, b := ps[i].Prefix, ps[j].Prefix
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
	out := make([]want, 0, len(ps))
	var outer netip.Prefix
	for _, b := range ps {
		if outer.IsValid() && outer.Bits() <= b.Prefix.Bits() && outer.Contains(b.Prefix.Addr()) {
			continue
		}
		outer = b.Prefix
		out = append(out, want{r: RangeOf(b.Prefix), expires: b.Expires})
	}
	return out
}

// unmapBits is how many bits shorter p is once its IPv4-mapped address
// is unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// timeout is the time left at now of an element lapsing at expires,
// rounded up to the second (zero: never lapses).
func timeout(expires, now time.Time) time.Duration {
	if expires.IsZero() {
		return 0
	}
	d := expires.Sub(now)
	return (d + time.Second - 1).Truncate(time.Second)
}

// Reconcile reads the sets back and corrects them: elements no block asks
// for (added by hand, left by an earlier run) are deleted, missing ones
// added, ones whose time left is off by more than Slack written again.
func (x *Exporter) Reconcile() error {
	now := x.o.Clock()
	have, err := x.o.Target.List()
	if err != nil {
		x.dirty = true
		return fmt.Errorf("nftables export: reading the sets: %w", err)
	}
	got := make(map[Range]time.Duration, len(have))
	for _, e := range have {
		got[e.Range] = e.Timeout
	}
	var del []Range
	var add []Elem
	wants := x.desired(now)
	keep := make(map[Range]bool, len(wants))
	for _, w := range wants {
		keep[w.r] = true
		t := timeout(w.expires, now)
		g, ok := got[w.r]
		switch {
		case !ok:
		case (g == 0) != (t == 0) || absDur(g-t) > Slack:
			del = append(del, w.r)
		default:
			continue
		}
		add = append(add, Elem{Range: w.r, Timeout: t})
	}
	for _, e := range have {
		if !keep[e.Range] {
			del = append(del, e.Range)
		}
	}
	if err := x.apply(del, add); err != nil {
		x.dirty = true
		return err
	}
	x.written = make(map[Range]time.Time, len(wants))
	for _, w := range wants {
		x.written[w.r] = w.expires
	}
	x.dirty = false
	if len(del)+len(add) > 0 {
		x.o.Log.Info("nftables export: sets corrected", "deleted", len(del), "added", len(add), "elements", len(wants))
	}
	return nil
}

// Sync writes the changes of the block table since the last write, without
// reading the sets back (a full Reconcile when the last write failed).
// Elements that lapsed are left to the kernel, which removed them itself.
func (x *Exporter) Sync() error {
	if x.dirty {
		return x.Reconcile()
	}
	now := x.o.Clock()
	for r, exp := range x.written {
		if !exp.IsZero() && !now.Before(exp) {
			delete(x.written, r)
		}
	}
	wants := x.desired(now)
	var del []Range
	var add []Elem
	keep := make(map[Range]bool, len(wants))
	for _, w := range wants {
		keep[w.r] = true
		exp, ok := x.written[w.r]
		if ok && exp.Equal(w.expires) {
			continue
		}
		if ok {
			del = append(del, w.r)
		}
		add = append(add, Elem{Range: w.r, Timeout: timeout(w.expires, now)})
	}
	for r := range x.written {
		if !keep[r] {
			del = append(del, r)
		}
	}
	if len(del)+len(add) == 0 {
		return nil
	}
	if err := x.apply(del, add); err != nil {
		x.dirty = true
		return err
	}
	for _, r := range del {
		delete(x.written, r)
	}
	for _, w := range wants {
		x.written[w.r] = w.expires
	}
	x.o.Log.Debug("nftables export: sets updated", "deleted", len(del), "added", len(add))
	return nil
}

func (x *Exporter) apply(del []Range, add []Elem) error {
	if len(del)+len(add) == 0 {
		return nil
	}
	slices.SortFunc(del, func(a, b Range) int { return a.From.Compare(b.From) })
	slices.SortFunc(add, func(a, b Elem) int { return a.From.Compare(b.From) })
	if err := x.o.Target.Apply(del, add); err != nil {
		return fmt.Errorf("nftables export: writing the sets (%d deleted, %d added): %w", len(del), len(add), err)
	}
	return nil
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Run syncs every Poll and reconciles every Resync until ctx ends. A
// failed write is logged and put right at the next tick.
func (x *Exporter) Run(ctx context.Context) {
	poll := time.NewTicker(x.o.Poll)
	defer poll.Stop()
	resync := time.NewTicker(x.o.Resync)
	defer resync.Stop()
	var last string // the error last logged, so a lasting one is logged once
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			err = x.Sync()
		case <-resync.C:
			err = x.Reconcile()
		}
		switch {
		case err != nil && err.Error() != last:
			x.o.Log.Error(err.Error())
			last = err.Error()
		case err != nil:
			x.o.Log.Debug(err.Error())
		case last != "":
			x.o.Log.Info("nftables export: the sets are written again")
			last = ""
		}
	}
}
