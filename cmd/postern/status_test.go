package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/admin/admintest"
	"github.com/postern/postern/internal/service"
)

// fixedStatus is a status source that answers what it holds.
type fixedStatus struct{ st admin.Status }

func (f *fixedStatus) Status(context.Context) admin.Status { return f.st }

// startStatusAdmin serves the admin API with the fake engine and src on
// a unix socket; it returns the flags that point postern at it.
func startStatusAdmin(t *testing.T, src admin.StatusSource) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pss")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, tokenFile := filepath.Join(dir, "a.sock"), filepath.Join(dir, "token")
	token, err := admin.LoadOrCreateToken(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	eng := admintest.New(blocksNow)
	eng.Put(sampleBlocks()...)
	srv := admin.NewServer(eng, nil, token, nil, nil)
	if src != nil {
		srv.SetStatus(src)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, "unix:"+sock)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return []string{"--admin", "unix:" + sock, "--token-file", tokenFile}
}

func sampleStatus() admin.Status {
	started := blocksNow.Add(-(26*time.Hour + 3*time.Minute))
	wrote := blocksNow.Add(-time.Minute)
	return admin.Status{
		Version: "v1.4.0", Revision: "0123abc", GoVersion: "go1.26.0", Node: "gw1",
		Started: started, Uptime: int64(blocksNow.Sub(started).Seconds()),
		Config: admin.ConfigStatus{File: "/etc/postern/postern.yaml", Loaded: blocksNow.Add(-time.Hour)},
		LastReload: &admin.ReloadStatus{Time: blocksNow.Add(-time.Hour), OK: true, Applied: []string{"services.imap.backend"},
			Restart: []string{"node"}, Problems: []string{}, Count: 1},
		Services: []admin.ServiceStatus{
			{Name: "smtp", Listen: ":25", Bound: "[::]:25", Sessions: 3,
				Backends: []admin.BackendStatus{{Address: "127.0.0.1:10025", Reachable: true, DialMS: 0.25}}},
			{Name: "imap", Listen: ":143", Bound: "[::]:143", Sessions: 0,
				Backends: []admin.BackendStatus{{Address: "127.0.0.1:1143", Reachable: true, DialMS: 0.5}}},
			{Name: "web", Listen: ":443", Bound: "[::]:443", Sessions: 12,
				Backends: []admin.BackendStatus{{Address: "10.0.0.5:80", Reachable: true, DialMS: 1.5}, {Address: "10.0.0.6:80", Reachable: true, DialMS: 1}}},
		},
		Store: admin.StoreStatus{Path: "/var/lib/postern/postern.db", SizeBytes: 3 << 20, LastWrite: &wrote, LastWriteOK: true},
	}
}

