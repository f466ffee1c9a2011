package webhook

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/loginhistory"
)

func TestFromLoginAlert(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	a := loginhistory.Alert{Kind: loginhistory.KindNewCountry, Time: at, Account: "alice@example.com", Service: "imap",
		Addr: netip.MustParseAddr("203.0.113.7"), Country: "TH", Previous: []string{"DE", "FR"}}
	ev := FromLoginAlert(a, "gw1")
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"type":"new_country_login"`, `"account":"alice@example.com"`, `"country":"TH"`, `"previous_countries":["DE","FR"]`, `"service":"imap"`} {
		if !strings.Contains(s, want) {
			t.Errorf("event %s lacks %s", s, want)
		}
	}
	if !strings.Contains(ev.Text, "new country: TH") || !strings.Contains(ev.Text, "DE, FR") {
		t.Errorf("text %q", ev.Text)
	}
	a.Kind, a.Travel = loginhistory.KindImpossibleTravel, &loginhistory.Travel{From: "DE", FromTime: at.Add(-time.Hour), DistanceKm: 8700.4, SpeedKmh: 8700.4}
	ev = FromLoginAlert(a, "gw1")
	if ev.Type != EventImpossibleTravel || ev.Login.FromCountry != "DE" || ev.Login.DistanceKm != 8700 || !strings.Contains(ev.Text, "8700 km from DE in 1h0m0s") {
		t.Errorf("travel event %+v %q", ev.Login, ev.Text)
	}
}
