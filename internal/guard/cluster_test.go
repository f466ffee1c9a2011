package guard

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// recCluster records what the engine hands its cluster.
type recCluster struct {
	mu      sync.Mutex
	changes []Change
	events  []Event
}

func (r *recCluster) Publish(c Change) { r.mu.Lock(); r.changes = append(r.changes, c); r.mu.Unlock() }
func (r *recCluster) Count(ev Event)   { r.mu.Lock(); r.events = append(r.events, ev); r.mu.Unlock() }

func clusterHarness(t *testing.T, rc *recCluster, peers ...netip.Prefix) *harness {
	t.Helper()
	h := &harness{clock: newClock(), st: newMemStore()}
	yaml := services + `
intrusion_prevention:
  block_minutes: 60
  imap_pop3: { failed_logins: 5 }
`
	e, err := New(context.Background(), settingsFrom(t, yaml, nil), Options{Store: h.st, Clock: h.clock.Now, Node: "mx1", Cluster: rc, Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	h.e = e
	h.st.engine = e
	return h
}

// TestClusterHooks: each counted failed login is handed to the cluster
// once (a retried wrong password is not); blocks and administrator changes
// are announced, automatic ones marked so; the audit names the node.
func TestClusterHooks(t *testing.T) {
	rc := new(recCluster)
	h := clusterHarness(t, rc)
	s := h.open("203.0.113.5", service.IMAP)
	fp := h.e.PasswordFingerprint("u", "one")
	s.LoginFailed("u", fp)
	s.LoginFailed("u", fp) // the same wrong password: counted once
	s.LoginFailed("u", h.e.PasswordFingerprint("u", "two"))
	if len(rc.events) != 2 {
		t.Fatalf("%d events handed to the cluster, want 2: %+v", len(rc.events), rc.events)
	}
	ev := rc.events[0]
	if ev.Prefix.String() != "203.0.113.5/32" || ev.Reason != reason.Login || ev.Limit != 5 || ev.Window != time.Hour || ev.Group != GroupMail {
		t.Errorf("event %+v", ev)
	}
	if ev.Key() != "imap_pop3:L:203.0.113.5/32" {
		t.Errorf("key %q", ev.Key())
	}
	for range 3 {
		s.LoginFailed("u", 0)
	}
	if len(rc.changes) != 1 || rc.changes[0].Kind != ChangePut || !rc.changes[0].Auto || rc.changes[0].Node != "mx1" {
		t.Fatalf("changes after the local block: %+v", rc.changes)
	}
	ctx := context.Background()
	p := netip.MustParsePrefix("198.51.100.0/24")
	h.e.BlockManual(ctx, p, time.Hour, "", "cli")
	h.e.Unblock(ctx, []netip.Prefix{p}, "cli")
	h.e.UnblockAll(ctx, "cli")
	h.e.PurgeExpired(ctx, "cli")
	kinds := []ChangeKind{ChangePut, ChangePut, ChangeDelete, ChangeDeleteAll, ChangePurge}
	if len(rc.changes) != len(kinds) {
		t.Fatalf("changes %+v", rc.changes)
	}
	for i, k := range kinds {
		if rc.changes[i].Kind != k {
			t.Errorf("change %d: kind %d, want %d", i, rc.changes[i].Kind, k)
		}
		if i > 0 && (rc.changes[i].Actor != "cli" || rc.changes[i].Auto) {
			t.Errorf("change %d: %+v", i, rc.changes[i])
		}
	}
	if a := h.st.audit; len(a) == 0 || a[0].Actor != "cli@mx1" {
		t.Errorf("audit %+v", a)
	}
}

// TestCrossedBlocksOnce: the cluster's report of a crossing blocks the
// prefix once (a second report refreshes it); a peer or a trusted address
// is never blocked this way; a log-only trigger only logs.
func TestCrossedBlocksOnce(t *testing.T) {
	rc := new(recCluster)
	peer := netip.MustParsePrefix("192.0.2.10/32")
	h := clusterHarness(t, rc, peer)
	ev := Event{Prefix: netip.MustParsePrefix("203.0.113.9/32"), Group: GroupMail, Reason: reason.Login, Window: time.Hour, Limit: 5, Addr: ip("203.0.113.9"), Service: "imap"}
	h.e.Crossed(ev)
	h.e.Crossed(ev)
	if v := h.e.Admit(ip("203.0.113.9"), service.IMAP); v.Action != Refuse || v.Reason != reason.Login {
		t.Fatalf("after a crossing: %+v", v)
	}
	if len(rc.changes) != 1 || !rc.changes[0].Auto {
		t.Errorf("announced %+v, want one automatic block", rc.changes)
	}
	if b, ok := h.st.get("203.0.113.9/32"); !ok || b.Node != "mx1" {
		t.Errorf("stored %+v %v", b, ok)
	}
	ev.Prefix, ev.Addr = peer, peer.Addr()
	h.e.Crossed(ev)
	if h.e.Admit(peer.Addr(), service.IMAP).Action == Refuse {
		t.Error("a peer was blocked")
	}
	// Nor a wider prefix that holds a peer, for another address in it.
	ev.Prefix, ev.Addr = netip.MustParsePrefix("192.0.2.0/24"), ip("192.0.2.99")
	h.e.Crossed(ev)
	if h.e.Admit(ip("192.0.2.99"), service.IMAP).Action == Refuse {
		t.Error("a prefix holding a peer was blocked")
	}
	// A bad event is ignored.
	h.e.Crossed(Event{Reason: 'x'})
	h.e.Crossed(Event{Reason: reason.Login})
}

// TestApplyRemote: another node's blocks are enforced and stored, not
// announced again; invalid ones and automatic blocks of peers are skipped;
// unblock, unblock-all and purge apply; an administrator's change is
// audited with the actor and node that made it.
func TestApplyRemote(t *testing.T) {
	rc := new(recCluster)
	peer := netip.MustParsePrefix("192.0.2.10/32")
	h := clusterHarness(t, rc, peer)
	ctx := context.Background()
	now := h.clock.Now()
	good := store.Block{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: reason.Manual, FirstSeen: now, LastSeen: now, Expires: now.Add(time.Hour), Node: "mx2", By: "admin:cli"}
	bad := good
	bad.Prefix = netip.MustParsePrefix("10.0.0.1/8")
	peerBlock := good
	peerBlock.Prefix, peerBlock.By, peerBlock.Reason = netip.MustParsePrefix("192.0.2.0/24"), "engine", reason.Login
	err := h.e.ApplyRemote(ctx, Change{Kind: ChangePut, Blocks: []store.Block{good, bad, peerBlock}, Node: "mx2", Actor: "cli"})
	if err == nil {
		t.Error("no error for the skipped blocks")
	}
	if h.e.Admit(ip("198.51.100.7"), service.IMAP).Action != Refuse {
		t.Error("a remote block is not enforced")
	}
	if h.e.Admit(peer.Addr(), service.IMAP).Action == Refuse {
		t.Error("an automatic block of a peer was applied")
	}
	if _, ok := h.st.get("198.51.100.0/24"); !ok || h.st.len() != 1 {
		t.Errorf("store holds %d blocks", h.st.len())
	}
	if len(rc.changes) != 0 {
		t.Errorf("a remote change was announced again: %+v", rc.changes)
	}
	if a := h.st.audit; len(a) != 1 || a[0].Actor != "cli@mx2" || a[0].Action != "block" {
		t.Errorf("audit %+v", a)
	}
	if err := h.e.ApplyRemote(ctx, Change{Kind: ChangeDelete, Prefixes: []netip.Prefix{good.Prefix}, Node: "mx2"}); err != nil {
		t.Fatal(err)
	}
	if h.e.Admit(ip("198.51.100.7"), service.IMAP).Action == Refuse || h.st.len() != 0 {
		t.Error("a remote unblock did not apply")
	}
	h.e.ApplyRemote(ctx, Change{Kind: ChangePut, Blocks: []store.Block{good}, Node: "mx2"})
	h.clock.Advance(2 * time.Hour)
	if err := h.e.ApplyRemote(ctx, Change{Kind: ChangePurge, Before: h.clock.Now(), Node: "mx2"}); err != nil {
		t.Fatal(err)
	}
	if len(h.e.Blocks()) != 0 {
		t.Error("a remote purge did not apply")
	}
	if err := h.e.ApplyRemote(ctx, Change{Kind: 99}); err == nil {
		t.Error("an unknown change was accepted")
	}
}

// TestAdmitWithClusterDoesNotAllocate: the cluster adds nothing to the
// accept path.
func TestAdmitWithClusterDoesNotAllocate(t *testing.T) {
	h := clusterHarness(t, new(recCluster))
	h.e.BlockManual(context.Background(), netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", "cli")
	clean, blocked := ip("203.0.113.1"), ip("198.51.100.1")
	if n := testing.AllocsPerRun(1000, func() {
		h.e.Admit(clean, service.IMAP)
		h.e.Admit(blocked, service.IMAP)
	}); n != 0 {
		t.Errorf("Admit allocates %.1f times with a cluster", n)
	}
}

// TestRememberOffence: the cluster's escalation memory makes the next
// automatic block of the prefix escalate from it; a newer record wins, and
// a record past the memory, in the future, or of a bad prefix is ignored.
// An automatic block's announcement carries the memory.
func TestRememberOffence(t *testing.T) {
	rc := new(recCluster)
	h := clusterHarness(t, rc)
	now := h.clock.Now()
	p := netip.MustParsePrefix("203.0.113.5/32")
	h.e.RememberOffence(p, 4, now.Add(-time.Hour))
	h.e.RememberOffence(p, 6, now.Add(-2*time.Hour))                     // older: ignored
	h.e.RememberOffence(netip.MustParsePrefix("203.0.113.5/24"), 9, now) // not masked: ignored
	q := netip.MustParsePrefix("203.0.113.6/32")
	h.e.RememberOffence(q, 5, now.Add(-31*24*time.Hour)) // past the 30 days' memory
	r := netip.MustParsePrefix("203.0.113.7/32")
	h.e.RememberOffence(r, 5, now.Add(time.Hour)) // in the future
	for addr, want := range map[string]int{"203.0.113.5": 5, "203.0.113.6": 0, "203.0.113.7": 0} {
		s := h.open(addr, service.IMAP)
		for i := range 5 {
			s.LoginFailed("u", h.e.PasswordFingerprint("u", string(rune('a'+i))))
		}
		b, ok := h.e.BlockOf(ip(addr))
		if !ok || b.Level != want {
			t.Errorf("%s: block %v at level %d, want %d", addr, ok, b.Level, want)
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	autos := 0
	for _, c := range rc.changes {
		if c.Auto {
			autos++
			if c.Memory != 30*24*time.Hour {
				t.Errorf("automatic block announced with memory %s", c.Memory)
			}
		}
	}
	if autos != 3 {
		t.Errorf("%d automatic blocks announced, want 3", autos)
	}
}
