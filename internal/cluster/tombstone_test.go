package cluster

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestUnblockWhileAwayStaysUnblocked: mx1 makes two blocks; mx1 and mx3
// stop; mx2 unblocks one of them and the stream is trimmed (neither can
// read the unblock). Restarted, mx1 does not announce its block again:
// the unblock's tombstone is newer than the block, so mx1 drops it, and
// so does mx3 (which holds mx1's block); no node refuses the address. The
// same for unblock-all with the other block.
func TestUnblockWhileAwayStaysUnblocked(t *testing.T) {
	r := startRedis(t)
	dirA := t.TempDir()
	a := startNode(t, "mx1", r.addr(), dirA)
	b := startNode(t, "mx2", r.addr(), "")
	dirC := t.TempDir()
	c := startNode(t, "mx3", r.addr(), dirC)
	ctx := context.Background()
	x, y := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.7/32")
	for _, p := range []netip.Prefix{x, y} {
		if _, err := a.e.BlockManual(ctx, p, time.Hour, "", "cli"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{b, c} {
		eventually(t, propagate, n.name+" refusing both", func() bool { return n.refuses("198.51.100.1") && n.refuses("192.0.2.7") })
	}
	rc := r.client(t)
	awayAndBack := func(change func()) {
		t.Helper()
		eventually(t, propagate, "mx1 idle", a.idle)
		a.stop()
		c.stop()
		change()
		eventually(t, propagate, "mx2's change sent", b.idle)
		if err := rc.XTrimMaxLen(ctx, "postern:{b}:stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
		a = startNode(t, "mx1", r.addr(), dirA)
		c = startNode(t, "mx3", r.addr(), dirC)
	}
	awayAndBack(func() {
		if _, err := b.e.Unblock(ctx, []netip.Prefix{x}, "cli"); err != nil {
			t.Fatal(err)
		}
	})
	for _, n := range []*node{a, c} {
		eventually(t, propagate, n.name+" dropping the block unblocked while away", func() bool { return !n.refuses("198.51.100.1") })
		if !n.refuses("192.0.2.7") {
			t.Fatalf("%s dropped a block nobody unblocked", n.name)
		}
	}
	eventually(t, propagate, "mx1 idle", a.idle)
	if b.refuses("198.51.100.1") {
		t.Fatal("mx2 refuses the unblocked prefix again")
	}
	if n, _ := rc.Exists(ctx, "postern:{b}:k:"+x.String()).Result(); n != 0 {
		t.Fatal("the unblocked block is back in Redis")
	}
	if ttl, _ := rc.PTTL(ctx, "postern:{b}:t:"+x.String()).Result(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("tombstone kept %s, want the block's remaining hour", ttl)
	}

	awayAndBack(func() {
		if _, err := b.e.UnblockAll(ctx, "cli"); err != nil {
			t.Fatal(err)
		}
	})
	for _, n := range []*node{a, c} {
		eventually(t, propagate, n.name+" dropping blocks after unblock-all", func() bool { return !n.refuses("192.0.2.7") })
	}
	eventually(t, propagate, "mx1 idle", a.idle)
	if b.refuses("192.0.2.7") {
		t.Fatal("mx2 refuses again after unblock-all")
	}
	// A block made after the unblock is announced as usual.
	if _, err := a.e.BlockManual(ctx, x, time.Hour, "again", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 refusing the new block", func() bool { return b.refuses("198.51.100.1") })
}
