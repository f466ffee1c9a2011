package geoip

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/postern/postern/internal/diag"
)

// The seed corpora in testdata/fuzz hold CSV and zone snippets and small
// MMDB files built from the fixtures of fixtures_test.go (flat, nested,
// ASN, IPv4-only) and truncated copies of them.

// checkLoadResult checks what a loader returned for fuzz input: a
// diag error, or a source whose tables are consistent.
func checkLoadResult(t *testing.T, s *source, err error) {
	t.Helper()
	if err != nil {
		var de *diag.Error
		var list diag.List
		if !errors.As(err, &de) && !errors.As(err, &list) {
			t.Fatalf("error %#v is not a diag error", err)
		}
		return
	}
	checkInvariants(t, newDB([]*source{s}))
	checkTable(t, &s.asn)
}

// checkTable checks the structure of a table.
func checkTable(t *testing.T, tab *table) {
	t.Helper()
	if len(tab.order) != len(tab.prefixes) {
		t.Fatalf("order has %d entries for %d prefixes", len(tab.order), len(tab.prefixes))
	}
	for i := 1; i < len(tab.order); i++ {
		a, b := tab.prefixes[tab.order[i-1]], tab.prefixes[tab.order[i]]
		if !a.Addr().Less(b.Addr()) || a.Overlaps(b) {
			t.Fatalf("order: %v before %v", a, b)
		}
	}
	for _, p := range tab.prefixes {
		l, ok := tab.lookup(p.Addr())
		if !ok || !prefixesContain(tab.group(l), p.Addr()) {
			t.Fatalf("lookup(%v) = %d, %v", p.Addr(), l, ok)
		}
	}
}

func FuzzLoadCSV(f *testing.F) {
	f.Add([]byte("3.2.35.0,3.2.35.63,DE\n3.2.35.40,3.2.35.47,TR\n"))
	f.Add([]byte("start,end,cc\n# c\n\n2001:db8::,2001:db8::ffff,JP\n::ffff:1.2.3.0,::ffff:1.2.3.255,cn\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := loadCSV(context.Background(), "fuzz.csv", bytes.NewReader(data), int64(len(data)))
		checkLoadResult(t, s, err)
	})
}

func FuzzLoadZone(f *testing.F) {
	f.Add([]byte("165.21.0.0/16\n165.21.0.0/17 # x\n2001:d08::/32\n1.2.3.4\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := loadZone(context.Background(), "sg.zone", 0, bytes.NewReader(data))
		checkLoadResult(t, s, err)
	})
}

func FuzzLoadMMDB(f *testing.F) {
	flat := buildMMDB(f, fixtureOptions("country ipvAll"), flatNets)
	f.Add(flat)
	f.Add(flat[:len(flat)-40])
	f.Add(buildMMDB(f, fixtureOptions("GeoLite2-Country"), nestedNets))
	f.Add(buildMMDB(f, fixtureOptions("GeoLite2-ASN"), asnNets))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := loadMMDB(context.Background(), "fuzz.mmdb", data)
		checkLoadResult(t, s, err)
	})
}
