package geoip

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	maxminddb "github.com/oschwald/maxminddb-golang/v2"
	"github.com/postern/postern/internal/diag"
	"go4.org/netipx"
)

func TestMMDBFlat(t *testing.T) {
	data := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	path := writeFile(t, "flat.mmdb", data)
	db := mustLoad(t, Source{Path: path})

	checkPrefixes(t, db, "AU", "1.0.0.0/24", "1.1.1.0/24")
	checkPrefixes(t, db, "DE", "3.2.35.0/27", "3.2.35.32/29", "3.2.35.48/28")
	checkPrefixes(t, db, "TR", "3.2.35.40/29")
	checkPrefixes(t, db, "US", "8.8.8.0/24", "2001:4860::/32")
	checkPrefixes(t, db, "SG", "80.80.0.0/24", "165.21.0.0/16")
	checkPrefixes(t, db, "MY", "175.136.0.0/13", "175.144.0.0/15", "2001:e68::/32")
	checkPrefixes(t, db, "XK", "2400:cb00::/32")
	checkPrefixes(t, db, "GB")
	checkPrefixes(t, db, "QQ")

	for _, tc := range []struct{ addr, want string }{
		{"3.2.35.39", "DE"},
		{"3.2.35.40", "TR"},
		{"3.2.35.47", "TR"},
		{"3.2.35.48", "DE"},
		{"3.2.35.64", ""},
		{"8.8.8.8", "US"},
		{"::ffff:8.8.8.8", "US"},
		{"175.145.255.255", "MY"},
		{"175.146.0.0", ""},
		{"2001:e68::1", "MY"},
		{"2001:4860:ffff::1", "US"},
		{"81.0.0.1", ""}, // unknown code QQ
		{"82.0.0.1", ""}, // no country
		{"2002:808:808::1", ""},
		{"9.9.9.9", ""},
	} {
		checkCountry(t, db, tc.addr, tc.want)
	}
	if db.InCountry(netip.MustParseAddr("3.2.35.40"), "DE") {
		t.Error("InCountry(3.2.35.40, DE) = true; TR is nested inside DE")
	}
	for _, p := range db.CountryPrefixes("US") {
		if p.Addr().Is4In6() {
			t.Errorf("prefix %v is IPv4-mapped", p)
		}
	}

	want := Info{
		Path:        path,
		Format:      "mmdb",
		Description: "country ipvAll",
		BuildTime:   time.Unix(fixtureBuildEpoch, 0).UTC(),
		Networks:    14,
		Countries:   7,
		Records:     16,
		Skipped:     2,
	}
	got := db.Sources()
	if len(got) == 1 && got[0].BuildTime.Equal(want.BuildTime) {
		got[0].BuildTime = want.BuildTime
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("Sources() = %+v\nwant %+v", got, []Info{want})
	}
	if got, want := db.Countries(), []string{"AU", "DE", "MY", "SG", "TR", "US", "XK"}; !slices.Equal(got, want) {
		t.Errorf("Countries() = %v, want %v", got, want)
	}
	if db.HasASNData() {
		t.Error("HasASNData() = true")
	}
	if !db.HasCountry("TR") || db.HasCountry("GB") {
		t.Error("HasCountry is wrong")
	}
	checkInvariants(t, db)
}

func TestMMDBNested(t *testing.T) {
	data := buildMMDB(t, fixtureOptions("GeoLite2-Country"), nestedNets)
	db := mustLoad(t, Source{Path: writeFile(t, "GeoLite2-Country.mmdb", data)})

	checkPrefixes(t, db, "US", "8.8.8.0/24", "2001:4860::/32")
	checkPrefixes(t, db, "MY", "175.136.0.0/13", "2001:e68::/32")
	checkPrefixes(t, db, "SG", "165.21.0.0/16")
	checkPrefixes(t, db, "AU", "203.1.0.0/16")
	checkPrefixes(t, db, "NZ")
	checkCountry(t, db, "165.21.0.1", "SG")
	checkCountry(t, db, "203.1.2.3", "AU")
	checkCountry(t, db, "90.0.0.1", "")
	checkCountry(t, db, "2001:4860::8888", "US")

	info := db.Sources()[0]
	if info.Description != "GeoLite2-Country" || info.Skipped != 1 || info.Countries != 4 || info.Networks != 6 {
		t.Errorf("Sources()[0] = %+v", info)
	}
	checkInvariants(t, db)
}

