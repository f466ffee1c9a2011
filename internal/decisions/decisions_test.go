package decisions

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

type table struct {
	mu     sync.Mutex
	blocks []store.Block
}

func (t *table) Blocks() []store.Block {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]store.Block(nil), t.blocks...)
}

func (t *table) set(bs ...store.Block) {
	t.mu.Lock()
	t.blocks = bs
	t.mu.Unlock()
}

const keyA, keyB = "0123456789abcdef-bouncer-a", "0123456789abcdef-bouncer-b"

// bouncer is a client of the documented bouncer API, as a CrowdSec
// firewall bouncer runs it: startup=true first, then polls.
type bouncer struct {
	t      *testing.T
	base   string
	key    string
	polled bool
	set    map[string]Decision // the firewall set it keeps
}

func (b *bouncer) get(path string) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("X-Api-Key", b.key)
	req.Header.Set("User-Agent", "crowdsec-firewall-bouncer/v0.0.28")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, body
}

func (b *bouncer) poll() Stream {
	b.t.Helper()
	path := "/v1/decisions/stream?scopes=ip,range"
	if !b.polled {
		path += "&startup=true"
	}
	resp, body := b.get(path)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	var s Stream
	if err := json.Unmarshal(body, &s); err != nil {
		b.t.Fatalf("stream body %s: %v", body, err)
	}
	if s.New == nil || s.Deleted == nil {
		b.t.Fatalf("stream body %s: new and deleted must be lists", body)
	}
	b.polled = true
	for _, d := range s.Deleted {
		delete(b.set, d.Value)
	}
	for _, d := range s.New {
		if _, err := time.ParseDuration(d.Duration); err != nil {
			b.t.Errorf("decision %+v: duration: %v", d, err)
		}
		b.set[d.Value] = d
	}
	return s
}

