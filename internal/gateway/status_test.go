package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/testenv"
)

// statusGateway runs a gateway from a configuration with the admin API on
// a unix socket; it returns the gateway, a client of its API, the
// configuration's path, the common head of the configuration, the log and
// the reload channel.
type statusRig struct {
	g      *Gateway
	client *admin.Client
	sock   string
	token  string
	cfg    string
	head   string
	logs   *syncBuffer
	reload chan struct{}
}

func startStatusRig(t *testing.T, body string) *statusRig {
	t.Helper()
	// A short directory: a unix socket path has a small limit.
	dir, err := os.MkdirTemp("", "pst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &statusRig{sock: filepath.Join(dir, "a.sock"), cfg: filepath.Join(dir, "postern.yaml"), logs: &syncBuffer{}, reload: make(chan struct{})}
	r.head = fmt.Sprintf("store: { path: %s }\nadmin: { listen: \"unix:%s\", token_file: %s }\nnode: gw-status\n",
		filepath.Join(dir, "postern.db"), r.sock, filepath.Join(dir, "admin.token"))
	writeConfig(t, r.cfg, r.head+body)
	ctx, cancel := context.WithCancel(context.Background())
	g, err := Start(ctx, r.cfg, Options{Log: r.logs, Drain: time.Second})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r.g = g
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, r.reload) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if r.token, err = admin.ReadToken(filepath.Join(dir, "admin.token")); err != nil {
		t.Fatal(err)
	}
	r.client = admin.NewClient("unix:"+r.sock, r.token)
	t.Cleanup(r.client.CloseIdleConnections)
	// The API answers once Run serves it; the services are in the
	// status once Run put them in service.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		g.status.mu.Lock()
		started := g.status.services != nil
		g.status.mu.Unlock()
		_, err := r.client.Health(context.Background())
		if err == nil && started {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the admin API does not answer: %v", err)
		}
	}
	return r
}

// status asks the API, with a deadline.
func (r *statusRig) status(t *testing.T) admin.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.client.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// raw asks GET /v1/status and decodes the answer as untyped JSON.
func (r *statusRig) raw(t *testing.T) map[string]any {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.sock)
		}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://postern/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/status: %d %s", resp.StatusCode, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, body)
	}
	return m
}

// waitReloads polls the status until it has counted n reloads.
func (r *statusRig) waitReloads(t *testing.T, n int) admin.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.status(t)
		if st.LastReload != nil && st.LastReload.Count >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload %d in the status: %+v\nlog:\n%s", n, st.LastReload, r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// GET /v1/status over the real admin socket of a running gateway: the
