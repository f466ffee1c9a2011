package webproxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// slowFailBackend fails every login after delay with 401, as a webmail in
// front of Dovecot's auth_failure_delay does.
func slowFailBackend(t *testing.T, delay time.Duration) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte("Login failed.\n"))
			return
		}
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// timedPost posts a login as multipart/form-data: a body postern does not
// rewrite, so a refusal is postern's own page after a mimicked wait (an
// urlencoded one goes to the webmail with a decoy password instead).
func timedPost(t *testing.T, h *harness, src, user, pass string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := h.client(src).Post(h.url("/login"), "multipart/form-data; boundary=XX", strings.NewReader(multipartLogin(user, pass)))
	if err != nil {
		return 0, time.Since(start)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func multipartLogin(user, pass string) string {
	return "--XX\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\n" + user +
		"\r\n--XX\r\nContent-Disposition: form-data; name=\"pass\"\r\n\r\n" + pass + "\r\n--XX--\r\n"
}

// Before the backend has failed a login, a refused login (boss@example.com
// outside [Boss]) waits RefusalTime: not an instant answer.
func TestRefusalWaitsTheDefault(t *testing.T) {
	const def = 300 * time.Millisecond
	be := slowFailBackend(t, 0)
	h := newHarness(t, harnessOpts{backends: []*url.URL{be}, mutate: func(c *Config) { c.RefusalTime = def }})
	code, took := timedPost(t, h, "127.0.0.70", "boss@example.com", "right")
	if code != http.StatusUnauthorized {
		t.Fatalf("refused login: %d, want the form's 401", code)
	}
	if took < def {
		t.Fatalf("the first refused login was answered in %v, before the default %v", took, def)
	}
}

// Once the backend has failed a login, a refusal waits as long as a
// recent failure took, not the default.
func TestRefusalWaitsLikeTheBackend(t *testing.T) {
	const backendDelay = 150 * time.Millisecond
	be := slowFailBackend(t, backendDelay)
	h := newHarness(t, harnessOpts{backends: []*url.URL{be}, mutate: func(c *Config) { c.RefusalTime = 20 * time.Second }})
	code, wrongTook := timedPost(t, h, "127.0.0.71", "alice@example.com", "wrong")
	if code != http.StatusUnauthorized || wrongTook < backendDelay {
		t.Fatalf("wrong password: %d in %v", code, wrongTook)
	}
	if n := h.p.failTimes.Len(); n != 1 {
		t.Fatalf("failure times recorded: %d, want 1", n)
	}
	for i := range 2 {
		code, took := timedPost(t, h, "127.0.0.72", "boss@example.com", "right")
		if code != http.StatusUnauthorized {
			t.Fatalf("refused login %d: %d", i, code)
		}
		if took < backendDelay || took >= 10*time.Second {
			t.Fatalf("refused login %d answered in %v: want the backend's failure time (≥ %v), not the 20 s default", i, took, backendDelay)
		}
	}
	if n := h.p.failTimes.Len(); n != 1 {
		t.Fatalf("a refusal must not record a failure time: %d", n)
	}
}

// A client that goes away during the wait ends it at once, and the
// refusal still counts: three abandoned refusals (failed_logins 3) block
// the address long before the 20 s wait would have ended.
func TestRefusalWaitEndsWithTheClient(t *testing.T) {
	be := slowFailBackend(t, 0)
	h := newHarness(t, harnessOpts{backends: []*url.URL{be}, mutate: func(c *Config) { c.RefusalTime = 20 * time.Second }})
	start := time.Now()
	for i := range 3 {
		c := h.client("127.0.0.73")
		c.Timeout = 100 * time.Millisecond
		if _, err := c.Post(h.url("/login"), "multipart/form-data; boundary=XX", strings.NewReader(multipartLogin("boss@example.com", fmt.Sprint("right-", i)))); err == nil {
			t.Fatal("answered before the 20 s wait")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ok, reason := h.blocked("127.0.0.73"); ok {
			if reason != "L" {
				t.Fatalf("block reason %q, want L", reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("three abandoned refusals did not block within %v: the waits did not end with their clients", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var decoyRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// onlyDecoys fails the test if a backend request naming the restricted
// account (who) carried anything but a decoy password in passField.
func onlyDecoys(t *testing.T, reqs []seen, who, passField string) {
	t.Helper()
	for _, r := range reqs {
		if !strings.Contains(strings.ToLower(r.Body), who) {
			continue
		}
		q, err := url.ParseQuery(r.Body)
		if err != nil || len(q[passField]) != 1 || !decoyRE.MatchString(q[passField][0]) {
			t.Errorf("the backend saw a login of the restricted account with its password: %s %s %q", r.Method, r.URI, r.Body)
		}
	}
}

// TestRefusalIsTheWebmailsPage: a login the restriction refuses goes to
// the webmail with a decoy password: the client gets exactly the page of a
// wrong password, and the webmail never sees the real one.
func TestRefusalIsTheWebmailsPage(t *testing.T) {
	be := slowFailBackend(t, 20*time.Millisecond)
	h := newHarness(t, harnessOpts{backends: []*url.URL{be}})
	answer := func(src, user, pass string) (int, string) {
		resp, err := h.client(src).PostForm(h.url("/login"), url.Values{"user": {user}, "pass": {pass}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wrongCode, wrongBody := answer("127.0.0.74", "alice@example.com", "wrong")
	refCode, refBody := answer("127.0.0.75", "boss@example.com", "boss-password")
	if wrongCode != refCode || wrongBody != refBody {
		t.Fatalf("refused: %d %q; wrong password: %d %q — want the same", refCode, refBody, wrongCode, wrongBody)
	}
}

// TestRefusalDecoyAcceptedStaysRefused: a webmail that takes any password
// (and would set a session cookie) still never logs a refused login in.
func TestRefusalDecoyAcceptedStaysRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "logged-in"})
		w.Write([]byte("welcome\n"))
	}))
	t.Cleanup(srv.Close)
	be, _ := url.Parse(srv.URL)
	h := newHarness(t, harnessOpts{backends: []*url.URL{be}})
	resp, err := h.client("127.0.0.76").PostForm(h.url("/login"), url.Values{"user": {"boss@example.com"}, "pass": {"anything"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(b), "welcome") || len(resp.Cookies()) > 0 {
		t.Fatalf("a refused login the webmail took: %d %q cookies %v", resp.StatusCode, b, resp.Cookies())
	}
}
