package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/admin/admintest"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

func bothListeners(t *testing.T, fn func(t *testing.T, start func(*testing.T, options) *fixture)) {
	t.Run("unix", func(t *testing.T) { t.Parallel(); fn(t, startUnix) })
	t.Run("tcp", func(t *testing.T) { t.Parallel(); fn(t, startTCP) })
}

func TestAuth(t *testing.T) {
	bothListeners(t, func(t *testing.T, start func(*testing.T, options) *fixture) {
		f := start(t, options{})
		for _, tc := range []struct {
			name, header string
		}{
			{"missing", ""},
			{"wrong", "Bearer wrong-token-wrong-token-wrong"},
			{"prefix of the right one", "Bearer " + testToken[:10]},
			{"right token, basic scheme", "Basic " + testToken},
			{"bare token", testToken},
		} {
			req, _ := http.NewRequest(http.MethodGet, "/v1/health", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			code, hdr, body := f.rawReq(t, req)
			if code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" || strings.TrimSpace(body) != `{"error":"unauthorized"}` {
				t.Errorf("%s: %d %v %s, want 401 with WWW-Authenticate and no detail", tc.name, code, hdr, body)
			}
		}
		code, _, body := f.raw(t, http.MethodGet, "/v1/health", testToken, nil, "")
		wantStatus(t, "right token", code, body, http.StatusOK, `"status":"ok"`, `"now":"2026-05-01T12:00:00Z"`)
		// Lower-case scheme is fine (RFC 7235: case-insensitive).
		req, _ := http.NewRequest(http.MethodGet, "/v1/health", nil)
		req.Header.Set("Authorization", "bearer "+testToken)
		if code, _, body := f.rawReq(t, req); code != http.StatusOK {
			t.Errorf("lower-case bearer: %d %s", code, body)
		}
		// Unauthenticated requests learn nothing of routes.
		code, _, _ = f.raw(t, http.MethodGet, "/nowhere", "", nil, "")
		if code != http.StatusUnauthorized {
			t.Errorf("unknown route without token: %d, want 401", code)
		}
		if n := f.eng.Calls(); n != 2 {
			t.Errorf("engine called %d times, want 2 (the authorized health checks)", n)
		}
		f.stop()
		if strings.Contains(f.log.String(), testToken[:10]) {
			t.Errorf("log holds the token:\n%s", f.log.String())
		}
		if !strings.Contains(f.log.String(), "unauthorized request") {
			t.Errorf("log does not mention the refused requests:\n%s", f.log.String())
		}
	})
}

func TestEmptyServerTokenRefusesAll(t *testing.T) {
	h := admin.NewServer(admintest.New(t0), nil, "", nil, nil).Handler()
	for _, auth := range []string{"", "Bearer ", "Bearer"} {
		req, _ := http.NewRequest(http.MethodGet, "/v1/health", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("empty token, Authorization %q: %d, want 401", auth, rec.Code)
		}
	}
}

func TestHealthClient(t *testing.T) {
	f := startUnix(t, options{})
	h, err := f.c.Health(context.Background())
	if err != nil || h.Status != "ok" || !h.Now.Equal(t0) {
		t.Fatalf("Health = %+v, %v", h, err)
	}
}

func TestRoutes(t *testing.T) {
	f := startUnix(t, options{})
	code, body := f.do(t, http.MethodGet, "/v1/nothing", "", "")
	wantStatus(t, "unknown route", code, body, http.StatusNotFound, `"error":"no such endpoint: GET /v1/nothing"`)
	code, body = f.do(t, http.MethodGet, "/v1/blocks/", "", "")
	wantStatus(t, "trailing slash", code, body, http.StatusNotFound, `"error"`)
	code, hdr, body := f.raw(t, http.MethodPut, "/v1/blocks", testToken, nil, "")
	wantStatus(t, "wrong method", code, body, http.StatusMethodNotAllowed, `"error":"method PUT not allowed on /v1/blocks`)
	if got := hdr.Get("Allow"); got != "DELETE, GET, POST" {
		t.Errorf("Allow = %q", got)
	}
	code, body = f.do(t, http.MethodGet, "/v1/blocks/purge-expired", "", "")
	wantStatus(t, "GET purge", code, body, http.StatusMethodNotAllowed)
	code, body = f.do(t, http.MethodGet, "/v1/health?x=1", "", "")
	wantStatus(t, "unknown parameter", code, body, http.StatusBadRequest, `unknown parameter \"x\"`)
}

