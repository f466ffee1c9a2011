package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// LoginAlerts counts login alerts by service: logins from a country never
// seen for the account, impossible travel, and logins refused by
// block_new_country. Labels are bounded by the services.
type LoginAlerts struct {
	newCountry *prometheus.CounterVec
	travel     *prometheus.CounterVec
}

// NewLoginAlerts registers the login-alert counters in m's registry; call
// it once per Metrics.
func (m *Metrics) NewLoginAlerts() *LoginAlerts {
	f := factory{m.reg}
	return &LoginAlerts{
		newCountry: f.counterVec("postern_new_country_logins_total",
			"Successful logins from a country never seen for the account, by service.", "service"),
		travel: f.counterVec("postern_impossible_travel_total",
			"Successful logins too far from the account's previous login for the time between them, by service.", "service"),
	}
}

// NewCountry counts one login from a new country.
func (l *LoginAlerts) NewCountry(service string) { l.newCountry.WithLabelValues(service).Inc() }

// ImpossibleTravel counts one impossible-travel alert.
func (l *LoginAlerts) ImpossibleTravel(service string) { l.travel.WithLabelValues(service).Inc() }