func values(ds []Decision) string {
	var v []string
	for _, d := range ds {
		v = append(v, d.Value)
	}
	return strings.Join(v, " ")
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) time.Time { return c.Now().Add(d) }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func setup(t *testing.T) (*table, *clock, string) {
	t.Helper()
	tbl := &table{}
	now := &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	keys, err := ParseKeys([]byte("# bouncers\nfw-a " + keyA + "\n\n" + keyB + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Source: tbl, Keys: keys, Now: now.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return tbl, now, srv.URL
}

func TestStream(t *testing.T) {
	tbl, now, base := setup(t)
	b1 := store.Block{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: reason.Login, Expires: now.Add(3*time.Hour + 59*time.Minute + 50*time.Second + 300*time.Millisecond)}
	b2 := store.Block{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Reason: reason.Manual}
	old := store.Block{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Reason: reason.Spam, Expires: now.Add(-time.Minute)}
	tbl.set(b1, b2, old)

	a := &bouncer{t: t, base: base, key: keyA, set: map[string]Decision{}}
	s := a.poll()
	if values(s.New) != "192.0.2.7 2001:db8:1::/48" || len(s.Deleted) != 0 {
		t.Fatalf("startup: %+v", s)
	}
	d := s.New[0]
	want := Decision{ID: d.ID, Origin: "postern", Type: "ban", Scope: "Ip", Value: "192.0.2.7", Duration: "3h59m50s",
		Until: "2026-12-03T15:59:50Z", Scenario: "failed logins"}
	if d != want {
		t.Errorf("decision\n%+v\nwant\n%+v", d, want)
	}
	if r := s.New[1]; r.Scope != "Range" || r.Duration != "8760h0m0s" || r.Scenario != "manual" {
		t.Errorf("range decision %+v", r)
	}

	// nothing changed: empty lists.
	if s := a.poll(); len(s.New)+len(s.Deleted) != 0 {
		t.Fatalf("no change: %+v", s)
	}

	// a block and an unblock.
	b3 := store.Block{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Reason: reason.Connections, Expires: now.Add(time.Hour)}
	tbl.set(b2, b3)
	s = a.poll()
	if values(s.New) != "203.0.113.0/24" || values(s.Deleted) != "192.0.2.7" {
		t.Fatalf("after block+unblock: %+v", s)
	}
	if len(a.set) != 2 || a.set["203.0.113.0/24"].Scope != "Range" {
		t.Errorf("bouncer set %v", a.set)
	}

	// the second bouncer has its own state: its startup sees the table now.
	b := &bouncer{t: t, base: base, key: keyB, set: map[string]Decision{}}
	if s := b.poll(); values(s.New) != "2001:db8:1::/48 203.0.113.0/24" {
		t.Fatalf("second bouncer startup: %+v", s)
	}

	// expiry deletes; a refreshed block (new expiry) is announced again.
	now.advance(2 * time.Hour)
	b2r := b2
	tbl.set(b2r, b3)
	s = a.poll()
	if values(s.New) != "" || values(s.Deleted) != "203.0.113.0/24" {
		t.Fatalf("after expiry: %+v", s)
	}
	b3.Expires = now.Add(time.Hour)
	tbl.set(b2, b3)
	if s := a.poll(); values(s.New) != "203.0.113.0/24" || s.New[0].Duration != "1h0m0s" {
		t.Fatalf("after re-block: %+v", s)
	}

	// startup=true again returns everything.
	a.polled = false
	if s := a.poll(); values(s.New) != "2001:db8:1::/48 203.0.113.0/24" {
		t.Fatalf("second startup: %+v", s)
	}

	// scopes=ip leaves ranges out.
	resp, body := a.get("/v1/decisions/stream?startup=true&scopes=ip")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"new":[]`) {
		t.Errorf("scopes=ip: %d %s", resp.StatusCode, body)
	}
}

func TestList(t *testing.T) {
	tbl, now, base := setup(t)
	tbl.set(store.Block{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Reason: reason.Manual, Expires: now.Add(time.Hour)})
	a := &bouncer{t: t, base: base, key: keyA}
	for q, want := range map[string]string{
		"ip=203.0.113.9":         `"value":"203.0.113.0/24"`,
		"ip=203.0.114.9":         "null",
		"range=203.0.113.128/25": `"scope":"Range"`,
		"ip=::ffff:203.0.113.9":  `"value":"203.0.113.0/24"`,
	} {
		resp, body := a.get("/v1/decisions?" + q)
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %s, want %s", q, resp.StatusCode, body, want)
		}
	}
	if resp, _ := a.get("/v1/decisions?ip=nonsense"); resp.StatusCode != 400 {
		t.Errorf("bad ip: %d", resp.StatusCode)
	}
}

func TestAuth(t *testing.T) {
	_, _, base := setup(t)
	for _, key := range []string{"", "wrong-key-0123456789", keyA + "x", keyA[:len(keyA)-1]} {
		a := &bouncer{t: t, base: base, key: key}
		for _, p := range []string{"/v1/decisions/stream?startup=true", "/v1/decisions?ip=192.0.2.1", "/nothing"} {
			resp, body := a.get(p)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "access forbidden") {
				t.Errorf("key %q %s: %d %s", key, p, resp.StatusCode, body)
			}
		}
	}
	a := &bouncer{t: t, base: base, key: keyB}
	if resp, _ := a.get("/nothing"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("good key, unknown path: %d", resp.StatusCode)
	}
}

func TestGrant(t *testing.T) {
	keys, _ := ParseKeys([]byte(keyA))
	h, err := New(Options{Source: &table{}, Keys: keys, Grant: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.9") }})
	if err != nil {
		t.Fatal(err)
	}
	for addr, code := range map[string]int{"127.0.0.1:4000": 403, "127.0.0.9:4000": 200, "[::ffff:127.0.0.9]:4000": 200} {
		r := httptest.NewRequest(http.MethodGet, "/v1/decisions/stream?startup=true", nil)
		r.RemoteAddr = addr
		r.Header.Set("X-Api-Key", keyA)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != code {
			t.Errorf("%s: %d, want %d", addr, w.Code, code)
		}
	}
}

func TestParseKeys(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "no key",
		"short":                     "shorter than 16",
		"a b c":                     "want a key",
		"k 0123456789abcdef\x01":    "printable",
		keyA + "\n" + keyA:          "repeats",
		"x " + keyA + "\ny " + keyA: "repeats",
		"# only a comment\n\n   \n": "no key",
	} {
		if _, err := ParseKeys([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	keys, err := ParseKeys([]byte("fw " + keyA + "\n" + keyB))
	if err != nil || len(keys) != 2 || keys[0].Name != "fw" || keys[1].Name != "key2" {
		t.Errorf("%+v %v", keys, err)
	}
}