// services with the addresses actually bound, open sessions, one backend
// up and one down (so not healthy, saying which), the store, and the
// outcome of each reload.
func TestStatusOverAdminSocket(t *testing.T) {
	_, up := popBackend(t, "backend-up")
	down := testenv.RefusingAddr(t)
	r := startStatusRig(t, `services:
  pop3: { listen: "127.0.0.1:0", backend: "`+up+`", plaintext_login: "127.0.0.0/8" }
  imap: { listen: "127.0.0.1:0", backend: "`+down+`" }
`)
	// One POP3 session open on the gateway.
	live := dialPOP(t, r.g.Addr(service.POP3))
	live.login()

	st := r.status(t)
	if st.Healthy {
		t.Error("healthy with a backend down")
	}
	if st.Node != "gw-status" || st.Version == "" || st.GoVersion == "" || st.Started.IsZero() || st.Now.IsZero() {
		t.Errorf("process fields: %+v", st)
	}
	if st.Config.File != r.cfg || st.Config.Loaded.IsZero() || st.LastReload != nil {
		t.Errorf("config %+v, last reload %+v", st.Config, st.LastReload)
	}
	if len(st.Services) != 2 || st.Services[0].Name != "imap" || st.Services[1].Name != "pop3" {
		t.Fatalf("services: %+v", st.Services)
	}
	imap, pop := st.Services[0], st.Services[1]
	if imap.Bound != r.g.Addr(service.IMAP).String() || pop.Bound != r.g.Addr(service.POP3).String() || pop.Listen != "127.0.0.1:0" {
		t.Errorf("bound addresses: imap %q pop3 %q", imap.Bound, pop.Bound)
	}
	if len(pop.Backends) != 1 || !pop.Backends[0].Reachable || pop.Backends[0].Address != up {
		t.Errorf("pop3 backend: %+v", pop.Backends)
	}
	if len(imap.Backends) != 1 || imap.Backends[0].Reachable || !strings.Contains(imap.Backends[0].Error, "refused") {
		t.Errorf("imap backend: %+v", imap.Backends)
	}
	if pop.Sessions != 1 || imap.Sessions != 0 {
		t.Errorf("sessions: pop3 %d imap %d, want 1 and 0", pop.Sessions, imap.Sessions)
	}
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "service imap: backend "+down+" unreachable") {
		t.Errorf("problems: %q", st.Problems)
	}
	if st.Store.Path == "" || st.Store.SizeBytes == 0 || !st.Store.LastWriteOK {
		t.Errorf("store: %+v", st.Store)
	}
	if st.Blocks.Active != 0 || len(st.Blocks.ByReason) != 0 {
		t.Errorf("blocks: %+v", st.Blocks)
	}

	// A manual block shows under its reason, and the store's write.
	ctx := context.Background()
	if _, err := r.client.AddBlock(ctx, mustPrefix("192.0.2.0/24"), time.Hour, "status test", false); err != nil {
		t.Fatal(err)
	}
	st = r.status(t)
	if st.Blocks.Active != 1 || len(st.Blocks.ByReason) != 1 || st.Blocks.ByReason[0] != (admin.ReasonCount{Reason: "U", Name: "manual", Active: 1}) {
		t.Errorf("blocks after a manual block: %+v", st.Blocks)
	}
	if st.Store.LastWrite == nil || !st.Store.LastWriteOK {
		t.Errorf("store after a write: %+v", st.Store)
	}

	// The JSON as clients see it.
	m := r.raw(t)
	for _, k := range []string{"healthy", "problems", "version", "go_version", "node", "started", "uptime_seconds", "now",
		"config", "last_reload", "services", "blocks", "store"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status JSON lacks %q: %v", k, m)
		}
	}
	svc0 := m["services"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "listen", "bound", "sessions", "backends"} {
		if _, ok := svc0[k]; !ok {
			t.Errorf("service JSON lacks %q: %v", k, svc0)
		}
	}
	be0 := svc0["backends"].([]any)[0].(map[string]any)
	if be0["reachable"] != false || be0["address"] != down {
		t.Errorf("backend JSON: %v", be0)
	}
	if m["last_reload"] != nil {
		t.Errorf("last_reload before any reload: %v", m["last_reload"])
	}
	blocks := m["blocks"].(map[string]any)
	if blocks["active"] != float64(1) {
		t.Errorf("blocks JSON: %v", blocks)
	}

	// A reload that fails: the status says so, with why.
	writeConfig(t, r.cfg, r.head+"bogus_key: 1\n")
	r.reload <- struct{}{}
	st = r.waitReloads(t, 1)
	if st.LastReload.OK || !strings.Contains(st.LastReload.Error, "bogus_key") {
		t.Errorf("failed reload: %+v", st.LastReload)
	}
	if st.Healthy || !slices.ContainsFunc(st.Problems, func(p string) bool { return strings.HasPrefix(p, "last configuration reload failed: ") }) {
		t.Errorf("problems after a failed reload: %q", st.Problems)
	}

	// A reload that applies: the backend is now up, the keys changed are
	// named, and all is well.
	loaded := st.Config.Loaded
	writeConfig(t, r.cfg, r.head+`services:
  pop3: { listen: "127.0.0.1:0", backend: "`+up+`", plaintext_login: "127.0.0.0/8" }
  imap: { listen: "127.0.0.1:0", backend: "`+up+`" }
`)
	r.reload <- struct{}{}
	st = r.waitReloads(t, 2)
	if !st.LastReload.OK || st.LastReload.Error != "" || !slices.Contains(st.LastReload.Applied, "services.imap.backend") {
		t.Errorf("applied reload: %+v", st.LastReload)
	}
	if !st.Healthy || len(st.Problems) != 0 {
		t.Errorf("not healthy after the fix: %q", st.Problems)
	}
	if !st.Config.Loaded.After(loaded) {
		t.Errorf("load time %v not after %v", st.Config.Loaded, loaded)
	}
	if st.Services[0].Bound != r.g.Addr(service.IMAP).String() {
		t.Errorf("imap bound %q after the reload, listener at %s", st.Services[0].Bound, r.g.Addr(service.IMAP))
	}
}

