package geoip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
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
	// The group holding pos is the first one that ends after it.
	g := sort.Search(len(t.labels), func(g int) bool { return t.offsets[g+1] > pos })
	return t.labels[g], true
}

// prefixesContain reports whether addr is in one of the sorted, disjoint
// prefixes ps.
func prefixesContain(ps []netip.Prefix, addr netip.Addr) bool {
	i := sort.Search(len(ps), func(i int) bool { return addr.Less(ps[i].Addr()) })
	return i > 0 && ps[i-1].Contains(addr)
}

// A labelIndex numbers the distinct labels of some spans in ascending
// order. Small labels (all country labels, and the AS numbers of small
// databases) are looked up in a slice, others in a map.
type labelIndex struct {
	labels []uint32          // distinct labels, ascending
	dense  []uint32          // label -> index, if every label is small
	sparse map[uint32]uint32 // label -> index, otherwise
}

// maxDenseLabel bounds the labels a labelIndex keeps in a slice.
const maxDenseLabel = 1 << 16

// newLabelIndex indexes the labels of spans.
func newLabelIndex(spans []span) labelIndex {
	var idx labelIndex
	maxLabel := uint32(0)
	for i := range spans {
		maxLabel = max(maxLabel, spans[i].label)
	}
	if maxLabel >= maxDenseLabel {
		idx.sparse = make(map[uint32]uint32)
		for i := range spans {
			if _, ok := idx.sparse[spans[i].label]; !ok {
				idx.sparse[spans[i].label] = 0
				idx.labels = append(idx.labels, spans[i].label)
			}
		}
		slices.Sort(idx.labels)
		for i, l := range idx.labels {
			idx.sparse[l] = uint32(i)
		}
		return idx
	}
	seen := make([]bool, maxLabel+1)
	for i := range spans {
		if l := spans[i].label; !seen[l] {
			seen[l] = true
			idx.labels = append(idx.labels, l)
		}
	}
	slices.Sort(idx.labels)
	idx.dense = make([]uint32, maxLabel+1)
	for i, l := range idx.labels {
		idx.dense[l] = uint32(i)
	}
	return idx
}

func (idx *labelIndex) len() int { return len(idx.labels) }

// of returns the index of label l, which must be one of the labels.
func (idx *labelIndex) of(l uint32) uint32 {
	if idx.dense != nil {
		return idx.dense[l]
	}
	return idx.sparse[l]
}

// errOutOfOrder reports input that is not sorted and disjoint.
var errOutOfOrder = errors.New("networks are out of order or overlap")

// A builder collects labelled address ranges in ascending, disjoint order
// (IPv4 before IPv6), merging adjacent ranges with the same label, and
// finally splits them into prefixes grouped into a table.
type builder struct {
	spans []span
	err   error // first invalid or out-of-order range
}

// A span is an inclusive address range with a label.
type span struct {
	first, last u128
	label       uint32
	is4         bool
}

// newBuilder returns a builder with room for n ranges.
func newBuilder(n int) *builder {
	return &builder{spans: make([]span, 0, n)}
}

// addPrefix adds the addresses of p with label l.
func (b *builder) addPrefix(p netip.Prefix, l uint32) {
	if !p.IsValid() {
		b.fail(fmt.Errorf("invalid prefix %s", p))
		return
	}
	first := u128From(p.Masked().Addr())
	b.add(first, first.or(lowMask(p.Addr().BitLen()-p.Bits())), p.Addr().Is4(), l)
}

// addAddrs adds the range first..last, which must be of one family.
func (b *builder) addAddrs(first, last netip.Addr, l uint32) {
	if !first.IsValid() || first.BitLen() != last.BitLen() {
		b.fail(fmt.Errorf("invalid range %s-%s", first, last))
		return
	}
	b.add(u128From(first), u128From(last), first.Is4(), l)
}

// The IPv4-mapped block ::ffff:0:0/96 as numbers.
const (
	mappedFirstLo = 0xffff_0000_0000
	mappedLastLo  = 0xffff_ffff_ffff
)

// add adds the range first..last of the given family with label l. Ranges
// must come in ascending order and must not overlap; a violation is
// recorded and returned by finish.
//
// IPv6 ranges lose the part that overlaps ::ffff:0:0/96: IPv4 addresses
// are kept as IPv4 only, and lookups unmap IPv4-mapped addresses, so a
// prefix there could never match and would make CountryPrefixes disagree
// with InCountry.
func (b *builder) add(first, last u128, is4 bool, l uint32) {
	mappedFirst, mappedLast := u128{lo: mappedFirstLo}, u128{lo: mappedLastLo}
	if !is4 && !last.less(mappedFirst) && !mappedLast.less(first) {
		if first.less(mappedFirst) {
			b.addRange(first, mappedFirst.prev(), false, l)
		}
		if mappedLast.less(last) {
			b.addRange(mappedLast.next(), last, false, l)
		}
		return
	}
	b.addRange(first, last, is4, l)
}

// addRange adds a range that does not overlap ::ffff:0:0/96.
func (b *builder) addRange(first, last u128, is4 bool, l uint32) {
	if b.err != nil {
		return
	}
	if last.less(first) || is4 && maxU128(true).less(last) {
		b.fail(fmt.Errorf("invalid range %s-%s", first.addr(is4), last.addr(is4)))
		return
	}
	if n := len(b.spans); n > 0 {
		prev := &b.spans[n-1]
		if prev.is4 == is4 && !prev.last.less(first) || !prev.is4 && is4 {
			b.fail(fmt.Errorf("%w: %s-%s after %s-%s", errOutOfOrder,
				first.addr(is4), last.addr(is4), prev.first.addr(prev.is4), prev.last.addr(prev.is4)))
			return
		}
		if prev.is4 == is4 && prev.label == l && prev.last.next() == first {
			prev.last = last
			return
		}
	}
	b.spans = append(b.spans, span{first: first, last: last, label: l, is4: is4})
}

// fail records the first error.
func (b *builder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// finish splits the ranges into prefixes and groups them by label with a
// counting sort, which keeps every group in address order. The final
// slices are allocated once, at their exact size. The builder must not be
// used afterwards.
func (b *builder) finish() (table, error) {
	if b.err != nil {
		return table{}, b.err
	}
	spans := b.spans
	*b = builder{}
	if len(spans) == 0 {
		return table{}, nil
	}
	// Pass 1: count the prefixes of each label.
	idx := newLabelIndex(spans)
	counts := make([]uint32, idx.len())
	total := 0
	for i := range spans {
		n := countPrefixes(spans[i].first, spans[i].last, spans[i].is4)
		counts[idx.of(spans[i].label)] += uint32(n)
		total += n
	}
	t := table{
		prefixes: make([]netip.Prefix, total),
		labels:   idx.labels,
		offsets:  make([]uint32, 0, len(counts)+1),
		order:    make([]uint32, 0, total),
	}
	next := counts // reused as the next free position of each group
	var off uint32
	for g, c := range counts {
		t.offsets = append(t.offsets, off)
		next[g] = off
		off += c
	}
	t.offsets = append(t.offsets, off)
	// Pass 2: place the prefixes.
	for i := range spans {
		s := &spans[i]
		g := idx.of(s.label)
		pos := next[g]
		for p := range rangePrefixes(s.first, s.last, s.is4) {
			t.prefixes[pos] = p
			t.order = append(t.order, pos)
			pos++
		}
		next[g] = pos
	}
	return t, nil
}
