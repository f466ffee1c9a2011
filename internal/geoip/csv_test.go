package geoip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/postern/postern/internal/diag"
	"go4.org/netipx"
)

// loadCSVText loads CSV text through Load, from a file named name.
func loadCSVText(t *testing.T, name, text string) (*DB, string, error) {
	t.Helper()
	path := writeFile(t, name, []byte(text))
	db, err := Load(context.Background(), []Source{{Path: path}})
	return db, path, err
}

func mustLoadCSV(t *testing.T, text string) *DB {
	t.Helper()
	db, _, err := loadCSVText(t, "ranges.csv", text)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checkInvariants(t, db)
	return db
}

// TestCSVNested is the example from the ip-location-db data: TR and GR
// nested inside a DE range.
func TestCSVNested(t *testing.T) {
	db := mustLoadCSV(t, `3.2.35.0,3.2.35.63,DE
3.2.35.40,3.2.35.47,TR
3.2.35.48,3.2.35.55,GR
3.2.35.56,3.2.35.63,DE
3.2.35.64,3.2.35.127,BR
`)
	checkPrefixes(t, db, "DE", "3.2.35.0/27", "3.2.35.32/29", "3.2.35.56/29")
	checkPrefixes(t, db, "TR", "3.2.35.40/29")
	checkPrefixes(t, db, "GR", "3.2.35.48/29")
	checkPrefixes(t, db, "BR", "3.2.35.64/26")
	checkCountry(t, db, "3.2.35.39", "DE")
	checkCountry(t, db, "3.2.35.40", "TR")
	checkCountry(t, db, "3.2.35.47", "TR")
	checkCountry(t, db, "3.2.35.48", "GR")
	checkCountry(t, db, "3.2.35.56", "DE")
	checkCountry(t, db, "3.2.35.128", "")
	if db.InCountry(netip.MustParseAddr("3.2.35.40"), "DE") {
		t.Error("InCountry(3.2.35.40, DE) = true")
	}
	for _, p := range db.CountryPrefixes("DE") {
		if p.Contains(netip.MustParseAddr("3.2.35.40")) {
			t.Errorf("DE prefix %v contains 3.2.35.40", p)
		}
	}
}

func TestCSVOverlap(t *testing.T) {
	db := mustLoadCSV(t, `# partial overlap, the earlier range is smaller
10.0.0.0,10.0.0.255,AU
10.0.0.104,10.0.3.255,US
# partial overlap, the later range is smaller
20.0.0.0,20.0.0.199,AU
20.0.0.100,20.0.0.255,NZ
# the same range twice: the later line wins
30.0.0.0,30.0.0.255,FR
30.0.0.0,30.0.0.255,IT
`)
	checkPrefixes(t, db, "AU", "10.0.0.0/24", "20.0.0.0/26", "20.0.0.64/27", "20.0.0.96/30")
	checkPrefixes(t, db, "US", "10.0.1.0/24", "10.0.2.0/23")
	checkPrefixes(t, db, "NZ", "20.0.0.100/30", "20.0.0.104/29", "20.0.0.112/28", "20.0.0.128/25")
	checkPrefixes(t, db, "IT", "30.0.0.0/24")
	checkPrefixes(t, db, "FR")
	checkCountry(t, db, "10.0.0.200", "AU")
	checkCountry(t, db, "20.0.0.150", "NZ")
}

func TestCSVMerge(t *testing.T) {
	db := mustLoadCSV(t, `40.0.0.0,40.0.0.127,NL
40.0.0.128,40.0.0.255,NL
50.0.0.1,50.0.0.2,BE
50.0.0.3,50.0.0.6,BE
50.0.0.7,50.0.0.7,LU
`)
	checkPrefixes(t, db, "NL", "40.0.0.0/24")
	checkPrefixes(t, db, "BE", "50.0.0.1/32", "50.0.0.2/31", "50.0.0.4/31", "50.0.0.6/32")
	checkPrefixes(t, db, "LU", "50.0.0.7/32")
	if got := db.Sources()[0].Networks; got != 6 {
		t.Errorf("Networks = %d, want 6", got)
	}
}

