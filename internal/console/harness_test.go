package console

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// testParams keep hashing fast in tests.
var testParams = HashParams{Time: 1, Memory: 64, Threads: 1}

const (
	testUser     = "alice"
	testPassword = "correct horse battery staple"
	testToken    = "0123456789abcdef0123456789abcdef"
)

// clock is a settable clock for the engine (and so the console).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// world is a console on loopback in front of a real engine with a store.
type world struct {
	eng     *guard.Engine
	srv     *Server
	url     string
	clock   *clock
	snap    *snapshot.Snapshot
	reloads atomic.Int32
}

// newWorld starts a console granting loopback but 127.0.0.2, with web
// failed_logins at 3.
func newWorld(t testing.TB) *world {
	t.Helper()
	dir := t.TempDir()
	yaml := `services:
  web: { listen: ":80", backend: "http://127.0.0.1:1" }
  imap: { listen: ":143", backend: "127.0.0.1:1" }
intrusion_prevention:
  web: { failed_logins: 3 }
  imap_pop3: { failed_logins: 3 }
`
	cfgPath := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	snap, err := snapshot.Load(ctx, cfgPath, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(dir, "postern.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Now()}
	eng, err := guard.New(ctx, snap.Guard, guard.Options{Store: db, Clock: clk.now, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	users := filepath.Join(dir, "console-users")
	if err := SetPassword(users, testUser, testPassword, testParams); err != nil {
		t.Fatal(err)
	}
	w := &world{eng: eng, clock: clk, snap: snap}
	srv, err := New(Options{
		Engine:    eng,
		Explain:   admin.Explainer(explain.Func(snapshot.NewHolder(snap).Load, eng)),
		Token:     testToken,
		UsersFile: users,
		Grant: func(a netip.Addr) bool {
			return a.IsLoopback() && a != netip.MustParseAddr("127.0.0.2")
		},
		IdleTimeout: 10 * time.Minute,
		Stats:       fixedStats{{Service: "imap", Listen: "0.0.0.0:143", Up: true, Detail: "backend 127.0.0.1:10143"}, {Service: "web", Listen: "0.0.0.0:443", Up: false, Detail: "not bound"}},
		Country: func(a netip.Addr) string { // a stand-in for the GeoIP databases
			if netip.MustParsePrefix("192.0.2.0/24").Contains(a) {
				return "MY"
			}
			return ""
		},
		Reload: func() error { w.reloads.Add(1); return nil },
		Config: func() ConfigInfo {
			return ConfigInfo{Path: cfgPath, LoadedAt: clk.now(), Text: yaml}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	w.url = "http://" + ln.Addr().String()
	return w
}

// client is a browser stand-in from source address src (127.0.0.1 when
// empty): cookies, no redirects followed past the first answer's page.
type client struct {
	t    testing.TB
	w    *world
	http *http.Client
}

func (w *world) client(t testing.TB, src string) *client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, w: w, http: &http.Client{Jar: jar, Transport: tr, Timeout: 10 * time.Second}}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// get fetches path and returns the status and the body.
func (c *client) get(path string) (int, string) {
	c.t.Helper()
	resp, err := c.http.Get(c.w.url + path)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// post sends a form to path and returns the final status and body.
func (c *client) post(path string, form url.Values) (int, string) {
	c.t.Helper()
	resp, err := c.http.PostForm(c.w.url+path, form)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// csrf reads the CSRF token from the page at path.
func (c *client) csrf(path string) string {
	c.t.Helper()
	_, body := c.get(path)
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no CSRF token on %s:\n%s", path, body)
	}
	return m[1]
}

// signIn signs in and fails the test unless the dashboard answers.
func (c *client) signIn(user, password string) (int, string) {
	c.t.Helper()
	tok := c.csrf("/signin")
	return c.post("/signin", url.Values{"csrf": {tok}, "user": {user}, "password": {password}})
}

func (c *client) mustSignIn() {
	c.t.Helper()
	code, body := c.signIn(testUser, testPassword)
	if code != http.StatusOK || !strings.Contains(body, "Blocks made, by reason") {
		c.t.Fatalf("sign-in: %d\n%s", code, body)
	}
}

// refuses reports whether the engine holds addr blocked when it comes
// to the IMAP gateway.
func (w *world) refuses(addr string) bool {
	return w.eng.Admit(netip.MustParseAddr(addr), service.IMAP).Blocked
}

// fixedStats gives the dashboard a fixed set of listeners.
type fixedStats []Listener

func (f fixedStats) Listeners() []Listener { return f }
