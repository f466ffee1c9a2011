package webproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
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

func timedPost(t *testing.T, h *harness, src, user, pass string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	code := post(h.client(src), h.url("/login"), user, pass)
	return code, time.Since(start)
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
		if _, err := c.PostForm(h.url("/login"), url.Values{"user": {"boss@example.com"}, "pass": {fmt.Sprint("right-", i)}}); err == nil {
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