func TestMMDBASN(t *testing.T) {
	asn := buildMMDB(t, fixtureOptions("GeoLite2-ASN"), asnNets)
	flat := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	db := mustLoad(t,
		Source{Path: writeFile(t, "asn.mmdb", asn)},
		Source{Path: writeFile(t, "country.mmdb", flat)},
	)
	if !db.HasASNData() {
		t.Fatal("HasASNData() = false")
	}
	if got, want := db.ASNPrefixes(15169), prefixes("8.8.4.0/24", "8.8.8.0/24", "2001:4860::/32"); !slices.Equal(got, want) {
		t.Errorf("ASNPrefixes(15169) = %v, want %v", got, want)
	}
	if got, want := db.ASNPrefixes(13335), prefixes("1.1.1.0/24"); !slices.Equal(got, want) {
		t.Errorf("ASNPrefixes(13335) = %v, want %v", got, want)
	}
	if got := db.ASNPrefixes(64512); got != nil {
		t.Errorf("ASNPrefixes(64512) = %v, want nil", got)
	}
	for _, tc := range []struct {
		addr string
		asn  uint32
	}{
		{"8.8.8.8", 15169},
		{"::ffff:8.8.4.4", 15169},
		{"2001:4860::1", 15169},
		{"1.1.1.1", 13335},
		{"9.9.9.9", 0},
	} {
		a := netip.MustParseAddr(tc.addr)
		got, ok := db.ASN(a)
		if got != tc.asn || ok != (tc.asn != 0) {
			t.Errorf("ASN(%s) = %d, %v, want %d", tc.addr, got, ok, tc.asn)
		}
		if tc.asn != 0 && !db.InASN(a, tc.asn) {
			t.Errorf("InASN(%s, %d) = false", tc.addr, tc.asn)
		}
	}
	if db.InASN(netip.MustParseAddr("1.1.1.1"), 15169) {
		t.Error("InASN(1.1.1.1, 15169) = true")
	}
	// The ASN database has no countries: Country falls through to the
	// second source and names it.
	cc, src, ok := db.Country(netip.MustParseAddr("8.8.8.8"))
	if !ok || cc != "US" || !strings.HasSuffix(src.Path, "country.mmdb") {
		t.Errorf("Country(8.8.8.8) = %q, %+v, %v", cc, src, ok)
	}
	info := db.Sources()[0]
	if !info.HasASN || info.ASNs != 2 || info.Countries != 0 || info.Networks != 4 || info.Skipped != 0 {
		t.Errorf("Sources()[0] = %+v", info)
	}
}

func TestMMDBIPv4Only(t *testing.T) {
	opts := fixtureOptions("country ipv4")
	opts.IPVersion = 4
	data := buildMMDB(t, opts, []fixtureNet{
		{"1.0.0.0/24", flatRecord("AU")},
		{"175.136.0.0/13", flatRecord("MY")},
	})
	db := mustLoad(t, Source{Path: writeFile(t, "v4.mmdb", data)})
	checkPrefixes(t, db, "AU", "1.0.0.0/24")
	checkPrefixes(t, db, "MY", "175.136.0.0/13")
	checkCountry(t, db, "175.136.0.1", "MY")
	checkCountry(t, db, "2001:e68::1", "")
}

// TestMMDBWholeIPv4 covers a tree whose ::/96 path ends in a record, so
// that one record covers all of IPv4.
func TestMMDBWholeIPv4(t *testing.T) {
	opts := fixtureOptions("country ipvAll")
	opts.DisableIPv4Aliasing = true
	opts.IncludeReservedNetworks = true
	data := buildMMDB(t, opts, []fixtureNet{
		{"::/64", flatRecord("ZZ")},
		{"2001:e68::/32", flatRecord("MY")},
	})
	db := mustLoad(t, Source{Path: writeFile(t, "zz.mmdb", data)})
	// ::/64 covers ::ffff:0:0/96, which IPv6 data never includes.
	var want netipx.IPSetBuilder
	want.AddPrefix(netip.MustParsePrefix("::/64"))
	want.RemovePrefix(netip.MustParsePrefix("::ffff:0:0/96"))
	set, _ := want.IPSet()
	wantZZ := append(prefixes("0.0.0.0/0"), set.Prefixes()...)
	if got := db.CountryPrefixes("ZZ"); !slices.Equal(got, wantZZ) {
		t.Errorf("CountryPrefixes(ZZ) = %v, want %v", got, wantZZ)
	}
	checkCountry(t, db, "::ffff:1.2.3.4", "ZZ")
	checkInvariants(t, db)
	checkCountry(t, db, "8.8.8.8", "ZZ")
	checkCountry(t, db, "::1", "ZZ")
	checkCountry(t, db, "2001:e68::1", "MY")
}