// TestRouteEdges: the method patterns answer every wrong method (HEAD
// included, which would otherwise reach a GET route) with the API's own 405
// and Allow; unclean paths are not endpoints (no redirect); the token is
// checked before any routing.
func TestRouteEdges(t *testing.T) {
	f := startUnix(t, options{})
	for _, c := range []struct {
		method, path string
		allow        string
	}{
		{http.MethodHead, "/v1/blocks", "DELETE, GET, POST"},
		{http.MethodHead, "/v1/health", "GET"},
		{http.MethodOptions, "/v1/blocks/export", "GET"},
		{http.MethodPut, "/v1/health", "GET"},
		{http.MethodGet, "/v1/blocks/import", "POST"},
		{http.MethodDelete, "/v1/audit", "GET"},
	} {
		code, hdr, body := f.raw(t, c.method, c.path, testToken, nil, "")
		if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", c.method, c.path, code, hdr.Get("Allow"), c.allow)
		}
		if c.method != http.MethodHead && !strings.Contains(body, `"error":"method `+c.method+` not allowed on `+c.path) {
			t.Errorf("%s %s: body %s", c.method, c.path, body)
		}
	}
	for _, p := range []string{"/", "/v1", "/v1/", "/v1//blocks", "/v1/audit/../blocks", "/v1/./health", "/V1/health"} {
		code, hdr, body := f.raw(t, http.MethodGet, p, testToken, nil, "")
		if code != http.StatusNotFound || hdr.Get("Location") != "" || !strings.Contains(body, `"error":"no such endpoint`) {
			t.Errorf("GET %s: %d, Location %q, body %s; want 404", p, code, hdr.Get("Location"), body)
		}
	}
	code, _, _ := f.raw(t, http.MethodPut, "/v1/blocks", "", nil, "")
	if code != http.StatusUnauthorized {
		t.Errorf("PUT without a token: %d, want 401", code)
	}
	code, body := f.do(t, http.MethodGet, "/v1/health", "", "")
	wantStatus(t, "GET health", code, body, http.StatusOK, `"status":"ok"`)
}

