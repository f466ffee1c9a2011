package geoip

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"net/netip"
	"slices"
)

// u128 is an address as a 128-bit number; IPv4 addresses use the low 32
// bits. Ranges of the two families are never mixed.
type u128 struct{ hi, lo uint64 }

// u128From converts an address.
func u128From(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// addr converts u back to an address of the given family.
func (u u128) addr(is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

func (u u128) cmp(v u128) int {
	switch {
	case u.hi < v.hi:
		return -1
	case u.hi > v.hi:
		return 1
	case u.lo < v.lo:
		return -1
	case u.lo > v.lo:
		return 1
	}
	return 0
}

func (u u128) less(v u128) bool { return u.cmp(v) < 0 }

func (u u128) or(v u128) u128 { return u128{hi: u.hi | v.hi, lo: u.lo | v.lo} }

// trailingZeros returns the number of trailing zero bits, 128 for zero.
func (u u128) trailingZeros() int {
	if u.lo != 0 {
		return bits.TrailingZeros64(u.lo)
	}
	if u.hi != 0 {
		return 64 + bits.TrailingZeros64(u.hi)
	}
	return 128
}

// bitLen returns the number of bits needed to represent u.
func (u u128) bitLen() int {
	if u.hi != 0 {
		return 64 + bits.Len64(u.hi)
	}
	return bits.Len64(u.lo)
}

// lowMask returns a number with the low k bits set, 0 <= k <= 128.
func lowMask(k int) u128 {
	switch {
	case k >= 128:
		return u128{hi: ^uint64(0), lo: ^uint64(0)}
	case k >= 64:
		return u128{hi: 1<<(k-64) - 1, lo: ^uint64(0)}
	}
	return u128{lo: 1<<k - 1}
}

// sub returns u-v, wrapping.
func (u u128) sub(v u128) u128 {
	lo := u.lo - v.lo
	borrow := uint64(0)
	if u.lo < v.lo {
		borrow = 1
	}
	return u128{hi: u.hi - v.hi - borrow, lo: lo}
}

// next returns u+1, wrapping.
func (u u128) next() u128 {
	if u.lo == ^uint64(0) {
		return u128{hi: u.hi + 1}
	}
	return u128{hi: u.hi, lo: u.lo + 1}
}

// prev returns u-1, wrapping.
func (u u128) prev() u128 {
	if u.lo == 0 {
		return u128{hi: u.hi - 1, lo: ^uint64(0)}
	}
	return u128{hi: u.hi, lo: u.lo - 1}
}

// maxU128 returns the highest address of a family.
func maxU128(is4 bool) u128 {
	if is4 {
		return u128{lo: 1<<32 - 1}
	}
	return u128{hi: ^uint64(0), lo: ^uint64(0)}
}

// nextBlock returns the size (log2) of the largest aligned block that
// starts at first and ends at or before last.
func nextBlock(first, last u128, width int) int {
	k := min(first.trailingZeros(), width)
	n := last.sub(first).next() // addresses in the range; 0 means 2^128
	if n != (u128{}) {
		k = min(k, n.bitLen()-1)
	}
	return k
}

// countPrefixes returns how many prefixes rangePrefixes yields.
func countPrefixes(first, last u128, is4 bool) int {
	width := 128
	if is4 {
		width = 32
	}
	n := 0
	for {
		n++
		end := first.or(lowMask(nextBlock(first, last, width)))
		if end == last {
			return n
		}
		first = end.next()
	}
}

// rangePrefixes yields the fewest prefixes that cover first..last, in
// ascending order. It is what netipx.IPRange.Prefixes computes, without
// allocating; a test checks that the two agree.
func rangePrefixes(first, last u128, is4 bool) iter.Seq[netip.Prefix] {
	width := 128
	if is4 {
		width = 32
	}
	return func(yield func(netip.Prefix) bool) {
		for {
			k := nextBlock(first, last, width)
			if !yield(netip.PrefixFrom(first.addr(is4), width-k)) {
				return
			}
			end := first.or(lowMask(k))
			if end == last {
				return
			}
			first = end.next()
		}
	}
}

// A rangeRow is one inclusive range from the input with its label. seq is
// its position in the input: of two ranges of the same size, the later
// one wins.
type rangeRow struct {
	first, last u128
	label       uint32
	seq         uint32
}

// size returns the number of addresses in r minus one.
func (r *rangeRow) size() u128 { return r.last.sub(r.first) }

// moreSpecific reports whether r beats s where both cover an address:
// the smaller range wins, and of equal ranges the later row.
func (r *rangeRow) moreSpecific(s *rangeRow) bool {
	if c := r.size().cmp(s.size()); c != 0 {
		return c < 0
	}
	return r.seq > s.seq
}

// flatten resolves overlapping ranges of one family so that every address
// gets the label of the most specific range that contains it, and calls
// emit with the resulting disjoint ranges in ascending order (adjacent
// ranges may have the same label). It sweeps over the range boundaries:
// between two consecutive boundaries the set of covering ranges does not
// change, and a heap ordered by specificity gives the winner. Ranges that
// have ended are removed from the heap lazily, when they reach its top.
// It sorts rows in place.
func flatten(rows []rangeRow, is4 bool, emit func(first, last u128, label uint32)) {
	if len(rows) == 0 {
		return
	}
	slices.SortFunc(rows, func(a, b rangeRow) int {
		if c := a.first.cmp(b.first); c != 0 {
			return c
		}
		return int(a.seq) - int(b.seq)
	})
	top := maxU128(is4)
	ends := make([]u128, 0, len(rows))
	for i := range rows {
		if rows[i].last != top {
			ends = append(ends, rows[i].last.next())
		}
	}
	slices.SortFunc(ends, u128.cmp)

	h := rowHeap{rows: rows}
	i, j := 0, 0
	for i < len(rows) || j < len(ends) {
		b := nextBoundary(rows, i, ends, j)
		for j < len(ends) && ends[j] == b {
			j++
		}
		for i < len(rows) && rows[i].first == b {
			h.push(int32(i))
			i++
		}
		for len(h.idx) > 0 && rows[h.idx[0]].last.less(b) {
			h.pop()
		}
		if len(h.idx) == 0 {
			continue
		}
		last := top
		if i < len(rows) || j < len(ends) {
			last = nextBoundary(rows, i, ends, j).prev()
		}
		emit(b, last, rows[h.idx[0]].label)
	}
}

// nextBoundary returns the smaller of rows[i].first and ends[j], whichever
// exist.
func nextBoundary(rows []rangeRow, i int, ends []u128, j int) u128 {
	switch {
	case i == len(rows):
		return ends[j]
	case j == len(ends) || rows[i].first.less(ends[j]):
		return rows[i].first
	}
	return ends[j]
}

// rowHeap is a binary heap of indexes into rows, most specific on top.
type rowHeap struct {
	rows []rangeRow
	idx  []int32
}

func (h *rowHeap) before(a, b int32) bool {
	return h.rows[a].moreSpecific(&h.rows[b])
}

func (h *rowHeap) push(x int32) {
	h.idx = append(h.idx, x)
	for c := len(h.idx) - 1; c > 0; {
		p := (c - 1) / 2
		if !h.before(h.idx[c], h.idx[p]) {
			break
		}
		h.idx[c], h.idx[p] = h.idx[p], h.idx[c]
		c = p
	}
}

func (h *rowHeap) pop() {
	n := len(h.idx) - 1
	h.idx[0] = h.idx[n]
	h.idx = h.idx[:n]
	for p := 0; ; {
		c := 2*p + 1
		if c >= n {
			break
		}
		if c+1 < n && h.before(h.idx[c+1], h.idx[c]) {
			c++
		}
		if !h.before(h.idx[c], h.idx[p]) {
			break
		}
		h.idx[c], h.idx[p] = h.idx[p], h.idx[c]
		p = c
	}
}
