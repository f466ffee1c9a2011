package webhook

import (
	"fmt"
	"strings"

	"github.com/postern/postern/internal/loginhistory"
)

// EventImpossibleTravel is the event of two logins too far apart for the
// time between them.
const EventImpossibleTravel = "impossible_travel"

// Login describes the login a new_country_login or impossible_travel
// event is about. Never a password.
type Login struct {
	Account  string   `json:"account"`
	Service  string   `json:"service"`
	Address  string   `json:"address"`
	Country  string   `json:"country"`
	ASN      uint32   `json:"asn,omitempty"`
	Previous []string `json:"previous_countries"` // remembered before this login
	// Impossible travel: the previous login's country and time, the
	// great-circle distance between the countries' centroids and the
	// speed it implies.
	FromCountry string  `json:"from_country,omitempty"`
	FromTime    string  `json:"from_time,omitempty"`
	DistanceKm  float64 `json:"distance_km,omitempty"`
	SpeedKmh    float64 `json:"speed_kmh,omitempty"`
}

// FromLoginAlert is the event of a login alert.
func FromLoginAlert(a loginhistory.Alert, node string) Event {
	l := &Login{Account: a.Account, Service: a.Service, Address: a.Addr.String(), Country: a.Country, ASN: a.ASN, Previous: a.Previous}
	if l.Previous == nil {
		l.Previous = []string{}
	}
	ev := Event{ID: newID(), Type: a.Kind, Time: a.Time.UTC(), Node: node, Login: l}
	var s string
	if a.Kind == loginhistory.KindImpossibleTravel && a.Travel != nil {
		t := a.Travel
		l.FromCountry, l.FromTime = t.From, t.FromTime.UTC().Format("2006-01-02T15:04:05Z07:00")
		l.DistanceKm, l.SpeedKmh = float64(int(t.DistanceKm)), float64(int(t.SpeedKmh))
		s = fmt.Sprintf("postern %s: impossible travel for %s: %s login from %s (%s), %d km from %s in %s",
			node, a.Account, a.Service, a.Country, l.Address, int(t.DistanceKm), t.From, a.Time.Sub(t.FromTime).Round(1e9))
	} else {
		s = fmt.Sprintf("postern %s: %s login of %s from a new country: %s (%s); before: %s",
			node, a.Service, a.Account, a.Country, l.Address, strings.Join(a.Previous, ", "))
	}
	ev.Text = slackEscape(s)
	return ev
}
