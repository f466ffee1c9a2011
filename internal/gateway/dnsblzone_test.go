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
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/internal/decisions"
)

// The gateway serves its engine's blocks as a DNSBL zone and as a decision
// stream: a manual block is listed and announced; the unblock removes it
// from both.
func TestExports(t *testing.T) {
	dir := t.TempDir()
	const key = "gateway-test-bouncer-key-0001"
	keys := filepath.Join(dir, "bouncers.keys")
	if err := os.WriteFile(keys, []byte("fw "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
dnsbl_zone: { listen: "127.0.0.1:0", zone: bl.postern.test, grant: "127.0.0.1" }
decision_stream: { listen: "127.0.0.1:0", keys_file: %s }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), keys))
	var logs syncBuffer
	g, _ := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second})
	ctx := context.Background()

	lookup := func(name string) int {
		t.Helper()
		c := &dns.Client{Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(m, g.DNSBLZoneAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		return r.Rcode
	}
	poll := func(startup bool) decisions.Stream {
		t.Helper()
		url := "http://" + g.DecisionStreamAddr() + "/v1/decisions/stream"
		if startup {
			url += "?startup=true"
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var s decisions.Stream
		if resp.StatusCode != 200 || json.Unmarshal(body, &s) != nil {
			t.Fatalf("stream: %d %s", resp.StatusCode, body)
		}
		return s
	}

	if rc := lookup("1.2.0.192.bl.postern.test."); rc != dns.RcodeNameError {
		t.Fatalf("before the block: %s", dns.RcodeToString[rc])
	}
	if s := poll(true); len(s.New) != 0 {
		t.Fatalf("startup before the block: %+v", s)
	}
	if _, err := g.Engine().BlockManual(ctx, netip.MustParsePrefix("192.0.2.0/28"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if rc := lookup("1.2.0.192.bl.postern.test."); rc != dns.RcodeSuccess {
		t.Fatalf("after the block: %s", dns.RcodeToString[rc])
	}
	if s := poll(false); len(s.New) != 1 || s.New[0].Value != "192.0.2.0/28" || s.New[0].Scope != "Range" {
		t.Fatalf("after the block: %+v", s)
	}
	if _, err := g.Engine().Unblock(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}, "test"); err != nil {
		t.Fatal(err)
	}
	if rc := lookup("1.2.0.192.bl.postern.test."); rc != dns.RcodeNameError {
		t.Fatalf("after the unblock: %s", dns.RcodeToString[rc])
	}
	if s := poll(false); len(s.Deleted) != 1 || s.Deleted[0].Value != "192.0.2.0/28" {
		t.Fatalf("after the unblock: %+v", s)
	}
	if !strings.Contains(logs.String(), "dnsbl-zone") {
		t.Errorf("no listening line in the log:\n%s", logs.String())
	}
}

// A keys file that cannot be read stops the start with its name, and the
// DNSBL zone bound before it is closed again (its port can be bound).
func TestExportsBadKeys(t *testing.T) {
	dir := t.TempDir()
	port := freeZonePort(t)
	cfg := filepath.Join(dir, "postern.yaml")
	keys := filepath.Join(dir, "missing.keys")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
dnsbl_zone: { listen: "127.0.0.1:%d", zone: bl.postern.test }
decision_stream: { listen: "127.0.0.1:0", keys_file: %s }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), port, keys))
	_, err := Start(context.Background(), cfg, Options{Log: io.Discard, Drain: time.Second})
	if err == nil || !strings.Contains(err.Error(), keys) {
		t.Fatalf("start: %v, want an error naming %s", err, keys)
	}
	again, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("the zone's port stayed bound: %v", err)
	}
	again.Close()
}

// freeZonePort returns a loopback port free for TCP and UDP alike, as a
// DNSBL zone listens on both: a UDP port alone may be some connection's
// TCP port.
func freeZonePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}
