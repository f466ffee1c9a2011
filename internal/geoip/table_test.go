package geoip

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"go4.org/netipx"
)

// TestRangePrefixes checks the splitter against netipx.
func TestRangePrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	check := func(first, last netip.Addr) {
		t.Helper()
		want := netipx.IPRangeFrom(first, last).Prefixes()
		a, b := u128From(first), u128From(last)
		got := slices.Collect(rangePrefixes(a, b, first.Is4()))
		if !slices.Equal(got, want) {
			t.Fatalf("rangePrefixes(%s, %s) = %v, want %v", first, last, got, want)
		}
		if n := countPrefixes(a, b, first.Is4()); n != len(want) {
			t.Fatalf("countPrefixes(%s, %s) = %d, want %d", first, last, n, len(want))
		}
	}
	edges := []string{
		"0.0.0.0", "255.255.255.255", "0.0.0.0",
		"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::",
		"10.0.0.1", "10.0.0.1", "10.0.0.1",
		"::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "::1",
		"0:0:0:1::", "0:0:0:1:ffff:ffff:ffff:ffff", "0:0:0:1::",
	}
	for i := 0; i+1 < len(edges); i += 3 {
		check(netip.MustParseAddr(edges[i]), netip.MustParseAddr(edges[i+1]))
		check(netip.MustParseAddr(edges[i+2]), netip.MustParseAddr(edges[i+2]))
	}
	for range 5000 {
		var x, y [16]byte
		for i := range x {
			x[i], y[i] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		// Share a random number of leading bytes so that ranges vary in
		// size.
		copy(y[:], x[:rng.IntN(17)])
		a, b := netip.AddrFrom16(x), netip.AddrFrom16(y)
		if rng.IntN(2) == 0 {
			a, b = netip.AddrFrom4([4]byte(x[12:])), netip.AddrFrom4([4]byte(y[12:]))
		}
		if b.Less(a) {
			a, b = b, a
		}
		check(a, b)
	}
}

func TestBuilderOrder(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		add  []netip.Prefix
		err  bool
	}{
		{"sorted", []netip.Prefix{p("1.0.0.0/24"), p("1.0.1.0/24"), p("8000::/1")}, false},
		{"overlap", []netip.Prefix{p("1.0.0.0/16"), p("1.0.1.0/24")}, true},
		{"unsorted", []netip.Prefix{p("1.0.1.0/24"), p("1.0.0.0/24")}, true},
		{"IPv6 before IPv4", []netip.Prefix{p("8000::/1"), p("1.0.0.0/24")}, true},
		{"invalid", []netip.Prefix{{}}, true},
	}
	for _, tc := range tests {
		b := newBuilder(0)
		for _, pf := range tc.add {
			b.addPrefix(pf, 1)
		}
		tab, err := b.finish()
		if (err != nil) != tc.err {
			t.Errorf("%s: finish() error = %v", tc.name, err)
		}
		if tc.name == "overlap" && !errors.Is(err, errOutOfOrder) {
			t.Errorf("%s: error %v is not errOutOfOrder", tc.name, err)
		}
		if tc.name == "sorted" {
			want := []netip.Prefix{p("1.0.0.0/23"), p("8000::/1")}
			if !slices.Equal(tab.prefixes, want) {
				t.Errorf("prefixes = %v, want %v", tab.prefixes, want)
			}
		}
	}
	// IPv6 ranges lose ::ffff:0:0/96.
	b := newBuilder(0)
	b.addPrefix(p("::/80"), 1)
	tab, err := b.finish()
	var set netipx.IPSetBuilder
	set.AddPrefix(p("::/80"))
	set.RemovePrefix(p("::ffff:0:0/96"))
	s, _ := set.IPSet()
	if err != nil || !slices.Equal(tab.prefixes, s.Prefixes()) {
		t.Errorf("::/80 gave %v, %v; want %v", tab.prefixes, err, s.Prefixes())
	}
	b = newBuilder(0)
	b.addAddrs(netip.MustParseAddr("1.0.0.0"), netip.MustParseAddr("::1"), 1)
	if _, err := b.finish(); err == nil {
		t.Error("mixed-family range accepted")
	}
}
