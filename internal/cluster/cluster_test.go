package cluster

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

const propagate = 5 * time.Second // deadline for a change to reach another node

// TestFailedLoginsSpreadOverThreeNodes: 2 + 2 + 1 failed logins on three
// nodes with failed_logins: 5 block the address on every node, with
// exactly one block in the cluster; no node blocks it alone.
func TestFailedLoginsSpreadOverThreeNodes(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	b := startNode(t, "mx2", r.addr(), "")
	c := startNode(t, "mx3", r.addr(), "")
	const attacker = "203.0.113.7"
	a.failLogins(t, attacker, 2)
	b.failLogins(t, attacker, 2)
	eventually(t, propagate, "counts sent", func() bool { return a.idle() && b.idle() })
	for _, n := range []*node{a, b, c} {
		if n.refuses(attacker) {
			t.Fatalf("%s blocks after 4 failures", n.name)
		}
	}
	c.failLogins(t, attacker, 1)
	for _, n := range []*node{a, b, c} {
		eventually(t, propagate, n.name+" refusing "+attacker, func() bool { return n.refuses(attacker) })
	}
	blk, ok := a.e.BlockOf(netip.MustParseAddr(attacker))
	if !ok || blk.Reason != reason.Login || blk.Node != "mx3" {
		t.Fatalf("block on mx1: %+v (want reason L made by mx3)", blk)
	}
	// One crossing, one block: one block key and one announcement.
	rc := r.client(t)
	ctx := context.Background()
	if n, _ := rc.ZCard(ctx, "postern:{b}:index").Result(); n != 1 {
		t.Errorf("index holds %d blocks, want 1", n)
	}
	if n, _ := rc.XLen(ctx, "postern:{b}:stream").Result(); n != 1 {
		t.Errorf("stream holds %d entries, want 1", n)
	}
	// Every node stored it: it survives a restart without Redis.
	for _, n := range []*node{a, b} {
		eventually(t, propagate, n.name+" storing the block", func() bool {
			stored, err := n.db.LoadBlocks(ctx)
			return err == nil && len(stored) == 1 && stored[0].Prefix.String() == attacker+"/32"
		})
	}
}

// TestManualBlockAndUnblockAcrossNodes: a block made on A refuses at B and
// is listed there with the node that made it; the audit names the node;
// unblock on A lets the address in at B.
func TestManualBlockAndUnblockAcrossNodes(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	b := startNode(t, "mx2", r.addr(), "")
	ctx := context.Background()
	p := netip.MustParsePrefix("198.51.100.0/24")
	if _, err := b.e.BlockManual(ctx, p, time.Hour, "seen scanning", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx1 refusing", func() bool { return a.refuses("198.51.100.9") })
	var listed store.Block
	for _, blk := range a.e.Blocks() {
		if blk.Prefix == p {
			listed = blk
		}
	}
	if listed.Node != "mx2" || listed.By != "admin:cli" || listed.Comment != "seen scanning" {
		t.Errorf("mx1 lists %+v", listed)
	}
	// The table changes first, then the store and the audit log.
	eventually(t, propagate, "mx1's audit entry", func() bool {
		audit, _ := a.e.Audit(ctx, time.Time{}, 10)
		return len(audit) > 0
	})
	audit, _ := a.e.Audit(ctx, time.Time{}, 10)
	if len(audit) != 1 || audit[0].Actor != "cli@mx2" || audit[0].Action != "block" || audit[0].Target != p.String() {
		t.Errorf("mx1 audit: %+v", audit)
	}
	own, _ := b.e.Audit(ctx, time.Time{}, 10)
	if len(own) != 1 || own[0].Actor != "cli@mx2" {
		t.Errorf("mx2 audit: %+v", own)
	}
	if n, err := a.e.Unblock(ctx, []netip.Prefix{p}, "api:ops"); n != 1 || err != nil {
		t.Fatalf("unblock on mx1: %d %v", n, err)
	}
	eventually(t, propagate, "mx2 admitting", func() bool { return !b.refuses("198.51.100.9") })
	eventually(t, propagate, "mx2's store without the block", func() bool {
		stored, _ := b.db.LoadBlocks(ctx)
		return len(stored) == 0
	})
	// Extend (a new block of the same prefix) and purge act cluster-wide too.
	if _, err := a.e.BlockManual(ctx, p, time.Minute, "", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 refusing again", func() bool { return b.refuses("198.51.100.9") })
	if _, err := a.e.BlockManual(ctx, p, 48*time.Hour, "extended", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "the extension on mx2", func() bool {
		blk, ok := b.e.BlockOf(netip.MustParseAddr("198.51.100.9"))
		return ok && blk.Comment == "extended"
	})
	if n, err := b.e.UnblockAll(ctx, "cli"); n != 1 || err != nil {
		t.Fatalf("unblock all on mx2: %d %v", n, err)
	}
	eventually(t, propagate, "mx1 admitting after unblock-all", func() bool { return !a.refuses("198.51.100.9") })
}

// TestImportActsClusterWide: an import on one node is enforced on the
// other.
func TestImportActsClusterWide(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	b := startNode(t, "mx2", r.addr(), "")
	now := time.Now().UTC().Truncate(time.Millisecond)
	var bs []store.Block
	for i := range 2500 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32)
		bs = append(bs, store.Block{Prefix: p, Reason: reason.Manual, FirstSeen: now, LastSeen: now, Expires: now.Add(time.Hour), By: "admin:import"})
	}
	if n, err := a.e.Import(context.Background(), bs, "cli"); n != len(bs) || err != nil {
		t.Fatalf("import: %d %v", n, err)
	}
	eventually(t, propagate, "mx2 holding the import", func() bool { return len(b.e.Blocks()) == len(bs) })
	if !b.refuses("10.9.9.195") {
		t.Error("mx2 admits an imported address")
	}
}

