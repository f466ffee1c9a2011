package console

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// The Passes page lists, adds and removes travel passes, with the
// manager's checks as the flash, and needs the CSRF token.
func TestPassesPage(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfg, []byte("services:\n  imap: { listen: \":143\", backend: \"127.0.0.1:1\" }\nlogin_restrictions: [ \"alice@example.com=127.0.0.0/24\" ]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(dir, "passes.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := passes.NewManager(passes.NewTable(w.clock.now), db, func() *policy.Policy { return snap.Policy })
	w.srv.opts.Passes = m

	c := w.client(t, "")
	c.mustSignIn()
	code, body := c.get("/passes")
	if code != http.StatusOK || !strings.Contains(body, "No travel passes.") || !strings.Contains(body, `aria-current="page">Travel passes`) {
		t.Fatalf("empty Passes page: %d\n%s", code, body)
	}
	tok := c.csrf("/passes")
	if code, _ := c.post("/passes/add", url.Values{"account": {"alice@example.com"}, "from": {"198.51.100.0/24"}, "for": {"14d"}}); code != http.StatusForbidden {
		t.Errorf("add without the CSRF token: %d, want 403", code)
	}
	code, body = c.post("/passes/add", url.Values{"csrf": {tok}, "account": {"Alice@Example.com"}, "from": {"198.51.100.0/24"}, "for": {"14d"}, "comment": {"<b>trip</b>"}})
	if code != http.StatusOK || !strings.Contains(body, "alice@example.com may log in from 198.51.100.0/24") ||
		!strings.Contains(body, "&lt;b&gt;trip&lt;/b&gt;") || strings.Contains(body, "<b>trip</b>") {
		t.Fatalf("add: %d\n%s", code, body)
	}
	code, body = c.post("/passes/add", url.Values{"csrf": {tok}, "account": {"bob@example.com"}, "from": {"198.51.100.0/24"}, "for": {"400d"}})
	if code != http.StatusOK || !strings.Contains(html.UnescapeString(body), "Add pass: invalid pass: duration \"400d\" is longer than the 365d") {
		t.Fatalf("bad add: %d\n%s", code, body)
	}
	l := m.List()
	if len(l) != 1 || l[0].By != "console:"+testUser {
		t.Fatalf("passes after the adds: %+v", l)
	}
	id := regexp.MustCompile(`name="id" value="([0-9a-f]+)"`).FindStringSubmatch(body)
	if id == nil || id[1] != l[0].ID {
		t.Fatalf("no remove button for %s:\n%s", l[0].ID, body)
	}
	code, body = c.post("/passes/remove", url.Values{"csrf": {tok}, "id": {id[1]}})
	if code != http.StatusOK || !strings.Contains(body, "Removed pass "+id[1]) || !strings.Contains(body, "No travel passes.") {
		t.Fatalf("remove: %d\n%s", code, body)
	}
	code, body = c.post("/passes/remove", url.Values{"csrf": {tok}, "id": {id[1]}})
	if code != http.StatusOK || !strings.Contains(body, "Remove pass: no such pass") {
		t.Fatalf("second remove: %d\n%s", code, body)
	}
}
