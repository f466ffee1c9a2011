package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/cluster/redistest"
	"github.com/postern/postern/internal/service"
)

// clusterGateway starts a gateway named node with a POP3 service in front
// of backend, sharing blocks through the Redis at redisAddr; it returns the
// gateway and a client of its administration API (what the CLI uses).
func clusterGateway(t *testing.T, node, backend, redisAddr string) (*Gateway, *admin.Client, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`node: %s
store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
cluster: { redis: "redis://%s/0", key_prefix: "test:" }
services:
  pop3: { listen: "127.0.0.1:0", backend: "%s", plaintext_login: "127.0.0.0/8" }
`, node, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), redisAddr, backend))
	logs := new(syncBuffer)
	g, _ := runGateway(t, cfg, Options{Log: logs, Drain: time.Second})
	logs.waitLog(t, "listening", 1)
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return g, admin.NewClient("tcp:"+g.apiLn.Addr().String(), strings.TrimSpace(string(token))), logs
}

// popFrom connects to addr from the loopback source src and returns the
// greeting line.
func popFrom(t *testing.T, src string, addr net.Addr) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0))}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

// TestClusterGateways: two running gateways share one Redis: a manual
// block through gateway B's administration API (the CLI's path) is listed
// at A with the node that made it and refuses a real POP3 connection at
// A; an unblock through A lets the address in at B again.
func TestClusterGateways(t *testing.T) {
	r := redistest.Start(t)
	_, backend := popBackend(t, "backend")
	ga, ca, logsA := clusterGateway(t, "gw-a", backend, r.Addr())
	gb, cb, _ := clusterGateway(t, "gw-b", backend, r.Addr())
	if !strings.Contains(logsA.String(), "cluster mode") {
		t.Errorf("gw-a did not log cluster mode:\n%s", logsA.String())
	}
	const attacker = "127.0.0.55"
	if g := popFrom(t, attacker, ga.Addr(service.POP3)); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting before the block: %q", g)
	}
	ctx := context.Background()
	p := netip.MustParsePrefix(attacker + "/32")
	if _, err := cb.AddBlock(ctx, p, time.Hour, "from gw-b", false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := popFrom(t, attacker, ga.Addr(service.POP3))
		if strings.HasPrefix(g, "-ERR") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gw-a still greets a blocked address: %q", g)
		}
		time.Sleep(10 * time.Millisecond)
	}
	list, err := ca.ListBlocks(ctx, admin.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Node != "gw-b" || list[0].Comment != "from gw-b" {
		t.Errorf("gw-a lists %+v", list)
	}
	if n, err := ca.RemoveBlocks(ctx, []netip.Prefix{p}); n != 1 || err != nil {
		t.Fatalf("unblock through gw-a: %d %v", n, err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		g := popFrom(t, attacker, gb.Addr(service.POP3))
		if strings.HasPrefix(g, "+OK") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gw-b still refuses after the unblock on gw-a: %q", g)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterGatewayStartsWithoutRedis: a gateway whose Redis does not
// answer starts, serves, and logs the outage once.
func TestClusterGatewayStartsWithoutRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	_, backend := popBackend(t, "backend")
	g, _, logs := clusterGateway(t, "gw-alone", backend, dead)
	if greeting := popFrom(t, "127.0.0.56", g.Addr(service.POP3)); !strings.HasPrefix(greeting, "+OK") {
		t.Fatalf("greeting %q", greeting)
	}
	logs.waitLog(t, "Redis unreachable", 1)
	if n := strings.Count(logs.String(), "Redis unreachable"); n != 1 {
		t.Errorf("outage logged %d times", n)
	}
}
