package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// liveGateway is the administration side of a running gateway, in
// process: the snapshot of cfg, a real engine on a real store, and the
// admin API on a unix socket, wired as serve wires them.
type liveGateway struct {
	cfg string
	eng *guard.Engine
}

// startLiveGateway writes conf (and the admin and store settings) to
// dir/postern.yaml and serves its admin API until the test ends.
func startLiveGateway(t *testing.T, dir, conf string) *liveGateway {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "pex")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "state", "admin.token")
	writeFile(t, cfg, conf+fmt.Sprintf("admin: { listen: \"unix:%s\", token_file: %s }\n", filepath.Join(sockDir, "a.sock"), tokenFile))
	ctx, cancel := context.WithCancel(context.Background())
	snap, err := snapshot.Load(ctx, cfg, time.Now())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(dir, "state", "postern.db"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	eng, err := guard.New(ctx, snap.Guard, guard.Options{Store: db})
	if err != nil {
		cancel()
		db.Close()
		t.Fatal(err)
	}
	token, err := admin.LoadOrCreateToken(tokenFile)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	holder := snapshot.NewHolder(snap)
	srv := admin.NewServer(eng, explain.Func(holder.Load, eng), token, nil, nil)
	ln, err := srv.Listen(ctx, "unix:"+filepath.Join(sockDir, "a.sock"))
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
		eng.Close()
		db.Close()
	})
	return &liveGateway{cfg: cfg, eng: eng}
}

// explainConf is the scenario's configuration with a bypass list.
const explainConf = scenario + `intrusion_prevention:
  bypass_file: bypass.txt
`

func explainDir(t *testing.T) string {
	t.Helper()
	dir := scenarioDir(t)
	writeFile(t, filepath.Join(dir, "bypass.txt"), "# the monitoring host\n175.136.9.9\n")
	return dir
}

