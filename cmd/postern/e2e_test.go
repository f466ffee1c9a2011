package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/gateway"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
)

// TestMain lets the test binary act as `postern serve` for the end-to-end
// tests: with POSTERN_TEST_CHILD=serve it runs the gateway on the
// configuration in POSTERN_TEST_CONFIG, optionally drives a scripted event
// session first (POSTERN_TEST_SCRIPT=1), prints "ready" and serves until
// killed.
func TestMain(m *testing.M) {
	if os.Getenv("POSTERN_TEST_CHILD") == "serve" {
		os.Exit(childServe())
	}
	os.Exit(m.Run())
}

func childServe() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	opts := gatewayOptions(os.Stderr)
	if w, err := time.ParseDuration(os.Getenv("POSTERN_TEST_PROCESSOR_WINDOW")); err == nil {
		opts.ProcessorWindow = w
	}
	g, err := gateway.Start(ctx, os.Getenv("POSTERN_TEST_CONFIG"), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	if os.Getenv("POSTERN_TEST_SCRIPT") == "1" {
		scriptedSession(g.Engine())
	}
	fmt.Println("ready")
	if err := g.Run(ctx, nil); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 4
	}
	return 0
}

// scriptedSession drives every automatic reason code once, each from its
// own address, exactly to its threshold (see e2eConfig).
func scriptedSession(e *guard.Engine) {
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }
	open := func(i int) *guard.Session { s, _ := e.Open(addr(i), service.SMTP, nil); return s }
	for range 3 {
		open(1) // I: 3 connections in a minute
	}
	s := open(2)
	s.LoginFailed("alice@example.test", e.PasswordFingerprint("alice@example.test", "guess-1"))
	s.LoginFailed("alice@example.test", e.PasswordFingerprint("alice@example.test", "guess-2")) // L
	s = open(3)
	s.UnknownRecipient("nobody1@example.test")
	s.UnknownRecipient("nobody2@example.test") // P
	s = open(4)
	s.RelayDenied("x@elsewhere.example")
	s.RelayDenied("y@elsewhere.example") // Y
	s = open(5)
	s.Rset()
	s.Rset()                                  // R
	open(6).SpamScore(9.3)                    // S
	open(7).DNSBLListed("zen.example.org")    // D
	open(8).MessageSize(4096)                 // M
	open(9).Recipient("trap@example.test")    // A
	open(10).ContentRule("casino-in-subject") // C
}

const e2eConfig = `services:
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
intrusion_prevention:
  block_minutes: 240
  smtp: { connections_per_minute: 3, failed_logins: 2, unknown_recipients: 2, relay_denials: 2,
          rset_count: 2, spam_score: 8.5, dnsbl: [zen.example.org], message_size: 1KB,
          tarpit_accounts: "trap@example.test", content_rules: true }
node: e2e-node
`

type child struct {
	cmd  *exec.Cmd
	done chan error
	logs *syncBuffer // its standard error: the log
}

// startChild runs the test binary as `postern serve` and waits for "ready".
func startChild(t *testing.T, cfg string, script bool, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POSTERN_TEST_CHILD=serve", "POSTERN_TEST_CONFIG="+cfg)
	cmd.Env = append(cmd.Env, env...)
	if script {
		cmd.Env = append(cmd.Env, "POSTERN_TEST_SCRIPT=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := new(syncBuffer)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), logs: logs}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if sc.Text() == "ready" && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		io.Copy(io.Discard, out)
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-c.done
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("postern serve exited before it was ready:\n%s", logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("postern serve not ready after 30s:\n%s", logs.String())
	}
	return c
}

func (c *child) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("postern serve did not exit")
		return nil
	}
}

type listedBlock struct {
	Target, Reason, Service, Detail, By, Comment, Node string
	Expires                                            *time.Time
	Hits                                               int64
}

