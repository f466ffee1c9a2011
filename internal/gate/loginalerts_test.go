package gate_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/loginhistory"
	"github.com/postern/postern/internal/passes"
)

// halfGeo puts 127.0.0.0/25 in DE and 127.0.0.128/25 in TH.
type halfGeo struct{}

func (halfGeo) Country(a netip.Addr) (string, bool) {
	if !netip.MustParsePrefix("127.0.0.0/24").Contains(a) {
		return "", false
	}
	if a.As4()[3] < 128 {
		return "DE", true
	}
	return "TH", true
}
func (halfGeo) ASN(netip.Addr) (uint32, bool) { return 0, false }

type alertLog struct {
	mu sync.Mutex
	as []loginhistory.Alert
}

func (l *alertLog) LoginAlert(a loginhistory.Alert) {
	l.mu.Lock()
	l.as = append(l.as, a)
	l.mu.Unlock()
}
func (l *alertLog) kinds() (k []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.as {
		k = append(k, a.Kind+":"+a.Country+":"+a.Service)
	}
	return k
}

// A login from a country never seen for the account is announced (and,
// with block_new_country, refused the way the login IP restriction
// refuses: a decoy goes to the backend) unless a travel pass covers the
// address; the first login only records.
func TestLoginAlertsThroughTheGate(t *testing.T) {
	w := newWorld(t, 100)
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clk := &testClock{t: start}
	hist := loginhistory.New(loginhistory.Config{Window: 90 * 24 * time.Hour, MaxAccounts: 10, MaxCountries: 4, MaxSpeedKmh: 1000}, clk.now)
	ann := &alertLog{}
	al := &loginhistory.Alerts{History: hist, Geo: halfGeo{}, Announce: ann, Now: clk.now}
	l := gate.NewLogins(w.eng)
	l.Watch(al, "imap")

	login := func(addr, user string) *gate.Attempt {
		t.Helper()
		gs, a := w.session(t, services[1], addr)
		at, d := l.Begin(context.Background(), gs, w.pol, a, gate.Credentials{User: user, Pass: "secret"}, discard)
		if at == nil {
			t.Fatalf("%s from %s: no attempt: %+v", user, addr, d)
		}
		t.Cleanup(at.Abandon)
		if !at.Refused {
			at.Report(gate.Accepted)
		}
		return at
	}
	login("127.0.0.5", "alice@example.test") // first: only recorded
	if k := ann.kinds(); k != nil {
		t.Fatalf("first login announced: %v", k)
	}
	clk.set(start.Add(time.Hour))
	login("127.0.0.200", "alice@example.test") // TH an hour after DE: new and impossible
	if k := ann.kinds(); !slices.Equal(k, []string{"new_country_login:TH:imap", "impossible_travel:TH:imap"}) {
		t.Fatalf("alerts %v", k)
	}
	if got := ann.as[0].Previous; !slices.Equal(got, []string{"DE"}) {
		t.Fatalf("previous %v", got)
	}

	// Block: bob knows DE only; TH is refused, DE is not, a pass lets TH in.
	al.BlockNewCountry = true
	login("127.0.0.6", "bob@example.test")
	if at := login("127.0.0.7", "bob@example.test"); at.Refused {
		t.Fatal("bob refused from a known country")
	}
	if at := login("127.0.0.201", "bob@example.test"); !at.Refused || at.Pass == "secret" {
		t.Fatal("bob allowed from a new country with block_new_country")
	}
	if at := login("127.0.0.202", "carol@example.test"); at.Refused {
		t.Fatal("an account without history refused")
	}
	tab := passes.NewTable(clk.now)
	p := passes.Pass{ID: "p1", Account: "bob@example.test", From: "127.0.0.128/25", Created: start, Until: start.Add(14 * 24 * time.Hour)}
	set, err := passes.Check(&p, start, w.pol.CompileLoginList)
	if err != nil {
		t.Fatal(err)
	}
	tab.Put(p, set)
	w.eng.SetPasses(tab)
	if at := login("127.0.0.201", "bob@example.test"); at.Refused || at.Pass != "secret" {
		t.Fatal("bob refused from a new country his travel pass covers")
	}
	if c := hist.Countries("bob@example.test"); len(c) != 2 {
		t.Fatalf("bob's countries after the pass login: %v", c)
	}
}
