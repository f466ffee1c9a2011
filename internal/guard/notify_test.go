package guard

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// noticeRecorder keeps what the engine announces.
type noticeRecorder struct {
	mu sync.Mutex
	ns []Notice
}

func (r *noticeRecorder) Notify(n Notice) {
	r.mu.Lock()
	r.ns = append(r.ns, n)
	r.mu.Unlock()
}

func (r *noticeRecorder) take() []Notice {
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.ns
	r.ns = nil
	return ns
}

func TestNotifierBlocksUnblocksEscalations(t *testing.T) {
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  escalation: { factor: 3, max_minutes: 400 }", 1)
	clock, st, rec := newClock(), newMemStore(), new(noticeRecorder)
	e, err := New(context.Background(), settingsFrom(t, cfg, nil), Options{Store: st, Clock: clock.Now, Node: "n1", Notifier: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	open := func() *Session { s, _ := e.Open(netip.MustParseAddr("203.0.113.50"), service.SMTP, nil); return s }

	open().DNSBLListed("zen.example.org")
	ns := rec.take()
	if len(ns) != 1 || ns[0].Kind != NoticeBlock || ns[0].Prefix.String() != "203.0.113.50/32" || ns[0].Reason != reason.DNSBL ||
		!ns[0].Auto || ns[0].Node != "n1" || ns[0].Actor != "engine" || ns[0].Level != 0 || ns[0].Expires.Sub(clock.Now()) != time.Hour {
		t.Fatalf("first block: %+v", ns)
	}
	// A refreshed block is not announced again.
	open().DNSBLListed("zen.example.org")
	if ns := rec.take(); len(ns) != 0 {
		t.Fatalf("refresh announced: %+v", ns)
	}
	// The second offence escalates: a block, then its escalation.
	clock.Advance(time.Hour + time.Second)
	open().DNSBLListed("zen.example.org")
	ns = rec.take()
	if len(ns) != 2 || ns[0].Kind != NoticeBlock || ns[1].Kind != NoticeEscalation || ns[1].Level != 1 || ns[1].Expires.Sub(clock.Now()) != 3*time.Hour {
		t.Fatalf("escalation: %+v", ns)
	}

	p := netip.MustParsePrefix("192.0.2.0/24")
	if _, err := e.BlockManual(ctx, p, 2*time.Hour, "scanner", "cli"); err != nil {
		t.Fatal(err)
	}
	ns = rec.take()
	if len(ns) != 1 || ns[0].Kind != NoticeBlock || ns[0].Prefix != p || ns[0].Reason != reason.Manual || ns[0].Auto || ns[0].Actor != "admin:cli" {
		t.Fatalf("manual block: %+v", ns)
	}
	// Unblocking a prefix that is not blocked announces nothing.
	if _, err := e.Unblock(ctx, []netip.Prefix{p, netip.MustParsePrefix("198.51.100.0/24")}, "api:ops"); err != nil {
		t.Fatal(err)
	}
	ns = rec.take()
	if len(ns) != 1 || ns[0].Kind != NoticeUnblock || ns[0].Prefix != p || ns[0].Actor != "api:ops" || ns[0].Reason != reason.Manual {
		t.Fatalf("unblock: %+v", ns)
	}
	// Purged after expiry: announced as removed by "expired".
	clock.Advance(4 * time.Hour)
	if _, err := e.PurgeExpired(ctx, "cli"); err != nil {
		t.Fatal(err)
	}
	ns = rec.take()
	if len(ns) != 1 || ns[0].Kind != NoticeUnblock || ns[0].Actor != "expired" || !ns[0].Auto || ns[0].Prefix.String() != "203.0.113.50/32" {
		t.Fatalf("purge: %+v", ns)
	}
	if _, err := e.BlockManual(ctx, p, 0, "", "cli"); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if _, err := e.UnblockAll(ctx, "cli"); err != nil {
		t.Fatal(err)
	}
	if ns := rec.take(); len(ns) != 1 || ns[0].Kind != NoticeUnblock || ns[0].Prefix != p {
		t.Fatalf("unblock all: %+v", ns)
	}
	if NoticeBlock.String() != "block" || NoticeUnblock.String() != "unblock" || NoticeEscalation.String() != "escalation" {
		t.Fatal("notice names")
	}
}
