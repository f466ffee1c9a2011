package guard

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// TestAccept: the one connection gate answers Allow with a session, Close
// (no session) for the connection that trips connections per minute,
// Refuse (no session) for a blocked or not granted address, each with the
// refusal text front-ends wrap in their own wording.
func TestAccept(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	for i := range 3 {
		gs, v := h.e.Accept(ip("203.0.113.1"), service.SMTP, nil)
		if gs == nil || v.Action != Allow || v.Quiet {
			t.Fatalf("connection %d: %+v", i+1, v)
		}
		gs.Close()
	}
	gs, v := h.e.Accept(ip("203.0.113.1"), service.SMTP, nil)
	if gs != nil || v.Action != Close || v.Reason != reason.Connections || v.Refusal() != "Blocked ("+reason.Connections.Name()+")" {
		t.Fatalf("the connection that trips I: %v %+v (%q)", gs, v, v.Refusal())
	}
	gs, v = h.e.Accept(ip("203.0.113.1"), service.SMTP, nil)
	if gs != nil || v.Action != Refuse || v.Reason != reason.Connections || v.Quiet {
		t.Fatalf("a blocked address: %v %+v", gs, v)
	}
	if n := h.e.LiveSessions(); n != 0 {
		t.Fatalf("%d sessions left open", n)
	}

	h = newHarness(t, `
patterns: { Office: "203.0.113.0/24" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office]" }
`, nil)
	gs, v = h.e.Accept(ip("198.51.100.9"), service.IMAP, nil)
	if gs != nil || v.Action != Refuse || v.Refusal() != "Access denied" {
		t.Fatalf("not granted: %v %+v", gs, v)
	}
}

// TestAcceptTarpitAndRecheck: a blocked address let in is tarpitted at
// accept; an open connection whose address is blocked later is refused by
// Recheck.
func TestAcceptTarpitAndRecheck(t *testing.T) {
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  refuse_blocked: false\n  close_blocked_connection: false\n  tarpit_delay: 3s", 1)
	h := newHarness(t, cfg, nil)
	if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.5/32"), time.Hour, "", "test"); err != nil {
		t.Fatal(err)
	}
	gs, v := h.e.Accept(ip("203.0.113.5"), service.SMTP, nil)
	if gs == nil || v.Action != Tarpit || v.Delay != 3*time.Second {
		t.Fatalf("a tarpitted address: %v %+v", gs, v)
	}
	gs.Close()

	h = newHarness(t, allTriggers, nil)
	gs, v = h.e.Accept(ip("203.0.113.6"), service.SMTP, nil)
	if gs == nil || v.Action != Allow {
		t.Fatalf("clean: %+v", v)
	}
	defer gs.Close()
	if d := gs.Recheck(); d.Action != Continue {
		t.Fatalf("recheck of a clean address: %+v", d)
	}
	if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.6/32"), time.Hour, "", "test"); err != nil {
		t.Fatal(err)
	}
	if d := gs.Recheck(); d.Action != Refuse || d.Refusal() != "Blocked ("+reason.Manual.Name()+")" {
		t.Fatalf("recheck after a block: %+v", d)
	}
}

// TestReject: the decision says when what reported the event is refused —
// a tarpit account, a content rule (not in a dry run), a DNSBL listing that
// blocks — so no front-end reads Blocked, DryRun or Reason to decide.
func TestReject(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	if d := h.open("203.0.113.20", service.SMTP).Recipient("alice@example.com"); d.Reject {
		t.Fatalf("an ordinary recipient: %+v", d)
	}
	if d := h.open("203.0.113.21", service.SMTP).Recipient("trap@example.com"); !d.Reject || d.Reason != reason.TarpitAccount {
		t.Fatalf("a tarpit account: %+v", d)
	}
	if d := h.open("203.0.113.22", service.SMTP).ContentRule("r1"); !d.Reject {
		t.Fatalf("a content rule: %+v", d)
	}
	if d := h.open("203.0.113.23", service.SMTP).DNSBLListed("zen.example.org"); !d.Reject || !d.Blocked {
		t.Fatalf("a DNSBL listing that blocks: %+v", d)
	}

	cfg := strings.Replace(allTriggers, "content_rules: true }", "content_rules: true, log_only: [C, dnsbl] }", 1)
	h = newHarness(t, cfg, nil)
	if d := h.open("203.0.113.30", service.SMTP).ContentRule("r1"); d.Reject || !d.DryRun {
		t.Fatalf("a log-only content rule: %+v", d)
	}
	if d := h.open("203.0.113.31", service.SMTP).DNSBLListed("zen.example.org"); d.Reject || !d.DryRun {
		t.Fatalf("a log-only DNSBL listing: %+v", d)
	}
}