func TestListFilters(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.Put(sample()...)
	ctx := context.Background()
	targets := func(bs []admin.Block) []string {
		var out []string
		for _, b := range bs {
			out = append(out, b.Target)
		}
		return out
	}
	yes, no := true, false
	for _, tc := range []struct {
		name string
		f    admin.Filter
		want []string
	}{
		{"all, last seen first", admin.Filter{}, []string{"198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7", "2001:db8::99", "192.0.2.1"}},
		{"reason L", admin.Filter{Reason: reason.Login}, []string{"203.0.113.7", "2001:db8::99"}},
		{"service smtp", admin.Filter{Service: "SMTP"}, []string{"2001:db8:1::/64", "192.0.2.1"}},
		{"search an address", admin.Filter{Search: pfx("203.0.113.7/32")}, []string{"203.0.113.7"}},
		{"search an address inside a prefix", admin.Filter{Search: pfx("198.51.100.77/32")}, []string{"198.51.100.0/24"}},
		{"search a wider prefix", admin.Filter{Search: pfx("2001:db8::/32")}, []string{"2001:db8:1::/64", "2001:db8::99"}},
		{"search nothing there", admin.Filter{Search: pfx("10.0.0.0/8")}, nil},
		{"active", admin.Filter{Active: &yes}, []string{"198.51.100.0/24", "203.0.113.7", "2001:db8::99"}},
		{"expired", admin.Filter{Active: &no}, []string{"2001:db8:1::/64", "192.0.2.1"}},
		{"combined", admin.Filter{Reason: reason.Login, Active: &yes, Search: pfx("2001:db8::/32")}, []string{"2001:db8::99"}},
	} {
		bs, err := f.c.ListBlocks(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := targets(bs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// Reasons by name, in the raw query.
	code, body := f.do(t, http.MethodGet, "/v1/blocks?reason=failed+logins", "", "")
	wantStatus(t, "reason by name", code, body, http.StatusOK, `"target":"203.0.113.7"`, `"target":"2001:db8::99"`)
	if strings.Contains(body, "192.0.2.1") {
		t.Errorf("reason by name: %s", body)
	}
	code, body = f.do(t, http.MethodGet, "/v1/blocks?search=2001:db8:1::/64&active=false", "", "")
	wantStatus(t, "search + active", code, body, http.StatusOK, `"2001:db8:1::/64"`)
	for q, want := range map[string]string{
		"reason=X":            "reason: unknown reason",
		"search=300.1.2.3":    "search: bad target",
		"search=10.1.2.3/8":   "host bits are set",
		"active=maybe":        "active: want true or false",
		"reasons=L":           `unknown parameter \"reasons\"`,
		"search=fe80::1%25lo": "search: bad target",
	} {
		code, body := f.do(t, http.MethodGet, "/v1/blocks?"+q, "", "")
		wantStatus(t, q, code, body, http.StatusBadRequest, want)
	}
	// Empty table: an empty array, not null.
	f.eng.UnblockAll(ctx, "test")
	code, body = f.do(t, http.MethodGet, "/v1/blocks", "", "")
	wantStatus(t, "empty", code, body, http.StatusOK, `{"blocks":[]}`)
}

// TestListTimeFilters selects blocks by the window they were seen in
// (since: last_seen at or after; until: first_seen at or before) and by
// expiry, with absolute and relative times, the relative ones counted on
// the engine's clock (t0), not the client's.
func TestListTimeFilters(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.Put(sample()...)
	ctx := context.Background()
	targets := func(bs []admin.Block) []string {
		var out []string
		for _, b := range bs {
			out = append(out, b.Target)
		}
		return out
	}
	// sample(), at t0 = 12:00: first/last seen, expires
	//   198.51.100.0/24  11:50/11:50  never
	//   2001:db8:1::/64  -2d/11:30    11:00
	//   203.0.113.7      10:00/11:00  15:00
	//   2001:db8::99     09:00/09:00  13:00
	//   192.0.2.1        06:00/07:00  10:00
	for _, tc := range []struct {
		name string
		f    admin.Filter
		want []string
	}{
		{"since 2h ago", admin.Filter{Since: admin.Ago(2 * time.Hour)}, []string{"198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7"}},
		{"since, bound included", admin.Filter{Since: admin.At(t0.Add(-3 * time.Hour))}, []string{"198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7", "2001:db8::99"}},
		{"until 1h ago", admin.Filter{Until: admin.Ago(time.Hour)}, []string{"2001:db8:1::/64", "203.0.113.7", "2001:db8::99", "192.0.2.1"}},
		{"window 08:00-09:30", admin.Filter{Since: admin.Ago(4 * time.Hour), Until: admin.At(t0.Add(-150 * time.Minute))}, []string{"2001:db8:1::/64", "2001:db8::99"}},
		{"expires before +2h", admin.Filter{ExpiresBefore: admin.Ago(-2 * time.Hour)}, []string{"2001:db8:1::/64", "2001:db8::99", "192.0.2.1"}},
		{"expires before now", admin.Filter{ExpiresBefore: admin.Ago(0)}, []string{"2001:db8:1::/64", "192.0.2.1"}},
		{"with reason", admin.Filter{Reason: reason.Login, Since: admin.Ago(4 * time.Hour)}, []string{"203.0.113.7", "2001:db8::99"}},
		{"nothing that late", admin.Filter{Since: admin.Ago(-time.Minute)}, nil},
	} {
		bs, err := f.c.ListBlocks(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := targets(bs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// The raw query: RFC 3339 in any zone, dates, spans, + for the future.
	for q, want := range map[string][]string{
		"since=2026-05-01T17:00:00%2B08:00": {"198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7", "2001:db8::99"},
		"since=2h":                          {"198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7"},
		"until=2026-04-30":                  {"2001:db8:1::/64"},
		"since=1d&until=3h":                 {"2001:db8:1::/64", "2001:db8::99", "192.0.2.1"},
		"expires_before=%2B1h30m":           {"2001:db8:1::/64", "2001:db8::99", "192.0.2.1"},
		"expires_before=2026-05-02":         {"2001:db8:1::/64", "203.0.113.7", "2001:db8::99", "192.0.2.1"},
		"since=0":                           nil,
	} {
		code, body := f.do(t, http.MethodGet, "/v1/blocks?"+q, "", "")
		if code != http.StatusOK {
			t.Errorf("%s: status %d %s", q, code, body)
			continue
		}
		var l struct{ Blocks []admin.Block }
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatal(err)
		}
		if got := targets(l.Blocks); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", q, got, want)
		}
	}
	for q, want := range map[string]string{
		"since=yesterday":                   `since: bad time \"yesterday\"`,
		"since=-2h":                         `since: bad time \"-2h\"`,
		"until=2026-05-01T12:00:00":         `until: bad time \"2026-05-01T12:00:00\": want RFC 3339`,
		"until=2026-13-01":                  "until: bad time",
		"expires_before=soon":               "expires_before: bad time",
		"since=50000d":                      "at most 36500 days",
		"since=1h&until=2h":                 "since (2026-05-01T11:00:00Z) is after until (2026-05-01T10:00:00Z): the window is empty",
		"since=2026-05-02&until=2026-05-01": "is after until",
		"expires-before=1h":                 `unknown parameter \"expires-before\"`,
	} {
		code, body := f.do(t, http.MethodGet, "/v1/blocks?"+q, "", "")
		wantStatus(t, q, code, body, http.StatusBadRequest, want)
	}
}

func TestBlockJSON(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.Put(sample()...)
	_, body := f.do(t, http.MethodGet, "/v1/blocks?search=2001:db8:1::/64", "", "")
	var got struct{ Blocks []map[string]any }
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got.Blocks) != 1 {
		t.Fatalf("%s: %v", body, err)
	}
	want := map[string]any{
		"target": "2001:db8:1::/64", "prefix": "2001:db8:1::/64", "reason": "P", "reason_name": "unknown recipients",
		"service": "smtp", "detail": "bob, \"carol\"\nand =dave", "first_seen": "2026-04-29T12:00:00Z",
		"last_seen": "2026-05-01T11:30:00.123456789Z", "hits": 12.0, "expires": "2026-05-01T11:00:00Z", "expired": true,
		"node": "gw2", "by": "engine", "comment": "", "level": 2.0,
	}
	if !reflect.DeepEqual(got.Blocks[0], want) {
		t.Errorf("block JSON\n got %v\nwant %v", got.Blocks[0], want)
	}
	_, body = f.do(t, http.MethodGet, "/v1/blocks?search=198.51.100.0/24", "", "")
	if !strings.Contains(body, `"target":"198.51.100.0/24"`) || !strings.Contains(body, `"expires":null`) || !strings.Contains(body, `"expired":false`) {
		t.Errorf("never-expiring block: %s", body)
	}
	_, body = f.do(t, http.MethodGet, "/v1/blocks?search=203.0.113.7", "", "")
	if !strings.Contains(body, `"target":"203.0.113.7","prefix":"203.0.113.7/32"`) {
		t.Errorf("single address: %s", body)
	}
}

func TestAddBlock(t *testing.T) {
	f := startUnix(t, options{})
	ctx := context.Background()
	b, err := f.c.AddBlock(ctx, pfx("203.0.113.9/32"), 0, "seen in the logs", false)
	if err != nil {
		t.Fatal(err)
	}
	if b.Target != "203.0.113.9" || b.Reason != "U" || b.ReasonName != "manual" || b.Expires == nil ||
		!b.Expires.Equal(t0.Add(4*time.Hour)) || b.Comment != "seen in the logs" || b.By != "admin:"+osUser(t) || b.Expired {
		t.Errorf("added %+v", b)
	}
	code, body := f.do(t, http.MethodPost, "/v1/blocks", `{"target":"2001:db8:5::/48","duration":"7d","comment":"x"}`, "application/json")
	wantStatus(t, "7 days", code, body, http.StatusCreated, `"expires":"2026-05-08T12:00:00Z"`, `"target":"2001:db8:5::/48"`)
	code, body = f.do(t, http.MethodPost, "/v1/blocks", `{"target":"::ffff:192.0.2.44","duration":"90m"}`, "")
	wantStatus(t, "mapped address, no content type", code, body, http.StatusCreated, `"target":"192.0.2.44"`, `"expires":"2026-05-01T13:30:00Z"`)
	if _, ok := f.eng.Get(pfx("192.0.2.44/32")); !ok {
		t.Error("mapped address not blocked as IPv4")
	}
	audit := f.eng.AuditLog()
	if len(audit) != 3 || audit[0].Actor != osUser(t) || audit[0].Action != "block" {
		t.Errorf("audit %+v", audit)
	}

	before, calls := f.eng.Snapshot(), f.eng.Calls()
	for body, want := range map[string]string{
		``:                          "empty body",
		`{}`:                        "target: missing",
		`{"target":"1.2.3"}`:        "target: bad target",
		`{"target":"1.2.3.4/33"}`:   "target: bad target",
		`{"target":"10.1.2.3/8"}`:   "host bits are set; did you mean 10.0.0.0/8",
		`{"target":"0.0.0.0/0"}`:    "too wide",
		`{"target":"2000::/15"}`:    "too wide",
		`{"target":"fe80::1%eth0"}`: "bad target",
		`{"target":"1.2.3.4","duration":"4 hours"}`:                          "duration: bad duration",
		`{"target":"1.2.3.4","duration":"-4h"}`:                              "duration: bad duration",
		`{"target":"1.2.3.4","duration":"NaNd"}`:                             "duration: bad duration",
		`{"target":"1.2.3.4","duration":"99999999d"}`:                        "duration: bad duration",
		`{"target":"1.2.3.4","duration":"1e300d"}`:                           "duration: bad duration",
		`{"target":"1.2.3.4","comment":"` + strings.Repeat("x", 1025) + `"}`: "comment: longer than",
		`{"target":"1.2.3.4","forse":true}`:                                  `unknown field \"forse\"`,
		`{"target":"1.2.3.4"} {"target":"5.6.7.8"}`:                          "unexpected data after the object",
		`{"target":1234}`: "bad JSON body",
		`[`:               "bad JSON body",
	} {
		code, got := f.do(t, http.MethodPost, "/v1/blocks", body, "application/json")
		wantStatus(t, "POST "+body, code, got, http.StatusBadRequest, want)
	}
	big := `{"target":"1.2.3.4","comment":"` + strings.Repeat("x", 70<<10) + `"}`
	code, body = f.do(t, http.MethodPost, "/v1/blocks", big, "application/json")
	wantStatus(t, "70 KiB body", code, body, http.StatusRequestEntityTooLarge, "larger than 65536 bytes")
	if !reflect.DeepEqual(f.eng.Snapshot(), before) {
		t.Error("a refused request changed the engine")
	}
	if n := f.eng.Calls() - calls; n != 0 {
		t.Errorf("refused requests called the engine %d times", n)
	}
	if _, err := f.c.AddBlock(ctx, pfx("0.0.0.0/0"), 0, "", true); statusOf(err) != http.StatusBadRequest {
		t.Errorf("client, too wide: %v", err)
	}
}

func TestSelfLockoutGuard(t *testing.T) {
	f := startTCP(t, options{})
	ctx := context.Background()
	_, err := f.c.AddBlock(ctx, pfx("127.0.0.0/8"), time.Hour, "", false)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Message != admin.LockoutMessage {
		t.Fatalf("blocking own network: %v, want 409 %q", err, admin.LockoutMessage)
	}
	code, body := f.do(t, http.MethodPost, "/v1/blocks", `{"target":"127.0.0.1"}`, "application/json")
	wantStatus(t, "own address", code, body, http.StatusConflict, "send force=true")
	if f.eng.Len() != 0 {
		t.Fatal("a refused block was made")
	}
	b, err := f.c.AddBlock(ctx, pfx("127.0.0.0/8"), time.Hour, "really", true)
	if err != nil || b.Target != "127.0.0.0/8" || b.By != "admin:"+admin.ActorTCP {
		t.Fatalf("forced: %+v, %v", b, err)
	}
	if _, err := f.c.AddBlock(ctx, pfx("203.0.113.9/32"), 0, "", false); err != nil {
		t.Errorf("another address over TCP: %v", err)
	}
	f.eng.UnblockAll(ctx, "test")

	// Import: an active block holding the client is refused, an expired one is not.
	csvOwn := admin.CSVHeader + "\n127.0.0.1,L,imap,,,,0,2026-05-01T13:00:00Z,,,,0\n"
	code, body = f.do(t, http.MethodPost, "/v1/blocks/import", csvOwn, "text/csv")
	wantStatus(t, "import own address", code, body, http.StatusConflict, "127.0.0.1", "force=true")
	if f.eng.Len() != 0 {
		t.Fatal("a refused import was made")
	}
	if n, err := f.c.Import(ctx, admin.FormatCSV, []byte(csvOwn), true); err != nil || n != 1 {
		t.Errorf("forced import: %d, %v", n, err)
	}
	csvExpired := admin.CSVHeader + "\n127.0.0.2,L,imap,,,,0,2026-05-01T11:00:00Z,,,,0\n"
	if n, err := f.c.Import(ctx, admin.FormatCSV, []byte(csvExpired), false); err != nil || n != 1 {
		t.Errorf("expired import: %d, %v", n, err)
	}
	f.stop()
	if !strings.Contains(f.log.String(), "forced") {
		t.Errorf("the forced block is not logged as such:\n%s", f.log.String())
	}

	// Over the unix socket there is no client address to protect.
	u := startUnix(t, options{})
	if _, err := u.c.AddBlock(ctx, pfx("127.0.0.0/8"), 0, "", false); err != nil {
		t.Errorf("unix socket: %v", err)
	}
}

func TestRemove(t *testing.T) {
	f := startUnix(t, options{})
	ctx := context.Background()
	f.eng.Put(sample()...)
	n, err := f.c.RemoveBlocks(ctx, []netip.Prefix{pfx("203.0.113.7/32"), pfx("10.9.9.9/32")})
	if err != nil || n != 1 {
		t.Errorf("remove one of two: %d, %v", n, err)
	}
	audited := len(f.eng.AuditLog())
	_, err = f.c.RemoveBlocks(ctx, []netip.Prefix{pfx("203.0.113.7/32")})
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message != "not blocked: 203.0.113.7" {
		t.Errorf("remove missing: %v", err)
	}
	if log := f.eng.AuditLog(); len(log) != audited {
		t.Errorf("removing what was not blocked wrote the audit log: %+v", log[audited:])
	}
	code, body := f.do(t, http.MethodDelete, "/v1/blocks?target=2001:db8:1::/64&target=192.0.2.1", "", "")
	wantStatus(t, "remove two", code, body, http.StatusOK, `{"removed":2}`)

	before := f.eng.Snapshot()
	for q, want := range map[string]string{
		"":                                 "want target=ADDRESS|PREFIX",
		"?all=false":                       "all: want all=true",
		"?all=":                            "all: want all=true",
		"?all=true&target=192.0.2.9":       "not both",
		"?target=192.0.2.300":              "target: bad target",
		"?target=198.51.100.0/24&target=x": "target: bad target",
		"?targets=1.2.3.4":                 "unknown parameter",
	} {
		code, body := f.do(t, http.MethodDelete, "/v1/blocks"+q, "", "")
		wantStatus(t, "DELETE "+q, code, body, http.StatusBadRequest, want)
	}
	if !reflect.DeepEqual(f.eng.Snapshot(), before) {
		t.Error("a refused DELETE changed the engine")
	}
	n, err = f.c.RemoveAll(ctx)
	if err != nil || n != len(before) || f.eng.Len() != 0 {
		t.Errorf("remove all: %d, %v; %d left", n, err, f.eng.Len())
	}
	log := f.eng.AuditLog()
	if last := log[len(log)-1]; last.Action != "unblock-all" || last.Actor != osUser(t) {
		t.Errorf("last audit entry %+v", last)
	}
}

func TestPurgeExpired(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.Put(sample()...)
	n, err := f.c.PurgeExpired(context.Background())
	if err != nil || n != 2 || f.eng.Len() != 3 {
		t.Fatalf("purged %d, %v; %d left", n, err, f.eng.Len())
	}
	code, body := f.do(t, http.MethodPost, "/v1/blocks/purge-expired", "", "")
	wantStatus(t, "again", code, body, http.StatusOK, `{"purged":0}`)
}

func TestExportImportRoundTrip(t *testing.T) {
	for _, format := range []string{admin.FormatCSV, admin.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			f := startUnix(t, options{})
			ctx := context.Background()
			f.eng.Put(sample()...)
			first, err := f.c.Export(ctx, format)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.c.RemoveAll(ctx); err != nil {
				t.Fatal(err)
			}
			n, err := f.c.Import(ctx, format, first, false)
			if err != nil || n != len(sample()) {
				t.Fatalf("import: %d, %v", n, err)
			}
			second, err := f.c.Export(ctx, format)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, second) {
				t.Errorf("export → import → export differs:\n%s\n---\n%s", first, second)
			}
			got := f.eng.Snapshot()
			for _, want := range sample() {
				b, ok := got[want.Prefix]
				if !ok {
					t.Errorf("%s missing after import", want.Prefix)
					continue
				}
				if !sameBlock(b, want) {
					t.Errorf("after import\n got %+v\nwant %+v", b, want)
				}
			}
		})
	}
}