// log.level follows a reload: lines below the level are dropped, and
// come back when a reload lowers it.
func TestLogLevelFollowsReload(t *testing.T) {
	_, up := popBackend(t, "backend-up")
	svc := `services:
  pop3: { listen: "127.0.0.1:0", backend: "` + up + `", plaintext_login: "127.0.0.0/8" }
`
	r := startStatusRig(t, "log: { level: warn }\n"+svc)
	login := func() {
		c := dialPOP(t, r.g.Addr(service.POP3))
		c.login()
		c.cmd("QUIT", "+OK")
	}
	login()
	// The login line is info: not written at warn. The gateway writes it
	// before it answers the client, so it would be there by now.
	if strings.Contains(r.logs.String(), "msg=login ") {
		t.Fatalf("an info line at level warn:\n%s", r.logs.String())
	}

	writeConfig(t, r.cfg, r.head+"log: { level: info }\n"+svc)
	r.reload <- struct{}{}
	r.waitReloads(t, 1)
	login()
	r.logs.waitLog(t, "msg=login ", 1)

	writeConfig(t, r.cfg, r.head+"log: { level: error }\n"+svc)
	r.reload <- struct{}{}
	r.waitReloads(t, 2)
	before := strings.Count(r.logs.String(), "msg=login ")
	login()
	if n := strings.Count(r.logs.String(), "msg=login "); n != before {
		t.Errorf("an info line at level error:\n%s", r.logs.String())
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// Backend dials take a place of the gateway's shared bound: while every
// place is taken no dial starts, and a request that ends first says its
// backends were not dialed.
func TestStatusDialsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	sem := make(chan struct{}, 1)
	got := dialAll(context.Background(), []string{addr}, sem)
	if r := got[addr]; !r.Reachable || r.Address != addr {
		t.Fatalf("with a free place: %+v", r)
	}
	sem <- struct{}{} // the one place taken
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got = dialAll(ctx, []string{addr, testenv.RefusingAddr(t)}, sem)
	for a, r := range got {
		if r.Reachable || !strings.HasPrefix(r.Error, "not dialed: context deadline exceeded") {
			t.Errorf("%s with no place free: %+v", a, r)
		}
	}
	if len(got) != 2 {
		t.Errorf("results: %v", got)
	}
}

// A service a reload could not move stays where it was, and the status
// says so (not healthy); a web service's backends are each dialed at the
// host and port of their URL.
func TestStatusServiceNotMoved(t *testing.T) {
	_, up := popBackend(t, "backend-up")
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	down := testenv.RefusingAddr(t)
	svcs := func(popListen string) string {
		return `services:
  pop3: { listen: "` + popListen + `", backend: "` + up + `", plaintext_login: "127.0.0.0/8" }
  web: { listen: "127.0.0.1:0", backends: ["http://` + web.Addr().String() + `/", "http://` + down + `"] }
`
	}
	r := startStatusRig(t, svcs("127.0.0.1:0"))
	st := r.status(t)
	if len(st.Services) != 2 || st.Services[1].Name != "web" || len(st.Services[1].Backends) != 2 {
		t.Fatalf("services: %+v", st.Services)
	}
	wb := st.Services[1].Backends
	if wb[0].Address != web.Addr().String() || !wb[0].Reachable || wb[1].Address != down || wb[1].Reachable {
		t.Errorf("web backends: %+v", wb)
	}
	old := r.g.Addr(service.POP3).String()

	writeConfig(t, r.cfg, r.head+svcs(taken.Addr().String()))
	r.reload <- struct{}{}
	st = r.waitReloads(t, 1)
	pop := st.Services[0]
	if !st.LastReload.OK || len(st.LastReload.Problems) != 1 || !strings.Contains(st.LastReload.Problems[0], "service pop3 stays on") {
		t.Errorf("reload: %+v", st.LastReload)
	}
	if pop.Bound != old || pop.Listen != taken.Addr().String() || !strings.HasPrefix(pop.Problem, "still on "+old) {
		t.Errorf("pop3 after a move that failed: %+v", pop)
	}
	if st.Healthy || !slices.Contains(st.Problems, "service pop3: "+pop.Problem) {
		t.Errorf("problems: %q", st.Problems)
	}
}

func TestWebBackendAddr(t *testing.T) {
	for in, want := range map[string]string{
		"http://10.0.0.5/":          "10.0.0.5:80",
		"https://mail.example.com":  "mail.example.com:443",
		"http://10.0.0.5:8080/rc/":  "10.0.0.5:8080",
		"https://[2001:db8::1]/":    "[2001:db8::1]:443",
		"http://[2001:db8::1]:81/x": "[2001:db8::1]:81",
	} {
		if got := webBackendAddr(in); got != want {
			t.Errorf("webBackendAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
