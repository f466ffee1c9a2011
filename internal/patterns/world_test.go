package patterns_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/geoip"
	"github.com/postern/postern/internal/patterns"
)

// The "world" pattern of the foundation issue's benchmark: every country of
// the dataset in POSTERN_GEO_DIR (≈1M networks over 250 countries) plus
// 100,000 literal items from an include file.

func geoDir(tb testing.TB) string {
	dir := os.Getenv("POSTERN_GEO_DIR")
	if dir == "" {
		tb.Skip("POSTERN_GEO_DIR is not set (make testdata, or point it at the geo dataset)")
	}
	return dir
}

// writeLiterals writes n literal items, a mix of IPv4 and IPv6 addresses
// and networks, one per line, and returns the file's path.
func writeLiterals(tb testing.TB, n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for i := range n {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "%d.%d.%d.%d\n", r.IntN(223)+1, r.IntN(256), r.IntN(256), r.IntN(256))
		case 1:
			fmt.Fprintf(&b, "%d.%d.%d.0/24\n", r.IntN(223)+1, r.IntN(256), r.IntN(256))
		case 2:
			fmt.Fprintf(&b, "2a%02x:%x:%x::%x\n", r.IntN(256), r.IntN(65536), r.IntN(65536), r.IntN(65536))
		default:
			fmt.Fprintf(&b, "2a%02x:%x:%x::/48\n", r.IntN(256), r.IntN(65536), r.IntN(65536))
		}
	}
	path := filepath.Join(tb.TempDir(), "literals.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// countriesSource makes a pattern of every step-th country plus the
// literals file. With step 2 neighbouring networks often belong to
// countries left out, so the table cannot be folded much.
func countriesSource(db *geoip.DB, literals string, step int) patterns.Source {
	var items []string
	for i, cc := range db.Countries() {
		if i%step == 0 {
			items = append(items, "country:"+cc)
		}
	}
	items = append(items, "{"+literals+"}")
	return patterns.Source{Name: "World", Text: strings.Join(items, ";"), Pos: diag.Pos{File: "bench.yaml", Line: 1, Col: 1}}
}

func compileWorld(tb testing.TB, db *geoip.DB, literals string) *patterns.Set {
	return compileCountries(tb, db, literals, 1)
}

func compileCountries(tb testing.TB, db *geoip.DB, literals string, step int) *patterns.Set {
	reg, err := patterns.Compile([]patterns.Source{countriesSource(db, literals, step)},
		patterns.Options{Geo: db, ValidCountry: geoip.ValidCountryCode})
	if err != nil {
		tb.Fatal(err)
	}
	return reg.Lookup("World")
}

func loadWorldDB(tb testing.TB) *geoip.DB {
	db, err := geoip.Load(context.Background(), []geoip.Source{{Path: filepath.Join(geoDir(tb), "geo-whois-asn-country.mmdb")}})
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

func randomAddrs(n int, v6 bool) []netip.Addr {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]netip.Addr, n)
	for i := range out {
		if v6 {
			var a [16]byte
			a[0] = 0x20 | byte(r.IntN(16)) // 2000::/4, where allocations are
			for j := 1; j < 16; j++ {
				a[j] = byte(r.IntN(256))
			}
			out[i] = netip.AddrFrom16(a)
		} else {
			out[i] = netip.AddrFrom4([4]byte{byte(r.IntN(224)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
	}
	return out
}

// addrsInside returns n addresses drawn from random networks of random
// countries of db, so every one is in the world pattern.
func addrsInside(db *geoip.DB, n int, v6 bool, step int) []netip.Addr {
	r := rand.New(rand.NewPCG(5, 6))
	var pool []netip.Prefix
	for i, cc := range db.Countries() {
		if i%step != 0 {
			continue
		}
		for _, p := range db.CountryPrefixes(cc) {
			if p.Addr().Is6() == v6 {
				pool = append(pool, p)
			}
		}
	}
	out := make([]netip.Addr, n)
	for i := range out {
		p := pool[r.IntN(len(pool))]
		a := p.Addr().AsSlice()
		for bit := p.Bits(); bit < len(a)*8; bit++ {
			if r.IntN(2) == 1 {
				a[bit/8] |= 0x80 >> (bit % 8)
			}
		}
		out[i], _ = netip.AddrFromSlice(a)
	}
	return out
}

// TestWorldPattern checks the whole-dataset pattern against well-known
// addresses and that Contains and Explain agree on random ones.
func TestWorldPattern(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the whole GeoIP dataset")
	}
	db := loadWorldDB(t)
	lit := writeLiterals(t, 100_000)
	set := compileWorld(t, db, lit)
	t.Logf("world pattern: %d networks", set.Networks())
	for _, a := range []string{"8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"} {
		if !set.Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s must be in some country", a)
		}
	}
	// Not 192.168.0.0/16: this dataset tags it AU (one of its known errors).
	for _, a := range []string{"10.1.2.3", "127.0.0.1", "::1"} {
		if set.Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s is private and in no country", a)
		}
	}
	for _, v6 := range []bool{false, true} {
		for _, a := range addrsInside(db, 1000, v6, 1) {
			if !set.Contains(a) {
				t.Fatalf("%s is inside a country network but not in the world pattern", a)
			}
		}
		for _, a := range randomAddrs(300, v6) {
			if m := set.Explain(a); m.In != set.Contains(a) {
				t.Fatalf("%s: Explain says %v, Contains %v", a, m.In, set.Contains(a))
			}
		}
	}
}

func BenchmarkWorldContains(b *testing.B) { benchContains(b, 1) }

// BenchmarkHalfWorldContains is the same over every other country: a
// pattern whose networks cannot be merged as much as the whole world's.
func BenchmarkHalfWorldContains(b *testing.B) { benchContains(b, 2) }

func benchContains(b *testing.B, step int) {
	db := loadWorldDB(b)
	set := compileCountries(b, db, writeLiterals(b, 100_000), step)
	b.Logf("%d networks after folding", set.Networks())
	for _, c := range []struct {
		name string
		v6   bool
		hit  bool
	}{{"IPv4-random", false, false}, {"IPv6-random", true, false}, {"IPv4-hit", false, true}, {"IPv6-hit", true, true}} {
		addrs := randomAddrs(1<<14, c.v6)
		if c.hit {
			addrs = addrsInside(db, 1<<14, c.v6, step)
		}
		hits := 0
		for _, a := range addrs {
			if set.Contains(a) {
				hits++
			}
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				set.Contains(addrs[i&(len(addrs)-1)])
				i++
			}
			b.ReportMetric(float64(hits)/float64(len(addrs))*100, "%hit")
		})
	}
}

// BenchmarkWorldCompile measures loading the MMDB and compiling the world
// pattern from scratch, and the heap the result keeps.
func BenchmarkWorldCompile(b *testing.B) {
	dir := geoDir(b)
	lit := writeLiterals(b, 100_000)
	var keep *patterns.Set
	var before, after runtime.MemStats
	for b.Loop() {
		keep = nil
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		db, err := geoip.Load(context.Background(), []geoip.Source{{Path: filepath.Join(dir, "geo-whois-asn-country.mmdb")}})
		if err != nil {
			b.Fatal(err)
		}
		keep = compileWorld(b, db, lit)
		b.ReportMetric(time.Since(start).Seconds(), "s/compile")
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "MB-alloc-total")
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB-heap-retained")
	}
	runtime.KeepAlive(keep)
}
