package geoip

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"go4.org/netipx"
)

// A table maps disjoint prefixes to labels (country labels from
// countryLabel, or AS numbers). It keeps each prefix once: prefixes holds
// the prefixes grouped by label, so that the group of a label is one
// read-only sub-slice that CountryPrefixes can hand out without copying,
// and order lists the positions in prefixes in address order, so that an
// address is looked up with one binary search. The cost is 32 bytes per
// prefix plus 4 bytes for the index.
type table struct {
	prefixes []netip.Prefix // grouped by label; each group in address order
	labels   []uint32       // distinct labels, ascending
	offsets  []uint32       // group i is prefixes[offsets[i]:offsets[i+1]]
	order    []uint32       // positions in prefixes, in address order
}

// len returns the number of prefixes in t.
func (t *table) len() int { return len(t.prefixes) }

// group returns the prefixes of label l, or nil. The slice is clipped so
// that appending to it cannot overwrite the next group.
func (t *table) group(l uint32) []netip.Prefix {
	i, ok := slices.BinarySearch(t.labels, l)
	if !ok {
		return nil
	}
	lo, hi := t.offsets[i], t.offsets[i+1]
	return t.prefixes[lo:hi:hi]
}

// lookup returns the label of the prefix that contains addr.
func (t *table) lookup(addr netip.Addr) (uint32, bool) {
	n := len(t.order)
	i := sort.Search(n, func(i int) bool {
		return addr.Less(t.prefixes[t.order[i]].Addr())
	})
	if i == 0 {
		return 0, false
	}
	pos := t.order[i-1]
	if !t.prefixes[pos].Contains(addr) {
		return 0, false
	}
	// The group holding pos is the last one starting at or before it.
	g := sort.Search(len(t.labels), func(g int) bool { return t.offsets[g+1] > pos })
	return t.labels[g], true
}

// prefixesContain reports whether addr is in one of the sorted, disjoint
// prefixes ps.
func prefixesContain(ps []netip.Prefix, addr netip.Addr) bool {
	i := sort.Search(len(ps), func(i int) bool { return addr.Less(ps[i].Addr()) })
	return i > 0 && ps[i-1].Contains(addr)
}

// errOutOfOrder reports input that is not sorted and disjoint.
var errOutOfOrder = errors.New("networks are out of order or overlap")

// A builder collects labelled address ranges in ascending, disjoint order,
// merges adjacent ranges with the same label, splits the result into
// prefixes and finally groups them into a table.
type builder struct {
	prefixes []netip.Prefix // address order
	labels   []uint32       // label of each prefix
	cur      span           // pending range, merged with its neighbours
	has      bool           // cur is valid
	err      error          // first ordering violation
}

// A span is an inclusive address range with a label.
type span struct {
	first, last netip.Addr
	label       uint32
}

// newBuilder returns a builder with room for about n prefixes.
func newBuilder(n int) *builder {
	return &builder{
		prefixes: make([]netip.Prefix, 0, n),
		labels:   make([]uint32, 0, n),
	}
}

// addPrefix adds the addresses of p with label l.
func (b *builder) addPrefix(p netip.Prefix, l uint32) {
	p = p.Masked()
	b.add(p.Addr(), netipx.PrefixLastIP(p), l)
}

// add adds the range first..last with label l. Ranges must come in
// ascending order and must not overlap; a violation is recorded and
// returned by finish.
func (b *builder) add(first, last netip.Addr, l uint32) {
	if b.err != nil {
		return
	}
	if !first.IsValid() || first.BitLen() != last.BitLen() || last.Less(first) {
		b.err = fmt.Errorf("invalid range %s-%s", first, last)
		return
	}
	if b.has {
		if !b.cur.last.Less(first) {
			b.err = fmt.Errorf("%w: %s-%s after %s-%s", errOutOfOrder,
				first, last, b.cur.first, b.cur.last)
			return
		}
		if b.cur.label == l && b.cur.last.Next() == first {
			b.cur.last = last
			return
		}
		b.flush()
	}
	b.cur = span{first: first, last: last, label: l}
	b.has = true
}

// flush splits the pending range into prefixes.
func (b *builder) flush() {
	if !b.has {
		return
	}
	n := len(b.prefixes)
	b.prefixes = netipx.IPRangeFrom(b.cur.first, b.cur.last).AppendPrefixes(b.prefixes)
	for range len(b.prefixes) - n {
		b.labels = append(b.labels, b.cur.label)
	}
	b.has = false
}

// finish groups the collected prefixes by label. The builder must not be
// used afterwards.
func (b *builder) finish() (table, error) {
	if b.err != nil {
		return table{}, b.err
	}
	b.flush()
	t := groupByLabel(b.prefixes, b.labels)
	*b = builder{}
	return t, nil
}

// groupByLabel builds a table from prefixes in address order and their
// labels with a counting sort, which keeps every group in address order.
func groupByLabel(prefixes []netip.Prefix, labels []uint32) table {
	if len(prefixes) == 0 {
		return table{}
	}
	counts := make(map[uint32]uint32)
	for _, l := range labels {
		counts[l]++
	}
	t := table{
		prefixes: make([]netip.Prefix, len(prefixes)),
		labels:   make([]uint32, 0, len(counts)),
		offsets:  make([]uint32, 0, len(counts)+1),
		order:    make([]uint32, len(prefixes)),
	}
	for l := range counts {
		t.labels = append(t.labels, l)
	}
	slices.SortFunc(t.labels, cmp.Compare[uint32])
	// Reuse counts as the next free position of each label.
	next := counts
	var off uint32
	for _, l := range t.labels {
		t.offsets = append(t.offsets, off)
		c := counts[l]
		next[l] = off
		off += c
	}
	t.offsets = append(t.offsets, off)
	for i, p := range prefixes {
		pos := next[labels[i]]
		next[labels[i]] = pos + 1
		t.prefixes[pos] = p
		t.order[i] = pos
	}
	return t
}