// postern explain asks the running gateway: a block made through the API
// denies, the bypass list in force is shown, and --json prints the API's
// typed answer.
func TestExplainAsksTheRunningGateway(t *testing.T) {
	dir := explainDir(t)
	g := startLiveGateway(t, dir, explainConf)
	args := []string{"explain", "-c", g.cfg, "--ip", "175.136.1.1", "--service", "imap"}

	code, out, errs := postern(t, args...)
	if code != 0 || errs != "" || !strings.Contains(out, "blocks    none holds this address on the running gateway") ||
		!strings.HasPrefix(out, "source    the running gateway") ||
		!strings.Contains(out, "decision  allow") {
		t.Fatalf("before the block: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := postern(t, "blocks", "add", "-c", g.cfg, "175.136.1.0/24", "--for", "2h", "--comment", "scanner"); code != 0 {
		t.Fatalf("blocks add: %s", errs)
	}
	code, out, errs = postern(t, args...)
	if code != 1 || errs != "" || !strings.Contains(out, "block     175.136.1.0/24: U manual, until ") ||
		!strings.Contains(out, "refuses new connections") || !strings.Contains(out, "decision  deny") {
		t.Fatalf("blocked: exit %d\n%s%s", code, out, errs)
	}
	// The configuration alone does not know the block, and says so.
	code, out, errs = postern(t, append(args, "--offline")...)
	if code != 0 || !strings.Contains(errs, "explaining from the configuration alone: --offline") ||
		!strings.Contains(out, "blocks    not consulted") || !strings.Contains(out, "decision  allow") {
		t.Fatalf("--offline: exit %d\n%s%s", code, out, errs)
	}

	code, out, errs = postern(t, append(args, "--json")...)
	var a explain.Answer
	if err := json.Unmarshal([]byte(out), &a); err != nil || code != 1 {
		t.Fatalf("--json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	var blk *explain.Block
	for _, s := range a.Steps {
		if s.Kind == explain.KindBlock {
			blk = s.Block
		}
	}
	if a.Verdict != explain.Deny || a.Source != explain.SourceGateway || a.Note != "" || blk == nil ||
		blk.Reason != "U" || blk.Target != "175.136.1.0/24" || blk.By != "admin:"+osUser(t) || !blk.Refused {
		t.Errorf("--json answer %+v (block %+v)", a, blk)
	}

	// The bypass list the gateway runs with.
	code, out, _ = postern(t, "explain", "-c", g.cfg, "--ip", "175.136.9.9", "--service", "imap")
	if code != 0 || !strings.Contains(out, "bypass    on the bypass list") ||
		!strings.Contains(out, "item 175.136.9.9 at "+filepath.Join(dir, "bypass.txt")+":2:1") {
		t.Errorf("bypass: exit %d\n%s", code, out)
	}
	// A question the gateway cannot answer is an error, not a fallback.
	code, out, errs = postern(t, "explain", "-c", g.cfg, "--ip", "175.136.1.1", "--service", "pop3")
	if code != 2 || !strings.Contains(errs, `service "pop3" is not configured`) || strings.Contains(errs, "configuration alone") {
		t.Errorf("unconfigured service: exit %d\n%s%s", code, out, errs)
	}
}

// When the gateway cannot be reached, explain answers from the
// configuration and says so on stderr, in the text and in --json.
func TestExplainGatewayUnreachable(t *testing.T) {
	dir := explainDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	tokenFile := filepath.Join(dir, "admin.token")
	if _, err := admin.LoadOrCreateToken(tokenFile); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, explainConf+"admin: { listen: \"unix:"+sock+"\", token_file: "+tokenFile+" }\n")
	for _, c := range []struct {
		ip   string
		want int
	}{{"175.136.1.1", exitYes}, {"8.8.8.8", exitNo}} {
		code, out, errs := postern(t, "explain", "-c", cfg, "--ip", c.ip, "--service", "imap")
		if code != c.want || !strings.Contains(errs, "postern: explaining from the configuration alone: cannot reach postern at unix:"+sock) ||
			!strings.Contains(errs, "blocks in force on the running gateway are not shown") || !strings.Contains(out, "blocks    not consulted") {
			t.Errorf("%s: exit %d, want %d\n%s%s", c.ip, code, c.want, out, errs)
		}
	}
	code, out, _ := postern(t, "explain", "-c", cfg, "--ip", "8.8.8.8", "--service", "imap", "--json")
	var a explain.Answer
	if err := json.Unmarshal([]byte(out), &a); err != nil || code != exitNo {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if a.Source != explain.SourceConfiguration || !strings.Contains(a.Note, "cannot reach postern") || a.Verdict != explain.Deny {
		t.Errorf("--json answer %+v", a)
	}
	// An unreadable token is no reason to fail either.
	writeFile(t, cfg, explainConf+"admin: { listen: \"unix:"+sock+"\", token_file: "+filepath.Join(dir, "missing.token")+" }\n")
	code, out, errs := postern(t, "explain", "-c", cfg, "--ip", "175.136.1.1", "--service", "imap")
	if code != 0 || !strings.Contains(errs, "configuration alone") || !strings.Contains(errs, "missing.token") {
		t.Errorf("missing token: exit %d\n%s%s", code, out, errs)
	}
}

// Over the unix socket the audit log names the OS user, and records only
// what changed: removing what is not blocked is "not blocked", exit 1, and
// no row.
func TestAuditRecordsChangesWithTheUser(t *testing.T) {
	g := startLiveGateway(t, explainDir(t), explainConf)
	if code, _, errs := postern(t, "blocks", "add", "-c", g.cfg, "192.0.2.7"); code != 0 {
		t.Fatal(errs)
	}
	if code, _, errs := postern(t, "blocks", "remove", "-c", g.cfg, "192.0.2.7"); code != 0 {
		t.Fatal(errs)
	}
	code, out, errs := postern(t, "blocks", "remove", "-c", g.cfg, "192.0.2.7")
	if code != 1 || out != "" || errs != "postern: not blocked: 192.0.2.7\n" {
		t.Errorf("remove again: exit %d %q %q", code, out, errs)
	}
	if code, _, errs := postern(t, "blocks", "purge-expired", "-c", g.cfg); code != 0 {
		t.Fatal(errs)
	}
	code, out, errs = postern(t, "blocks", "audit", "-c", g.cfg, "--json")
	if code != 0 {
		t.Fatal(errs)
	}
	var got struct {
		Entries []admin.AuditEntry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rows []string
	for _, e := range got.Entries {
		rows = append(rows, e.Actor+" "+e.Action+" "+e.Target)
	}
	user := osUser(t)
	want := []string{user + " unblock 192.0.2.7/32", user + " block 192.0.2.7/32"} // newest first
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit rows:\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
}

// check and pattern test print JSON with --json, with the same exit
// statuses as their text.
func TestCheckAndPatternTestJSON(t *testing.T) {
	dir := explainDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, explainConf)
	code, out, errs := postern(t, "check", "-c", cfg, "--json")
	var ca checkAnswer
	if err := json.Unmarshal([]byte(out), &ca); err != nil || code != 0 {
		t.Fatalf("check --json: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if !ca.OK || len(ca.Errors) != 0 || len(ca.Patterns) != 2 || ca.Patterns[0].Name != "GeoIP_MY" || ca.Patterns[0].Networks == 0 ||
		len(ca.Services) != 2 || ca.Services[0].Name != "smtp" || ca.Services[1].Grant != "[GeoIP_MY];[GeoIP_SG]" ||
		ca.BypassFile != filepath.Join(dir, "bypass.txt") || len(ca.LoginRestrictions) != 1 {
		t.Errorf("check --json: %+v", ca)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "services:\n  imap: { listen: \":143\", backend: \"127.0.0.1:1\", grant: \"[Nope]\" }\n")
	code, out, _ = postern(t, "check", "-c", bad, "--json")
	ca = checkAnswer{}
	if err := json.Unmarshal([]byte(out), &ca); err != nil || code != 1 {
		t.Fatalf("check --json, bad: exit %d, %v\n%s", code, err, out)
	}
	if ca.OK || len(ca.Errors) != 1 || ca.Errors[0].Pos == nil || ca.Errors[0].Pos.File != bad || ca.Errors[0].Pos.Line != 2 ||
		!strings.Contains(ca.Errors[0].Message, "Nope") {
		t.Errorf("check --json, bad: %+v", ca)
	}

	for _, c := range []struct {
		addr string
		code int
		in   bool
	}{{"175.136.1.1", 0, true}, {"8.8.8.8", 1, false}} {
		code, out, errs = postern(t, "pattern", "test", "-c", cfg, "GeoIP_MY", c.addr, "--json")
		var pa patternAnswer
		if err := json.Unmarshal([]byte(out), &pa); err != nil || code != c.code {
			t.Fatalf("pattern test --json %s: exit %d, %v\n%s%s", c.addr, code, err, out, errs)
		}
		if pa.In != c.in || pa.Pattern != "[GeoIP_MY]" || pa.GeoIP == nil || (c.in && (len(pa.Items) != 1 || pa.Items[0].Text != "country:MY")) {
			t.Errorf("pattern test --json %s: %+v", c.addr, pa)
		}
	}
}
