package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// passServer is an admin API with a real pass manager: a configuration
// with a country database (TH and MY) that restricts alice@example.com to
// Malaysia, and a store.
func passServer(t *testing.T) (*adminServer, *passes.Manager) {
	t.Helper()
	s := startAdmin(t)
	writeMMDB(t, filepath.Join(s.dir, "country.mmdb"), map[string]string{"171.96.0.0/13": "TH", "175.136.0.0/15": "MY"})
	writeFile(t, filepath.Join(s.dir, "postern.yaml"), `geoip:
  databases:
    - path: country.mmdb
services:
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143" }
login_restrictions:
  - "alice@example.com=country:MY"
`)
	snap, err := snapshot.Load(context.Background(), filepath.Join(s.dir, "postern.yaml"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(s.dir, "blocks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := passes.NewManager(passes.NewTable(func() time.Time { return blocksNow }), db, func() *policy.Policy { return snap.Policy })
	s.srv.SetPasses(m)
	return s, m
}

func (s *adminServer) pass(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return postern(t, append(append([]string{"pass"}, args...), s.flags()...)...)
}

func TestPassCommands(t *testing.T) {
	s, m := passServer(t)
	code, out, errs := s.pass(t, "add", "alice@example.com", "--from", "country:TH", "--for", "14d", "--comment", "holiday")
	if code != 0 || !strings.Contains(out, "alice@example.com may log in from country:TH until 2026-05-15 12:00 UTC") {
		t.Fatalf("pass add: %d\n%s\n%s", code, out, errs)
	}
	if _, ok := m.Table().Allow(context.Background(), "alice@example.com", netip.MustParseAddr("171.97.1.1")); !ok {
		t.Error("the pass does not let alice in from Thailand")
	}
	if _, ok := m.Table().Allow(context.Background(), "alice@example.com", netip.MustParseAddr("8.8.8.8")); ok {
		t.Error("the pass lets alice in from outside Thailand")
	}
	code, out, _ = s.pass(t, "list")
	if code != 0 || !strings.Contains(out, "alice@example.com") || !strings.Contains(out, "country:TH") || !strings.Contains(out, "holiday") || !strings.Contains(out, "1 pass;") {
		t.Errorf("pass list: %d\n%s", code, out)
	}
	code, out, _ = s.pass(t, "list", "--json")
	var l struct{ Passes []passes.Pass }
	if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil || len(l.Passes) != 1 {
		t.Fatalf("pass list --json: %d %v\n%s", code, err, out)
	}
	id := l.Passes[0].ID

	// Bad input: a clear error, exit 2 (1 for an unknown pass).
	bad := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"add", "alice", "--from", "country:TH", "--for", "1d"}, 2, "not an address"},
		{[]string{"add", "alice@example.com", "--from", "country:TH", "--for", "400d"}, 2, "365d"},
		{[]string{"add", "alice@example.com", "--from", "country:TH", "--for", ""}, 2, "how long"},
		{[]string{"add", "alice@example.com", "--from", "country:TH"}, 2, "how long"},
		{[]string{"add", "alice@example.com", "--from", "country:TH", "--for", "1d", "--until", "2026-06-01"}, 2, "not both"},
		{[]string{"add", "alice@example.com", "--for", "1d"}, 2, "--from"},
		{[]string{"add", "alice@example.com", "--from", "country:QQ", "--for", "1d"}, 2, "QQ"},
		{[]string{"add", "alice@example.com", "--from", "country:SG", "--for", "1d"}, 2, "no networks for this country"},
		{[]string{"add", "alice@example.com", "--from", "country:TH", "--until", "next week"}, 2, "--until"},
		{[]string{"add", "alice@example.com", "--from", "country:TH", "--until", "2026-04-01"}, 2, "not in the future"},
		{[]string{"add", "bob@example.com", "--from", "country:TH", "--for", "1d"}, 2, "no login IP restriction applies to bob@example.com"},
		{[]string{"remove", "nope"}, 1, "no such pass"},
	}
	for _, b := range bad {
		code, out, errs := s.pass(t, b.args...)
		if code != b.code || !strings.Contains(errs, b.want) {
			t.Errorf("pass %q: exit %d, want %d; stderr %q should say %q (stdout %q)", b.args, code, b.code, errs, b.want, out)
		}
	}
	code, out, errs = s.pass(t, "add", "@example.com", "--from", "171.96.0.0/16", "--from", "[nosuch]", "--until", "2026-06-01")
	if code != 2 || !strings.Contains(errs, "nosuch") {
		t.Errorf("pass add with an unknown pattern: %d\n%s\n%s", code, out, errs)
	}

	code, out, _ = s.pass(t, "remove", id)
	if code != 0 || !strings.Contains(out, "removed pass "+id+" for alice@example.com") {
		t.Errorf("pass remove: %d\n%s", code, out)
	}
	code, out, _ = s.pass(t, "list")
	if code != 0 || !strings.Contains(out, "no travel passes") {
		t.Errorf("pass list after remove: %d\n%s", code, out)
	}
}
