package webproxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
)

const guardWebCfg = `services:
  web:
    listen: ":443"
    backend: "http://127.0.0.1:1"
    login_forms:
      - { path: /login, user_field: user, password_field: pass, fail_status: 401 }
intrusion_prevention:
  web: { failed_logins: 5 }
`

// post sends a login form on client c and returns the status (0 when the
// gateway closed the connection instead of answering).
func post(c *http.Client, u, user, pass string) int {
	resp, err := c.PostForm(u, url.Values{"user": {user}, "pass": {pass}})
	if err != nil {
		return 0
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestConcurrentWrongWebLoginsOneConnection: ten wrong logins at once over
// one HTTP/2 connection, failed_logins 5: exactly five reach the backend.
func TestConcurrentWrongWebLoginsOneConnection(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: guardWebCfg, tls: true})
	c := h.client("127.0.0.61")
	resp, err := c.Get(h.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("want HTTP/2, got %s", resp.Proto)
	}
	release := h.be.logins.Hold()
	codes := make(chan int, 10)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { codes <- post(c, h.url("/login"), "alice@example.com", fmt.Sprintf("wrong%d", i)) })
	}
	h.be.logins.Wait(t, 5)
	close(release)
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for code := range codes {
		got[code]++
	}
	if n := h.be.logins.Count(); n != 5 {
		t.Fatalf("%d logins reached the backend, want 5 (answers %v)", n, got)
	}
	if got[http.StatusOK]+got[http.StatusFound] != 0 || got[http.StatusUnauthorized] > 5 {
		t.Fatalf("answers %v", got)
	}
	if ok, reason := h.blocked("127.0.0.61"); !ok || reason != "L" {
		t.Fatalf("blocked %v %q", ok, reason)
	}
}

// TestBlockReachesOpenWebConnections: twenty keep-alive connections opened
// before the block, with refuse_blocked off (requests from a blocked
// address are otherwise let through): no login reaches the backend after
// the block, the right password included.
func TestBlockReachesOpenWebConnections(t *testing.T) {
	cfg := strings.Replace(guardWebCfg, "intrusion_prevention:", "intrusion_prevention:\n  refuse_blocked: false\n  close_blocked_connection: false", 1)
	h := newHarness(t, harnessOpts{cfg: cfg})
	var cs []*http.Client
	for range 20 {
		c := h.client("127.0.0.62")
		if code, _ := getWith(t, c, h.url("/")); code != 200 {
			t.Fatalf("GET: %d", code)
		}
		cs = append(cs, c)
	}
	for i := range 5 {
		if code := post(cs[i], h.url("/login"), "alice@example.com", fmt.Sprintf("wrong%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	for i, c := range cs[5:] {
		if code := post(c, h.url("/login"), "alice@example.com", "right-password"); code != http.StatusForbidden {
			t.Fatalf("connection %d after the block: %d", i+5, code)
		}
	}
	if n := h.be.logins.Count(); n != 5 {
		t.Fatalf("%d logins reached the backend, want 5", n)
	}
}

// TestParallelRightWebLogins: five right logins at once over one HTTP/2
// connection are at the backend together: none waits.
func TestParallelRightWebLogins(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: guardWebCfg, tls: true})
	c := h.client("127.0.0.63")
	getWith(t, c, h.url("/"))
	release := h.be.logins.Hold()
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if code := post(c, h.url("/login"), "alice@example.com", "right-password"); code != http.StatusFound {
				t.Errorf("login %d: %d", i, code)
			}
		})
	}
	h.be.logins.Wait(t, 5)
	close(release)
	wg.Wait()
}

func getWith(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUnansweredWebLoginCounts: a login request the backend took but never
// answered counts as a failure: the backend may have checked the password.
func TestUnansweredWebLoginCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 4096)) // the request, then hang up
			c.Close()
		}
	})
	cfg := strings.Replace(guardWebCfg, "failed_logins: 5", "failed_logins: 1", 1)
	h := newHarness(t, harnessOpts{cfg: cfg, backends: []*url.URL{{Scheme: "http", Host: ln.Addr().String()}}})
	if code := post(h.client("127.0.0.64"), h.url("/login"), "alice@example.com", "guess"); code != http.StatusBadGateway {
		t.Fatalf("status %d", code)
	}
	if ok, reason := h.blocked("127.0.0.64"); !ok || reason != "L" {
		t.Fatalf("the unanswered login was not counted: %v %q", ok, reason)
	}
}

// TestQuietHTTPSRefusals: a refused client gets the 403 page over HTTPS for
// its first few connections in a minute; later connections are closed
// before the TLS handshake.
func TestQuietHTTPSRefusals(t *testing.T) {
	h := newHarness(t, harnessOpts{tls: true})
	for i := range guard.AnsweredRefusals {
		c := h.client("127.0.0.66")
		resp, err := c.Get(h.url("/"))
		if err != nil {
			t.Fatalf("refusal %d: %v", i+1, err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("refusal %d: status %d", i+1, resp.StatusCode)
		}
	}
	if resp, err := h.client("127.0.0.66").Get(h.url("/")); err == nil {
		resp.Body.Close()
		t.Fatalf("a refusal beyond the budget completed a TLS handshake: %d", resp.StatusCode)
	}
	if code, _ := h.get("127.0.0.1", "/"); code != http.StatusOK {
		t.Fatalf("another client: %d", code)
	}
}
