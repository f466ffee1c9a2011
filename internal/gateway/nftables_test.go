package gateway

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// nftNetns makes a network namespace for the gateway's nftables export
// and returns it open, or skips the test when that cannot be done.
func nftNetns(t *testing.T) (name string, fd int) {
	name = fmt.Sprintf("pnft-g%d", os.Getpid()%100000)
	return name, testenv.Netns(t, name)
}

func nftConfig(t *testing.T, nft string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, filepath.Join(dir, "bypass"), "198.51.100.99\n")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
services:
  pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }
intrusion_prevention: { bypass_file: %s }
nftables: %s
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), filepath.Join(dir, "bypass"), nft))
	return cfg
}

// The running gateway writes its blocks into the sets of the namespace:
// a manual block shows in the set within a poll, with its timeout, a
// loopback or bypassed block never does, and an unblock removes the element.
func TestNftablesExportFollowsBlocks(t *testing.T) {
	ns, fd := nftNetns(t)
	cfg := nftConfig(t, "{ enabled: true, create: true, drop_chain: input, poll: 1s }")
	g, _ := runGateway(t, cfg, Options{Log: io.Discard, NftablesNetNS: fd})
	ctx := context.Background()
	list := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "postern").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		return string(out)
	}
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			l := list()
			if ok(l) {
				return l
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s:\n%s", what, l)
			}
			time.Sleep(50 * time.Millisecond) // polling the kernel with a deadline
		}
	}
	if l := list(); !strings.Contains(l, "ip saddr @blocked4") || !strings.Contains(l, "ip6 saddr @blocked6") {
		t.Fatalf("drop chain not made:\n%s", l)
	}
	for _, p := range []string{"127.0.0.9/32", "198.51.100.99/32"} { // loopback, bypassed
		if _, err := g.Engine().BlockManual(ctx, netip.MustParsePrefix(p), time.Hour, "test", "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Engine().BlockManual(ctx, netip.MustParsePrefix("198.51.100.7/32"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Engine().BlockManual(ctx, netip.MustParsePrefix("2001:db8:7::/48"), 0, "test", "test"); err != nil {
		t.Fatal(err)
	}
	l := waitFor("blocks exported", func(l string) bool {
		return strings.Contains(l, "198.51.100.7 timeout 1h") && strings.Contains(l, "2001:db8:7::/48")
	})
	if strings.Contains(l, "127.0.0.9") || strings.Contains(l, "198.51.100.99") {
		t.Fatalf("a loopback or bypassed block was exported:\n%s", l)
	}
	if n := len(g.Engine().Blocks()); n != 4 {
		t.Fatalf("engine has %d blocks, want 4", n)
	}
	if _, err := g.Engine().Unblock(ctx, []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor("unblock exported", func(l string) bool {
		return !strings.Contains(l, "198.51.100.7") && strings.Contains(l, "2001:db8:7::/48")
	})
}

// Without create, a missing table stops the start and says what to make.
func TestNftablesExportMissingTable(t *testing.T) {
	_, fd := nftNetns(t)
	cfg := nftConfig(t, "{ enabled: true, table: absent }")
	g, err := Start(context.Background(), cfg, Options{Log: io.Discard, NftablesNetNS: fd})
	if err == nil {
		g.close()
		t.Fatal("started without the table")
	}
	if !strings.Contains(err.Error(), "table inet absent does not exist") || !strings.Contains(err.Error(), "nftables.create: true") {
		t.Fatalf("error = %v", err)
	}
}
