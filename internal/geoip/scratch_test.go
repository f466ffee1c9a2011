package geoip

import (
	"context"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"
)

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestScratch(t *testing.T) {
	ctx := context.Background()
	h0 := heap()
	st := time.Now()
	mm, err := Load(ctx, []Source{{Path: "/work/shared/geo/geo-whois-asn-country.mmdb"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mmdb %v %+v heap %d MB", time.Since(st), mm.Sources(), (heap()-h0)>>20)
	h0 = heap()
	st = time.Now()
	cs, err := Load(ctx, []Source{{Path: "/work/shared/geo/geo-whois-asn-country-ipv4.csv"}, {Path: "/work/shared/geo/geo-whois-asn-country-ipv6.csv"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("csv %v %+v heap %d MB", time.Since(st), cs.Sources(), (heap()-h0)>>20)
	diff := 0
	for _, cc := range mm.Countries() {
		a := mm.CountryPrefixes(cc)
		b := cs.CountryPrefixes(cc)
		if !slices.Equal(a, b) {
			diff++
			if diff < 4 {
				t.Logf("%s: mmdb %d csv %d", cc, len(a), len(b))
				for i := range min(len(a), len(b)) {
					if a[i] != b[i] {
						t.Logf("first diff %d: %v %v", i, a[i], b[i])
						break
					}
				}
			}
		}
	}
	t.Logf("countries mmdb %d csv %d, differ %d", len(mm.Countries()), len(cs.Countries()), diff)
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "175.136.0.1", "165.21.0.1", "3.2.35.40", "3.2.35.39", "2001:4860::1", "2001:e68::1"} {
		a := netip.MustParseAddr(s)
		c1, _, _ := mm.Country(a)
		c2, _, _ := cs.Country(a)
		t.Logf("%s: %s %s", s, c1, c2)
	}
}
