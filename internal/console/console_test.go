package console

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

func TestSignInWithUserAndToken(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	if code, body := c.get("/blocks"); code != http.StatusOK || !strings.Contains(body, `action="/signin"`) {
		t.Fatalf("signed out /blocks: want the sign-in form, got %d", code)
	}
	c.mustSignIn()
	if code, body := c.get("/blocks"); code != http.StatusOK || !strings.Contains(body, "Block by hand") {
		t.Fatalf("/blocks after sign-in: %d", code)
	}
	tc := w.client(t, "")
	if code, body := tc.signIn("", testToken); code != http.StatusOK || !strings.Contains(body, "Blocks made, by reason") {
		t.Fatalf("token sign-in: %d\n%s", code, body)
	}
	if code, _ := w.client(t, "").signIn("", "not the token at all"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: want 401, got %d", code)
	}
}

func TestSessionCookieFlags(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	tok := c.csrf("/signin")
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.http.PostForm(w.url+"/signin", url.Values{"csrf": {tok}, "user": {testUser}, "password": {testPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var found bool
	for _, ck := range resp.Cookies() {
		if ck.Name == "postern-console" {
			found = true
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
			}
		}
	}
	if !found {
		t.Fatalf("no session cookie in %v", resp.Header["Set-Cookie"])
	}
}

func TestSignInNeedsFormToken(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	c.csrf("/signin") // the cookie, but not the form's token
	if code, _ := c.post("/signin", url.Values{"user": {testUser}, "password": {testPassword}}); code != http.StatusForbidden {
		t.Fatalf("sign-in without the form token: want 403, got %d", code)
	}
}

func TestChangeWithoutCSRFRefused(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	c.mustSignIn()
	for _, form := range []url.Values{
		{"target": {"198.51.100.7"}},
		{"target": {"198.51.100.7"}, "csrf": {strings.Repeat("0", 64)}},
	} {
		if code, _ := c.post("/blocks/add", form); code != http.StatusForbidden {
			t.Fatalf("add without the CSRF token (%v): want 403, got %d", form, code)
		}
	}
	if w.refuses("198.51.100.7") {
		t.Fatal("a change without the CSRF token was made")
	}
	if code, _ := c.post("/config/reload", url.Values{}); code != http.StatusForbidden || w.reloads.Load() != 0 {
		t.Fatalf("reload without the CSRF token: %d, %d reloads", code, w.reloads.Load())
	}
}

func TestManualBlockUnblockAndLockout(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	c.mustSignIn()
	tok := c.csrf("/blocks")
	code, body := c.post("/blocks/add", url.Values{"csrf": {tok}, "target": {"198.51.100.7"}, "duration": {"2h"}, "comment": {"spray"}})
	if code != http.StatusOK || !strings.Contains(body, "Blocked 198.51.100.7.") || !strings.Contains(body, "spray") {
		t.Fatalf("add: %d\n%s", code, body)
	}
	if !w.refuses("198.51.100.7") {
		t.Fatal("the engine does not refuse the address blocked in the console")
	}
	b, ok := w.eng.BlockOf(netip.MustParseAddr("198.51.100.7"))
	if !ok || b.Reason != reason.Manual || b.Comment != "spray" || b.By != "admin:console:alice" && !strings.Contains(b.By, "console:alice") {
		t.Fatalf("block: %+v", b)
	}
	// extend and comment through the selection
	was := b.Expires
	if code, body = c.post("/blocks/action", url.Values{"csrf": {tok}, "action": {"extend"}, "extend": {"1d"}, "target": {"198.51.100.7"}}); !strings.Contains(body, "Extended 1 by 1d.") {
		t.Fatalf("extend: %d\n%s", code, body)
	}
	if b, _ = w.eng.BlockOf(netip.MustParseAddr("198.51.100.7")); !b.Expires.Equal(was.Add(24 * time.Hour)) {
		t.Fatalf("extend: expires %v, want %v", b.Expires, was.Add(24*time.Hour))
	}
	if _, body = c.post("/blocks/action", url.Values{"csrf": {tok}, "action": {"comment"}, "comment": {"known sprayer"}, "target": {"198.51.100.7"}}); !strings.Contains(body, "Commented 1.") {
		t.Fatalf("comment:\n%s", body)
	}
	if b, _ = w.eng.BlockOf(netip.MustParseAddr("198.51.100.7")); b.Comment != "known sprayer" {
		t.Fatalf("comment: %q", b.Comment)
	}
	// the self-lockout guard: the console user's own address
	if _, body = c.post("/blocks/add", url.Values{"csrf": {tok}, "target": {"127.0.0.0/8"}}); !strings.Contains(body, "would block your own address") {
		t.Fatalf("self-lockout not refused:\n%s", body)
	}
	if w.refuses("127.0.0.1") {
		t.Fatal("the console blocked its own user")
	}
	// unblock
	if _, body = c.post("/blocks/action", url.Values{"csrf": {tok}, "action": {"unblock"}, "target": {"198.51.100.7"}}); !strings.Contains(body, "Unblocked 1.") {
		t.Fatalf("unblock:\n%s", body)
	}
	if w.refuses("198.51.100.7") {
		t.Fatal("still blocked after unblock")
	}
	// the audit log names the console user
	_, body = c.get("/audit")
	for _, want := range []string{"console:alice", "198.51.100.7", "unblock"} {
		if !strings.Contains(body, want) {
			t.Errorf("audit page lacks %q", want)
		}
	}
	if u, b := strings.Index(body, "<td>unblock</td>"), strings.Index(body, "<td>block</td>"); u < 0 || b < 0 || u > b {
		t.Errorf("audit page not newest first: unblock at %d, block at %d", u, b)
	}
}

func TestFilterSearchAndExport(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, a := range []string{"198.51.100.7", "203.0.113.9"} {
		if _, err := w.eng.BlockManual(ctx, netip.MustParsePrefix(a+"/32"), time.Hour, "", "test"); err != nil {
			t.Fatal(err)
		}
	}
	failLogins(t, w, "192.0.2.44", 3)
	c := w.client(t, "")
	c.mustSignIn()
	_, body := c.get("/blocks?search=203.0.113.0/24")
	if !strings.Contains(body, "203.0.113.9") || strings.Contains(body, "198.51.100.7") {
		t.Fatalf("search:\n%s", body)
	}
	_, body = c.get("/blocks/rows?reason=L")
	if !strings.Contains(body, "192.0.2.44") || strings.Contains(body, "203.0.113.9") {
		t.Fatalf("filter by reason:\n%s", body)
	}
	_, body = c.get("/blocks/rows?service=imap&since=1h")
	if !strings.Contains(body, "192.0.2.44") || strings.Contains(body, "198.51.100.7") {
		t.Fatalf("filter by service:\n%s", body)
	}
	_, body = c.get("/blocks/rows?country=my")
	if !strings.Contains(body, "192.0.2.44") || strings.Contains(body, "198.51.100.7") {
		t.Fatalf("filter by country:\n%s", body)
	}
	_, body = c.get("/")
	for _, want := range []string{`href="/blocks?search=192.0.2.0%2f24"`, `href="/blocks?country=MY"`, "198.51.100.0/24"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
	if code, _ := c.get("/blocks?search=nonsense"); code != http.StatusBadRequest {
		t.Fatalf("bad search: want 400, got %d", code)
	}
	code, csv := c.get("/blocks/export?format=csv")
	if code != http.StatusOK || !strings.HasPrefix(csv, "target,reason,") || !strings.Contains(csv, "192.0.2.44,L,imap") {
		t.Fatalf("export csv: %d\n%s", code, csv)
	}
	if _, js := c.get("/blocks/export?format=json"); !strings.Contains(js, `"reason_name":"failed logins"`) {
		t.Fatalf("export json:\n%s", js)
	}
}

// failLogins makes n failed IMAP logins from addr through the engine.
func failLogins(t *testing.T, w *world, addr string, n int) {
	t.Helper()
	for range n {
		s, v := w.eng.Accept(netip.MustParseAddr(addr), service.IMAP, func() {})
		if s == nil {
			t.Fatalf("not admitted: %+v", v)
		}
		l, _ := s.BeginLogin(context.Background(), "bob@example.com")
		if l != nil {
			l.Failed(uint64(time.Now().UnixNano()))
		}
		s.Close()
	}
	if !w.refuses(addr) {
		t.Fatalf("%s not blocked after %d failed logins", addr, n)
	}
}

func TestNotGrantedRefused(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "127.0.0.2")
	resp, err := c.http.Get(w.url + "/signin")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a client outside the grant was answered: %d", resp.StatusCode)
	}
	// the handler refuses it too, when mounted without the listener
	rec := &recorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodPost, "/signin", strings.NewReader(url.Values{"user": {testUser}, "password": {testPassword}}.Encode()))
	req.RemoteAddr = "127.0.0.2:5555"
	w.srv.Handler().ServeHTTP(rec, req)
	if rec.code != http.StatusForbidden {
		t.Fatalf("handler, not granted: want 403, got %d", rec.code)
	}
}