// TestRedisKilled: with redis-server killed, every node still refuses the
// blocks it knows and blocks by itself; a block made during the outage
// reaches the other node once Redis is back (empty: it kept no data); a
// node restarted while Redis is down enforces its stored blocks. The
// outage is logged once.
func TestRedisKilled(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	b := startNode(t, "mx2", r.addr(), "")
	ctx := context.Background()
	known := netip.MustParsePrefix("192.0.2.0/24")
	if _, err := a.e.BlockManual(ctx, known, time.Hour, "", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 refusing the known block", func() bool { return b.refuses("192.0.2.1") })

	r.kill()
	for _, n := range []*node{a, b} {
		if !n.refuses("192.0.2.1") {
			t.Errorf("%s admits a known block with Redis down", n.name)
		}
	}
	// Local counting and blocking go on.
	a.failLogins(t, "203.0.113.50", 5)
	if !a.refuses("203.0.113.50") {
		t.Fatal("mx1 did not block locally with Redis down")
	}
	eventually(t, propagate, "mx1 noticing the outage", a.c.Down)
	// Down turns true just before the outage's log line is written.
	eventually(t, propagate, "mx1 logging the outage", func() bool { return strings.Contains(a.log.String(), "Redis unreachable") })
	for range 3 { // more failures while down: still one log line
		a.failLogins(t, "203.0.113.60", 1)
		a.e.BlockManual(ctx, netip.MustParsePrefix("203.0.113.61/32"), time.Hour, "", "cli")
	}
	if n := strings.Count(a.log.String(), "Redis unreachable"); n != 1 {
		t.Errorf("outage logged %d times on mx1, want once:\n%s", n, a.log.String())
	}

	// A node restarted while Redis is down enforces what it stored.
	dir := b.dir
	b.stop()
	b = startNode(t, "mx2", r.addr(), dir)
	if !b.refuses("192.0.2.1") {
		t.Error("mx2 restarted without Redis admits a stored block")
	}

	r.start() // empty: no persistence
	eventually(t, 3*propagate, "mx2 refusing the block made during the outage", func() bool { return b.refuses("203.0.113.50") })
	eventually(t, propagate, "mx1 reachable again", func() bool { return !a.c.Down() })
	// Down turns false just before the end of the outage is logged.
	eventually(t, propagate, "the end of the outage logged", func() bool { return strings.Contains(a.log.String(), "reachable again") })
	// The cluster learns the blocks again from the nodes that made them.
	rc := r.client(t)
	eventually(t, propagate, "the known block back in Redis", func() bool {
		n, _ := rc.Exists(ctx, "postern:{b}:k:192.0.2.0/24").Result()
		return n == 1
	})
	// And sharing works again.
	if _, err := b.e.BlockManual(ctx, netip.MustParsePrefix("198.18.0.0/15"), time.Hour, "", "cli"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx1 refusing a block made after the outage", func() bool { return a.refuses("198.18.3.4") })
}

// TestPoisonedDataSkipped: malformed stream entries and block keys are
// logged and skipped; the valid entries around them apply.
func TestPoisonedDataSkipped(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	eventually(t, propagate, "mx1 caught up", a.caughtUp)
	rc := r.client(t)
	ctx := context.Background()
	stream := "postern:{b}:stream"
	poison := []map[string]any{
		{"op": "put", "node": "evil", "data": "not json"},
		{"op": "put", "node": "evil", "data": `[{"p":"10.0.0.1/8","r":"U","f":1,"l":1,"x":0,"n":"evil","b":"x"}]`},    // host bits
		{"op": "put", "node": "evil", "data": `[{"p":"::ffff:10.0.0.1/128","r":"U","f":1,"l":1,"n":"evil","b":"x"}]`}, // mapped
		{"op": "put", "node": "evil", "data": `[{"p":"10.0.0.1/32","r":"?","f":1,"l":1,"n":"evil","b":"x"}]`},         // reason
		{"op": "put", "node": "evil", "data": `[{"p":"10.0.0.1/32","r":"U","f":1,"l":1,"v":-3,"n":"evil","b":"x"}]`},  // level
		{"op": "del", "node": "evil", "data": `["0.0.0.0/0x"]`},
		{"op": "drop-tables", "node": "evil"},
		{"op": "put", "data": "[]"},
		{"op": "put", "node": "evil", "data": `[{"p":"10.0.0.1/32","r":"U","f":1,"l":1,"x":99999999999999999,"n":"evil","b":"x"}]`}, // time
		{"op": "purge", "node": "evil", "data": "yesterday"},
	}
	for _, v := range poison {
		if err := rc.XAdd(ctx, redisXAdd{stream, v}.args()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	good := `[{"p":"192.0.2.77/32","r":"U","f":1700000000000,"l":1700000000000,"x":` +
		itoa(time.Now().Add(time.Hour).UnixMilli()) + `,"n":"mx9","b":"admin:cli"}]`
	if err := rc.XAdd(ctx, redisXAdd{stream, map[string]any{"op": "put", "node": "mx9", "data": good}}.args()).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "the valid entry applied", func() bool { return a.refuses("192.0.2.77") })
	if a.refuses("10.0.0.1") {
		t.Error("a poisoned entry was applied")
	}
	if n := strings.Count(a.log.String(), "malformed stream entry"); n != len(poison) {
		t.Errorf("%d malformed entries logged, want %d:\n%s", n, len(poison), a.log.String())
	}
	// A poisoned block key and a poisoned counter key at reconcile and count time.
	rc.Set(ctx, "postern:{b}:k:10.1.1.1/32", "{bad", 0)
	rc.ZAdd(ctx, "postern:{b}:index", redisZ(float64(time.Now().Add(time.Hour).UnixMilli()), "10.1.1.1/32"))
	rc.Set(ctx, "postern:c:{imap_pop3:L:203.0.113.99/32}", "not a number", 0)
	b := startNode(t, "mx2", r.addr(), "")
	eventually(t, propagate, "mx2 reconciled", func() bool { return strings.Contains(b.log.String(), "malformed block key") })
	if b.refuses("10.1.1.1") {
		t.Error("a poisoned block key was applied")
	}
	b.failLogins(t, "203.0.113.99", 5) // the local count still blocks
	if !b.refuses("203.0.113.99") {
		t.Error("a poisoned counter key stopped local blocking")
	}
	eventually(t, propagate, "the refused command logged", func() bool { return strings.Contains(b.log.String(), "refused a command") })
}

// TestPeersNeverBlockedAutomatically: another gateway's address is not
// blocked by a cluster count, nor applied from another node's automatic
// block.
func TestPeersNeverBlockedAutomatically(t *testing.T) {
	r := startRedis(t)
	peer := netip.MustParsePrefix("198.51.100.25/32")
	a := startNode(t, "mx1", r.addr(), "", peer)
	b := startNode(t, "mx2", r.addr(), "") // configured without the peer
	b.failLogins(t, "198.51.100.25", 5)
	if !b.refuses("198.51.100.25") {
		t.Fatal("mx2 did not block")
	}
	// mx1 sees the block announced and skips it.
	eventually(t, propagate, "mx1 skipping the peer's block", func() bool {
		return strings.Contains(a.log.String(), "trusted, bypassed or peer")
	})
	if a.refuses("198.51.100.25") {
		t.Error("mx1 applied an automatic block of a peer")
	}
	a.failLogins(t, "198.51.100.25", 5)
	if a.refuses("198.51.100.25") {
		t.Error("mx1 blocked a peer")
	}
	_ = guard.Refuse
}

// TestSharedFingerprints: with a shared fingerprint key, a wrong password
// tried on one node and retried on another counts once cluster-wide.
func TestSharedFingerprints(t *testing.T) {
	r := startRedis(t)
	key := &[32]byte{1, 2, 3}
	client := func() redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: r.addr(), ContextTimeoutEnabled: true, ReadTimeout: time.Second})
	}
	a := startNodeOpts(t, "mx1", client(), "", guard.Options{FingerprintKey: key})
	b := startNodeOpts(t, "mx2", client(), "", guard.Options{FingerprintKey: key})
	const attacker = "203.0.113.40"
	fail := func(n *node, password string) {
		s, _ := n.e.Accept(netip.MustParseAddr(attacker), service.IMAP, func() {})
		if s == nil {
			t.Fatalf("%s refused %s before the password %q", n.name, attacker, password)
		}
		s.LoginFailed("user@example.com", n.e.PasswordFingerprint("user@example.com", password))
		s.Close()
		eventually(t, propagate, "counted", n.idle)
	}
	fail(a, "one")
	fail(a, "two")
	fail(b, "one") // the same wrong password on the other node: not counted again
	fail(b, "two")
	fail(b, "three")
	fail(a, "three")
	fail(a, "four") // 4 distinct wrong passwords
	if a.refuses(attacker) || b.refuses(attacker) {
		t.Fatal("blocked after 4 distinct wrong passwords")
	}
	fail(b, "five")
	eventually(t, propagate, "both refusing after the fifth distinct password", func() bool { return a.refuses(attacker) && b.refuses(attacker) })
}
