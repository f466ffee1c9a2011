package geoip

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"go4.org/netipx"
)

// fixtureBuildEpoch is the build time of every MMDB fixture.
const fixtureBuildEpoch = 1781725900 // 2026-06-17T19:51:40Z

// A fixtureNet is one network of an MMDB fixture, inserted in order (later
// inserts replace earlier ones where they overlap).
type fixtureNet struct {
	prefix string
	value  mmdbtype.DataType
}

// fixtureOptions are the writer options of fixtures.
func fixtureOptions(dbType string) mmdbwriter.Options {
	return mmdbwriter.Options{
		DatabaseType: dbType,
		Description:  map[string]string{"en": "postern test fixture"},
		BuildEpoch:   fixtureBuildEpoch,
		RecordSize:   24,
	}
}

// buildMMDB writes an MMDB with the given networks and returns its bytes.
func buildMMDB(tb testing.TB, opts mmdbwriter.Options, nets []fixtureNet) []byte {
	tb.Helper()
	tree, err := mmdbwriter.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range nets {
		p := netip.MustParsePrefix(n.prefix)
		if err := tree.Insert(netipx.PrefixIPNet(p), n.value); err != nil {
			tb.Fatalf("insert %s: %v", n.prefix, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// flatRecord is an ip-location-db record.
func flatRecord(cc string) mmdbtype.Map {
	return mmdbtype.Map{"country_code": mmdbtype.String(cc)}
}

// nestedRecord is a GeoLite2 Country record; an empty code leaves the map
// out.
func nestedRecord(country, registered string) mmdbtype.Map {
	m := mmdbtype.Map{
		"continent": mmdbtype.Map{"code": mmdbtype.String("AS")},
	}
	if country != "" {
		m["country"] = mmdbtype.Map{
			"geoname_id": mmdbtype.Uint32(1),
			"iso_code":   mmdbtype.String(country),
			"names":      mmdbtype.Map{"en": mmdbtype.String("Somewhere")},
		}
	}
	if registered != "" {
		m["registered_country"] = mmdbtype.Map{"iso_code": mmdbtype.String(registered)}
	}
	return m
}

// asnRecord is a GeoLite2-ASN record.
func asnRecord(asn uint32, org string) mmdbtype.Map {
	return mmdbtype.Map{
		"autonomous_system_number":       mmdbtype.Uint32(asn),
		"autonomous_system_organization": mmdbtype.String(org),
	}
}

// flatNets is the flat-layout fixture: IPv4 and IPv6, a nested range
// (TR inside DE), adjacent networks to merge, a lower-case code, an
// unknown code and a record without a country.
var flatNets = []fixtureNet{
	{"1.0.0.0/24", flatRecord("AU")},
	{"1.1.1.0/24", flatRecord("AU")},
	{"3.2.35.0/26", flatRecord("DE")},
	{"3.2.35.40/29", flatRecord("TR")},
	{"8.8.8.0/24", flatRecord("US")},
	{"165.21.0.0/16", flatRecord("SG")},
	{"175.136.0.0/13", flatRecord("MY")},
	{"175.144.0.0/15", flatRecord("MY")},
	{"80.80.0.0/24", flatRecord("sg")},
	{"81.0.0.0/24", flatRecord("QQ")},
	{"82.0.0.0/24", mmdbtype.Map{"city": mmdbtype.String("x")}},
	{"2001:e68::/32", flatRecord("MY")},
	{"2001:4860::/32", flatRecord("US")},
	{"2400:cb00::/32", flatRecord("XK")},
}

// nestedNets is the GeoLite2 Country fixture.
var nestedNets = []fixtureNet{
	{"8.8.8.0/24", nestedRecord("US", "US")},
	{"175.136.0.0/13", nestedRecord("MY", "MY")},
	{"165.21.0.0/16", nestedRecord("", "SG")},   // registered_country only
	{"203.1.0.0/16", nestedRecord("AU", "NZ")},  // country wins
	{"90.0.0.0/24", nestedRecord("", "")},       // continent only: skipped
	{"2001:e68::/32", nestedRecord("MY", "MY")}, //
	{"2001:4860::/32", nestedRecord("", "US")},
}

// asnNets is the GeoLite2-ASN fixture.
var asnNets = []fixtureNet{
	{"1.1.1.0/24", asnRecord(13335, "CLOUDFLARENET")},
	{"8.8.8.0/24", asnRecord(15169, "GOOGLE")},
	{"8.8.4.0/24", asnRecord(15169, "GOOGLE")},
	{"2001:4860::/32", asnRecord(15169, "GOOGLE")},
}

// writeFile writes data to name in a temporary directory and returns the
// path.
func writeFile(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// mustLoad loads sources and fails the test on error.
func mustLoad(tb testing.TB, sources ...Source) *DB {
	tb.Helper()
	db, err := Load(context.Background(), sources)
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	return db
}

// prefixes parses a list of prefixes.
func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

// checkPrefixes compares CountryPrefixes(cc) with want.
func checkPrefixes(t *testing.T, db *DB, cc string, want ...string) {
	t.Helper()
	got := db.CountryPrefixes(cc)
	if !slices.Equal(got, prefixes(want...)) {
		t.Errorf("CountryPrefixes(%q) = %v, want %v", cc, got, want)
	}
}

// checkCountry checks Country(addr), and that InCountry agrees for the
// country found and for want.
func checkCountry(t *testing.T, db *DB, addr, want string) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	got, _, ok := db.Country(a)
	if want == "" {
		if ok {
			t.Errorf("Country(%s) = %q, want none", addr, got)
		}
		return
	}
	if !ok || got != want {
		t.Errorf("Country(%s) = %q, %v, want %q", addr, got, ok, want)
	}
	if !db.InCountry(a, want) {
		t.Errorf("InCountry(%s, %q) = false", addr, want)
	}
}

// checkInvariants checks that every country's prefixes are sorted and
// disjoint per source, and that Country and InCountry agree with
// CountryPrefixes at the edges of every prefix.
func checkInvariants(t testing.TB, db *DB) {
	t.Helper()
	for _, s := range db.sources {
		for i, l := range s.country.labels {
			ps := s.country.prefixes[s.country.offsets[i]:s.country.offsets[i+1]]
			cc := countryCode(l)
			for j, p := range ps {
				if !p.IsValid() || p != p.Masked() {
					t.Fatalf("%s: bad prefix %v", cc, p)
				}
				if j > 0 && !netipx.PrefixLastIP(ps[j-1]).Less(p.Addr()) {
					t.Fatalf("%s: %v and %v overlap or are out of order", cc, ps[j-1], p)
				}
				for _, a := range [2]netip.Addr{p.Addr(), netipx.PrefixLastIP(p)} {
					if got, ok := s.country.lookup(a); !ok || got != l {
						t.Fatalf("lookup(%s) = %s, %v; want %s", a, countryCode(got), ok, cc)
					}
					if !db.InCountry(a, cc) {
						t.Fatalf("InCountry(%s, %s) = false", a, cc)
					}
				}
			}
		}
	}
}