func TestWrongPasswordsBlockTheAddress(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "127.0.0.3")
	for i := range 3 {
		if code, _ := c.signIn(testUser, "wrong password "+string(rune('a'+i))); code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: want 401, got %d", i, code)
		}
	}
	b, ok := w.eng.BlockOf(netip.MustParseAddr("127.0.0.3"))
	if !ok || b.Reason != reason.Login || b.Service != "console" || !strings.Contains(b.Detail, "console:alice") {
		t.Fatalf("after 3 wrong passwords: block %+v, %v", b, ok)
	}
	// now even the right password is refused
	if code, _ := c.get("/signin"); code != http.StatusForbidden {
		t.Fatalf("blocked address: want 403, got %d", code)
	}
	// and another address still signs in
	w.client(t, "").mustSignIn()
}

func TestIdleTimeoutSignsOut(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	c.mustSignIn()
	w.clock.add(11 * time.Minute)
	if _, body := c.get("/blocks"); !strings.Contains(body, `action="/signin"`) {
		t.Fatal("an idle session still works")
	}
}

func TestSignOut(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	c.mustSignIn()
	tok := c.csrf("/")
	c.post("/signout", url.Values{"csrf": {tok}})
	if _, body := c.get("/"); !strings.Contains(body, `action="/signin"`) {
		t.Fatal("signed out, the dashboard still answers")
	}
}

