package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/pop3mem"
	"github.com/postern/postern/internal/service"
)

// syncBuffer is a log written by the gateway and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLog waits until the log holds want n times.
func (s *syncBuffer) waitLog(t *testing.T, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(s.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log has %q %d times, want %d:\n%s", want, strings.Count(s.String(), want), n, s.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// popBackend starts an in-memory POP3 server that wants a PROXY header.
func popBackend(t *testing.T, name string) (*pop3mem.Server, string) {
	t.Helper()
	be := pop3mem.New(pop3mem.Options{Hostname: name, RequireProxyHeader: true, AllowPlaintextAuth: true})
	be.AddUser("alice@example.test", "alice-pass-1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(ln)
	t.Cleanup(func() { be.Close() })
	return be, ln.Addr().String()
}

type popClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialPOP(t *testing.T, addr net.Addr) *popClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &popClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (p *popClient) line() string {
	p.t.Helper()
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func (p *popClient) cmd(line, want string) string {
	p.t.Helper()
	fmt.Fprintf(p.c, "%s\r\n", line)
	got := p.line()
	if !strings.HasPrefix(got, want) {
		p.t.Fatalf("%s: got %q, want %q…", line, got, want)
	}
	return got
}

func (p *popClient) login() {
	p.t.Helper()
	if g := p.line(); !strings.HasPrefix(g, "+OK") {
		p.t.Fatalf("greeting %q", g)
	}
	p.cmd("USER alice@example.test", "+OK")
	p.cmd("PASS alice-pass-1", "+OK")
}

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A SIGHUP reload applies every class of setting to a gateway under live
// traffic: the backend, the listen address, connection limits, protocol
// timeouts, a service added and removed, the log level and the admin
// grant. A session open across the reload goes on with the configuration
// it started with; keys that need a restart are named; a configuration
// that does not build changes nothing.
func TestReloadAppliesEverything(t *testing.T) {
	beA, addrA := popBackend(t, "backend-a")
	beB, addrB := popBackend(t, "backend-b")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "webmail here") }))
	defer web.Close()

	dir := t.TempDir()
	state := fmt.Sprintf("store: { path: %s }\nadmin: { listen: \"tcp:127.0.0.1:0\", token_file: %s }\n",
		filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"))
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, state+`node: gw1
log: { level: info }
services:
  pop3: { listen: "127.0.0.1:0", backend: "`+addrA+`", plaintext_login: "127.0.0.0/8" }
`)
	var logs syncBuffer
	g, reload := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second}) // Run must end without error
	logs.waitLog(t, "listening", 1)
	oldAddr := g.Addr(service.POP3)

	// A session logged in to backend A before the reload.
	live := dialPOP(t, oldAddr)
	live.login()
	live.cmd("STAT", "+OK")

	writeConfig(t, cfg, state+`node: gw2
log: { level: debug }
admin_unused: x
`)
	reload <- struct{}{}
	logs.waitLog(t, "configuration reload failed", 1)
	if g.Addr(service.POP3).String() != oldAddr.String() {
		t.Fatal("a rejected reload moved the service")
	}

	writeConfig(t, cfg, strings.Replace(state, "admin: {", "admin: { grant: \"192.0.2.1\",", 1)+`node: gw2
log: { level: debug }
services:
  pop3:
    listen: "127.0.0.2:0"
    backend: "`+addrB+`"
    plaintext_login: "127.0.0.0/8"
    max_connections_per_address: 1
    timeouts: { command: 300ms }
  web: { listen: "127.0.0.1:0", backend: "`+web.URL+`" }
`)
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 1)
	log := logs.String()
	for _, want := range []string{
		"services.pop3.listen", "services.pop3.backend", "services.pop3.max_connections_per_address",
		"services.pop3.timeouts.command", "services.web", "log.level", "admin.grant",
		"these settings take effect at the next restart", "keys=[node]",
		"service moved", "listening service=web",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("reload log lacks %q:\n%s", want, log)
		}
	}

	// The session from before the reload goes on, on backend A.
	live.cmd("STAT", "+OK")
	live.cmd("NOOP", "+OK")

	// The old address accepts no more.
	if c, err := net.DialTimeout("tcp", oldAddr.String(), time.Second); err == nil {
		c.Close()
		t.Errorf("the old listen address %s still accepts", oldAddr)
	}
	// New sessions reach backend B at the new address.
	newAddr := g.Addr(service.POP3)
	if !strings.HasPrefix(newAddr.String(), "127.0.0.2:") {
		t.Fatalf("pop3 listens on %s after the reload", newAddr)
	}
	c2 := dialPOP(t, newAddr)
	c2.login()
	if n := len(beB.Logins()); n != 1 {
		t.Errorf("backend B saw %d logins, want 1", n)
	}
	if n := len(beA.Logins()); n != 1 {
		t.Errorf("backend A saw %d logins, want the one from before the reload", n)
	}
	// The per-address limit is now 1.
	c3 := dialPOP(t, newAddr)
	if got := c3.line(); !strings.Contains(got, "Too many connections") {
		t.Errorf("second connection from one address: %q, want a refusal", got)
	}
	logs.waitLog(t, "connection over limit", 1) // a debug line: the level applied
	c2.cmd("QUIT", "+OK")
	c2.c.Close()

	// The new pre-login idle timeout (300ms) ends a silent client.
	var c4 *popClient
	deadline := time.Now().Add(5 * time.Second)
	for {
		c4 = dialPOP(t, newAddr)
		if l := c4.line(); strings.HasPrefix(l, "+OK") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no greeting at the new address")
		}
	}
	begin := time.Now()
	if l, err := c4.r.ReadString('\n'); err == nil && !strings.Contains(l, "inactivity") {
		t.Errorf("a silent client got %q, want the inactivity notice", l)
	}
	if _, err := c4.r.ReadString('\n'); err == nil {
		t.Error("a silent client was not dropped")
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("silent client dropped after %v, want about 300ms", d)
	}

	// The added web service answers.
	resp, err := http.Get("http://" + g.Addr(service.Web).String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "webmail here" {
		t.Errorf("web answer %q", body)
	}
	// The admin grant applied: 127.0.0.1 may no longer reach the API over TCP.
	if (*g.grant.Load())(netip.MustParseAddr("127.0.0.1")) || !(*g.grant.Load())(netip.MustParseAddr("192.0.2.1")) {
		t.Error("the admin grant was not applied")
	}

	// Removing the web service closes its listener.
	webAddr := g.Addr(service.Web)
	writeConfig(t, cfg, state+`node: gw2
services:
  pop3: { listen: "127.0.0.2:0", backend: "`+addrB+`", plaintext_login: "127.0.0.0/8" }
`)
	reload <- struct{}{}
	logs.waitLog(t, "service removed", 1)
	if c, err := net.DialTimeout("tcp", webAddr.String(), time.Second); err == nil {
		c.Close()
		t.Errorf("the removed web service still accepts on %s", webAddr)
	}
	live.cmd("STAT", "+OK") // still there after two reloads
}
