package geoip

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"go4.org/netipx"
)

// The real dataset (ip-location-db geo-whois-asn-country) lives in the
// directory named by POSTERN_GEO_DIR.
const (
	realMMDB   = "geo-whois-asn-country.mmdb"
	realCSVv4  = "geo-whois-asn-country-ipv4.csv"
	realCSVv6  = "geo-whois-asn-country-ipv6.csv"
	realEnvVar = "POSTERN_GEO_DIR"
)

// geoDir returns the dataset directory or skips the test.
func geoDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv(realEnvVar)
	if dir == "" {
		tb.Skip(realEnvVar + " is not set")
	}
	return dir
}

func realSources(tb testing.TB, names ...string) []Source {
	dir := geoDir(tb)
	var sources []Source
	for _, name := range names {
		sources = append(sources, Source{Path: filepath.Join(dir, name)})
	}
	return sources
}

// wellKnown are addresses whose country is stable in the dataset: Google
// DNS (ARIN, US), Cloudflare DNS (APNIC, AU), TM Net (MY), SingNet (SG),
// and the nested DE/TR example.
var wellKnown = []struct{ addr, cc string }{
	{"8.8.8.8", "US"},
	{"1.1.1.1", "AU"},
	{"175.136.0.1", "MY"},
	{"165.21.0.1", "SG"},
	{"3.2.35.39", "DE"},
	{"3.2.35.40", "TR"},
	{"2001:4860:4860::8888", "US"},
	{"::ffff:8.8.8.8", "US"},
}

func checkWellKnown(t *testing.T, db *DB) {
	t.Helper()
	for _, w := range wellKnown {
		checkCountry(t, db, w.addr, w.cc)
	}
	if db.InCountry(netip.MustParseAddr("3.2.35.40"), "DE") {
		t.Error("InCountry(3.2.35.40, DE) = true")
	}
}

func logSources(t *testing.T, db *DB) {
	t.Helper()
	for _, info := range db.Sources() {
		t.Logf("%s: %s, %q, built %s: %d records, %d networks, %d countries, %d skipped",
			filepath.Base(info.Path), info.Format, info.Description, info.BuildTime.Format("2006-01-02"),
			info.Records, info.Networks, info.Countries, info.Skipped)
	}
}

func TestRealMMDB(t *testing.T) {
	db := mustLoad(t, realSources(t, realMMDB)...)
	logSources(t, db)
	checkWellKnown(t, db)
	info := db.Sources()[0]
	if info.Records != 494271+516614 || info.Countries != 251 || info.Skipped != 0 || info.Description != "country ipvAll" {
		t.Errorf("Sources()[0] = %+v", info)
	}
	v4 := 0
	for _, cc := range db.Countries() {
		for _, p := range db.CountryPrefixes(cc) {
			if p.Addr().Is4() {
				v4++
			} else if p.Addr().Is4In6() {
				t.Fatalf("%s: IPv4-mapped prefix %v", cc, p)
			}
		}
	}
	t.Logf("%d IPv4 and %d IPv6 prefixes", v4, info.Networks-v4)
	if v4 != 494271 {
		t.Errorf("%d IPv4 prefixes, want 494271", v4)
	}
	if !testing.Short() {
		checkInvariants(t, db)
	}
}

func TestRealCSV(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: loads 550,000 CSV rows")
	}
	db := mustLoad(t, realSources(t, realCSVv4, realCSVv6)...)
	logSources(t, db)
	checkWellKnown(t, db)
	infos := db.Sources()
	if infos[0].Records != 334373 || infos[1].Records != 216295 || infos[0].Countries != 250 || infos[1].Countries != 251 {
		t.Errorf("Sources() = %+v", infos)
	}
	checkInvariants(t, db)

	// The MMDB was built from the same rows. It agrees on the well-known
	// addresses; it differs where rows overlap partially, because upstream
	// lets the later row win there and we let the smaller one win.
	mm := mustLoad(t, realSources(t, realMMDB)...)
	for _, w := range wellKnown {
		a := netip.MustParseAddr(w.addr)
		c1, _, _ := db.Country(a)
		c2, _, _ := mm.Country(a)
		if c1 != c2 {
			t.Errorf("%s: CSV says %s, MMDB says %s", w.addr, c1, c2)
		}
	}
	same, differ := 0, 0
	for _, cc := range mm.Countries() {
		for _, p := range mm.CountryPrefixes(cc) {
			if db.InCountry(p.Addr(), cc) && db.InCountry(netipx.PrefixLastIP(p), cc) {
				same++
			} else {
				differ++
			}
		}
	}
	t.Logf("MMDB prefixes the CSV agrees with: %d; disagrees with: %d (partial overlaps)", same, differ)
	if differ > same/1000 {
		t.Errorf("CSV and MMDB disagree on %d of %d prefixes", differ, same+differ)
	}
}

func BenchmarkLoadMMDB(b *testing.B) {
	benchmarkLoad(b, realSources(b, realMMDB))
}

func BenchmarkLoadCSV(b *testing.B) {
	benchmarkLoad(b, realSources(b, realCSVv4, realCSVv6))
}

// benchmarkLoad loads sources b.N times and reports the heap the last
// database retains.
func benchmarkLoad(b *testing.B, sources []Source) {
	b.ReportAllocs()
	var db *DB
	for b.Loop() {
		var err error
		db, err = Load(context.Background(), sources)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	before := heapInUse()
	runtime.KeepAlive(db)
	db = nil
	after := heapInUse()
	b.ReportMetric(float64(before-after)/(1<<20), "retained-MB")
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// BenchmarkCountryLookup looks up addresses spread over the real MMDB, or
// over the flat fixture when POSTERN_GEO_DIR is unset.
func BenchmarkCountryLookup(b *testing.B) {
	var db *DB
	if os.Getenv(realEnvVar) != "" {
		db = mustLoad(b, realSources(b, realMMDB)...)
	} else {
		db = mustLoad(b, Source{Path: writeFile(b, "flat.mmdb", buildMMDB(b, fixtureOptions("country ipvAll"), flatNets))})
	}
	var addrs []netip.Addr
	for i := range 1024 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{byte(i * 7), byte(i * 13), byte(i), 1}))
		addrs = append(addrs, netip.AddrFrom16([16]byte{0x20, byte(i), byte(i * 3), byte(i * 5), 15: 1}))
	}
	b.Run("Country", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			db.Country(addrs[i%len(addrs)])
			i++
		}
	})
	b.Run("InCountry", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			db.InCountry(addrs[i%len(addrs)], "US")
			i++
		}
	})
}