func TestEventsAnnounceNewBlocks(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	c.mustSignIn()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/events", nil)
	c.http.Timeout = 0
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	if l, _ := rd.ReadString('\n'); !strings.HasPrefix(l, "retry:") {
		t.Fatalf("first line %q", l)
	}
	failLogins(t, w, "192.0.2.50", 3)
	for {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("no blocks event: %v", err)
		}
		if l == "event: blocks\n" {
			break
		}
	}
	if _, body := c.get("/blocks/rows"); !strings.Contains(body, "192.0.2.50") {
		t.Fatalf("rows lack the new block:\n%s", body)
	}
}

func TestPagesRender(t *testing.T) {
	w := newWorld(t)
	failLogins(t, w, "192.0.2.60", 3)
	c := w.client(t, "")
	c.mustSignIn()
	for path, want := range map[string]string{
		"/":                                   "backend 127.0.0.1:10143",
		"/explain?ip=192.0.2.60&service=imap": "192.0.2.60",
		"/audit":                              "Audit log",
		"/config":                             "failed_logins: 3",
		"/assets/console.js":                  "EventSource",
		"/assets/console.css":                 "tablewrap",
	} {
		code, body := c.get(path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, lacks %q", path, code, want)
		}
	}
	tok := c.csrf("/config")
	if _, body := c.post("/config/reload", url.Values{"csrf": {tok}}); !strings.Contains(body, "Reloaded.") || w.reloads.Load() != 1 {
		t.Fatalf("reload: %d reloads\n%s", w.reloads.Load(), body)
	}
}

func TestSetPasswordReplacesLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte("# admins\nbob:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"one", "two"} {
		if err := SetPassword(p, "carol", pw, testParams); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(p)
	if n := strings.Count(string(data), "carol:"); n != 1 || !strings.HasPrefix(string(data), "# admins\nbob:") {
		t.Fatalf("users file:\n%s", data)
	}
	users, err := readUsers(p)
	if err != nil {
		t.Fatal(err)
	}
	if !users["carol"].check("two") || users["carol"].check("one") {
		t.Fatal("carol's password is not the last one set")
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	// the mode of an existing file is kept, less any right for others
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readUsers(p); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a users file readable by others: %v", err)
	}
	if err := SetPassword(p, "carol", "three", testParams); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode after passwd on a 0644 file: %v, want 0640", st.Mode())
	}
	for _, bad := range []string{"", "a:b", "a b", "#x"} {
		if SetPassword(p, bad, "pw", testParams) == nil {
			t.Errorf("user name %q accepted", bad)
		}
	}
}

func TestParsePHCBounds(t *testing.T) {
	for _, h := range []string{
		"",
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
	} {
		if _, err := parsePHC(h); err == nil {
			t.Errorf("parsePHC(%q) accepted", h)
		}
	}
	h, err := HashPassword("pw", testParams)
	if err != nil {
		t.Fatal(err)
	}
	p, err := parsePHC(h)
	if err != nil || !p.check("pw") || p.check("pW") {
		t.Fatalf("round trip of %q: %v", h, err)
	}
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	code   int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(c int) { r.code = c }

func TestImportRoundTrip(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.eng.BlockManual(ctx, netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "net", "test"); err != nil {
		t.Fatal(err)
	}
	c := w.client(t, "")
	c.mustSignIn()
	_, csv := c.get("/blocks/export?format=csv")
	if _, err := w.eng.UnblockAll(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	upload := func(name, content string, extra url.Values) string {
		t.Helper()
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("csrf", c.csrf("/blocks"))
		for k, v := range extra {
			mw.WriteField(k, v[0])
		}
		fw, _ := mw.CreateFormFile("file", name)
		io.WriteString(fw, content)
		mw.Close()
		resp, err := c.http.Post(w.url+"/blocks/import", mw.FormDataContentType(), &buf)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := upload("blocks.csv", csv, nil); !strings.Contains(body, "Imported 1.") {
		t.Fatalf("import:\n%s", body)
	}
	if !w.refuses("198.51.100.9") {
		t.Fatal("the imported block is not enforced")
	}
	// a row holding the user's own address is refused without "I know"
	own := "target,reason,expires\n127.0.0.0/8,U,\n"
	if body := upload("own.csv", own, nil); !strings.Contains(body, "would block your own address") {
		t.Fatalf("self-lockout on import:\n%s", body)
	}
	if w.refuses("127.0.0.1") {
		t.Fatal("an import blocked the console user")
	}
	if body := upload("bad.json", `[{"target":"nonsense"}]`, nil); !strings.Contains(body, "Import: ") {
		t.Fatalf("bad import:\n%s", body)
	}
}

// The traffic rates are for signed-in users only; without a source the
// list is empty and the dashboard says they are not counted.
func TestTrafficNeedsSignIn(t *testing.T) {
	w := newWorld(t)
	c := w.client(t, "")
	if _, body := c.get("/traffic"); strings.HasPrefix(body, "[") || !strings.Contains(body, `name="password"`) {
		t.Fatalf("signed out, /traffic answered:\n%s", body)
	}
	c.mustSignIn()
	if code, body := c.get("/traffic"); code != http.StatusOK || body != "[]\n" {
		t.Fatalf("/traffic without a source: %d %q", code, body)
	}
	if _, body := c.get("/"); !strings.Contains(body, "Not counted here.") {
		t.Fatalf("dashboard without traffic:\n%s", body)
	}
}
