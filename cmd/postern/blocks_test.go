package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/admin/admintest"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

var blocksNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// adminServer is a running admin API with a fake engine, for the blocks
// commands.
type adminServer struct {
	eng       *admintest.Engine
	sock      string
	tokenFile string
	dir       string
	srv       *admin.Server
}

// flags are the command-line flags that point at the server.
func (s *adminServer) flags() []string {
	return []string{"--admin", "unix:" + s.sock, "--token-file", s.tokenFile}
}

func (s *adminServer) blocks(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return postern(t, append(append([]string{"blocks"}, args...), s.flags()...)...)
}

func startAdmin(t *testing.T) *adminServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "pb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &adminServer{eng: admintest.New(blocksNow), sock: filepath.Join(dir, "a.sock"), tokenFile: filepath.Join(dir, "token"), dir: dir}
	token, err := admin.LoadOrCreateToken(s.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(s.eng, nil, token, nil, nil)
	s.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, "unix:"+s.sock)
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
	return s
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func sampleBlocks() []store.Block {
	return []store.Block{
		{Prefix: pfx("203.0.113.7/32"), Reason: reason.Login, Service: "imap", Detail: "alice@example.com\x1b[31m",
			FirstSeen: blocksNow.Add(-2 * time.Hour), LastSeen: blocksNow.Add(-time.Hour), Hits: 5, Expires: blocksNow.Add(3 * time.Hour), Node: "gw1", By: "engine"},
		{Prefix: pfx("2001:db8:1::/64"), Reason: reason.UnknownRecipients, Service: "smtp", Detail: "bob",
			FirstSeen: blocksNow.Add(-48 * time.Hour), LastSeen: blocksNow.Add(-30 * time.Minute), Hits: 12, Expires: blocksNow.Add(-time.Hour), Node: "gw2", By: "engine"},
		{Prefix: pfx("198.51.100.0/24"), Reason: reason.Manual, Comment: "forever",
			FirstSeen: blocksNow.Add(-10 * time.Minute), LastSeen: blocksNow.Add(-10 * time.Minute), By: "admin:cli"},
	}
}

func TestBlocksList(t *testing.T) {
	s := startAdmin(t)
	s.eng.Put(sampleBlocks()...)
	code, out, errs := s.blocks(t, "list")
	want := `TARGET           REASON                SERVICE  DETAIL                  HITS  FIRST SEEN        LAST SEEN         EXPIRES                   BY         NODE
198.51.100.0/24  U manual              -        -                       0     2026-05-01 11:50  2026-05-01 11:50  never                     admin:cli  -
2001:db8:1::/64  P unknown recipients  smtp     bob                     12    2026-04-29 12:00  2026-05-01 11:30  2026-05-01 11:00 expired  engine     gw2
203.0.113.7      L failed logins       imap     alice@example.com?[31m  5     2026-05-01 10:00  2026-05-01 11:00  2026-05-01 15:00          engine     gw1
3 blocks, 1 expired; times UTC
`
	if code != 0 || out != want {
		t.Errorf("list: exit %d, stderr %q\n%s\nwant\n%s", code, errs, out, want)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--reason", "L"}, []string{"203.0.113.7"}},
		{[]string{"--reason", "failed logins"}, []string{"203.0.113.7"}},
		{[]string{"--service", "smtp"}, []string{"2001:db8:1::/64"}},
		{[]string{"--search", "198.51.100.9"}, []string{"198.51.100.0/24"}},
		{[]string{"--search", "2001:db8::/32"}, []string{"2001:db8:1::/64"}},
		{[]string{"--active"}, []string{"198.51.100.0/24", "203.0.113.7"}},
		{[]string{"--expired"}, []string{"2001:db8:1::/64"}},
		// Times: --since on last seen, --until on first seen, on the
		// server's clock (blocksNow), not this machine's.
		{[]string{"--since", "45m"}, []string{"198.51.100.0/24", "2001:db8:1::/64"}},
		{[]string{"--since", "2026-05-01T10:30:00Z"}, []string{"198.51.100.0/24", "2001:db8:1::/64", "203.0.113.7"}},
		{[]string{"--until", "1h"}, []string{"2001:db8:1::/64", "203.0.113.7"}},
		{[]string{"--since", "2h", "--until", "2026-05-01T11:00:00+00:00"}, []string{"2001:db8:1::/64", "203.0.113.7"}},
		{[]string{"--until", "2026-04-30"}, []string{"2001:db8:1::/64"}},
		{[]string{"--expires-before", "+4h"}, []string{"2001:db8:1::/64", "203.0.113.7"}},
		{[]string{"--expires-before", "0", "--reason", "P"}, []string{"2001:db8:1::/64"}},
	} {
		code, out, errs := s.blocks(t, append([]string{"list", "--json"}, tc.args...)...)
		var got struct{ Blocks []admin.Block }
		if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
			t.Errorf("list %v: exit %d, %v, %s %s", tc.args, code, err, out, errs)
			continue
		}
		var targets []string
		for _, b := range got.Blocks {
			targets = append(targets, b.Target)
		}
		if strings.Join(targets, " ") != strings.Join(tc.want, " ") {
			t.Errorf("list %v: %v, want %v", tc.args, targets, tc.want)
		}
	}
	code, out, errs = s.blocks(t, "list", "--since", "1h", "--until", "2h")
	if code != 2 || out != "" || !strings.Contains(errs, "since (2026-05-01T11:00:00Z) is after until (2026-05-01T10:00:00Z)") {
		t.Errorf("empty window: exit %d, %q %q", code, out, errs)
	}
	code, out, _ = s.blocks(t, "list", "--search", "10.0.0.0/8")
	if code != 0 || out != "no blocks\n" {
		t.Errorf("empty list: %d %q", code, out)
	}
}