func sameBlock(a, b store.Block) bool {
	return a.Prefix == b.Prefix && a.Reason == b.Reason && a.Service == b.Service && a.Detail == b.Detail &&
		a.FirstSeen.Equal(b.FirstSeen) && a.LastSeen.Equal(b.LastSeen) && a.Hits == b.Hits &&
		a.Expires.Equal(b.Expires) && a.Node == b.Node && a.By == b.By && a.Comment == b.Comment && a.Level == b.Level
}

func TestExportFormats(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.Put(sample()[0], sample()[2])
	code, hdr, body := f.raw(t, http.MethodGet, "/v1/blocks/export?format=csv", testToken, nil, "")
	want := admin.CSVHeader + "\n" +
		"198.51.100.0/24,U,,,2026-05-01T11:50:00Z,2026-05-01T11:50:00Z,0,,gw1,admin:cli,\"office scanner, forever\",0\n" +
		"203.0.113.7,L,imap,alice@example.com,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,5,2026-05-01T15:00:00Z,gw1,engine,,0\n"
	if code != http.StatusOK || body != want || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") ||
		!strings.Contains(hdr.Get("Content-Disposition"), "postern-blocks-20260501T120000Z.csv") {
		t.Errorf("CSV export: %d %v\n%s\nwant\n%s", code, hdr, body, want)
	}
	code, body = f.do(t, http.MethodGet, "/v1/blocks/export?format=json", "", "")
	_, list := f.do(t, http.MethodGet, "/v1/blocks", "", "")
	if code != http.StatusOK || body != list {
		t.Errorf("JSON export differs from the list:\n%s\n%s", body, list)
	}
	code, body = f.do(t, http.MethodGet, "/v1/blocks/export?format=xml", "", "")
	wantStatus(t, "xml", code, body, http.StatusBadRequest, "format: want csv or json")
}

