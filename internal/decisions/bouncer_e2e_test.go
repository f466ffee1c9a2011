//go:build linux

package decisions

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// listenIn binds a TCP listener on 127.0.0.1 inside the named network
// namespace: the socket stays in the namespace it was made in.
func listenIn(ns string) (net.Listener, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns: %w", err)
	}
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// the thread stays locked and dies with the goroutine.
		return nil, fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ln, lerr
}

// The Debian 12 package of CrowdSec's firewall bouncer (nftables mode),
// unchanged, runs against postern's decision stream in a network
// namespace the test creates: a block appears in the bouncer's nftables
// set, an unblock removes it.
func TestCrowdSecFirewallBouncer(t *testing.T) {
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("end-to-end test: set POSTERN_E2E=1 (needs root and the crowdsec-firewall-bouncer package)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("POSTERN_E2E=1: this test needs root (network namespace, nftables)")
	}
	bin, err := exec.LookPath("crowdsec-firewall-bouncer")
	if err != nil {
		t.Fatal("POSTERN_E2E=1: install crowdsec-firewall-bouncer (apt-get install --no-install-recommends crowdsec-firewall-bouncer)")
	}
	ns := fmt.Sprintf("pstn-cs-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}

	tbl := &table{}
	const key = "e2e-bouncer-key-0123456789abcdef"
	keys, err := ParseKeys([]byte("fw " + key))
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Source: tbl, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenIn(ns)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	cfg := filepath.Join(dir, "bouncer.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`mode: nftables
pid_dir: %s
update_frequency: 1s
daemonize: false
log_mode: file
log_dir: %s
log_level: debug
api_url: http://%s/
api_key: %s
disable_ipv6: false
deny_action: DROP
deny_log: false
supported_decisions_types: [ban]
blacklists_ipv4: crowdsec-blacklists
blacklists_ipv6: crowdsec6-blacklists
nftables:
  ipv4: { enabled: true, set-only: false, table: crowdsec, chain: crowdsec-chain }
  ipv6: { enabled: true, set-only: false, table: crowdsec6, chain: crowdsec6-chain }
prometheus: { enabled: false, listen_addr: 127.0.0.1, listen_port: 60601 }
`, dir, dir, ln.Addr(), key)), 0o600); err != nil {
		t.Fatal(err)
	}
	tbl.set(store.Block{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: reason.Login, Expires: time.Now().Add(time.Hour)},
		store.Block{Prefix: netip.MustParsePrefix("2001:db8::9/128"), Reason: reason.Manual, Expires: time.Now().Add(time.Hour)})

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "-c", cfg)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			logs, _ := os.ReadFile(filepath.Join(dir, "crowdsec-firewall-bouncer.log"))
			t.Logf("bouncer output:\n%s\nlog:\n%s", out.String(), logs)
		}
	})

	set := func(family, table, name string) string {
		b, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "set", family, table, name).CombinedOutput()
		return string(b)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s; v4 set:\n%s\nv6 set:\n%s", what, set("ip", "crowdsec", "crowdsec-blacklists"), set("ip6", "crowdsec6", "crowdsec6-blacklists"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("startup decisions in the sets", func() bool {
		return strings.Contains(set("ip", "crowdsec", "crowdsec-blacklists"), "192.0.2.7") &&
			strings.Contains(set("ip6", "crowdsec6", "crowdsec6-blacklists"), "2001:db8::9")
	})
	// a new block and an unblock, seen by the bouncer's next polls.
	tbl.set(store.Block{Prefix: netip.MustParsePrefix("2001:db8::9/128"), Reason: reason.Manual, Expires: time.Now().Add(time.Hour)},
		store.Block{Prefix: netip.MustParsePrefix("198.51.100.4/32"), Reason: reason.Spam, Expires: time.Now().Add(time.Hour)})
	waitFor("new and deleted decisions applied", func() bool {
		s := set("ip", "crowdsec", "crowdsec-blacklists")
		return strings.Contains(s, "198.51.100.4") && !strings.Contains(s, "192.0.2.7")
	})
	if s := set("ip6", "crowdsec6", "crowdsec6-blacklists"); !strings.Contains(s, "2001:db8::9") {
		t.Errorf("v6 block lost:\n%s", s)
	}
}
