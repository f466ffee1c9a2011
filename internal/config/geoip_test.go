package config

import (
	"strings"
	"testing"
	"time"
)

// A downloaded database takes its url and download settings, with the
// defaults where they are not written.
func TestGeoIPDownloadKeys(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte(`
geoip:
  databases:
    - path: geo/country.mmdb
      url: "https://user:secret@example.com/db?suffix=tar.gz"
      refresh: 12h
      max_drop: 5%
      min_networks: 1000
    - path: geo/sg.zone
      url: https://example.com/sg.zone
    - path: geo/local.csv
`))
	if err != nil {
		t.Fatal(err)
	}
	d := f.GeoIP.Databases
	if d[0].URL.Value != "https://user:secret@example.com/db?suffix=tar.gz" || d[0].Refresh.D != 12*time.Hour ||
		d[0].MaxDrop.Value != 5 || d[0].MinNetworks != 1000 {
		t.Errorf("written keys: %+v", d[0])
	}
	if d[0].Path.Value != "/etc/postern/geo/country.mmdb" {
		t.Errorf("path not resolved: %s", d[0].Path.Value)
	}
	if d[1].Refresh.D != 24*time.Hour || d[1].MaxDrop.Value != 20 || d[1].MinNetworks != 1 {
		t.Errorf("defaults: refresh %v max_drop %v min_networks %d", d[1].Refresh.D, d[1].MaxDrop.Value, d[1].MinNetworks)
	}
	if d[2].URL.IsSet() {
		t.Errorf("local database has a url: %+v", d[2].URL)
	}
}

func TestGeoIPDownloadErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"refresh without url", "geoip:\n  databases:\n    - path: a.mmdb\n      refresh: 1h\n",
			`c.yaml:4:7: refresh applies to a database with a url only`},
		{"max_drop without url", "geoip:\n  databases:\n    - { path: a.mmdb, max_drop: 5% }\n",
			`c.yaml:3:23: max_drop applies to a database with a url only`},
		{"min_networks with empty url", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"\", min_networks: 5 }\n",
			`c.yaml:3:32: min_networks applies to a database with a url only`},
		{"bad scheme", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"ftp://example.com/a\" }\n",
			`c.yaml:3:28: bad geoip url "ftp://example.com/a": want http:// or https://`},
		{"no host", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https:///a\" }\n",
			`c.yaml:3:28: bad geoip url "https:///a": no host`},
		{"password kept out of the error", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"ftp://me:secret@example.com/a\" }\n",
			`c.yaml:3:28: bad geoip url "ftp://me:xxxxx@example.com/a"`},
		{"refresh too short", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https://example.com/a\", refresh: 10s }\n",
			`c.yaml:3:62: geoip refresh 10s is too short: at least 1m0s`},
		{"bad refresh", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https://example.com/a\", refresh: soon }\n",
			`c.yaml:3:62: bad duration "soon"`},
		{"bad max_drop", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https://example.com/a\", max_drop: 120% }\n",
			`c.yaml:3:63: bad percentage "120%": want 0% to 100%`},
		{"min_networks zero", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https://example.com/a\", min_networks: 0 }\n",
			`c.yaml:3:67: min_networks cannot be less than 1, got 0`},
		{"typo", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https://example.com/a\", refesh: 1h }\n",
			`c.yaml:3:53: unknown key "refesh" (did you mean "refresh"?)`},
		{"shared path", "geoip:\n  databases:\n    - { path: a.mmdb, url: \"https://example.com/a\" }\n    - { path: a.mmdb }\n",
			`c.yaml:4:15: geoip database a.mmdb is already named at c.yaml:3:15; a downloaded database needs a path of its own`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %q\nwant %q", err, c.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the password is in the error: %q", err)
			}
		})
	}
}
