package admin_test

import (
	"context"
	"net/http"
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

// passFixture is a server with a real pass manager (a policy restricting
// alice@example.com, a store) on a unix socket.
func passFixture(t *testing.T) (*fixture, *store.DB) {
	t.Helper()
	yaml := `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
login_restrictions: [ "alice@example.com=127.0.0.0/24" ]
`
	cfg := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "blocks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := startUnix(t, options{})
	f.srv.SetPasses(passes.NewManager(passes.NewTable(func() time.Time { return t0 }), db, func() *policy.Policy { return snap.Policy }))
	return f, db
}

func TestPassesAPI(t *testing.T) {
	f, db := passFixture(t)
	ctx := context.Background()
	p, err := f.c.AddPass(ctx, passes.AddRequest{Account: "alice@example.com", From: "203.0.113.0/24", For: "14d", Comment: "Thailand"})
	if err != nil {
		t.Fatal(err)
	}
	if p.ID == "" || !p.Until.Equal(t0.Add(14*24*time.Hour)) || p.By != osUser(t) {
		t.Errorf("added %+v", p)
	}
	l, err := f.c.ListPasses(ctx)
	if err != nil || len(l) != 1 || l[0].ID != p.ID || l[0].Comment != "Thailand" {
		t.Fatalf("list = %+v, %v", l, err)
	}

	bad := []struct{ body, want string }{
		{`{"account":"bob@example.com","from":"1.2.3.4","for":"1d"}`, "no login IP restriction applies"},
		{`{"account":"alice@example.com","from":"1.2.3.4","for":"366d"}`, "365d"},
		{`{"account":"alice@example.com","from":"1.2.3.4","for":""}`, "how long"},
		{`{"account":"alice","from":"1.2.3.4","for":"1d"}`, "not an address"},
		{`{"account":"alice@example.com","from":"nonsense/99","for":"1d"}`, "--from"},
		{`{"account":"alice@example.com","from":"1.2.3.4","for":"1d","extra":1}`, "unknown field"},
	}
	for _, b := range bad {
		code, body := f.do(t, http.MethodPost, "/v1/passes", b.body, "application/json")
		wantStatus(t, b.body, code, body, http.StatusBadRequest, b.want)
	}
	code, body := f.do(t, http.MethodDelete, "/v1/passes?id=nope", "", "")
	wantStatus(t, "remove unknown", code, body, http.StatusNotFound, "no such pass")
	code, body = f.do(t, http.MethodDelete, "/v1/passes", "", "")
	wantStatus(t, "remove without id", code, body, http.StatusBadRequest, "id=")

	if _, err := f.c.RemovePass(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if l, _ := f.c.ListPasses(ctx); len(l) != 0 {
		t.Errorf("after remove: %+v", l)
	}
	if _, err := f.c.RemovePass(ctx, p.ID); statusOf(err) != http.StatusNotFound {
		t.Errorf("second remove: %v", err)
	}
	entries, err := db.Audit(ctx, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Actor+" "+e.Action+" "+e.Target)
	}
	if want := osUser(t) + " pass-remove alice@example.com|" + osUser(t) + " pass-add alice@example.com"; strings.Join(got, "|") != want {
		t.Errorf("audit %q, want %q", got, want)
	}
}

// Without a pass manager the endpoints say so.
func TestPassesAPIUnavailable(t *testing.T) {
	f := startUnix(t, options{})
	code, body := f.do(t, http.MethodGet, "/v1/passes", "", "")
	wantStatus(t, "list", code, body, http.StatusNotImplemented, "travel passes are not available")
	code, body = f.do(t, http.MethodGet, "/v1/passes?x=1", "", "")
	wantStatus(t, "unknown param", code, body, http.StatusBadRequest, "unknown parameter")
}