func TestMMDBCorrupt(t *testing.T) {
	good := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	cases := map[string][]byte{
		"empty":  {},
		"random": random,
		// The marker is there, but not the rest of the file.
		"marker only": []byte(mmdbMarker),
		"text":        []byte("1.0.0.0,1.0.0.255,AU\n"),
	}
	for _, n := range []int{1, 16, len(good) / 4, len(good) / 2, len(good) - 100, len(good) - 1} {
		cases["truncated to "+strconv.Itoa(n)] = good[:n]
	}
	// Cut out the middle, keeping the metadata.
	cases["middle removed"] = slices.Concat(good[:100], good[len(good)/2:])
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, "bad.mmdb", data)
			_, err := Load(context.Background(), []Source{{Path: path}})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.HasPrefix(err.Error(), path+": corrupt MMDB: ") ||
				!strings.HasSuffix(err.Error(), "re-download the file") {
				t.Errorf("error %q does not name the file or the remedy", err)
			}
			var de *diag.Error
			if !errors.As(err, &de) || de.Pos.File != path {
				t.Errorf("error %#v is not a diag.Error at %s", err, path)
			}
		})
	}
}

// node24 reads and writes nodes of a 24-bit MMDB search tree.
type node24 []byte

func (d node24) get(i uint) (left, right uint) { return readNode(d, i, 24) }

func (d node24) set(i, left, right uint) {
	b := d[i*6:]
	b[0], b[1], b[2] = byte(left>>16), byte(left>>8), byte(left)
	b[3], b[4], b[5] = byte(right>>16), byte(right>>8), byte(right)
}

// treeFixture returns a 24-bit fixture and its metadata.
func treeFixture(t *testing.T) ([]byte, maxminddb.Metadata) {
	t.Helper()
	data := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	return data, r.Metadata
}

func TestMMDBTreeShape(t *testing.T) {
	good, md := treeFixture(t)
	n := md.NodeCount
	if _, err := checkTree(md, good); err != nil {
		t.Fatalf("checkTree(fixture) = %v", err)
	}
	// A data pointer from the fixture, for leaves.
	var leaf uint
	for i := range n {
		if l, r := node24(good).get(i); l > n {
			leaf = l
		} else if r > n {
			leaf = r
		}
	}

	tests := []struct {
		name   string
		mutate func(d node24)
		want   string
	}{
		{"points to root", func(d node24) {
			l, _ := d.get(n - 1)
			d.set(n-1, l, 0)
		}, "points to the root"},
		{"shared node", func(d node24) {
			l, _ := d.get(0)
			d.set(0, l, l)
		}, "has two parents"},
		{"node count too large", nil, "does not fit"},
		// Each node points twice to the next: walking it would visit
		// 2^120 paths.
		{"exponential DAG", func(d node24) {
			for i := range uint(120) {
				d.set(i, i+1, i+1)
			}
			d.set(120, leaf, leaf)
		}, "has two parents"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.mutate != nil && n < 121 {
				t.Skip("fixture too small")
			}
			data := bytes.Clone(good)
			md := md
			if tc.mutate == nil {
				md.NodeCount = uint(len(data))
			} else {
				tc.mutate(node24(data))
			}
			_, err := checkTree(md, data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("checkTree = %v, want %q", err, tc.want)
			}
			if tc.mutate == nil {
				return
			}
			// Load must fail the same way, and fast.
			path := writeFile(t, "dag.mmdb", data)
			if _, err := Load(context.Background(), []Source{{Path: path}}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMMDBNotCountryRecords(t *testing.T) {
	data := buildMMDB(t, fixtureOptions("weird"), []fixtureNet{
		{"1.0.0.0/24", mmdbtype.Map{"country_code": mmdbtype.Uint32(5)}},
	})
	path := writeFile(t, "weird.mmdb", data)
	_, err := Load(context.Background(), []Source{{Path: path}})
	if err == nil || !strings.Contains(err.Error(), path+": record for 1.0.0.0/24 is not a country or ASN record") {
		t.Errorf("Load = %v", err)
	}
}

func TestMMDBContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	data := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	_, err := Load(ctx, []Source{{Path: writeFile(t, "x.mmdb", data)}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Load = %v, want context.Canceled", err)
	}
}
