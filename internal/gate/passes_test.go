package gate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/service"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// A travel pass lets a restricted account log in from its extra list
// while it lasts (the client's password goes to the backend), and the
// login is refused again (a decoy replaces the password) from its end on,
// through every gateway's service. Other accounts and other addresses
// stay refused.
func TestTravelPass(t *testing.T) {
	w := newWorld(t, 100)
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clk := &testClock{t: start}
	tab := passes.NewTable(clk.now)
	p := passes.Pass{ID: "p1", Account: "alice@example.test", From: "127.0.9.0/24", Created: start, Until: start.Add(14 * 24 * time.Hour)}
	set, err := passes.Check(&p, start, w.pol.CompileLoginList)
	if err != nil {
		t.Fatal(err)
	}
	tab.Put(p, set)
	w.eng.SetPasses(tab)

	begin := func(svc service.Service, addr, user string) *gate.Attempt {
		t.Helper()
		gs, a := w.session(t, svc, addr)
		at, d := gate.NewLogins(w.eng).Begin(context.Background(), gs, w.pol, a, gate.Credentials{User: user, Pass: "secret"}, discard)
		if at == nil {
			t.Fatalf("%s %s from %s: no attempt: %+v", svc, user, addr, d)
		}
		t.Cleanup(at.Abandon)
		return at
	}
	for _, svc := range services {
		clk.set(start)
		if at := begin(svc, "127.0.9.7", "alice@example.test"); at.Refused || at.Pass != "secret" {
			t.Errorf("%s: alice refused from the pass's network during the pass", svc)
		}
		if at := begin(svc, "127.0.9.7", "ALICE@Example.Test"); at.Refused {
			t.Errorf("%s: the pass does not match the account case-folded as the backend resolves it", svc)
		}
		if at := begin(svc, "127.0.10.7", "alice@example.test"); !at.Refused || at.Pass == "secret" {
			t.Errorf("%s: alice allowed from outside the pass's list", svc)
		}
		if at := begin(svc, "127.0.9.7", "bob@example.test"); !at.Refused {
			t.Errorf("%s: bob allowed by alice's pass", svc)
		}
		clk.set(p.Until.Add(-time.Second))
		if at := begin(svc, "127.0.9.7", "alice@example.test"); at.Refused {
			t.Errorf("%s: alice refused a second before the pass ends", svc)
		}
		clk.set(p.Until)
		if at := begin(svc, "127.0.9.7", "alice@example.test"); !at.Refused || at.Pass == "secret" {
			t.Errorf("%s: alice allowed after the pass ended", svc)
		}
	}
	w.eng.SetPasses(nil)
	clk.set(start)
	if at := begin(service.IMAP, "127.0.9.7", "alice@example.test"); !at.Refused {
		t.Error("alice allowed with no passes")
	}
}