func TestBlocksBadInputSendsNothing(t *testing.T) {
	s := startAdmin(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "203.0.113.300"}, `bad target "203.0.113.300"`},
		{[]string{"add", "10.1.2.3/8"}, "did you mean 10.0.0.0/8"},
		{[]string{"add", "203.0.113.7", "--for", "4 hours"}, `--for: bad duration "4 hours"`},
		{[]string{"add", "203.0.113.7", "--for", "-1h"}, "--for: bad duration"},
		{[]string{"add"}, "accepts 1 arg"},
		{[]string{"remove", "203.0.113.7", "nonsense"}, `bad target "nonsense"`},
		{[]string{"remove"}, "requires at least 1 arg"},
		{[]string{"list", "--reason", "Q"}, `--reason: unknown reason "Q"`},
		{[]string{"list", "--search", "x"}, `--search: bad target "x"`},
		{[]string{"list", "--active", "--expired"}, "active expired"},
		{[]string{"list", "--since", "yesterday"}, `--since: bad time "yesterday"`},
		{[]string{"list", "--until", "-2h"}, `--until: bad time "-2h"`},
		{[]string{"list", "--expires-before", "2026-05-01 12:00"}, `--expires-before: bad time "2026-05-01 12:00": want RFC 3339`},
		{[]string{"remove-all"}, "add --yes"},
		{[]string{"export", "--format", "xml"}, `--format "xml"`},
		{[]string{"import", "blocks.txt"}, "use --format csv"},
		{[]string{"import", "missing.csv"}, "missing.csv"},
		{[]string{"audit", "--since", "last week"}, `--since "last week"`},
		{[]string{"audit", "--limit", "-1"}, "--limit -1"},
		{[]string{"frobnicate"}, "unknown command"},
	} {
		code, out, errs := s.blocks(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errs, tc.want)
		}
	}
	if n := s.eng.Calls(); n != 0 {
		t.Errorf("bad input reached the engine %d times", n)
	}
}

func TestBlocksAddRemove(t *testing.T) {
	s := startAdmin(t)
	code, out, errs := s.blocks(t, "add", "203.0.113.9", "--for", "7d", "--comment", "scanner")
	if code != 0 || out != "blocked 203.0.113.9 until 2026-05-08 12:00 UTC\n" {
		t.Errorf("add: %d %q %q", code, out, errs)
	}
	b, ok := s.eng.Get(pfx("203.0.113.9/32"))
	if !ok || b.Reason != reason.Manual || b.Comment != "scanner" || b.By != "admin:"+osUser(t) {
		t.Errorf("block %+v", b)
	}
	if code, out, _ := s.blocks(t, "add", "2001:db8:9::/48"); code != 0 || out != "blocked 2001:db8:9::/48 until 2026-05-01 16:00 UTC\n" {
		t.Errorf("add with the default time: %d %q", code, out)
	}
	code, out, errs = s.blocks(t, "remove", "203.0.113.9", "2001:db8:9::/48", "192.0.2.1")
	if code != 0 || out != "removed 2 blocks\n" {
		t.Errorf("remove: %d %q %q", code, out, errs)
	}
	code, out, errs = s.blocks(t, "remove", "203.0.113.9")
	if code != 1 || out != "" || errs != "postern: not blocked: 203.0.113.9\n" {
		t.Errorf("remove again: %d %q %q", code, out, errs)
	}
	log := s.eng.AuditLog()
	if len(log) != 4 || log[0].Actor != osUser(t) {
		t.Errorf("audit %+v", log)
	}
}