// postern status prints the gateway's state for people, or its JSON, and
// exits 0 when all is well, 1 when something is down, 2 when postern
// cannot be asked.
func TestStatusCommand(t *testing.T) {
	src := &fixedStatus{st: sampleStatus()}
	flags := startStatusAdmin(t, src)

	code, out, errs := postern(t, append([]string{"status"}, flags...)...)
	want := `status       healthy
version      postern v1.4.0 (0123abc), go1.26.0
node         gw1
uptime       1d 2h 3m (since 2026-04-30 09:57)
config       /etc/postern/postern.yaml, loaded 2026-05-01 11:00
last reload  2026-05-01 11:00 applied: services.imap.backend; at the next restart: node
store        /var/lib/postern/postern.db, 3.0 MiB, last write 2026-05-01 11:59 ok
blocks       2 in force, 1 expired: L failed logins 1, U manual 1

SERVICE  LISTEN  BOUND     SESSIONS  BACKEND          STATE
smtp     :25     [::]:25   3         127.0.0.1:10025  up (0.2 ms)
imap     :143    [::]:143  0         127.0.0.1:1143   up (0.5 ms)
web      :443    [::]:443  12        10.0.0.5:80      up (1.5 ms)
                                     10.0.0.6:80      up (1.0 ms)
times UTC
`
	if code != 0 || out != want || errs != "" {
		t.Errorf("status: exit %d, stderr %q\n%s\nwant\n%s", code, errs, out, want)
	}

	// A backend down and a failed reload: exit 1, with the problems.
	st := sampleStatus()
	st.Services[1].Backends[0] = admin.BackendStatus{Address: "127.0.0.1:1143", DialMS: 0.1, Error: "connect: connection refused"}
	st.LastReload = &admin.ReloadStatus{Time: blocksNow.Add(-time.Minute), Error: "reload rejected, the running configuration stays: postern.yaml:3:1: unknown key \"bogus\"\x1b[2J", Count: 2}
	src.st = st
	code, out, _ = postern(t, append([]string{"status"}, flags...)...)
	for _, w := range []string{
		"status       NOT HEALTHY: 2 problems\n",
		"last reload  2026-05-01 11:59 FAILED (the running configuration stayed): reload rejected",
		"imap     :143    [::]:143  0         127.0.0.1:1143   DOWN: connect: connection refused\n",
		"problems:\n  service imap: backend 127.0.0.1:1143 unreachable: connect: connection refused\n  last configuration reload failed: ",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("status with problems lacks %q:\n%s", w, out)
		}
	}
	if code != exitNo || strings.Contains(out, "\x1b") {
		t.Errorf("status with problems: exit %d (want 1), or a control character printed:\n%q", code, out)
	}

	// --json: the API's answer, with the health the API judged.
	code, out, _ = postern(t, append([]string{"status", "--json"}, flags...)...)
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if code != exitNo || got["healthy"] != false || len(got["problems"].([]any)) != 2 || got["version"] != "v1.4.0" {
		t.Errorf("--json: exit %d\n%s", code, out)
	}
	blocks := got["blocks"].(map[string]any)
	if blocks["active"] != float64(2) || blocks["expired"] != float64(1) || len(blocks["by_reason"].([]any)) != 2 {
		t.Errorf("--json blocks: %v", blocks)
	}
	svc := got["services"].([]any)[1].(map[string]any)
	be := svc["backends"].([]any)[0].(map[string]any)
	if svc["name"] != "imap" || be["reachable"] != false || be["error"] != "connect: connection refused" {
		t.Errorf("--json service: %v", svc)
	}

	// Not reachable, a wrong token, a server without status: exit 2.
	code, _, errs = postern(t, "status", "--admin", "unix:"+filepath.Join(t.TempDir(), "none.sock"), "--token-file", flags[3])
	if code != exitError || !strings.Contains(errs, "cannot reach postern") {
		t.Errorf("no gateway: exit %d, %q", code, errs)
	}
	bad := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(bad, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = postern(t, "status", "--admin", flags[1], "--token-file", bad)
	if code != exitError || !strings.Contains(errs, "the token was refused") {
		t.Errorf("wrong token: exit %d, %q", code, errs)
	}
	noStatus := startStatusAdmin(t, nil)
	code, _, errs = postern(t, append([]string{"status"}, noStatus...)...)
	if code != exitError || !strings.Contains(errs, "status is not available") {
		t.Errorf("no status source: exit %d, %q", code, errs)
	}
}

// postern status against a running gateway: exit 1 while a backend is
// down, 0 once a reload points the service at one that is up.
func TestStatusOfRunningGateway(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	state := stateConfig(t, dir)
	writeFile(t, cfg, state+`services:
  imap: { listen: "127.0.0.1:0", backend: "`+downAddr+`" }
`)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := startGateway(ctx, cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, reload) }()

	// Until Run has put the services in service, status has none.
	var out, errs string
	code := -1
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, out, errs = postern(t, "status", "-c", cfg)
		if strings.Contains(out, "imap ") || time.Now().After(deadline) {
			break
		}
	}
	if code != exitNo || !strings.Contains(out, "DOWN: ") || !strings.Contains(out, "backend "+downAddr+" unreachable") {
		t.Errorf("a backend down: exit %d, stderr %q\n%s", code, errs, out)
	}
	if !strings.Contains(out, "imap     127.0.0.1:0  "+g.Addr(service.IMAP).String()+"  0  ") || !strings.Contains(out, "config       "+cfg+", loaded ") {
		t.Errorf("status lacks the service's bound address or the configuration file:\n%s", out)
	}

	writeFile(t, cfg, state+`services:
  imap: { listen: "127.0.0.1:0", backend: "`+up.Addr().String()+`" }
`)
	reload <- struct{}{}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, out, errs = postern(t, "status", "-c", cfg, "--json")
		if strings.Contains(out, `"ok": true`) || time.Now().After(deadline) {
			break
		}
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("--json: %v\n%s%s", err, out, errs)
	}
	if code != 0 || !st.Healthy || st.LastReload == nil || !st.LastReload.OK || len(st.Services) != 1 ||
		!st.Services[0].Backends[0].Reachable || st.Config.File != cfg {
		t.Errorf("after the fix: exit %d\n%s", code, out)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
