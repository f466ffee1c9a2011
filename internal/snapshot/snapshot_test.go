package snapshot

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"github.com/postern/postern/internal/service"
)

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

const v1 = `patterns: { Office: "203.0.113.0/24" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office]" }
  smtp: { listen: ":25", backend: "b:2", grant: "[Office]" }
`

func TestLoadBuildsEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, v1)
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	s, err := Load(context.Background(), cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Built.Equal(now) || s.GeoIP != nil || s.Patterns.Lookup("office") == nil {
		t.Fatalf("snapshot: %+v", s)
	}
	if !s.Policy.AllowService(service.IMAP, netip.MustParseAddr("203.0.113.5")) || s.Policy.AllowService(service.IMAP, netip.MustParseAddr("8.8.8.8")) {
		t.Error("policy not compiled from the file")
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0].Error(), "smtp has a grant list") {
		t.Errorf("warnings: %v", s.Warnings)
	}
}

func TestReloadKeepsRunningSnapshotOnError(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, v1)
	ctx := context.Background()
	first, err := Load(ctx, cfg, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHolder(first)
	office := netip.MustParseAddr("203.0.113.5")
	other := netip.MustParseAddr("198.51.100.1")

	// Readers run through both reloads and must always see a whole
	// snapshot: one whose imap grant is either the old or the new list.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := h.Load()
				if s.Policy.AllowService(service.IMAP, office) == s.Policy.AllowService(service.IMAP, other) {
					t.Error("a reader saw a half-built snapshot")
					return
				}
			}
		}()
	}

	write(t, cfg, strings.Replace(v1, "203.0.113.0/24", "198.51.100.0/24", 1))
	second, err := h.Reload(ctx, cfg, time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if h.Load() != second || !second.Policy.AllowService(service.IMAP, other) {
		t.Fatal("reload did not swap in the new snapshot")
	}

	write(t, cfg, "services:\n  imap: { listen: \":143\", backend: \"b:1\", grant: \"[Nope]\" }\n")
	if _, err := h.Reload(ctx, cfg, time.Unix(3, 0)); err == nil || !strings.Contains(err.Error(), "running configuration stays") || !strings.Contains(err.Error(), "unknown pattern [Nope]") {
		t.Fatalf("bad reload: %v", err)
	}
	if h.Load() != second {
		t.Fatal("a failed reload replaced the running snapshot")
	}
	close(stop)
	wg.Wait()
}

func TestGeoIPErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, filepath.Join(dir, "bad.csv"), "1.0.0.0,1.0.0.255,AU\n1.0.1.0,nope,CN\n")
	write(t, cfg, "geoip:\n  databases:\n    - path: bad.csv\n")
	_, err := Load(context.Background(), cfg, time.Now())
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "bad.csv")+":2") {
		t.Fatalf("error: %v", err)
	}
}

// Host masks are matched through the resolver configured under dns: the
// client's PTR name, confirmed by its A record, on a real DNS server.
func TestHostMasksUseTheConfiguredResolver(t *testing.T) {
	z := fcrdnstest.Start(t,
		fcrdnstest.PTR(t, "192.0.2.1", "mail.partner.example."), "mail.partner.example. 300 IN A 192.0.2.1",
		fcrdnstest.PTR(t, "192.0.2.2", "spoof.partner.example."), "spoof.partner.example. 300 IN A 192.0.2.200",
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, `dns: { resolver: "`+z.Addr+`", timeout: 2s, cache: 10m }
patterns: { Partners: "*.partner.example" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Partners]; 10.20.*" }
`)
	s, err := Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s.Names == nil || s.Names.Server() != z.Addr {
		t.Fatalf("resolver not wired: %+v", s.Names)
	}
	for addr, want := range map[string]bool{"192.0.2.1": true, "192.0.2.2": false, "192.0.2.3": false, "10.20.1.1": true} {
		if got := s.Policy.AllowService(service.IMAP, netip.MustParseAddr(addr)); got != want {
			t.Errorf("AllowService imap %s = %v, want %v", addr, got, want)
		}
	}
	q := z.Queries()
	s.Policy.AllowService(service.IMAP, netip.MustParseAddr("192.0.2.1"))
	if z.Queries() != q {
		t.Error("a cached name was looked up again")
	}
}

// TestBypassBuiltIntoSnapshot: the snapshot build loads the bypass list and
// hands it to the engine settings; an error in a file the list includes
// with f: is reported at that file's own line, in the same run as the
// engine settings' own errors.
func TestBypassBuiltIntoSnapshot(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, filepath.Join(dir, "bypass.txt"), "# partners\n192.0.2.5\nf:more.txt\n")
	write(t, filepath.Join(dir, "more.txt"), "s:*@partner.example\nw:list.dnswl.example\n")
	const base = v1 + "intrusion_prevention:\n  bypass_file: bypass.txt\n"
	write(t, cfg, base)
	s, err := Load(context.Background(), cfg, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	b := s.Guard.Bypass
	if !b.Addr(netip.MustParseAddr("192.0.2.5")) || !b.Sender("x@partner.example") || len(b.Zones) != 1 {
		t.Fatalf("the bypass list is not in the engine settings: %+v", b)
	}

	write(t, filepath.Join(dir, "more.txt"), "s:*@partner.example\n\n  r:nomail\n")
	write(t, cfg, base+"  smtp: { tarpit_accounts: \"192.0.2.0/24\" }\n")
	_, err = Load(context.Background(), cfg, time.Unix(2, 0))
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		filepath.Join(dir, "more.txt") + ":3:5: bypass recipients: \"nomail\" is not a mail mask",
		cfg + ":7:28: tarpit_accounts lists no mail addresses",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
	if n := ErrorCount(err); n != 2 {
		t.Errorf("%d errors, want 2 (bypass and tarpit_accounts):\n%v", n, err)
	}
}
