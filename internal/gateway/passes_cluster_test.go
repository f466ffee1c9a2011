package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/internal/cluster/redistest"
	"github.com/postern/postern/internal/passes"
)

// passGateway starts a gateway named node in cluster mode with a login
// restriction for alice@example.com.
func passGateway(t *testing.T, node, redisAddr string) *Gateway {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`node: %s
store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
cluster: { redis: "redis://%s/0", key_prefix: "test:" }
login_restrictions: [ "alice@example.com=127.0.0.0/24" ]
services:
  pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:1", plaintext_login: "127.0.0.0/8" }
`, node, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), redisAddr))
	logs := new(syncBuffer)
	g, _ := runGateway(t, cfg, Options{Log: logs, Drain: time.Second})
	return g
}

// TestClusterGatewaysSharePasses: a travel pass added on one running
// gateway allows the restricted login on the other; its removal there
// takes it away again.
func TestClusterGatewaysSharePasses(t *testing.T) {
	r := redistest.Start(t)
	ga := passGateway(t, "gw-a", r.Addr())
	gb := passGateway(t, "gw-b", r.Addr())
	ctx := context.Background()
	from := netip.MustParseAddr("203.0.113.5")
	allows := func(g *Gateway) bool {
		_, ok := g.passes.Table().Allow(ctx, "alice@example.com", from)
		return ok
	}
	p, err := ga.passes.Add(ctx, passes.AddRequest{Account: "alice@example.com", From: "203.0.113.0/24", For: "1d"}, "api:ops")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gw-b allowing alice through the pass", func() bool { return allows(gb) })
	if _, err := ga.passes.Remove(ctx, p.ID, "api:ops"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gw-b refusing alice again", func() bool { return !allows(gb) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
