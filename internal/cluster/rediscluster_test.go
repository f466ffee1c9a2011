package cluster

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/cluster/redistest"
)

// TestRedisCluster: two nodes on a Redis Cluster of three masters share a
// count split over them (its keys spread over the slots), a manual block,
// its unblock and a purge (the block scripts keep to one slot).
func TestRedisCluster(t *testing.T) {
	ss := redistest.StartCluster(t)
	client := func() redis.UniversalClient {
		return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{ss[0].Addr(), ss[1].Addr()}, IsClusterMode: true,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
			MaxRetries: 1, ContextTimeoutEnabled: true})
	}
	a := startNodeWith(t, "mx1", client(), "")
	b := startNodeWith(t, "mx2", client(), "")
	eventually(t, propagate, "caught up", func() bool { return a.caughtUp() && b.caughtUp() })
	ctx := context.Background()
	for i := range 20 { // counter keys over many slots
		addr := netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}).String()
		a.failLogins(t, addr, 3)
		b.failLogins(t, addr, 2)
		eventually(t, propagate, "both refusing "+addr, func() bool { return a.refuses(addr) && b.refuses(addr) })
	}
	p := netip.MustParsePrefix("198.51.100.0/24")
	if _, err := a.e.BlockManual(ctx, p, time.Hour, "", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 refusing", func() bool { return b.refuses("198.51.100.1") })
	b.e.Unblock(ctx, []netip.Prefix{p}, "cli")
	eventually(t, propagate, "mx1 admitting", func() bool { return !a.refuses("198.51.100.1") })
	a.e.PurgeExpired(ctx, "cli")
	b.e.UnblockAll(ctx, "cli")
	eventually(t, propagate, "mx1 empty", func() bool { return len(a.e.Blocks()) == 0 })
	for _, n := range []*node{a, b} {
		eventually(t, propagate, "sent", n.idle)
		if l := n.log.String(); containsAny(l, "level=ERROR", "refused a command", "CROSSSLOT") {
			t.Errorf("%s:\n%s", n.name, l)
		}
	}
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}
