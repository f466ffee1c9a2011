package geoip

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/diag"
)

const sgZone = `# SingNet
165.21.0.0/16
165.21.0.0/17      # overlaps the line above
165.22.0.0/16
203.116.0.1
203.116.0.0/31
2001:d08::/32
2001:d08:1::/48
::ffff:1.2.3.0/120
10.1.2.3/8
`

func TestZoneCountryFromFileName(t *testing.T) {
	for _, name := range []string{"sg.zone", "SG.txt", "sg-aggregated.zone", "sg.cidr"} {
		t.Run(name, func(t *testing.T) {
			db := mustLoad(t, Source{Path: writeFile(t, name, []byte(sgZone))})
			checkPrefixes(t, db, "SG",
				"1.2.3.0/24", "10.0.0.0/8", "165.21.0.0/16", "165.22.0.0/16", "203.116.0.0/31", "2001:d08::/32")
			checkCountry(t, db, "165.22.255.255", "SG")
			checkCountry(t, db, "203.116.0.2", "")
			checkInvariants(t, db)
			info := db.Sources()[0]
			if info.Format != "zone" || info.Description != "zone file (SG)" ||
				info.Records != 9 || info.Networks != 6 || info.Countries != 1 {
				t.Errorf("Sources()[0] = %+v", info)
			}
		})
	}
}

func TestZoneCountryFromSource(t *testing.T) {
	path := writeFile(t, "singapore.list", []byte("165.21.0.0/16\n"))
	db := mustLoad(t, Source{Path: path, Format: FormatZone, Country: "MY"})
	checkPrefixes(t, db, "MY", "165.21.0.0/16")
	// Source.Country wins over the file name, and may be lower case.
	db = mustLoad(t, Source{Path: writeFile(t, "sg.zone", []byte("165.21.0.0/16\n")), Country: "my"})
	checkPrefixes(t, db, "MY", "165.21.0.0/16")
	checkPrefixes(t, db, "SG")
}

func TestZoneErrors(t *testing.T) {
	conf := diag.Pos{File: "postern.conf", Line: 7, Col: 3}
	tests := []struct {
		name string
		src  Source
		text string
		want string // %s is the path
	}{
		{"no country", Source{Format: FormatZone}, "1.2.3.0/24\n",
			`postern.conf:7:3: geoip database "%s": cannot tell the country of this zone file: name it after the country code (like sg.zone) or set its country`},
		{"bad country", Source{Country: "XX"}, "1.2.3.0/24\n",
			`postern.conf:7:3: geoip database "%s": invalid country code "XX" for a zone file`},
		{"bad line", Source{Country: "SG"}, "1.2.3.0/24\n\n# c\n1.2.3.0/33\n", `%s:4: netip.ParsePrefix("1.2.3.0/33"): prefix length out of range`},
		{"two bad lines", Source{Country: "SG"}, "1.2.3.0/24 SG\nbanana\n",
			"%[1]s:1: netip.ParsePrefix(\"1.2.3.0/24 SG\"): bad bits after slash: \"24 SG\"\n" +
				`%[1]s:2: ParseAddr("banana"): unable to parse IP`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.Path = writeFile(t, "list.zone", []byte(tc.text))
			tc.src.Pos = conf
			if tc.src.Format == "" {
				tc.src.Format = FormatZone
			}
			_, err := Load(context.Background(), []Source{tc.src})
			if want := fmt.Sprintf(tc.want, tc.src.Path); err == nil || err.Error() != want {
				t.Errorf("Load error\n got %v\nwant %s", err, want)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.zone")
	_, err := Load(context.Background(), []Source{{Path: path, Country: "SG"}})
	if err == nil || err.Error() != path+": cannot open: no such file or directory" {
		t.Errorf("Load = %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v is not fs.ErrNotExist", err)
	}
	conf := diag.Pos{File: "postern.conf", Line: 3}
	_, err = Load(context.Background(), []Source{{Path: path, Pos: conf}})
	if want := `postern.conf:3: geoip database "` + path + `": cannot open: no such file or directory`; err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %s", err, want)
	}
	var de *diag.Error
	if !errors.As(err, &de) || de.Pos != conf {
		t.Errorf("error %#v is not at %v", err, conf)
	}
}

func TestLoadSeveralErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, "sg.zone", []byte("1.2.3.0/24\n"))
	_, err := Load(context.Background(), []Source{
		{Path: filepath.Join(dir, "a.mmdb")},
		{Path: good},
		{Path: writeFile(t, "b.csv", []byte("1.2.3.0,1.2.3.255,QQ\n"))},
		{Path: good, Format: "xml"},
	})
	var list diag.List
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("Load = %v, want 3 errors", err)
	}
	for i, want := range []string{"a.mmdb: cannot open", "b.csv:1: invalid country code", `sg.zone: unknown format "xml"`} {
		if !strings.Contains(list[i].Error(), want) {
			t.Errorf("error %d = %q, want %q", i, list[i], want)
		}
	}
}
