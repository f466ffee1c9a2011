package geoip

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
)

func TestNilDB(t *testing.T) {
	var db *DB
	a := netip.MustParseAddr("8.8.8.8")
	if db.Sources() != nil || db.CountryPrefixes("US") != nil || db.HasCountry("US") ||
		db.Countries() != nil || db.ASNPrefixes(15169) != nil || db.HasASNData() ||
		db.InCountry(a, "US") || db.InASN(a, 15169) {
		t.Error("nil DB is not empty")
	}
	if _, _, ok := db.Country(a); ok {
		t.Error("nil DB has a country")
	}
	if _, ok := db.ASN(a); ok {
		t.Error("nil DB has an ASN")
	}
}

func TestEmptyDB(t *testing.T) {
	db := mustLoad(t)
	if db == nil || len(db.Sources()) != 0 || db.Countries() != nil {
		t.Errorf("Load(nil) = %+v", db)
	}
	checkCountry(t, db, "8.8.8.8", "")
	if db.InCountry(netip.Addr{}, "US") {
		t.Error("InCountry(invalid address) = true")
	}
}

func TestSeveralSources(t *testing.T) {
	mmdb := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	db := mustLoad(t,
		Source{Path: writeFile(t, "sg.zone", []byte("103.0.0.0/16\n165.21.0.0/16\n"))},
		Source{Path: writeFile(t, "flat.mmdb", mmdb)},
	)
	// The zone's SG prefixes, then the MMDB's.
	checkPrefixes(t, db, "SG", "103.0.0.0/16", "165.21.0.0/16", "80.80.0.0/24", "165.21.0.0/16")
	// Only the MMDB has MY: its slice is shared, not copied.
	my := db.CountryPrefixes("MY")
	if &my[0] != &db.sources[1].country.group(mustLabel(t, "MY"))[0] {
		t.Error("CountryPrefixes(MY) copied the only source's slice")
	}
	if allocs := testing.AllocsPerRun(10, func() { db.CountryPrefixes("MY") }); allocs != 0 {
		t.Errorf("CountryPrefixes of one source allocates %v times", allocs)
	}
	// Appending to a returned slice must not overwrite the next country.
	before := slices.Clone(db.CountryPrefixes("SG"))
	_ = append(db.CountryPrefixes("MY"), netip.MustParsePrefix("9.9.9.0/24"))
	_ = append(db.CountryPrefixes("DE"), netip.MustParsePrefix("9.9.9.0/24"))
	if !slices.Equal(before, db.CountryPrefixes("SG")) || len(db.CountryPrefixes("MY")) != 3 {
		t.Error("appending to a returned slice changed the database")
	}
	cc, src, ok := db.Country(netip.MustParseAddr("165.21.0.1"))
	if !ok || cc != "SG" || src.Format != "zone" {
		t.Errorf("Country(165.21.0.1) = %q, %+v, %v; want the zone file", cc, src, ok)
	}
	if got, want := db.Countries(), []string{"AU", "DE", "MY", "SG", "TR", "US", "XK"}; !slices.Equal(got, want) {
		t.Errorf("Countries() = %v, want %v", got, want)
	}
	db.Countries()[0] = "XX"
	if db.Countries()[0] != "AU" {
		t.Error("Countries() returned internal state")
	}
}

func TestConcurrentQueries(t *testing.T) {
	mmdb := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	db := mustLoad(t,
		Source{Path: writeFile(t, "flat.mmdb", mmdb)},
		Source{Path: writeFile(t, "my.zone", []byte("175.136.0.0/13\n"))},
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				db.Country(netip.MustParseAddr("175.136.0.1"))
				db.InCountry(netip.MustParseAddr("3.2.35.40"), "TR")
				_ = db.CountryPrefixes("MY")
				_ = db.Sources()
				_ = db.Countries()
			}
		})
	}
	wg.Wait()
}

func mustLabel(t *testing.T, cc string) uint32 {
	t.Helper()
	l, ok := countryLabel(cc)
	if !ok {
		t.Fatalf("no label for %q", cc)
	}
	return l
}
