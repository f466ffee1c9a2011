package loginhistory

import (
	"log/slog"
	"net/netip"
	"time"
)

// The kinds of alert, as named in logs, metrics and webhook events.
const (
	KindNewCountry       = "new_country_login"
	KindImpossibleTravel = "impossible_travel"
)

// Geo finds an address's country (and ASN, when the data has them).
type Geo interface {
	Country(addr netip.Addr) (cc string, ok bool)
	ASN(addr netip.Addr) (uint32, bool)
}

// Alert is one login announced.
type Alert struct {
	Kind     string // KindNewCountry or KindImpossibleTravel
	Time     time.Time
	Account  string
	Service  string
	Addr     netip.Addr
	Country  string
	ASN      uint32   // 0: unknown
	Previous []string // the countries remembered before the login
	Travel   *Travel  // KindImpossibleTravel
}

// Announcer is told of alerts (webhooks, metrics). It must not block.
type Announcer interface {
	LoginAlert(Alert)
}

// Alerts judges and records logins for the login gate (it implements
// gate.LoginWatcher).
type Alerts struct {
	// History is the login history.
	History *History
	// Geo finds countries; nil: nothing is judged or recorded.
	Geo Geo
	// BlockNewCountry refuses a login from a country never seen for an
	// account that has history.
	BlockNewCountry bool
	// Announce is told of alerts; nil: only logged.
	Announce Announcer
	// Log receives one line per alert (never a password).
	Log *slog.Logger
	// Now is the clock of the alerts' times (nil: time.Now).
	Now func() time.Time
}

// RefuseLogin reports whether BlockNewCountry refuses a login of account
// from client: the account has history and client's country is not in it.
// An address in no country is not refused (nothing is known).
func (al *Alerts) RefuseLogin(account string, client netip.Addr) bool {
	if al == nil || !al.BlockNewCountry || al.Geo == nil {
		return false
	}
	cc, ok := al.Geo.Country(client.Unmap())
	if !ok {
		return false
	}
	return al.History.Check(account, cc).NewCountry
}

// LoginSucceeded records a successful login and logs and announces a new
// country and impossible travel. The first login of an account only
// records.
func (al *Alerts) LoginSucceeded(account string, client netip.Addr, service string) {
	if al == nil || al.Geo == nil {
		return
	}
	client = client.Unmap()
	cc, ok := al.Geo.Country(client)
	if !ok {
		return
	}
	asn, _ := al.Geo.ASN(client)
	v := al.History.Record(account, cc, asn)
	if !v.NewCountry && v.Travel == nil {
		return
	}
	now := time.Now
	if al.Now != nil {
		now = al.Now
	}
	a := Alert{Time: now(), Account: account, Service: service, Addr: client, Country: cc, ASN: asn, Previous: v.Previous}
	if v.NewCountry {
		a.Kind = KindNewCountry
		if al.Log != nil {
			al.Log.Info("login from a new country", "account", account, "country", cc, "previous", v.Previous, "service", service, "client", client)
		}
		if al.Announce != nil {
			al.Announce.LoginAlert(a)
		}
	}
	if v.Travel != nil {
		a.Kind, a.Travel = KindImpossibleTravel, v.Travel
		if al.Log != nil {
			al.Log.Info("impossible travel", "account", account, "country", cc, "from", v.Travel.From,
				"since", a.Time.Sub(v.Travel.FromTime).Round(time.Second), "distance_km", int(v.Travel.DistanceKm),
				"speed_kmh", int(v.Travel.SpeedKmh), "service", service, "client", client)
		}
		if al.Announce != nil {
			al.Announce.LoginAlert(a)
		}
	}
}
