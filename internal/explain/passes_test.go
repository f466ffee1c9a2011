package explain_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/passes"
)

// passLive is a live table with travel passes at a settable time.
type passLive struct {
	live
	tab *passes.Table
}

func (l *passLive) LoginPass(ctx context.Context, account string, addr netip.Addr) (passes.Pass, bool) {
	return l.tab.Allow(ctx, account, addr)
}

var _ explain.PassLive = (*passLive)(nil)

// A travel pass that allows a login the restriction refuses is named in
// the answer, which allows; once the pass ends the answer denies again.
func TestTravelPassAllows(t *testing.T) {
	snap, _ := load(t, "")
	at := now
	tab := passes.NewTable(func() time.Time { return at })
	p := passes.Pass{ID: "p1", Account: "ceo@example.com", From: "country:MY", Created: now, Until: now.Add(14 * 24 * time.Hour), By: "root", Comment: "trip"}
	set, err := passes.Check(&p, now, snap.Policy.CompileLoginList)
	if err != nil {
		t.Fatal(err)
	}
	tab.Put(p, set)
	l := &passLive{tab: tab}

	a := ex(t, snap, l, q("175.136.1.1", "imap", "CEO@example.com"))
	login, pass := stepsOf(a, explain.KindLogin), stepsOf(a, explain.KindPass)
	if a.Verdict != explain.Allow || len(a.Because) != 0 {
		t.Fatalf("the CEO from Malaysia with a pass: %+v", a)
	}
	if len(login) != 1 || login[0].Effect != "refuses" || login[0].Denies {
		t.Errorf("login steps %+v", login)
	}
	if len(pass) != 1 || pass[0].Pass == nil || pass[0].Pass.ID != "p1" || pass[0].Pass.Comment != "trip" || pass[0].Denies || pass[0].Text != "country:MY" {
		t.Errorf("pass steps %+v", pass)
	}

	// From outside the pass's list, and after its end: refused.
	a = ex(t, snap, l, q("8.8.8.8", "imap", "ceo@example.com"))
	if a.Verdict != explain.Deny || len(stepsOf(a, explain.KindPass)) != 0 {
		t.Errorf("from the US: %+v", a)
	}
	at = p.Until
	a = ex(t, snap, l, q("175.136.1.1", "imap", "ceo@example.com"))
	if a.Verdict != explain.Deny || len(stepsOf(a, explain.KindPass)) != 0 {
		t.Errorf("after the pass ended: %+v", a)
	}
}
