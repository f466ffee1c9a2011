package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoginAlertsConfig(t *testing.T) {
	dir := t.TempDir()
	f, err := Parse(filepath.Join(dir, "p.yaml"), []byte("login_alerts: { enabled: true }\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := f.LoginAlerts
	if !l.On() || l.Window.D != 90*24*time.Hour || l.MaxAccounts != 100000 || l.MaxCountriesPerAccount != 16 || l.MaxSpeedKmh != 1000 || l.BlockNewCountry || l.File.IsSet() {
		t.Errorf("defaults: %+v", l)
	}
	f, err = Parse(filepath.Join(dir, "p.yaml"), []byte("login_alerts: { block_new_country: true, window: 30d, max_accounts: 10, max_countries_per_account: 4, max_speed_kmh: 900, file: /var/lib/postern/logins.json }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := f.LoginAlerts; !l.On() || l.Window.D != 30*24*time.Hour || l.MaxAccounts != 10 || l.MaxCountriesPerAccount != 4 || l.MaxSpeedKmh != 900 || l.File.Value != "/var/lib/postern/logins.json" {
		t.Errorf("set: %+v", l)
	}
	if f, err := Parse(filepath.Join(dir, "p.yaml"), []byte("webhooks: []\n")); err != nil || f.LoginAlerts.On() {
		t.Errorf("off by default: %v", err)
	}
}

func TestLoginAlertsConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"login_alerts: { enabled: true, window: 10m }", "login_alerts.window: 10m0s is below 1h"},
		{"login_alerts: { enabled: true, max_countries_per_account: 1000 }", "is above 256"},
		{"login_alerts: { enabled: true, max_speed_kmh: -1 }", "is negative"},
		{"login_alerts: { enabled: true, file: rel.json }", "not an absolute path"},
		{"login_alerts: { file: /x.json }", "needs login_alerts.enabled"},
		{"login_alerts: { enabled: true, max_accounts: 0 }", "max_accounts"},
		{"login_alerts: { enabled: true, blok_new_country: true }", "blok_new_country"},
	} {
		_, err := Parse(filepath.Join(t.TempDir(), "p.yaml"), []byte(tc.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