func listBlocks(t *testing.T, cfg string, args ...string) map[string]listedBlock {
	t.Helper()
	code, out, errs := postern(t, append([]string{"blocks", "list", "-c", cfg, "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("blocks list: exit %d\n%s%s", code, out, errs)
	}
	var resp struct{ Blocks []listedBlock }
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("blocks list --json: %v\n%s", err, out)
	}
	m := make(map[string]listedBlock)
	for _, b := range resp.Blocks {
		m[b.Target] = b
	}
	return m
}

func reasons(m map[string]listedBlock) string {
	var rs []string
	for _, b := range m {
		rs = append(rs, b.Reason)
	}
	sort.Strings(rs)
	return strings.Join(rs, "")
}

// TestEndToEndBlocksSurviveSIGKILL is the "done when": a scripted
// session drives every reason code into the store, `postern blocks list`
// shows them with reasons and expiries, they survive SIGKILL and a restart
// (and are still enforced), and an administrator adds, removes, purges,
// exports and imports from the CLI.
func TestEndToEndBlocksSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts postern serve processes")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, e2eConfig+stateConfig(t, dir))

	c := startChild(t, cfg, true)
	blocks := listBlocks(t, cfg)
	if got := reasons(blocks); got != "ACDILMPRSY" {
		t.Fatalf("reasons after the scripted session: %q, want every automatic code\n%+v", got, blocks)
	}
	l := blocks["198.51.100.2"]
	if l.Reason != "L" || l.Detail != "account alice@example.test" || l.Service != "smtp" || l.By != "engine" || l.Node != "e2e-node" || l.Expires == nil ||
		time.Until(*l.Expires) < 239*time.Minute || time.Until(*l.Expires) > 241*time.Minute {
		t.Errorf("L block: %+v", l)
	}
	code, out, errs := postern(t, "blocks", "add", "-c", cfg, "203.0.113.0/24", "--for", "2h", "--comment", "scanner")
	if code != 0 {
		t.Fatalf("blocks add: %d\n%s%s", code, out, errs)
	}
	code, table, _ := postern(t, "blocks", "list", "-c", cfg)
	if code != 0 || !strings.Contains(table, "L failed logins") || !strings.Contains(table, "U manual") || !strings.Contains(table, "203.0.113.0/24") {
		t.Errorf("blocks list table:\n%s", table)
	}

	// SIGKILL: no chance to flush anything. Every block was stored before
	// it was reported, so all come back.
	if err := c.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("the child was killed; a nil exit status is wrong")
	}
	c = startChild(t, cfg, false)
	after := listBlocks(t, cfg)
	if got := reasons(after); got != "ACDILMPRSUY" {
		t.Fatalf("reasons after SIGKILL and restart: %q\n%+v", got, after)
	}
	for target, b := range blocks {
		if a := after[target]; a.Reason != b.Reason || a.Detail != b.Detail || !a.Expires.Equal(*b.Expires) {
			t.Errorf("%s changed across the restart: %+v -> %+v", target, b, a)
		}
	}
	// Still enforced: the running engine refuses the address.
	token, err := admin.ReadToken(filepath.Join(dir, "state", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	cl := admin.NewClient(adminListen(t, cfg), token)
	ex, err := cl.Explain(context.Background(), explain.Query{Addr: netip.MustParseAddr("198.51.100.2"), Service: "smtp"})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(ex.Steps, func(s explain.Step) bool { return s.Kind == explain.KindBlock }); ex.Verdict != explain.Deny || i < 0 || ex.Steps[i].Block.Reason != "L" {
		t.Fatalf("explain after restart: %+v", ex)
	}
	// postern explain asks the running process: the block counts.
	code, out, errs = postern(t, "explain", "-c", cfg, "--ip", "198.51.100.2", "--service", "smtp")
	if code != exitNo || errs != "" || !strings.Contains(out, "source    the running gateway") || !strings.Contains(out, "block     198.51.100.2: L failed logins") {
		t.Fatalf("postern explain after restart: exit %d\n%s%s", code, out, errs)
	}

	// Administration from the CLI against the real engine.
	exported := filepath.Join(dir, "blocks.json")
	if code, _, errs := postern(t, "blocks", "export", "-c", cfg, "--format", "json", "-o", exported); code != 0 {
		t.Fatalf("export: %s", errs)
	}
	if code, _, _ := postern(t, "blocks", "remove-all", "-c", cfg); code != 2 {
		t.Fatal("remove-all without --yes must refuse")
	}
	if code, _, errs := postern(t, "blocks", "remove-all", "-c", cfg, "--yes"); code != 0 {
		t.Fatalf("remove-all: %s", errs)
	}
	if n := len(listBlocks(t, cfg)); n != 0 {
		t.Fatalf("%d blocks after remove-all", n)
	}
	if code, _, errs := postern(t, "blocks", "import", "-c", cfg, exported); code != 0 {
		t.Fatalf("import: %s", errs)
	}
	if got := reasons(listBlocks(t, cfg)); got != "ACDILMPRSUY" {
		t.Fatalf("after import: %q", got)
	}
	if code, _, errs := postern(t, "blocks", "remove", "-c", cfg, "198.51.100.2"); code != 0 {
		t.Fatalf("remove: %s", errs)
	}
	if _, still := listBlocks(t, cfg)["198.51.100.2"]; still {
		t.Fatal("removed block still listed")
	}
	if code, out, _ := postern(t, "blocks", "purge-expired", "-c", cfg); code != 0 || !strings.Contains(out, "0") {
		t.Fatalf("purge-expired: %d %s", code, out)
	}
	if code, out, _ := postern(t, "blocks", "audit", "-c", cfg); code != 0 || !strings.Contains(out, "import") || !strings.Contains(out, "unblock-all") {
		t.Errorf("audit:\n%s", out)
	}
	if err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
}

// adminListen reads admin.listen back from the configuration file.
func adminListen(t *testing.T, cfg string) string {
	t.Helper()
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(data), `admin: { listen: "unix:`)
	l, _, _ := strings.Cut(rest, `"`)
	return "unix:" + l
}
