package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/postern/postern/internal/tlsconf"
)

// postern runs the command line in-process and returns its exit status and
// output.
func postern(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeMMDB writes a country database in the ip-location-db layout
// ({"country_code": "MY"}) holding the given networks.
func writeMMDB(t *testing.T, path string, nets map[string]string) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "country ipvAll", RecordSize: 24, BuildEpoch: time.Now().Unix()}) // fresh: check warns about data over 30 days old
	if err != nil {
		t.Fatal(err)
	}
	for cidr, cc := range nets {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, mmdbtype.Map{"country_code": mmdbtype.String(cc)}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// scenario is the first configuration of a new user: Malaysia by country
// from a database, Singapore from a zone file, IMAP granted to both, and
// every login restricted to both.
const scenario = `geoip:
  databases:
    - path: country.mmdb
patterns:
  GeoIP_MY: "country:MY"
  GeoIP_SG: "{sg.zone}"
services:
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", grant: "[GeoIP_MY];[GeoIP_SG]", tls: { cert: cert.pem, key: key.pem } }
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
login_restrictions:
  - "*=[GeoIP_MY];[GeoIP_SG]"
`

func scenarioDir(t *testing.T) string {
	dir := t.TempDir()
	writeMMDB(t, filepath.Join(dir, "country.mmdb"), map[string]string{
		"175.136.0.0/15": "MY", "2001:e68::/32": "MY", "8.8.8.0/24": "US", "165.21.0.0/16": "SG",
	})
	writeFile(t, filepath.Join(dir, "sg.zone"), "# Singapore\n165.21.0.0/16\n118.189.0.0/16\n")
	writeFile(t, filepath.Join(dir, "postern.yaml"), scenario)
	if _, _, err := tlsconf.SelfSigned(dir, []string{"mail.example.com"}, 24*time.Hour*30); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestScenarioMalaysiaSingapore(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")

	code, out, errs := postern(t, "check", "-c", cfg)
	if code != 0 || !strings.Contains(out, ": ok") || !strings.Contains(out, "[GeoIP_MY]") {
		t.Fatalf("check: %d\n%s\n%s", code, out, errs)
	}

	code, out, _ = postern(t, "pattern", "test", "-c", cfg, "GeoIP_MY", "175.137.1.1")
	if code != 0 || !strings.Contains(out, "175.137.1.1 is in [GeoIP_MY]") || !strings.Contains(out, "item country:MY at "+cfg+":5:14") {
		t.Fatalf("pattern test MY: %d\n%s", code, out)
	}
	code, out, _ = postern(t, "pattern", "test", "-c", cfg, "[GeoIP_SG]", "118.189.200.1")
	if code != 0 || !strings.Contains(out, "item 118.189.0.0/16 at "+filepath.Join(dir, "sg.zone")+":3:1") {
		t.Fatalf("pattern test SG: %d\n%s", code, out)
	}
	code, out, _ = postern(t, "pattern", "test", "-c", cfg, "GeoIP_MY", "8.8.8.8")
	if code != 1 || !strings.Contains(out, "not in [GeoIP_MY]: no item matches") || !strings.Contains(out, "geoip: 8.8.8.8 is in US") {
		t.Fatalf("pattern test US: %d\n%s", code, out)
	}
	code, out, _ = postern(t, "pattern", "test", "-c", cfg, "GeoIP_MY", "2001:e68:1::1")
	if code != 0 {
		t.Fatalf("pattern test MY IPv6: %d\n%s", code, out)
	}

	for _, c := range []struct {
		ip, account string
		want        int
		wantOut     string
	}{
		{"175.137.1.1", "alice@example.com", 0, "decision  allow"},
		{"118.189.0.9", "bob@example.com", 0, "decision  allow"},
		{"8.8.8.8", "", 1, "does not grant"},
		{"8.8.8.8", "alice@example.com", 1, "login *"},
	} {
		args := []string{"explain", "-c", cfg, "--ip", c.ip, "--service", "imap"}
		if c.account != "" {
			args = append(args, "--account", c.account)
		}
		code, out, errs := postern(t, args...)
		if code != c.want || !strings.Contains(out, c.wantOut) {
			t.Errorf("explain %s %s: exit %d, want %d; output:\n%s%s", c.ip, c.account, code, c.want, out, errs)
		}
	}
	// SMTP is open to everyone, but the login restriction still applies to AUTH.
	code, out, _ = postern(t, "explain", "-c", cfg, "--ip", "8.8.8.8", "--service", "smtp", "--account", "alice@example.com")
	if code != 1 || !strings.Contains(out, "every address may connect") || !strings.Contains(out, "refuses") {
		t.Errorf("explain smtp: %d\n%s", code, out)
	}
	code, out, _ = postern(t, "explain", "-c", cfg, "--ip", "8.8.8.8", "--service", "smtp")
	if code != 0 {
		t.Errorf("explain smtp without login: %d\n%s", code, out)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	for _, args := range [][]string{
		{"pattern", "test", "-c", cfg, "Nope", "1.2.3.4"},
		{"pattern", "test", "-c", cfg, "GeoIP_MY", "not-an-address"},
		{"pattern", "test", "-c", filepath.Join(dir, "missing.yaml"), "GeoIP_MY", "1.2.3.4"},
		{"pattern", "test", "-c", cfg, "GeoIP_MY"},
		{"explain", "-c", cfg, "--ip", "1.2.3", "--service", "imap"},
		{"explain", "-c", cfg, "--ip", "1.2.3.4", "--service", "imap5"},
		{"explain", "-c", cfg, "--ip", "1.2.3.4", "--service", "pop3"},
		{"explain", "-c", cfg, "--ip", "1.2.3.4"},
		{"explain", "-c", cfg, "--ip", "1.2.3.4", "--service", "imap", "--path", "/admin"},
		{"no-such-command"},
	} {
		if code, out, errs := postern(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s%s", args, code, out, errs)
		}
	}
}

func TestCheckReportsErrorsWithPositions(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, filepath.Join(dir, "list.txt"), "10.0.0.1\n10.0.0.300\n{list.txt}\n")
	writeFile(t, cfg, "patterns:\n  A: \"{list.txt}\"\n  B: \"[C]\"\n  C: \"[B]; country:MY\"\nservices:\n  imap: { listen: \":143\", backend: \"x:1\", grant: \"[Nope]\" }\n")
	code, _, errs := postern(t, "check", "-c", cfg)
	if code != exitError {
		t.Fatalf("check: exit %d\n%s", code, errs)
	}
	for _, want := range []string{
		filepath.Join(dir, "list.txt") + `:2:1: bad item "10.0.0.300"`,
		filepath.Join(dir, "list.txt") + ":3:1: include cycle",
		cfg + ":4:12: country:MY needs a GeoIP database",
		"reference cycle: [B] → [C] → [B]",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("missing %q in:\n%s", want, errs)
		}
	}
}

func TestVersion(t *testing.T) {
	if code, out, _ := postern(t, "version"); code != 0 || !strings.HasPrefix(out, "postern ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

func waitFor(t *testing.T, buf *syncBuffer, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(buf.String(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d× %q in:\n%s", n, substr, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stateConfig returns configuration lines that keep serve's store, token
// and socket inside dir (the socket in a short temporary directory: unix
// socket paths are limited to about 107 bytes).
func stateConfig(t *testing.T, dir string) string {
	t.Helper()
	sock, err := os.MkdirTemp("", "pst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	return fmt.Sprintf("store: { path: %s }\nadmin: { listen: \"unix:%s\", token_file: %s }\n",
		filepath.Join(dir, "state", "postern.db"), filepath.Join(sock, "a.sock"), filepath.Join(dir, "state", "admin.token"))
}

// stopServe cancels a serve whose result comes on done and fails the test
// if it returns an error or does not return within 10 s.
func stopServe(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestServeReloads(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	state := stateConfig(t, dir)
	writeFile(t, cfg, scenario+state)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{})
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, &logs, reload) }()
	waitFor(t, &logs, "configuration loaded", 1)

	writeFile(t, cfg, state+scenario+"  - \"@example.com=[GeoIP_SG]\"\n")
	reload <- struct{}{}
	waitFor(t, &logs, "configuration loaded", 2)

	writeFile(t, cfg, "services: [broken\n")
	reload <- struct{}{}
	waitFor(t, &logs, "reload rejected, the running configuration stays", 1)

	stopServe(t, cancel, done)
	if _, err := os.Stat(filepath.Join(dir, "state", "postern.db")); err != nil {
		t.Fatalf("serve must create the store where configured: %v", err)
	}
	if err := serve(context.Background(), filepath.Join(dir, "missing.yaml"), &logs, nil); err == nil {
		t.Fatal("serve with a missing configuration must fail")
	}
}