func TestImportAllOrNothing(t *testing.T) {
	f := startUnix(t, options{})
	ctx := context.Background()
	f.eng.Put(sample()[0])
	before := f.eng.Snapshot()
	check := func(what string) {
		t.Helper()
		if !reflect.DeepEqual(f.eng.Snapshot(), before) {
			t.Errorf("%s: the engine changed", what)
		}
	}
	csvBad := admin.CSVHeader + "\n" +
		"10.0.0.1,L,imap,,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,3,2026-05-01T15:00:00Z,gw1,engine,,0\n" +
		"10.0.0.2,L,imap,,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,3,tomorrow,gw1,engine,,0\n" +
		"10.0.0.3,L,imap,,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,3,2026-05-01T15:00:00Z,gw1,engine,,0\n"
	_, err := f.c.Import(ctx, admin.FormatCSV, []byte(csvBad), false)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), `line 3: expires: bad time "tomorrow"`) {
		t.Errorf("bad CSV line: %v", err)
	}
	check("bad CSV line")
	jsonBad := `{"blocks": [
  {"target": "10.0.0.1", "reason": "L"},
  {"target": "10.0.0.2", "reason": "Q"},
  {"target": "10.0.0.3", "reason": "L"}
]}`
	_, err = f.c.Import(ctx, admin.FormatJSON, []byte(jsonBad), false)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), `blocks[1] (line 3): reason: unknown reason "Q"`) {
		t.Errorf("bad JSON element: %v", err)
	}
	check("bad JSON element")
	// The engine's own refusal (ErrBadRequest) is a 400 too, and all or nothing.
	refused := admin.CSVHeader + "\n10.0.0.1,L,,,,,0,,,,,0\n10.0.0.2,L,,engine-refuses,,,0,,,,,0\n"
	_, err = f.c.Import(ctx, admin.FormatCSV, []byte(refused), false)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "the engine refuses 10.0.0.2/32") {
		t.Errorf("engine refusal: %v", err)
	}
	check("engine refusal")
	code, body := f.do(t, http.MethodPost, "/v1/blocks/import", "target,reason\n1.2.3.4,L\n", "text/plain")
	wantStatus(t, "text/plain", code, body, http.StatusUnsupportedMediaType, "text/csv or application/json")
	code, body = f.do(t, http.MethodPost, "/v1/blocks/import", "target,reason\n0.0.0.0/0,L\n", "text/csv")
	wantStatus(t, "too wide", code, body, http.StatusBadRequest, "too wide")
	check("refused requests")
	// A minimal CSV: the other columns are optional.
	if n, err := f.c.Import(ctx, admin.FormatCSV, []byte("target,reason\n10.1.0.0/16,U\n"), false); err != nil || n != 1 {
		t.Errorf("minimal CSV: %d, %v", n, err)
	}
}

func TestImportBodyLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 256 MiB")
	}
	f := startUnix(t, options{})
	big := bytes.Repeat([]byte("a"), 256<<20+1)
	_, err := f.c.Import(context.Background(), admin.FormatCSV, big, false)
	if statusOf(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("256 MiB + 1: %v, want 413", err)
	}
	if f.eng.Calls() != 0 {
		t.Error("the engine was called")
	}
}

func TestAudit(t *testing.T) {
	f := startUnix(t, options{})
	ctx := context.Background()
	for i := range 5 {
		f.eng.SetNow(t0.Add(time.Duration(i) * time.Minute))
		if _, err := f.c.AddBlock(ctx, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 32), 0, fmt.Sprint(i), false); err != nil {
			t.Fatal(err)
		}
	}
	es, err := f.c.Audit(ctx, time.Time{}, 0)
	if err != nil || len(es) != 5 || es[0].Actor != osUser(t) || es[0].Action != "block" || es[0].Target != "192.0.2.5/32" {
		t.Fatalf("audit: %+v, %v", es, err)
	}
	es, err = f.c.Audit(ctx, t0.Add(3*time.Minute), 0)
	if err != nil || len(es) != 2 {
		t.Errorf("since: %+v, %v", es, err)
	}
	es, err = f.c.Audit(ctx, time.Time{}, 1)
	if err != nil || len(es) != 1 {
		t.Errorf("limit: %+v, %v", es, err)
	}
	code, body := f.do(t, http.MethodGet, "/v1/audit?since=2026-05-01T12:03:00Z", "", "")
	wantStatus(t, "raw", code, body, http.StatusOK, `{"entries":[{"time":"2026-05-01T12:04:00Z","actor":"`+osUser(t)+`","action":"block","target":"192.0.2.5/32"`)
	for q, want := range map[string]string{
		"since=yesterday": "since: want an RFC 3339 time",
		"limit=0":         "limit: want a number from 1 to 10000",
		"limit=10001":     "limit: want a number",
		"limit=x":         "limit: want a number",
	} {
		code, body := f.do(t, http.MethodGet, "/v1/audit?"+q, "", "")
		wantStatus(t, q, code, body, http.StatusBadRequest, want)
	}
}