func TestCSVIPv6(t *testing.T) {
	db := mustLoadCSV(t, `2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,JP
2001:db8::,2001:db8:3fff:ffff:ffff:ffff:ffff:ffff,SG
2001:2::,2001:2::ffff:ffff:ffff:ffff:ffff,US
2c0f:e9a0:2:0:0:0:2a::,2c0f:e9a0:2:0:0:0:2a:ffff,ZA
::ffff:1.2.3.0,::ffff:1.2.3.255,CN
`)
	checkPrefixes(t, db, "JP", "2001:db8:4000::/34", "2001:db8:8000::/33")
	checkPrefixes(t, db, "SG", "2001:db8::/34")
	checkPrefixes(t, db, "US", "2001:2::/48")
	checkPrefixes(t, db, "ZA", "2c0f:e9a0:2::2a:0/112")
	checkPrefixes(t, db, "CN", "1.2.3.0/24") // IPv4-mapped rows become IPv4
	checkCountry(t, db, "2001:db8:4000::1", "JP")
	checkCountry(t, db, "2001:db8:3fff::1", "SG")
	checkCountry(t, db, "1.2.3.4", "CN")
	checkCountry(t, db, "::ffff:1.2.3.4", "CN")
}

func TestCSVEdges(t *testing.T) {
	db := mustLoadCSV(t, `0.0.0.0,255.255.255.255,ZZ
255.255.255.0,255.255.255.255,US
::,ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,EU
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,AP
`)
	checkCountry(t, db, "0.0.0.0", "ZZ")
	checkCountry(t, db, "255.255.254.255", "ZZ")
	checkCountry(t, db, "255.255.255.255", "US")
	checkCountry(t, db, "::", "EU")
	checkCountry(t, db, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "EU")
	checkCountry(t, db, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "AP")
	checkPrefixes(t, db, "US", "255.255.255.0/24")
	checkPrefixes(t, db, "AP", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")
	// All of IPv6 but ::ffff:0:0/96 and the last address.
	var eu netipx.IPSetBuilder
	eu.AddPrefix(netip.MustParsePrefix("::/0"))
	eu.RemovePrefix(netip.MustParsePrefix("::ffff:0:0/96"))
	eu.Remove(netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
	set, _ := eu.IPSet()
	if got := db.CountryPrefixes("EU"); !slices.Equal(got, set.Prefixes()) {
		t.Errorf("CountryPrefixes(EU) = %v, want %v", got, set.Prefixes())
	}
}

func TestCSVSyntax(t *testing.T) {
	db := mustLoadCSV(t, "\ufeffip_range_start,ip_range_end,country_code\r\n"+
		"# a comment\r\n"+
		"\r\n"+
		"   \n"+
		"  # an indented comment\n"+
		`"1.0.0.0","1.0.0.255","au"`+"\r\n"+
		" 1.1.1.0 , 1.1.1.255 , Au \n"+
		"8.8.8.0,8.8.8.255,US") // no final newline
	checkPrefixes(t, db, "AU", "1.0.0.0/24", "1.1.1.0/24")
	checkPrefixes(t, db, "US", "8.8.8.0/24")
	info := db.Sources()[0]
	if info.Records != 3 || info.Format != "csv" || info.Description != "CSV ranges" || info.BuildTime.IsZero() {
		t.Errorf("Sources()[0] = %+v", info)
	}
}

func TestCSVErrors(t *testing.T) {
	tests := []struct {
		name, text string
		line       int
		msg        string
	}{
		{"bad start", "1.0.0.0,1.0.0.255,AU\n1.2.3,1.2.3.255,AU\n", 2,
			`invalid start address: ParseAddr("1.2.3"): IPv4 address too short`},
		{"bad end", "# c\n1.2.3.0,1.2.3.256,AU\n", 2,
			`invalid end address: ParseAddr("1.2.3.256"): IPv4 field has value >255`},
		{"start after end", "1.2.3.255,1.2.3.0,AU\n", 1, "start 1.2.3.255 is after end 1.2.3.0"},
		{"mixed families", "\n\n1.2.3.0,2001:db8::,AU\n", 3,
			"start 1.2.3.0 and end 2001:db8:: are of different address families"},
		{"two fields", "1.0.0.0,1.0.0.255,AU\n1.2.3.0,1.2.3.255\n", 2, "want 3 fields (start,end,country), got 2"},
		{"four fields", "1.2.3.0,1.2.3.255,AU,x\n", 1, "want 3 fields (start,end,country), got 4"},
		{"unknown code", "1.0.0.0,1.0.0.255,AU\n1.2.3.0,1.2.3.255,QQ\n", 2, `invalid country code "QQ"`},
		{"three letters", "1.2.3.0,1.2.3.255,USA\n", 1, `invalid country code "USA"`},
		{"empty code", "1.2.3.0,1.2.3.255,\n", 1, `invalid country code ""`},
		{"zone", "1.0.0.0,1.0.0.255,AU\nfe80::1%eth0,fe80::2,AU\n", 2,
			`invalid start address: "fe80::1%eth0": address has a zone`},
		{"header after line 1", "# header\nstart,end,country\n", 2,
			`invalid start address: ParseAddr("start"): unable to parse IP`},
		{"CIDR", "1.0.0.0/24,1.0.0.255,AU\n", 1,
			`invalid start address: ParseAddr("1.0.0.0/24"): unexpected character (at "/24")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, path, err := loadCSVText(t, "bad.csv", tc.text)
			want := fmt.Sprintf("%s:%d: %s", path, tc.line, tc.msg)
			if err == nil || err.Error() != want {
				t.Fatalf("Load error\n got %v\nwant %s", err, want)
			}
			var de *diag.Error
			if !errors.As(err, &de) || de.Pos != (diag.Pos{File: path, Line: tc.line}) {
				t.Errorf("error %#v is not a diag.Error at line %d", err, tc.line)
			}
		})
	}
}

func TestCSVManyErrors(t *testing.T) {
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, "1.0.0.%d,1.0.0.0,AU\n", i+1)
	}
	_, path, err := loadCSVText(t, "many.csv", b.String())
	var list diag.List
	if !errors.As(err, &list) {
		t.Fatalf("error %v is not a diag.List", err)
	}
	if len(list) != maxLineErrors+1 {
		t.Errorf("got %d errors, want %d", len(list), maxLineErrors+1)
	}
	last := list[len(list)-1].Error()
	if want := fmt.Sprintf("%s:%d: too many errors", path, maxLineErrors); !strings.HasPrefix(last, want) {
		t.Errorf("last error %q, want prefix %q", last, want)
	}
	if first := list[0].Error(); first != path+":1: start 1.0.0.1 is after end 1.0.0.0" {
		t.Errorf("first error %q", first)
	}
}

func TestCSVLongLine(t *testing.T) {
	text := "1.0.0.0,1.0.0.255,AU\n# " + strings.Repeat("x", maxLineLen+10) + "\n1.2.3.0,1.2.3.255,QQ\n"
	_, path, err := loadCSVText(t, "long.csv", text)
	want := fmt.Sprintf("%s:2: line longer than %d bytes\n%s:3: invalid country code \"QQ\"", path, maxLineLen, path)
	if err == nil || err.Error() != want {
		t.Errorf("Load error\n got %v\nwant %s", err, want)
	}
}

// TestCSVRandom compares the sweep with a brute-force oracle on random,
// heavily overlapping ranges.
func TestCSVRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	codes := []string{"AU", "DE", "MY", "SG", "US"}
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	for range iterations {
		type row struct {
			first, last int
			cc          string
		}
		var rows []row
		var b strings.Builder
		for range 1 + rng.IntN(12) {
			first := rng.IntN(64)
			last := first + rng.IntN(64-first)
			if rng.IntN(4) == 0 {
				// Aligned blocks make ties and exact nesting likely.
				first, last = first&^7, first|7
			}
			r := row{first, last, codes[rng.IntN(len(codes))]}
			rows = append(rows, r)
			fmt.Fprintf(&b, "10.0.0.%d,10.0.0.%d,%s\n", r.first, r.last, r.cc)
		}
		db, err := loadCSV(context.Background(), "r.csv", strings.NewReader(b.String()), 0)
		if err != nil {
			t.Fatal(err)
		}
		full := newDB([]*source{db})
		checkInvariants(t, full)
		for a := range 70 {
			// The smallest covering range wins; of equal ones the later.
			want, best := "", -1
			for i, r := range rows {
				if r.first <= a && a <= r.last &&
					(best < 0 || r.last-r.first <= rows[best].last-rows[best].first) {
					best, want = i, r.cc
				}
			}
			addr := netip.AddrFrom4([4]byte{10, 0, 0, byte(a)})
			got, _, _ := full.Country(addr)
			if got != want {
				t.Fatalf("Country(%s) = %q, want %q\n%s", addr, got, want, b.String())
			}
			for _, cc := range codes {
				if full.InCountry(addr, cc) != (cc == want) {
					t.Fatalf("InCountry(%s, %s) = %v\n%s", addr, cc, !(cc == want), b.String())
				}
			}
		}
	}
}
