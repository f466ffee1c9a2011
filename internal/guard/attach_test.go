package guard

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/postern/postern/internal/service"
)

// Attach opens a session without counting a connection (I); events on it
// count as on any session. AdmitBlocks ignores the access policy's grant
// but not the block table.
func TestAttachAndAdmitBlocks(t *testing.T) {
	h := newHarness(t, allTriggers+"  close_blocked_connection: true\n", nil)
	for range 10 {
		s := h.e.Attach(ip("203.0.113.40"), service.SMTP)
		s.Close()
	}
	if _, ok := h.e.BlockOf(ip("203.0.113.40")); ok {
		t.Fatal("Attach counted connections")
	}
	s := h.e.Attach(ip("203.0.113.41"), service.Submission)
	defer s.Close()
	for i := range 3 {
		s.LoginFailed("alice", uint64(i+1))
	}
	if _, ok := h.e.BlockOf(ip("203.0.113.41")); !ok {
		t.Fatal("failed logins on an attached session did not block")
	}
	if v := h.e.AdmitBlocks(ip("203.0.113.41"), service.SMTP); v.Action != Refuse || !v.Blocked {
		t.Fatalf("AdmitBlocks of a blocked address: %+v", v)
	}
	// A service the configuration does not have: Admit refuses everyone,
	// AdmitBlocks judges by blocks alone.
	if v := h.e.Admit(ip("203.0.113.42"), service.POP3S); v.Action != Refuse {
		t.Fatalf("Admit on an unconfigured service: %+v", v)
	}
	if v := h.e.AdmitBlocks(ip("203.0.113.42"), service.POP3S); v.Action != Allow {
		t.Fatalf("AdmitBlocks of a clean address: %+v", v)
	}
	if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.42/32"), time.Hour, "", "test"); err != nil {
		t.Fatal(err)
	}
	if v := h.e.AdmitBlocks(ip("203.0.113.42"), service.POP3S); v.Action != Refuse {
		t.Fatalf("AdmitBlocks of a manual block: %+v", v)
	}
}
