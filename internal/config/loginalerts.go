package config

import (
	"path/filepath"
	"time"

	"github.com/postern/postern/internal/diag"
)

// LoginAlerts is the per-account login history and what it announces:
// a successful login from a country never seen for the account
// (new_country_login) and impossible travel between two logins
// (impossible_travel). On when Enabled or BlockNewCountry is set.
type LoginAlerts struct {
	// Enabled turns the history and its alerts on.
	Enabled bool `yaml:"enabled"`
	// Window is how long a country is remembered after its last login.
	Window Duration `yaml:"window" default:"90d"`
	// MaxAccounts bounds the accounts remembered (the least recently seen
	// is forgotten first).
	MaxAccounts int `yaml:"max_accounts" default:"100000" min:"1"`
	// MaxCountriesPerAccount bounds the countries remembered per account
	// (the least recently seen is forgotten first).
	MaxCountriesPerAccount int `yaml:"max_countries_per_account" default:"16" min:"1"`
	// BlockNewCountry refuses a login from a country never seen for an
	// account that has history, as the login IP restriction refuses,
	// unless a travel pass covers the address.
	BlockNewCountry bool `yaml:"block_new_country"`
	// MaxSpeedKmh is the fastest travel believed between two logins'
	// countries (great-circle distance between their centroids over the
	// time between the logins); 0 turns impossible-travel alerts off.
	MaxSpeedKmh float64 `yaml:"max_speed_kmh" default:"1000"`
	// File is where the history is saved (JSON, written atomically) and
	// loaded from at start; not set: kept in memory only.
	File Text `yaml:"file"`
	// SaveEvery is how often a changed history is saved.
	SaveEvery Duration `yaml:"save_every" default:"1m"`
}

// On reports whether login alerts are configured.
func (l LoginAlerts) On() bool { return l.Enabled || l.BlockNewCountry }

// maxCountriesPerAccount bounds max_countries_per_account.
const maxCountriesPerAccount = 256

func (f *File) validateLoginAlerts(d *decoder) {
	l := f.LoginAlerts
	if !l.On() {
		if l.File.IsSet() {
			d.errs.Add(diag.Errorf(l.File.Pos, "login_alerts.file needs login_alerts.enabled: true"))
		}
		return
	}
	if l.Window.D < time.Hour {
		d.errs.Add(diag.Errorf(l.Window.Pos, "login_alerts.window: %s is below 1h", l.Window.D))
	}
	if l.MaxCountriesPerAccount > maxCountriesPerAccount {
		d.errs.Add(diag.Errorf(l.Window.Pos, "login_alerts.max_countries_per_account: %d is above %d", l.MaxCountriesPerAccount, maxCountriesPerAccount))
	}
	if l.MaxSpeedKmh < 0 {
		d.errs.Add(diag.Errorf(l.Window.Pos, "login_alerts.max_speed_kmh: %g is negative (0 turns impossible travel off)", l.MaxSpeedKmh))
	}
	if l.File.IsSet() && !filepath.IsAbs(l.File.Value) {
		d.errs.Add(diag.Errorf(l.File.Pos, "login_alerts.file: %q is not an absolute path", l.File.Value))
	}
	if l.SaveEvery.D < time.Second {
		d.errs.Add(diag.Errorf(l.SaveEvery.Pos, "login_alerts.save_every: %s is below 1s", l.SaveEvery.D))
	}
}