func TestExplain(t *testing.T) {
	ctx := context.Background()
	f := startUnix(t, options{})
	if _, err := f.c.Explain(ctx, explain.Query{Addr: netip.MustParseAddr("192.0.2.1"), Service: "imap"}); statusOf(err) != http.StatusNotImplemented {
		t.Errorf("no explainer: %v, want 501", err)
	}
	var got explain.Query
	want := explain.Answer{
		Address: "192.0.2.1", Service: "web", Account: "alice@example.com", Path: "/admin", CleanPath: "/admin",
		Verdict: explain.Deny, Source: explain.SourceGateway, Because: []string{"blocked"}, At: t0,
		Steps: []explain.Step{{Kind: explain.KindBlock, Rule: "block 192.0.2.0/24", Effect: "refuses new connections", Denies: true,
			Block: &explain.Block{Target: "192.0.2.0/24", Reason: "L", ReasonName: "failed logins", Expires: t0.Add(time.Hour), Refused: true}}},
	}
	f = startUnix(t, options{explain: func(_ context.Context, q explain.Query) (explain.Answer, error) {
		got = q
		switch q.Service {
		case "nope":
			return explain.Answer{}, fmt.Errorf("%w: unknown service %q", explain.ErrQuery, q.Service)
		case "boom":
			return explain.Answer{}, errors.New("policy exploded at 0xdeadbeef")
		}
		return want, nil
	}})
	ans, err := f.c.Explain(ctx, explain.Query{Addr: netip.MustParseAddr("::ffff:192.0.2.1"), Service: "web", Account: "alice@example.com", Path: "/admin"})
	if err != nil || !reflect.DeepEqual(ans, want) {
		t.Errorf("explain: %+v, %v; want %+v", ans, err, want)
	}
	if wantQ := (explain.Query{Addr: netip.MustParseAddr("192.0.2.1"), Service: "web", Account: "alice@example.com", Path: "/admin"}); got != wantQ {
		t.Errorf("explainer called with %+v, want %+v", got, wantQ)
	}
	code, body := f.do(t, http.MethodGet, "/v1/explain?ip=192.0.2.300&service=imap", "", "")
	wantStatus(t, "bad ip", code, body, http.StatusBadRequest, "ip: want an IP address")
	code, body = f.do(t, http.MethodGet, "/v1/explain?service=imap", "", "")
	wantStatus(t, "no ip", code, body, http.StatusBadRequest, "ip: want an IP address")
	code, body = f.do(t, http.MethodGet, "/v1/explain?ip=192.0.2.1&service=nope", "", "")
	wantStatus(t, "explainer's bad request", code, body, http.StatusBadRequest, `unknown service \"nope\"`)
	code, body = f.do(t, http.MethodGet, "/v1/explain?ip=192.0.2.1&service=boom", "", "")
	wantStatus(t, "explainer failure", code, body, http.StatusInternalServerError, "internal error")
	if strings.Contains(body, "deadbeef") {
		t.Errorf("500 leaks the detail: %s", body)
	}
	f.stop()
	if !strings.Contains(f.log.String(), "deadbeef") {
		t.Errorf("the detail of a 500 is not logged:\n%s", f.log.String())
	}
}

func TestEngineFailureIs500(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.FailWith(errors.New("sqlite: disk I/O error on /var/lib/postern/postern.db"))
	_, err := f.c.AddBlock(context.Background(), pfx("192.0.2.1/32"), 0, "", false)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusInternalServerError || strings.Contains(ae.Message, "sqlite") {
		t.Errorf("engine failure: %v", err)
	}
	f.stop()
	if !strings.Contains(f.log.String(), "disk I/O error") {
		t.Errorf("the engine's error is not logged:\n%s", f.log.String())
	}
}

