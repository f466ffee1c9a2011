package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/geoip"
	"github.com/postern/postern/internal/tlsconf"
)

// TestScenarioRealDataset runs the new user's scenario against the real
// country dataset: Malaysia by country from the MMDB, Singapore from a zone
// file (made here from the CSV, as a GeoIP provider's per-country list
// would be), IMAP granted to both and every login restricted to both. Only
// well-known addresses are asserted (the dataset has known errors).
func TestScenarioRealDataset(t *testing.T) {
	geo := os.Getenv("POSTERN_GEO_DIR")
	if geo == "" || testing.Short() {
		t.Skip("needs POSTERN_GEO_DIR (make testdata) and no -short")
	}
	dir := t.TempDir()
	csvDB, err := geoip.Load(context.Background(), []geoip.Source{{Path: filepath.Join(geo, "geo-whois-asn-country-ipv4.csv")}})
	if err != nil {
		t.Fatal(err)
	}
	var zone strings.Builder
	zone.WriteString("# Singapore, IPv4\n")
	for _, p := range csvDB.CountryPrefixes("SG") {
		fmt.Fprintln(&zone, p)
	}
	writeFile(t, filepath.Join(dir, "sg.zone"), zone.String())
	if _, _, err := tlsconf.SelfSigned(dir, []string{"mail.example.com"}, 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, strings.Replace(scenario, "path: country.mmdb", "path: "+filepath.Join(geo, "geo-whois-asn-country.mmdb"), 1))

	if code, out, errs := postern(t, "check", "-c", cfg); code != 0 {
		t.Fatalf("check: %d\n%s%s", code, out, errs)
	}
	for _, c := range []struct {
		ip   string
		want int
	}{
		{"175.139.1.1", 0}, // TM Net, Malaysia
		{"60.48.1.1", 0},   // TM Net, Malaysia
		{"165.21.2.2", 0},  // SingNet, Singapore (zone file)
		{"118.189.1.1", 0}, // Singapore (zone file)
		{"8.8.8.8", 1},     // United States
		{"1.1.1.1", 1},     // Australia
		{"10.0.0.1", 1},    // private: in no country
	} {
		code, out, errs := postern(t, "explain", "-c", cfg, "--ip", c.ip, "--service", "imap", "--account", "alice@example.com")
		if code != c.want {
			t.Errorf("explain %s: exit %d, want %d\n%s%s", c.ip, code, c.want, out, errs)
		}
	}
	code, out, _ := postern(t, "pattern", "test", "-c", cfg, "GeoIP_MY", "175.139.1.1")
	if code != 0 || !strings.Contains(out, "geoip: 175.139.1.1 is in MY") || !strings.Contains(out, "item country:MY") {
		t.Errorf("pattern test MY:\n%s", out)
	}
	code, out, _ = postern(t, "pattern", "test", "-c", cfg, "GeoIP_SG", "165.21.2.2")
	if code != 0 || !strings.Contains(out, filepath.Join(dir, "sg.zone")+":") {
		t.Errorf("pattern test SG:\n%s", out)
	}
	if code, _, _ := postern(t, "pattern", "test", "-c", cfg, "GeoIP_SG", "175.139.1.1"); code != 1 {
		t.Errorf("a Malaysian address is not in [GeoIP_SG]: exit %d", code)
	}
}
