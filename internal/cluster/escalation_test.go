package cluster

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/postern/postern/internal/service"
)

// blockLevel waits until n holds a block of addr and returns its level.
func blockLevel(t *testing.T, n *node, addr string) int {
	t.Helper()
	eventually(t, propagate, n.name+" refusing "+addr, func() bool { return n.refuses(addr) })
	blk, _ := n.e.BlockOf(netip.MustParseAddr(addr))
	return blk.Level
}

// unblockEverywhere unblocks addr on n and waits until every node admits it.
func unblockEverywhere(t *testing.T, n *node, addr string, all ...*node) {
	t.Helper()
	if _, err := n.e.Unblock(context.Background(), []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(addr), 32)}, "cli"); err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		eventually(t, propagate, m.name+" admitting "+addr, func() bool { return !m.refuses(addr) })
	}
	eventually(t, propagate, "the unblock sent", n.idle)
}

// TestEscalationMemoryShared: the escalation level of a prefix's blocks is
// the cluster's, whichever node made them: a block made on mx1 makes mx2's
// next block of the prefix escalate, and a node that never saw either
// (mx3, started afterwards with an empty store, after both were unblocked
// and so never learnt from the block set) escalates from the cluster's
// memory at its first block of the prefix.
func TestEscalationMemoryShared(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	b := startNode(t, "mx2", r.addr(), "")
	const x = "203.0.113.50"
	a.failLogins(t, x, 5)
	if l := blockLevel(t, a, x); l != 0 {
		t.Fatalf("first block at level %d", l)
	}
	if l := blockLevel(t, b, x); l != 0 {
		t.Fatalf("mx2 applied the first block at level %d", l)
	}
	eventually(t, propagate, "mx1's block sent", a.idle)
	unblockEverywhere(t, a, x, a, b)

	b.failLogins(t, x, 5)
	if l := blockLevel(t, b, x); l != 1 {
		t.Fatalf("mx2's block after mx1's: level %d, want 1", l)
	}
	if l := blockLevel(t, a, x); l != 1 {
		t.Fatalf("mx1 applied mx2's block at level %d, want 1", l)
	}
	eventually(t, propagate, "mx2's block sent", b.idle)
	unblockEverywhere(t, b, x, a, b)

	// The cluster remembers the last automatic block of the prefix.
	v, err := r.client(t).Get(context.Background(), "postern:{b}:e:"+x+"/32").Result()
	if err != nil || !strings.HasPrefix(v, "1 ") {
		t.Fatalf("escalation key: %q %v", v, err)
	}
	c := startNode(t, "mx3", r.addr(), "")
	eventually(t, propagate, "mx3 caught up", c.caughtUp)
	if c.refuses(x) {
		t.Fatal("mx3 refuses an unblocked address")
	}
	c.failLogins(t, x, 5)
	if l := blockLevel(t, c, x); l != 2 {
		t.Fatalf("mx3's first block of the prefix: level %d, want 2 (the cluster's third)", l)
	}
	for _, n := range []*node{a, b} {
		if l := blockLevel(t, n, x); l != 2 {
			t.Fatalf("%s applied mx3's block at level %d, want 2", n.name, l)
		}
	}
}

// subnetConfig is nodeConfig with /24 counting (factor 4: 20 failed
// logins across a /24 block it).
const subnetConfig = nodeConfig + `  subnets: { ipv4: 24, factor: 4 }
`

// failFrom reports failed IMAP logins from addr on n, the ith with the
// wrong password i (for i from..to-1).
func failFrom(t *testing.T, n *node, addr string, from, to int) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	for i := from; i < to; i++ {
		s, v := n.e.Accept(a, service.IMAP, func() {})
		if s == nil {
			t.Fatalf("%s: connection from %s refused before login %d: %+v", n.name, addr, i+1, v)
		}
		s.LoginFailed("user@example.com", n.e.PasswordFingerprint("user@example.com", n.name+addr+strconv.Itoa(i)))
		s.Close()
	}
}

// TestSubnetCountedAcrossNodes: with subnets on, failed logins of ten
// hosts of one /24, five on each of two nodes (two each: no host reaches
// its own threshold of 5, no node the /24's 20), count toward the /24
// cluster-wide: the twentieth blocks the /24 on both nodes.
func TestSubnetCountedAcrossNodes(t *testing.T) {
	r := startRedis(t)
	a := startNode(t, "mx1", r.addr(), "")
	b := startNode(t, "mx2", r.addr(), "")
	for _, n := range []*node{a, b} {
		n.e.Apply(settingsFrom(t, n.dir, subnetConfig))
	}
	host := func(i int) string { return "198.51.100." + strconv.Itoa(10+i) }
	for i := range 5 {
		failFrom(t, a, host(i), 0, 2)
	}
	for i := 5; i < 9; i++ {
		failFrom(t, b, host(i), 0, 2)
	}
	failFrom(t, b, host(9), 0, 1)
	eventually(t, propagate, "counts sent", func() bool { return a.idle() && b.idle() })
	for _, n := range []*node{a, b} {
		if n.refuses(host(0)) || n.refuses(host(9)) {
			t.Fatalf("%s blocks after 19 failures across the /24", n.name)
		}
	}
	failFrom(t, b, host(9), 1, 2)
	subnet := netip.MustParsePrefix("198.51.100.0/24")
	for _, n := range []*node{a, b} {
		// The whole /24, including an address that never failed.
		eventually(t, propagate, n.name+" refusing the /24", func() bool { return n.refuses("198.51.100.200") })
		blk, _ := n.e.BlockOf(netip.MustParseAddr("198.51.100.200"))
		if blk.Prefix != subnet || blk.Node != "mx2" {
			t.Fatalf("%s: block %+v, want %s made by mx2", n.name, blk, subnet)
		}
	}
	if k, _ := r.client(t).ZCard(context.Background(), "postern:{b}:index").Result(); k != 1 {
		t.Errorf("index holds %d blocks, want 1 (the /24)", k)
	}
}