func TestMutatingRequestsAreLogged(t *testing.T) {
	f := startUnix(t, options{})
	ctx := context.Background()
	f.c.AddBlock(ctx, pfx("192.0.2.1/32"), 0, "", false)
	f.c.RemoveBlocks(ctx, []netip.Prefix{pfx("192.0.2.1/32")})
	f.c.ListBlocks(ctx, admin.Filter{})
	f.stop()
	log := f.log.String()
	actor := slog.StringValue(osUser(t)).String()
	if strings.Contains(actor, " ") {
		actor = strconv.Quote(actor)
	}
	for _, want := range []string{
		`msg="admin request" method=POST path=/v1/blocks actor=` + actor + ` remote=unix status=201 result="blocked 192.0.2.1"`,
		`msg="admin request" method=DELETE path=/v1/blocks actor=` + actor + ` remote=unix status=200 result="removed 1 of 192.0.2.1"`,
		`level=DEBUG msg="admin request" method=GET path=/v1/blocks`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	if strings.Contains(log, testToken) {
		t.Error("log holds the token")
	}
}

func TestConcurrentClients(t *testing.T) {
	for _, start := range []func(*testing.T, options) *fixture{startUnix, startTCP} {
		f := start(t, options{})
		ctx := context.Background()
		const workers, each = 8, 50
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := admin.NewClient(f.listen, testToken)
				defer c.CloseIdleConnections()
				for i := range each {
					p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(w), byte(i)}), 32)
					if _, err := c.AddBlock(ctx, p, time.Hour, "", false); err != nil {
						errs <- err
						continue
					}
					if i%2 == 1 {
						if n, err := c.RemoveBlocks(ctx, []netip.Prefix{p}); err != nil || n != 1 {
							errs <- fmt.Errorf("remove %s: %d, %v", p, n, err)
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := f.eng.Len(); n != workers*each/2 {
			t.Errorf("%d blocks, want %d", n, workers*each/2)
		}
		bs, err := f.c.ListBlocks(ctx, admin.Filter{})
		if err != nil || len(bs) != workers*each/2 {
			t.Errorf("listed %d, %v", len(bs), err)
		}
		if n := len(f.eng.AuditLog()); n != workers*each*3/2 {
			t.Errorf("%d audit entries, want %d", n, workers*each*3/2)
		}
	}
}

func TestTCPGrant(t *testing.T) {
	f := startTCP(t, options{grant: func(netip.Addr) bool { return false }})
	_, err := f.c.Health(context.Background())
	if err == nil || statusOf(err) != 0 {
		t.Errorf("a refused address got an answer: %v", err)
	}
	f.stop()
	if !strings.Contains(f.log.String(), "address not granted") {
		t.Errorf("refusal not logged:\n%s", f.log.String())
	}
	// The default grant is loopback only; 127.0.0.1 passes.
	g := startTCP(t, options{})
	if _, err := g.c.Health(context.Background()); err != nil {
		t.Errorf("loopback: %v", err)
	}
}

func TestHandlerOutsideServe(t *testing.T) {
	eng := startUnix(t, options{}).eng
	h := admin.NewServer(eng, nil, testToken, nil, nil).Handler()
	post := func(remote string) int {
		req, _ := http.NewRequest(http.MethodPost, "/v1/blocks", strings.NewReader(`{"target":"192.0.2.0/24"}`))
		req.RemoteAddr = remote
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := post("192.0.2.7:5555"); code != http.StatusForbidden {
		t.Errorf("TCP peer not granted: %d, want 403", code)
	}
	if code := post("127.0.0.1:5555"); code != http.StatusCreated {
		t.Errorf("loopback peer: %d, want 201", code)
	}
	if code := post("@"); code != http.StatusCreated {
		t.Errorf("unix peer: %d, want 201", code)
	}
	if log := eng.AuditLog(); len(log) != 2 || log[0].Actor != admin.ActorTCP || log[1].Actor != admin.ActorUnix {
		t.Errorf("actors %+v", log)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	_, err := admin.NewClient("http://localhost:80", testToken).Health(ctx)
	if err == nil || !strings.Contains(err.Error(), "want unix:/path") {
		t.Errorf("bad address: %v", err)
	}
	sock := shortDir(t) + "/none.sock"
	_, err = admin.NewClient("unix:"+sock, testToken).Health(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot reach postern at unix:"+sock) || !strings.Contains(err.Error(), "is postern serve running?") {
		t.Errorf("no server: %v", err)
	}
	f := startUnix(t, options{})
	_, err = admin.NewClient(f.listen, "wrong-token-wrong-token").Health(ctx)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Message != "unauthorized" {
		t.Errorf("wrong token: %v", err)
	}
}

// Times are checked before the engine is asked: a row that expires in the
// year 9999 (which the store cannot hold, and which would make a block
// for ever) is a 400 naming the row, and nothing reaches the engine.
func TestImportTimesChecked(t *testing.T) {
	f := startUnix(t, options{})
	ctx := context.Background()
	f.eng.SetNow(t0)
	before := f.eng.Snapshot()
	csvFar := admin.CSVHeader + "\n" +
		"10.0.0.1,L,imap,,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,3,2026-05-01T15:00:00Z,gw1,engine,,0\n" +
		"10.0.0.2,L,imap,,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,3,9999-12-31T23:59:59Z,gw1,engine,,0\n"
	_, err := f.c.Import(ctx, admin.FormatCSV, []byte(csvFar), false)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "line 3: expires: 9999-12-31T23:59:59Z is more than 10 years ahead (latest 2036-04-28T12:00:00Z)") {
		t.Errorf("year 9999: %v", err)
	}
	jsonBefore := `[{"target":"10.0.0.1","reason":"L","first_seen":"2026-05-01T10:00:00Z","expires":"2026-05-01T09:00:00Z"}]`
	_, err = f.c.Import(ctx, admin.FormatJSON, []byte(jsonBefore), false)
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "blocks[0] (line 1): expires: 2026-05-01T09:00:00Z is before first_seen 2026-05-01T10:00:00Z") {
		t.Errorf("expiry before first_seen: %v", err)
	}
	if !reflect.DeepEqual(f.eng.Snapshot(), before) {
		t.Error("the engine changed")
	}
}
