package geoip

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestDetectFormat(t *testing.T) {
	mmdb := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	// A large MMDB: the marker is near the end, after more than sniffHead.
	padded := slices.Concat(bytes.Repeat([]byte{0}, sniffTail), mmdb)
	tests := []struct {
		name string
		data []byte
		want Format
		err  string
	}{
		{"db.mmdb", []byte("anything"), FormatMMDB, ""},
		{"DB.MMDB", []byte("anything"), FormatMMDB, ""},
		{"ranges.csv", []byte("anything"), FormatCSV, ""},
		{"sg.zone", []byte("anything"), FormatZone, ""},
		{"sg.txt", []byte("anything"), FormatZone, ""},
		{"sg.cidr", []byte("anything"), FormatZone, ""},
		{"country.dat", mmdb, FormatMMDB, ""},
		{"country.dat", padded, FormatMMDB, ""},
		{"ranges", []byte("# comment\n\n1.0.0.0,1.0.0.255,AU\n"), FormatCSV, ""},
		{"ranges", []byte("start,end,country\n1.0.0.0,1.0.0.255,AU\n"), FormatCSV, ""},
		{"sg", []byte("\ufeff# SG\n1.2.3.0/24\n"), FormatZone, ""},
		{"sg", []byte("2001:db8::/32 # docs\n"), FormatZone, ""},
		{"sg", []byte("1.2.3.4\n"), FormatZone, ""},
		{"x.gz", []byte("\x1f\x8b\x08\x00rest"), FormatAuto, "gzip-compressed"},
		{"x", []byte("hello world\n"), FormatAuto, "cannot detect the format"},
		{"x", []byte("# only comments\n"), FormatAuto, "cannot detect the format"},
		{"x", nil, FormatAuto, "cannot detect the format"},
	}
	for _, tc := range tests {
		got, err := detectFormat(tc.name, bytes.NewReader(tc.data), int64(len(tc.data)))
		if got != tc.want {
			t.Errorf("detectFormat(%s) = %q, want %q", tc.name, got, tc.want)
		}
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("detectFormat(%s) error = %v, want %q", tc.name, err, tc.err)
		}
	}
}

// TestLoadDetects loads every format through FormatAuto, from files whose
// names say nothing.
func TestLoadDetects(t *testing.T) {
	mmdb := buildMMDB(t, fixtureOptions("country ipvAll"), flatNets)
	db := mustLoad(t,
		Source{Path: writeFile(t, "a.db", mmdb)},
		Source{Path: writeFile(t, "b.dat", []byte("1.0.0.0,1.0.0.255,NZ\n"))},
		Source{Path: writeFile(t, "c.list", []byte("9.9.9.0/24\n")), Country: "CH"},
	)
	var formats []string
	for _, info := range db.Sources() {
		formats = append(formats, info.Format)
	}
	if got := strings.Join(formats, " "); got != "mmdb csv zone" {
		t.Errorf("formats = %s", got)
	}
	checkCountry(t, db, "9.9.9.9", "CH")
	// The MMDB comes first, so it answers for 1.0.0.1; InCountry
	// consults every source.
	checkCountry(t, db, "1.0.0.1", "AU")
	if !db.InCountry(netip.MustParseAddr("1.0.0.1"), "NZ") {
		t.Error("InCountry(1.0.0.1, NZ) = false")
	}

	_, err := Load(context.Background(), []Source{{Path: writeFile(t, "x.bin", []byte("hello\n"))}})
	if err == nil || !strings.HasSuffix(err.Error(), "x.bin: cannot detect the format (not MMDB, CSV or a zone file); set it explicitly") {
		t.Errorf("Load = %v", err)
	}
	_, err = Load(context.Background(), []Source{{Path: t.TempDir()}})
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("Load(dir) = %v", err)
	}
	_, err = Load(context.Background(), []Source{{}})
	if err == nil || err.Error() != "no file name given" {
		t.Errorf("Load(empty path) = %v", err)
	}
}
