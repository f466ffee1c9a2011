package loginhistory

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// mapGeo places single addresses.
type mapGeo map[netip.Addr]string

func (m mapGeo) Country(a netip.Addr) (string, bool) { cc, ok := m[a]; return cc, ok }
func (m mapGeo) ASN(netip.Addr) (uint32, bool)       { return 64500, true }

type collect []Alert

func (c *collect) LoginAlert(a Alert) { *c = append(*c, a) }

var (
	de      = netip.MustParseAddr("192.0.2.1")
	fr      = netip.MustParseAddr("192.0.2.2")
	nowhere = netip.MustParseAddr("192.0.2.3")
)

func TestAlertsDecisions(t *testing.T) {
	c := newClock()
	var buf bytes.Buffer
	var got collect
	al := &Alerts{History: New(cfg(), c.now), Geo: mapGeo{de: "DE", fr: "FR"}, Announce: &got, Now: c.now,
		Log: slog.New(slog.NewTextHandler(&buf, nil))}
	if al.RefuseLogin("a", fr) {
		t.Fatal("refused without block_new_country")
	}
	al.BlockNewCountry = true
	if al.RefuseLogin("a", fr) {
		t.Fatal("an account without history refused")
	}
	al.LoginSucceeded("a", de, "imap")
	if len(got) != 0 {
		t.Fatalf("first login announced: %+v", got)
	}
	if !al.RefuseLogin("A", fr) || al.RefuseLogin("a", de) || al.RefuseLogin("a", nowhere) {
		t.Fatal("block decisions: want FR refused, DE and an unplaced address not")
	}
	if al.RefuseLogin("a", netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Fatal("an IPv4-mapped address of a known country refused")
	}
	c.add(24 * time.Hour) // DE→FR in a day: new, not impossible
	al.LoginSucceeded("a", fr, "web")
	if len(got) != 1 || got[0].Kind != KindNewCountry || got[0].Country != "FR" || got[0].Service != "web" || got[0].ASN != 64500 {
		t.Fatalf("alerts %+v", got)
	}
	if s := buf.String(); !strings.Contains(s, `msg="login from a new country"`) || !strings.Contains(s, "country=FR") || !strings.Contains(s, "previous=[DE]") {
		t.Fatalf("log %s", s)
	}
	al.LoginSucceeded("a", nowhere, "web") // no country: nothing
	if len(got) != 1 {
		t.Fatalf("an unplaced login announced: %+v", got)
	}
	var nilAlerts *Alerts
	if nilAlerts.RefuseLogin("a", fr) {
		t.Fatal("nil alerts refuse")
	}
	nilAlerts.LoginSucceeded("a", fr, "imap")
}
