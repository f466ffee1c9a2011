package cluster

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/snapshot"
)

// passPolicy is a policy restricting alice@example.com to 127.0.0.0/24.
func passPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	yaml := `services:
  imap: { listen: ":143", backend: "127.0.0.1:1" }
patterns:
  office: [ "192.0.2.0/24" ]
login_restrictions: [ "alice@example.com=127.0.0.0/24" ]
`
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Policy
}

// passNode is a node with a passes manager shared through the cluster.
type passNode struct {
	*node
	m  *passes.Manager
	sh *PassShare
}

func startPassNode(t testing.TB, name, addr, dir string) *passNode {
	t.Helper()
	n := startNode(t, name, addr, dir)
	pol := passPolicy(t)
	m := passes.NewManager(passes.NewTable(time.Now), n.db, func() *policy.Policy { return pol })
	if _, err := m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	sh := n.c.Passes(m)
	m.SetPublisher(sh)
	sh.Start()
	t.Cleanup(sh.Close) // before the node's link closes (cleanups run last first)
	return &passNode{node: n, m: m, sh: sh}
}

func (n *passNode) allows(addr string) bool {
	_, ok := n.m.Table().Allow(context.Background(), "alice@example.com", netip.MustParseAddr(addr))
	return ok
}

// TestPassesAcrossNodes: a pass added on mx1 allows alice's login from the
// pass's list on mx2, is stored and audited there, and survives mx2's
// restart; its removal on mx1 removes it on mx2.
func TestPassesAcrossNodes(t *testing.T) {
	r := startRedis(t)
	a := startPassNode(t, "mx1", r.addr(), "")
	bdir := t.TempDir()
	b := startPassNode(t, "mx2", r.addr(), bdir)
	ctx := context.Background()
	if b.allows("203.0.113.5") {
		t.Fatal("mx2 allows before any pass")
	}
	p, err := a.m.Add(ctx, passes.AddRequest{Account: "alice@example.com", From: "203.0.113.0/24", For: "2d", Comment: "Thailand"}, "root")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 allowing alice from the pass", func() bool { return b.allows("203.0.113.5") })
	if b.allows("198.51.100.1") {
		t.Error("mx2 allows an address outside the pass")
	}
	rows, err := b.db.LoadPasses(ctx)
	if err != nil || len(rows) != 1 || rows[0].ID != p.ID || rows[0].By != "root" || rows[0].Comment != "Thailand" {
		t.Errorf("mx2's store: %+v %v", rows, err)
	}
	// The table changes first, then the audit log.
	eventually(t, propagate, "mx2's audit entry", func() bool {
		audit, _ := b.db.Audit(ctx, time.Time{}, 10)
		return len(audit) > 0
	})
	audit, _ := b.db.Audit(ctx, time.Time{}, 10)
	if len(audit) != 1 || audit[0].Actor != "root@mx1" || audit[0].Action != passes.ActionAdd {
		t.Errorf("mx2's audit: %+v", audit)
	}

	// mx2 restarts (its store keeps the pass), then the pass is removed on mx1.
	b.sh.Close()
	b.stop()
	b = startPassNode(t, "mx2", r.addr(), bdir)
	if !b.allows("203.0.113.5") {
		t.Fatal("mx2 lost the pass over a restart")
	}
	if _, err := a.m.Remove(ctx, p.ID, "root"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "mx2 refusing alice again", func() bool { return !b.allows("203.0.113.5") })
	eventually(t, propagate, "mx2's store without the pass", func() bool {
		rows, _ := b.db.LoadPasses(ctx)
		return len(rows) == 0
	})

	// A node started later loads the cluster's passes in force.
	p2, err := a.m.Add(ctx, passes.AddRequest{Account: "alice@example.com", From: "[office]", For: "1d"}, "root")
	if err != nil {
		t.Fatal(err)
	}
	c := startPassNode(t, "mx3", r.addr(), "")
	eventually(t, propagate, "mx3 loading the pass", func() bool { return c.allows("192.0.2.7") })
	if _, ok := c.m.Held()[p.ID]; ok {
		t.Error("mx3 loaded the removed pass")
	}
	_ = p2
}

// TestMalformedPassSkipped: records in Redis that are not JSON, whose ID
// does not match, or whose list does not compile under the receiving
// node's policy are skipped and logged; a good pass next to them applies.
func TestMalformedPassSkipped(t *testing.T) {
	r := startRedis(t)
	rdb := r.client(t)
	ctx := context.Background()
	key := "postern:{p}:passes"
	rec := func(id, from string) string {
		b, _ := json.Marshal(passRecord{Pass: passes.Pass{ID: id, Account: "alice@example.com", From: from,
			Created: time.Now(), Until: time.Now().Add(time.Hour), By: "x"}, Node: "evil"})
		return string(b)
	}
	if err := rdb.HSet(ctx, key,
		"0123456789abcdef", "{not json",
		"1123456789abcdef", rec("2223456789abcdef", "203.0.113.0/24"),
		"3123456789abcdef", rec("3123456789abcdef", "[nosuch]"),
		"4123456789abcdef", rec("4123456789abcdef", "0.0.0.0/0;::/0 *@example.com"),
		"../../etc/passwd", rec("../../etc/passwd", "203.0.113.0/24"),
		"5123456789abcdef", rec("5123456789abcdef", "198.51.100.0/24"),
	).Err(); err != nil {
		t.Fatal(err)
	}
	b := startPassNode(t, "mx2", r.addr(), "")
	eventually(t, propagate, "the good pass on mx2", func() bool { return b.allows("198.51.100.9") })
	held := b.m.Held()
	if len(held) != 1 {
		t.Errorf("mx2 holds %v", held)
	}
	if b.allows("203.0.113.5") {
		t.Error("a pass whose record ID mismatched its field was applied")
	}
	// The records are read in Redis's order: the good pass may apply before
	// the bad ones are logged.
	wants := []string{"malformed travel pass", "refusing a travel pass", "nosuch"}
	logged := func() bool {
		logs := b.log.String()
		for _, want := range wants {
			if !strings.Contains(logs, want) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(propagate)
	for !logged() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	logs := b.log.String()
	for _, want := range wants {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}