func TestBlocksSelfLockoutOverTCP(t *testing.T) {
	s := startAdmin(t)
	token, err := admin.ReadToken(s.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(s.eng, nil, token, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, "tcp:127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	defer func() { cancel(); <-done }()
	tcp := []string{"--admin", "tcp:" + ln.Addr().String(), "--token-file", s.tokenFile}
	code, out, errs := postern(t, append([]string{"blocks", "add", "127.0.0.0/8"}, tcp...)...)
	if code != 1 || out != "" || !strings.Contains(errs, "this would block your own address") || !strings.Contains(errs, "--force") {
		t.Errorf("own network: %d %q %q", code, out, errs)
	}
	code, out, errs = postern(t, append([]string{"blocks", "add", "127.0.0.0/8", "--force"}, tcp...)...)
	if code != 0 || !strings.HasPrefix(out, "blocked 127.0.0.0/8") {
		t.Errorf("forced: %d %q %q", code, out, errs)
	}
	if log := s.eng.AuditLog(); len(log) != 1 || log[0].Actor != admin.ActorTCP {
		t.Errorf("audit %+v", log)
	}
}

func TestBlocksPurgeAndRemoveAll(t *testing.T) {
	s := startAdmin(t)
	s.eng.Put(sampleBlocks()...)
	if code, out, _ := s.blocks(t, "purge-expired"); code != 0 || out != "purged 1 expired block\n" {
		t.Errorf("purge: %d %q", code, out)
	}
	code, _, errs := s.blocks(t, "remove-all")
	if code != 2 || !strings.Contains(errs, "--yes") || s.eng.Len() != 2 {
		t.Errorf("remove-all without --yes: %d %q, %d blocks left", code, errs, s.eng.Len())
	}
	if code, out, _ := s.blocks(t, "remove-all", "--yes"); code != 0 || out != "removed 2 blocks\n" || s.eng.Len() != 0 {
		t.Errorf("remove-all --yes: %d %q", code, out)
	}
}

func TestBlocksExportImport(t *testing.T) {
	s := startAdmin(t)
	s.eng.Put(sampleBlocks()...)
	code, csvOut, errs := s.blocks(t, "export")
	if code != 0 || !strings.HasPrefix(csvOut, admin.CSVHeader+"\n198.51.100.0/24,U,") {
		t.Fatalf("export: %d %q\n%s", code, errs, csvOut)
	}
	jsonFile := filepath.Join(s.dir, "blocks.json")
	if code, _, errs := s.blocks(t, "export", "-o", jsonFile); code != 0 {
		t.Fatalf("export -o: %d %q", code, errs)
	}
	data, err := os.ReadFile(jsonFile)
	if err != nil || !strings.HasPrefix(string(data), `{"blocks":[{"target":"198.51.100.0/24"`) {
		t.Fatalf("JSON export (from the extension): %s %v", data, err)
	}
	if fi, _ := os.Stat(jsonFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v", fi.Mode())
	}
	csvFile := filepath.Join(s.dir, "blocks.csv")
	if err := os.WriteFile(csvFile, []byte(csvOut), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{csvFile, jsonFile} {
		s.eng.UnblockAll(context.Background(), "test")
		code, out, errs := s.blocks(t, "import", file)
		if code != 0 || out != "imported 3 blocks\n" {
			t.Errorf("import %s: %d %q %q", file, code, out, errs)
		}
		if _, again, _ := s.blocks(t, "export"); again != csvOut {
			t.Errorf("round trip through %s:\n%s\nwant\n%s", file, again, csvOut)
		}
	}
	// A bad line: the server's message names it, nothing is imported.
	bad := filepath.Join(s.dir, "bad.csv")
	os.WriteFile(bad, []byte(admin.CSVHeader+"\n10.0.0.1,L,,,,,0,,,,,0\n10.0.0.2,L,,,,,many,,,,,0\n"), 0o600)
	before := s.eng.Len()
	code, out, errs := s.blocks(t, "import", bad)
	if code != 2 || out != "" || errs != "postern: line 3: hits: bad number \"many\"\n" || s.eng.Len() != before {
		t.Errorf("bad import: %d %q %q", code, out, errs)
	}
	// Standard input needs --format.
	code, _, errs = s.blocks(t, "import", "-")
	if code != 2 || !strings.Contains(errs, "--format") {
		t.Errorf("stdin without --format: %d %q", code, errs)
	}
}

func TestBlocksAudit(t *testing.T) {
	s := startAdmin(t)
	s.blocks(t, "add", "203.0.113.9", "--comment", "x")
	code, out, errs := s.blocks(t, "audit", "--since", "2026-05-01T00:00:00Z", "--limit", "5")
	// The actor is the OS user at the other end of the unix socket.
	actor := osUser(t)
	w := max(len("ACTOR"), len(actor))
	want := fmt.Sprintf("TIME                 %-*s  ACTION  TARGET          DETAIL\n2026-05-01 12:00:00  %-*s  block   203.0.113.9/32  for 4h0m0s: x\n", w, "ACTOR", w, actor)
	if code != 0 || out != want {
		t.Errorf("audit: %d %q\n%s\nwant\n%s", code, errs, out, want)
	}
	if code, out, _ := s.blocks(t, "audit", "--since", "2026-05-02T00:00:00Z"); code != 0 || out != "no entries\n" {
		t.Errorf("audit, nothing since: %d %q", code, out)
	}
	if code, out, _ := s.blocks(t, "audit", "--json"); code != 0 || !strings.Contains(out, `"action": "block"`) {
		t.Errorf("audit --json: %d %q", code, out)
	}
}

func TestBlocksServerNotRunning(t *testing.T) {
	s := startAdmin(t)
	gone := filepath.Join(s.dir, "gone.sock")
	code, out, errs := postern(t, "blocks", "list", "--admin", "unix:"+gone, "--token-file", s.tokenFile)
	if code != 2 || out != "" || !strings.Contains(errs, gone) || !strings.Contains(errs, "is postern serve running?") {
		t.Errorf("no server: %d %q %q", code, out, errs)
	}
	// A missing token file is named too.
	code, _, errs = postern(t, "blocks", "list", "--admin", "unix:"+s.sock, "--token-file", filepath.Join(s.dir, "none"))
	if code != 2 || !strings.Contains(errs, "does not exist") {
		t.Errorf("no token file: %d %q", code, errs)
	}
	// A wrong token: the server refuses, exit 2 with a hint.
	wrong := filepath.Join(s.dir, "wrong")
	os.WriteFile(wrong, []byte("0000000000000000000000000000"), 0o600)
	code, _, errs = postern(t, "blocks", "list", "--admin", "unix:"+s.sock, "--token-file", wrong)
	if code != 2 || !strings.Contains(errs, "unauthorized") || !strings.Contains(errs, "--token-file") {
		t.Errorf("wrong token: %d %q", code, errs)
	}
}

func TestBlocksReadsTheConfig(t *testing.T) {
	s := startAdmin(t)
	s.eng.Put(sampleBlocks()[0])
	cfg := filepath.Join(s.dir, "postern.yaml")
	// Relative paths in the configuration are relative to its directory.
	writeFile(t, cfg, "admin:\n  listen: unix:a.sock\n  token_file: token\n")
	code, out, errs := postern(t, "blocks", "list", "-c", cfg)
	if code != 0 || !strings.Contains(out, "203.0.113.7") {
		t.Errorf("list -c: %d %q %q", code, out, errs)
	}
	writeFile(t, cfg, "admin:\n  listen: unix:a.sock\n  tokenfile: token\n")
	code, _, errs = postern(t, "blocks", "list", "-c", cfg)
	if code != 2 || !strings.Contains(errs, "tokenfile") {
		t.Errorf("bad config: %d %q", code, errs)
	}
	code, _, errs = postern(t, "blocks", "list", "-c", filepath.Join(s.dir, "missing.yaml"))
	if code != 2 || !strings.Contains(errs, "missing.yaml") {
		t.Errorf("missing config: %d %q", code, errs)
	}
}

func TestBlocksHelpDocumentsExitStatus(t *testing.T) {
	code, out, _ := postern(t, "blocks", "--help")
	for _, want := range []string{"Exit status: 0 done; 1 not found or refused", "list", "add", "remove-all", "export", "import", "audit", "--admin", "--token-file", "--config"} {
		if !strings.Contains(out, want) {
			t.Errorf("blocks --help lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
}

// osUser is the actor the admin API records for this process over the
// unix socket: its user's name from the peer credentials.
func osUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil || u.Username == "" {
		return "uid " + strconv.Itoa(os.Getuid())
	}
	return u.Username
}
