package passes_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

func testPolicy(t testing.TB, restrictions string) *policy.Policy {
	t.Helper()
	yaml := `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
patterns:
  office: [ "192.0.2.0/24" ]
login_restrictions: ` + restrictions + `
`
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Policy
}

// Passes are added with their account resolved as the backend resolves
// it, stored, audited with the actor, found again after a restart, and
// removed; bad requests get clear errors.
func TestManager(t *testing.T) {
	ctx := context.Background()
	pol := testPolicy(t, `[ "alice@example.com=127.0.0.0/24", "@example.org=[office]" ]`)
	path := filepath.Join(t.TempDir(), "blocks.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	m := passes.NewManager(passes.NewTable(clk.now), db, func() *policy.Policy { return pol })

	p, err := m.Add(ctx, passes.AddRequest{Account: " Alice@Example.COM ", From: "203.0.113.0/24;[office]", For: "14d", Comment: "Thailand"}, "root")
	if err != nil {
		t.Fatal(err)
	}
	if p.Account != "alice@example.com" || !p.Until.Equal(clk.now().Add(14*24*time.Hour)) || p.By != "root" {
		t.Errorf("added %+v", p)
	}
	if _, ok := m.Table().Allow(ctx, "alice@example.com", netip.MustParseAddr("203.0.113.5")); !ok {
		t.Error("added pass does not allow")
	}
	if _, err := m.Add(ctx, passes.AddRequest{Account: "@Example.org", From: "198.51.100.1", Until: clk.now().Add(time.Hour)}, "root"); err != nil {
		t.Errorf("domain pass: %v", err)
	}

	bad := []struct {
		rq   passes.AddRequest
		want string
	}{
		{passes.AddRequest{Account: "bob@example.com", From: "1.2.3.4", For: "1d"}, "no login IP restriction applies to bob@example.com"},
		{passes.AddRequest{Account: "alice", From: "1.2.3.4", For: "1d"}, "not an address"},
		{passes.AddRequest{Account: "alice@example.com", From: "1.2.3.4"}, "how long"},
		{passes.AddRequest{Account: "alice@example.com", From: "1.2.3.4", For: "1d", Until: clk.now().Add(time.Hour)}, "not both"},
		{passes.AddRequest{Account: "alice@example.com", From: "1.2.3.4", For: "400d"}, "365d"},
		{passes.AddRequest{Account: "alice@example.com", From: "country:XX", For: "1d"}, "country"},
		{passes.AddRequest{Account: "alice@example.com", From: "[nosuch]", For: "1d"}, "nosuch"},
		{passes.AddRequest{Account: "alice@example.com", From: "*@example.com", For: "1d"}, "--from"},
		{passes.AddRequest{Account: "alice@example.com", From: "1.2.3.4", Until: clk.now().Add(-time.Hour)}, "not in the future"},
	}
	for _, b := range bad {
		_, err := m.Add(ctx, b.rq, "root")
		if !errors.Is(err, passes.ErrInvalid) || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Add(%+v) error = %v; want ErrInvalid saying %q", b.rq, err, b.want)
		}
	}

	// A restart: a new manager on the reopened store finds both passes.
	db.Close()
	db, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m = passes.NewManager(passes.NewTable(clk.now), db, func() *policy.Policy { return pol })
	if warns, err := m.Load(ctx); err != nil || len(warns) != 0 {
		t.Fatalf("Load = %v, %v", warns, err)
	}
	if l := m.List(); len(l) != 2 {
		t.Fatalf("after restart: %v", l)
	}
	if _, ok := m.Table().Allow(ctx, "alice@example.com", netip.MustParseAddr("192.0.2.9")); !ok {
		t.Error("after restart, alice's pass does not allow from [office]")
	}
	if _, err := m.Remove(ctx, p.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Remove(ctx, p.ID, "admin"); !errors.Is(err, passes.ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
	clk.add(2 * time.Hour) // the domain pass ends
	if n, err := m.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v", n, err)
	}
	if rows, _ := db.LoadPasses(ctx); len(rows) != 0 {
		t.Errorf("store after remove and sweep: %v", rows)
	}
	audit, err := db.Audit(ctx, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range audit {
		got = append(got, e.Actor+" "+e.Action+" "+e.Target)
	}
	want := []string{"admin pass-remove alice@example.com", "root pass-add @example.org", "root pass-add alice@example.com"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("audit = %q, want %q", got, want)
	}
}
