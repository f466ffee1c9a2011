package policyd

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func serveDovecot(t testing.TB, d *Dovecot) string {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return "http://" + ln.Addr().String() + "/"
}

// ask posts body to url?command=cmd as Dovecot does and returns the answer.
func ask(t testing.TB, url, cmd, body string) dcAnswer {
	t.Helper()
	resp, err := http.Post(url+"?command="+cmd, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: HTTP %d %s", cmd, body, resp.StatusCode, b)
	}
	var a dcAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

func dcBody(login, pwhash, remote, protocol string) string {
	return `{"login":"` + login + `","pwhash":"` + pwhash + `","remote":"` + remote + `","device_id":"","protocol":"` + protocol + `","session_id":"abc","tls":false}`
}

func dcReport(login, pwhash, remote, protocol string, success, policyReject bool) string {
	b := strings.TrimSuffix(dcBody(login, pwhash, remote, protocol), "}")
	return b + `,"success":` + boolText(success) + `,"policy_reject":` + boolText(policyReject) + `}`
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// Five failed logins reported by Dovecot block the address (failed_logins
// 5); the sixth login, right password or not, is refused before
// authentication with postern's text. A retry of the same wrong password
// (the same pwhash) counts once.
func TestDovecotFailedLogins(t *testing.T) {
	eng := newEngine(t, "")
	url := serveDovecot(t, NewDovecot(eng, Options{}))
	const ip = "192.0.2.20"
	for i := range 5 {
		if a := ask(t, url, "allow", dcBody("bob@example.com", "a1b", ip, "pop3")); a.Status != 0 {
			t.Fatalf("attempt %d: %+v", i+1, a)
		}
		ask(t, url, "report", dcReport("bob@example.com", "a1b", ip, "pop3", false, false))
	}
	if blocked(eng, ip) {
		t.Fatal("the same wrong password five times blocked the address")
	}
	for i := range 5 {
		ask(t, url, "report", dcReport("bob@example.com", "f0"+string(rune('0'+i)), ip, "pop3", false, false))
	}
	if !blocked(eng, ip) {
		t.Fatal("not blocked after 5 different wrong passwords")
	}
	if a := ask(t, url, "allow", dcBody("bob@example.com", "c0d", ip, "pop3")); a.Status != -1 || a.Msg != "Blocked (failed logins)" {
		t.Fatalf("sixth login: %+v", a)
	}
	// The block holds on every service; another address is not affected.
	if a := ask(t, url, "allow", dcBody("bob@example.com", "c0d", ip, "smtp")); a.Status != -1 {
		t.Fatalf("smtp from the blocked address: %+v", a)
	}
	if a := ask(t, url, "allow", dcBody("bob@example.com", "c0d", "192.0.2.21", "pop3")); a.Status != 0 {
		t.Fatalf("another address: %+v", a)
	}
	// Successes and policy refusals are not failures.
	for range 10 {
		ask(t, url, "report", dcReport("carol@example.com", "x", "192.0.2.22", "imap", true, false))
		ask(t, url, "report", dcReport("carol@example.com", "y", "192.0.2.23", "imap", false, true))
	}
	if blocked(eng, "192.0.2.22") || blocked(eng, "192.0.2.23") {
		t.Fatal("successes or policy refusals counted as failures")
	}
}

// The login restriction refuses an account from where it may not log in
// (with the right password: the policy is asked first) and counts L; the
// inline service's grant applies to its protocol.
func TestDovecotRestrictions(t *testing.T) {
	eng := newEngine(t, "")
	url := serveDovecot(t, NewDovecot(eng, Options{}))
	if a := ask(t, url, "allow", dcBody("Alice@Example.com", "1", "192.0.2.30", "pop3")); a.Status != -1 || a.Msg != "Access denied" {
		t.Fatalf("restricted account: %+v", a)
	}
	if a := ask(t, url, "allow", dcBody("alice@example.com", "1", "127.0.0.9", "pop3")); a.Status != 0 {
		t.Fatalf("restricted account from its network: %+v", a)
	}
	// imap is an inline service here, granted to 127.0.0.0/8 only.
	if a := ask(t, url, "allow", dcBody("bob@example.com", "1", "192.0.2.31", "imap")); a.Status != -1 || a.Msg != "Access denied" {
		t.Fatalf("imap grant: %+v", a)
	}
	if a := ask(t, url, "allow", dcBody("bob@example.com", "1", "127.0.0.9", "imap")); a.Status != 0 {
		t.Fatalf("imap grant, granted address: %+v", a)
	}
	// Submission (Postfix SMTP AUTH through Dovecot SASL) has no inline
	// service: the block table alone.
	if a := ask(t, url, "allow", dcBody("bob@example.com", "1", "192.0.2.31", "smtp")); a.Status != 0 {
		t.Fatalf("smtp: %+v", a)
	}
	// A remote Dovecot cannot name (a local login) is not judged.
	if a := ask(t, url, "allow", dcBody("bob@example.com", "1", "", "imap")); a.Status != 0 {
		t.Fatalf("no remote: %+v", a)
	}
}

// Account protection: an account failing from many addresses is delayed
// (status > 0, seconds), never locked.
func TestDovecotAccountDelay(t *testing.T) {
	eng := newEngine(t, baseYAML+"  account_protection: { failures: 3, delay: 1500ms }\n")
	url := serveDovecot(t, NewDovecot(eng, Options{}))
	for i := range 3 {
		ask(t, url, "report", dcReport("dave@example.com", "h", "198.51.100."+string(rune('1'+i)), "pop3", false, false))
	}
	if a := ask(t, url, "allow", dcBody("dave@example.com", "h", "198.51.100.9", "pop3")); a.Status != 2 {
		t.Fatalf("account protection: %+v, want a delay of 2 seconds", a)
	}
	// The check after authentication of the same login (same session_id)
	// is not delayed again.
	if a := ask(t, url, "allow", dcBody("dave@example.com", "h", "198.51.100.9", "pop3")); a.Status != 0 {
		t.Fatalf("check after authentication: %+v", a)
	}
	if a := ask(t, url, "allow", dcBody("erin@example.com", "h", "198.51.100.9", "pop3")); a.Status != 0 {
		t.Fatalf("another account: %+v", a)
	}
}

// Bad requests get an HTTP error and are counted; peers outside the grant
// are closed; a slow decision is answered allow.
func TestDovecotBadRequests(t *testing.T) {
	eng := newEngine(t, "")
	d := NewDovecot(eng, Options{})
	url := serveDovecot(t, d)
	for _, tc := range []struct{ method, query, body string }{
		{"GET", "?command=allow", ""},
		{"POST", "?command=other", "{}"},
		{"POST", "?command=allow", "not json"},
		{"POST", "?command=allow", `{"login":1}`},
		{"POST", "?command=allow", `{} {}`},
		{"POST", "?command=allow", `{"login":"` + strings.Repeat("x", maxDovecotBody) + `"}`},
	} {
		req, _ := http.NewRequest(tc.method, url+tc.query, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("%s %s %.40q: 200", tc.method, tc.query, tc.body)
		}
	}
	if d.Stats().Bad.Load() != 5 {
		t.Errorf("bad requests counted %d, want 5", d.Stats().Bad.Load())
	}

	slow := NewDovecot(&slowEngine{Engine: eng, delay: 500 * time.Millisecond}, Options{DecisionTimeout: 50 * time.Millisecond})
	surl := serveDovecot(t, slow)
	if _, err := eng.BlockManual(context.Background(), netip.MustParsePrefix("192.0.2.40/32"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if a := ask(t, surl, "allow", dcBody("bob@example.com", "1", "192.0.2.40", "pop3")); a.Status != 0 || slow.Stats().NoOpinion.Load() != 1 {
		t.Fatalf("slow decision: %+v, no-opinion %d", a, slow.Stats().NoOpinion.Load())
	}

	ng := NewDovecot(eng, Options{Grant: func(netip.Addr) bool { return false }})
	nurl := serveDovecot(t, ng)
	if _, err := http.Post(nurl+"?command=allow", "application/json", strings.NewReader("{}")); err == nil {
		t.Fatal("a peer outside the grant was answered")
	}
}

func TestEnsureNonce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nonce")
	if err := EnsureNonce(p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || len(b) != 64 {
		t.Fatalf("nonce %q %v", b, err)
	}
	if err := EnsureNonce(p); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(p); string(b2) != string(b) {
		t.Fatal("an existing nonce was replaced")
	}
}

func FuzzDovecotRequest(f *testing.F) {
	f.Add("allow", dcBody("bob@example.com", "abc", "192.0.2.1", "imap"))
	f.Add("report", dcReport("bob@example.com", "abc", "::1", "pop3", false, false))
	f.Add("allow", `{"login":null}`)
	eng := newEngine(f, "")
	d := NewDovecot(eng, Options{})
	f.Fuzz(func(t *testing.T, cmd, body string) {
		req, err := http.NewRequest("POST", "/?command="+url.QueryEscape(cmd), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		w := &discardWriter{h: http.Header{}}
		d.ServeHTTP(w, req)
	})
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(c int)           { w.code = c }

func dcSession(login, pwhash, remote, session string) string {
	return `{"login":"` + login + `","pwhash":"` + pwhash + `","remote":"` + remote + `","protocol":"pop3","session_id":"` + session + `"}`
}

func dcSessionReport(login, pwhash, remote, session string, success bool) string {
	return strings.TrimSuffix(dcSession(login, pwhash, remote, session), "}") + `,"success":` + boolText(success) + `,"policy_reject":false}`
}

// Logins in flight are held as the inline login gate holds them: with
// failed_logins 5 and five logins asked about but not reported, a sixth
// waits and is refused at the decision deadline; a reported success frees
// a place; five reported failures block. A login Dovecot never reports is
// abandoned uncounted.
func TestDovecotLoginsInFlight(t *testing.T) {
	eng := newEngine(t, "")
	// The sixth login waits for a place for 3/4 of the decision timeout
	// and is refused when none frees; a decision that took longer than the
	// whole timeout would be answered allow. A quarter of 2 s is the
	// margin a loaded machine has between the two (400 ms left 100 ms,
	// and a loaded CI machine overran it).
	d := NewDovecot(eng, Options{DecisionTimeout: 2 * time.Second})
	url := serveDovecot(t, d)
	const ip = "192.0.2.60"
	for i := range 5 {
		if a := ask(t, url, "allow", dcSession("bob@example.com", "p", ip, "s"+strconv.Itoa(i))); a.Status != 0 {
			t.Fatalf("login %d in flight: %+v", i+1, a)
		}
	}
	if a := ask(t, url, "allow", dcSession("bob@example.com", "p", ip, "s5")); a.Status != -1 {
		t.Fatalf("sixth login with five in flight: %+v", a)
	}
	// The same session asked again (auth_policy_check_after_auth) is not
	// held behind itself.
	if a := ask(t, url, "allow", dcSession("bob@example.com", "p", ip, "s0")); a.Status != 0 {
		t.Fatalf("the check after authentication: %+v", a)
	}
	ask(t, url, "report", dcSessionReport("bob@example.com", "p", ip, "s0", true))
	if a := ask(t, url, "allow", dcSession("bob@example.com", "p", ip, "s6")); a.Status != 0 {
		t.Fatalf("a login after a success freed a place: %+v", a)
	}
	for i, s := range []string{"s1", "s2", "s3", "s4"} {
		ask(t, url, "report", dcSessionReport("bob@example.com", "w"+strconv.Itoa(i), ip, s, false))
	}
	if blocked(eng, ip) {
		t.Fatal("blocked after four failures")
	}
	ask(t, url, "report", dcSessionReport("bob@example.com", "w9", ip, "s6", false))
	if !blocked(eng, ip) {
		t.Fatal("not blocked after five failures")
	}
	// Never reported: freed uncounted by the sweep.
	const ip2 = "192.0.2.61"
	for i := range 5 {
		ask(t, url, "allow", dcSession("bob@example.com", "p", ip2, "t"+strconv.Itoa(i)))
	}
	if n := d.pending.sweep(time.Now().Add(time.Second)); n != 5 {
		t.Fatalf("swept %d", n)
	}
	if a := ask(t, url, "allow", dcSession("bob@example.com", "p", ip2, "t5")); a.Status != 0 || blocked(eng, ip2) {
		t.Fatalf("after the sweep: %+v", a)
	}
}
