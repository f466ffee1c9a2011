package cluster

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/cluster/redistest"
)

// TestSentinelFailover: two nodes reach Redis through Sentinel; the master
// is killed, the Sentinel promotes the replica, and the nodes follow it:
// the blocks made before are still enforced, and a block made after the
// failover reaches the other node.
func TestSentinelFailover(t *testing.T) {
	f := redistest.StartFailover(t)
	client := func() redis.UniversalClient {
		return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: []string{f.Sentinel.Addr()},
			DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
			MaxRetries: 1, ContextTimeoutEnabled: true})
	}
	a := startNodeWith(t, "mx1", client(), "")
	b := startNodeWith(t, "mx2", client(), "")
	ctx := context.Background()
	before := netip.MustParsePrefix("192.0.2.0/24")
	if _, err := a.e.BlockManual(ctx, before, time.Hour, "", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 refusing the first block", func() bool { return b.refuses("192.0.2.1") })
	// Let the replica receive it before the master dies.
	rc := f.Replica.Client(t)
	eventually(t, propagate, "the replica holding the block", func() bool {
		n, _ := rc.Exists(ctx, "postern:{b}:k:192.0.2.0/24").Result()
		return n == 1
	})

	old := f.MasterAddr()
	f.Master.Kill()
	eventually(t, 30*time.Second, "the sentinel promoting the replica", func() bool {
		m := f.MasterAddr()
		return m != "" && m != old
	})
	if f.MasterAddr() != f.Replica.Addr() {
		t.Fatalf("master %s, want the replica %s", f.MasterAddr(), f.Replica.Addr())
	}
	for _, n := range []*node{a, b} {
		if !n.refuses("192.0.2.1") {
			t.Errorf("%s lost a block in the failover", n.name)
		}
	}
	after := netip.MustParsePrefix("198.51.100.0/24")
	if _, err := b.e.BlockManual(ctx, after, time.Hour, "", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*propagate, "mx1 refusing a block made after the failover", func() bool { return a.refuses("198.51.100.1") })
	a.failLogins(t, "203.0.113.30", 3)
	b.failLogins(t, "203.0.113.30", 2)
	eventually(t, propagate, "counting shared again", func() bool { return a.refuses("203.0.113.30") && b.refuses("203.0.113.30") })
}
