package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

const allTriggers = services + `
patterns:
  Traps: "trap@example.com; *@honeypot.example.com"
intrusion_prevention:
  block_minutes: 60
  smtp: { connections_per_minute: 4, failed_logins: 3, unknown_recipients: 3, relay_denials: 3,
          rset_count: 3, spam_score: 8.5, dnsbl: [zen.example.org], message_size: 1MB,
          tarpit_accounts: "[Traps]", content_rules: true }
  imap_pop3: { connections_per_minute: 100, failed_logins: 3 }
  web: { failed_logins: 3 }
`

// TestEveryTrigger drives each trigger to one event below its threshold
// (no block) and then to the threshold (a block with its reason and detail,
// in the table and in the store, and Admit refuses the address).
func TestEveryTrigger(t *testing.T) {
	cases := []struct {
		reason  reason.Code
		service service.Service
		below   func(s *Session) Decision // one event short of the threshold, in total
		trip    func(s *Session) Decision
		detail  string
	}{
		{reason.Login, service.IMAP, repeat(2, func(s *Session, i int) Decision { return s.LoginFailed("alice@example.com", uint64(i+1)) }),
			func(s *Session) Decision { return s.LoginFailed("alice@example.com", 99) }, "account alice@example.com"},
		{reason.Login, service.Web, repeat(2, func(s *Session, i int) Decision { return s.LoginFailed("bob", uint64(i+1)) }),
			func(s *Session) Decision { return s.LoginFailed("bob", 99) }, "account bob"},
		{reason.UnknownRecipients, service.SMTP, repeat(2, func(s *Session, i int) Decision { return s.UnknownRecipient(fmt.Sprintf("u%d@example.com", i)) }),
			func(s *Session) Decision { return s.UnknownRecipient("last@example.com") }, "recipient last@example.com"},
		{reason.Relay, service.SMTP, repeat(2, func(s *Session, i int) Decision { return s.RelayDenied("x@elsewhere.example") }),
			func(s *Session) Decision { return s.RelayDenied("y@elsewhere.example") }, "recipient y@elsewhere.example"},
		{reason.RSET, service.SMTP, repeat(2, func(s *Session, i int) Decision { return s.Rset() }),
			func(s *Session) Decision { return s.Rset() }, ""},
		{reason.Spam, service.SMTP, func(s *Session) Decision { return s.SpamScore(8.5) },
			func(s *Session) Decision { return s.SpamScore(8.6) }, "score 8.60, limit 8.50"},
		{reason.DNSBL, service.SMTP, func(s *Session) Decision { return Decision{} },
			func(s *Session) Decision { return s.DNSBLListed("zen.example.org") }, "zone zen.example.org"},
		{reason.Size, service.SMTP, func(s *Session) Decision { return s.MessageSize(1 << 20) },
			func(s *Session) Decision { return s.MessageSize(1<<20 + 1) }, "1048577 bytes, limit 1048576"},
		{reason.TarpitAccount, service.SMTP, func(s *Session) Decision { return s.Recipient("alice@example.com") },
			func(s *Session) Decision { return s.Recipient("x@HONEYPOT.example.com") }, "recipient x@HONEYPOT.example.com"},
		{reason.Content, service.SMTP, func(s *Session) Decision { return Decision{} },
			func(s *Session) Decision { return s.ContentRule("viagra") }, "rule viagra"},
	}
	for i, c := range cases {
		t.Run(c.reason.Name()+"/"+c.service.String(), func(t *testing.T) {
			h := newHarness(t, allTriggers, nil)
			addr := fmt.Sprintf("198.51.100.%d", i+1)
			s := h.open(addr, c.service)
			if d := c.below(s); d.Blocked || d.Action != Continue {
				t.Fatalf("below the threshold: %+v", d)
			}
			if h.e.Admit(ip(addr), c.service).Action != Allow || h.st.len() != 0 {
				t.Fatal("blocked below the threshold")
			}
			d := c.trip(s)
			if !d.Blocked || d.Reason != c.reason || d.Action != Close {
				t.Fatalf("at the threshold: %+v", d)
			}
			b, ok := h.st.get(addr + "/32")
			if !ok || b.Reason != c.reason || b.Detail != c.detail || b.Service != c.service.String() || b.By != "engine" || b.Node != "test" {
				t.Fatalf("stored block: %+v", b)
			}
			if want := h.clock.Now().Add(time.Hour); !b.Expires.Equal(want) {
				t.Errorf("expires %v, want %v", b.Expires, want)
			}
			if a := h.e.Admit(ip(addr), c.service); a.Action != Refuse || a.Reason != c.reason {
				t.Fatalf("Admit after the block: %+v", a)
			}
			if h.e.Admit(ip("198.51.100.200"), c.service).Action != Allow {
				t.Fatal("a neighbour was refused")
			}
		})
	}
}

func repeat(n int, f func(s *Session, i int) Decision) func(s *Session) Decision {
	return func(s *Session) Decision {
		var d Decision
		for i := range n {
			d = f(s, i)
		}
		return d
	}
}

func TestConnectionsPerMinute(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	for i := range 3 {
		if _, d := h.e.Open(ip("203.0.113.9"), service.SMTP, nil); d.Blocked {
			t.Fatalf("connection %d blocked", i+1)
		}
		h.clock.Advance(10 * time.Second)
	}
	// The window is one minute from the first connection: 40 s later the
	// fourth connection is the threshold.
	_, d := h.e.Open(ip("203.0.113.9"), service.SMTP, nil)
	if !d.Blocked || d.Reason != reason.Connections || d.Action != Close {
		t.Fatalf("fourth connection: %+v", d)
	}
	// Spread over more than a minute, connections never block.
	for i := range 12 {
		if _, d := h.e.Open(ip("203.0.113.10"), service.SMTP, nil); d.Blocked {
			t.Fatalf("slow connection %d blocked", i)
		}
		h.clock.Advance(21 * time.Second)
	}
	// Authentication never bypasses I.
	s := h.open("203.0.113.11", service.Submission)
	s.LoginSucceeded("alice")
	for range 2 {
		h.open("203.0.113.11", service.Submission)
	}
	if _, d := h.e.Open(ip("203.0.113.11"), service.Submission, nil); !d.Blocked {
		t.Fatal("I must count authenticated clients too")
	}
}

func TestCrossSessionVersusPerSession(t *testing.T) {
	cross := newHarness(t, allTriggers, nil)
	for i := range 3 {
		d := cross.open("192.0.2.1", service.IMAP).LoginFailed("a", uint64(i+1))
		if (i == 2) != d.Blocked {
			t.Fatalf("cross-session failure %d: %+v", i+1, d)
		}
	}
	per := newHarness(t, strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  cross_session: false", 1), nil)
	for i := range 6 {
		if d := per.open("192.0.2.1", service.IMAP).LoginFailed("a", uint64(i+1)); d.Blocked {
			t.Fatalf("per-session: failures in different sessions must not add up (%d)", i+1)
		}
	}
	s := per.open("192.0.2.1", service.IMAP)
	s.LoginFailed("a", 1)
	s.LoginFailed("a", 2)
	if d := s.LoginFailed("a", 3); !d.Blocked {
		t.Fatal("per-session: three failures in one session must block")
	}
	// Cross-session counts live for the block time, then start afresh.
	cross2 := newHarness(t, allTriggers, nil)
	cross2.open("192.0.2.2", service.IMAP).LoginFailed("a", 1)
	cross2.open("192.0.2.2", service.IMAP).LoginFailed("a", 2)
	cross2.clock.Advance(61 * time.Minute)
	if d := cross2.open("192.0.2.2", service.IMAP).LoginFailed("a", 3); d.Blocked {
		t.Fatal("the window (block time) has passed: the count starts again")
	}
}

func TestSameWrongPasswordCountsOnce(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	fp := h.e.PasswordFingerprint("alice", "old-password")
	if fp == h.e.PasswordFingerprint("alice", "other") || fp == h.e.PasswordFingerprint("bob", "old-password") {
		t.Fatal("fingerprints must differ by account and password")
	}
	for i := range 20 {
		if d := h.open("192.0.2.7", service.IMAP).LoginFailed("alice", fp); d.Blocked {
			t.Fatalf("a phone retrying one stale password was blocked after %d tries", i+1)
		}
	}
	s := h.open("192.0.2.7", service.IMAP)
	s.LoginFailed("alice", h.e.PasswordFingerprint("alice", "guess1"))
	if d := s.LoginFailed("alice", h.e.PasswordFingerprint("alice", "guess2")); !d.Blocked {
		t.Fatal("three different wrong passwords must block")
	}
}

func TestBypass(t *testing.T) {
	bypass := `# partners
192.0.2.0/28
i:2001:db8:1::/48
a:mx.partner.example
s:*@partner.example
r:postmaster@*
w:list.dnswl.example
l:
t:
`
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  bypass_file: bypass.txt", 1) +
		"local_domains: \"example.com\"\n"
	h := newHarness(t, cfg, map[string]string{"bypass.txt": bypass})

	trip := func(s *Session) Decision {
		var d Decision
		for range 3 {
			d = s.UnknownRecipient("nobody@example.com")
		}
		return d
	}
	// Address items (i:, bare, a:) bypass everything, I included.
	for _, a := range []string{"192.0.2.5", "2001:db8:1:2::9", "198.51.100.25"} {
		for range 6 {
			h.open(a, service.SMTP)
		}
		s := h.open(a, service.SMTP)
		if d := trip(s); d.Blocked || s.LoginFailed("x", 1).Blocked || s.LoginFailed("x", 2).Blocked || s.LoginFailed("x", 3).Blocked {
			t.Fatalf("%s is on the bypass list", a)
		}
	}
	// Authentication bypasses P but not R (authentication is lost on RSET).
	s := h.open("203.0.113.20", service.Submission)
	s.LoginSucceeded("alice@example.com")
	if trip(s).Blocked {
		t.Fatal("an authenticated session bypasses P")
	}
	s.Rset()
	s.Rset()
	if !s.Rset().Blocked {
		t.Fatal("authentication must not bypass R")
	}
	// s: bypasses P after MAIL FROM ...
	s = h.open("203.0.113.21", service.SMTP)
	s.Sender("<bounce@partner.example>")
	if trip(s).Blocked {
		t.Fatal("s: must bypass P after MAIL FROM")
	}
	// ... but cannot bypass L: the sender is not known at AUTH (the caveat).
	s = h.open("203.0.113.22", service.SMTP)
	s.Sender("bounce@partner.example")
	s.LoginFailed("x", 1)
	s.LoginFailed("x", 2)
	if !s.LoginFailed("x", 3).Blocked {
		t.Fatal("a sender condition must not bypass L")
	}
	// l: local senders (sender domain in local_domains).
	s = h.open("203.0.113.23", service.SMTP)
	s.Sender("someone@EXAMPLE.com")
	if trip(s).Blocked {
		t.Fatal("l: must bypass P for a local sender")
	}
	// r: a bypassed recipient is not counted as unknown.
	s = h.open("203.0.113.24", service.SMTP)
	for range 5 {
		if s.UnknownRecipient("postmaster@anything.example").Blocked {
			t.Fatal("r: recipient must not count")
		}
	}
	// w: a DNS-whitelisted address bypasses everything but I.
	s = h.open("203.0.113.25", service.SMTP)
	s.Whitelisted()
	if trip(s).Blocked || s.DNSBLListed("zen.example.org").Blocked {
		t.Fatal("w: must bypass P and D")
	}
	if h.e.Settings().Bypass.Zones[0] != "list.dnswl.example" {
		t.Error("w: zones must be exposed for the SMTP gateway")
	}
	if len(BypassTable()) == 0 {
		t.Error("bypass table for check")
	}
}

func TestBypassFileErrors(t *testing.T) {
	for body, want := range map[string]string{
		"a:nonexistent.example\n": "bypass.txt:1:1: a:nonexistent.example: the host name does not resolve",
		"10.0.0.1\n300.1.1.1\n":   "bypass.txt:2:1: bad item \"300.1.1.1\"",
		"s:notmail\n":             "bypass.txt:1:3: bypass senders: \"notmail\" is not a mail mask",
		"f:missing.txt\n":         "bypass file: open",
		"w:bad zone\n":            "want a DNS zone",
	} {
		cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  bypass_file: bypass.txt", 1)
		_, err := tryCompile(t, cfg, map[string]string{"bypass.txt": body})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", body, err, want)
		}
	}
}

func TestEscalation(t *testing.T) {
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  escalation: { factor: 3, max_minutes: 400 }", 1)
	h := newHarness(t, cfg, nil)
	want := []time.Duration{time.Hour, 3 * time.Hour, 400 * time.Minute, 400 * time.Minute}
	for round, w := range want {
		s := h.open("203.0.113.50", service.SMTP)
		s.DNSBLListed("zen.example.org")
		b, ok := h.st.get("203.0.113.50/32")
		if !ok || b.Level != round || b.Expires.Sub(h.clock.Now()) != w {
			t.Fatalf("round %d: level %d, for %v; want level %d for %v", round, b.Level, b.Expires.Sub(h.clock.Now()), round, w)
		}
		h.clock.Advance(w + time.Second)
	}
	// Past the memory (30 days by default) an offender starts afresh.
	h.clock.Advance(31 * 24 * time.Hour)
	h.open("203.0.113.50", service.SMTP).DNSBLListed("zen.example.org")
	if b, _ := h.st.get("203.0.113.50/32"); b.Level != 0 {
		t.Fatalf("level after the memory: %d", b.Level)
	}
}

func TestPrefixBlockingAndSubnets(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	// Rotating addresses inside one IPv6 /64 count together and block the /64.
	for i := range 3 {
		h.open(fmt.Sprintf("2001:db8:aa:bb::%x", i+1), service.IMAP).LoginFailed("a", uint64(i+1))
	}
	if _, ok := h.st.get("2001:db8:aa:bb::/64"); !ok {
		t.Fatal("the /64 must be blocked")
	}
	if h.e.Admit(ip("2001:db8:aa:bb:ffff::1"), service.IMAP).Action != Refuse || h.e.Admit(ip("2001:db8:aa:bc::1"), service.IMAP).Action != Allow {
		t.Fatal("the /64 and only it is refused")
	}
	// Multi-prefix counting: failures spread over a /24 block the /24 at
	// factor × threshold.
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  subnets: { ipv4: 24, ipv6: [48], factor: 2 }", 1)
	h = newHarness(t, cfg, nil)
	for i := range 5 {
		if d := h.open(fmt.Sprintf("203.0.113.%d", i+1), service.IMAP).LoginFailed("a", uint64(i+1)); d.Blocked {
			t.Fatalf("failure %d blocked too early", i+1)
		}
	}
	d := h.open("203.0.113.77", service.IMAP).LoginFailed("a", 77)
	b, ok := h.st.get("203.0.113.0/24")
	if !d.Blocked || !ok || !strings.Contains(b.Detail, "6 events across 203.0.113.0/24") {
		t.Fatalf("subnet block: %+v %+v", d, b)
	}
	if h.e.Admit(ip("203.0.113.200"), service.IMAP).Action != Refuse {
		t.Fatal("the /24 must be refused")
	}
}

func TestLogOnlyTarpitAndClose(t *testing.T) {
	cfg := strings.Replace(allTriggers, "content_rules: true }", "content_rules: true, log_only: [L, dnsbl] }", 1)
	h := newHarness(t, cfg, nil)
	s := h.open("203.0.113.60", service.SMTP)
	for i := range 5 {
		if d := s.LoginFailed("a", uint64(i+1)); d.Blocked {
			t.Fatal("log-only L blocked")
		} else if i >= 2 && !d.DryRun {
			t.Fatalf("log-only L must say it would block: %+v", d)
		}
	}
	if d := s.DNSBLListed("zen.example.org"); d.Blocked || !d.DryRun {
		t.Fatalf("log-only D: %+v", d)
	}
	if h.st.len() != 0 {
		t.Fatal("dry run must not store blocks")
	}

	// refuse_blocked off + tarpit_delay: a blocked address is let in but slowed.
	cfg = strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  refuse_blocked: false\n  close_blocked_connection: false\n  tarpit_delay: 3s", 1)
	h = newHarness(t, cfg, nil)
	s = h.open("203.0.113.61", service.SMTP)
	d := s.ContentRule("r1")
	if !d.Blocked || d.Action != Tarpit || d.Delay != 3*time.Second {
		t.Fatalf("tarpitted block: %+v", d)
	}
	if d := s.Recipient("alice@example.com"); !d.Blocked || d.Delay != 3*time.Second {
		t.Fatalf("later replies are tarpitted too: %+v", d)
	}
	if a := h.e.Admit(ip("203.0.113.61"), service.SMTP); a.Action != Tarpit || a.Delay != 3*time.Second || a.Reason != reason.Content {
		t.Fatalf("Admit of a tarpitted address: %+v", a)
	}

	// close_all closes the address's other connections; without it they go on.
	for _, all := range []bool{false, true} {
		cfg := allTriggers
		if all {
			cfg = strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  close_all: true", 1)
		}
		h = newHarness(t, cfg, nil)
		var closed atomic.Int32
		others := make([]*Session, 3)
		for i := range others {
			others[i], _ = h.e.Open(ip("203.0.113.62"), service.IMAP, func() { closed.Add(1) })
		}
		neighbour, _ := h.e.Open(ip("203.0.113.63"), service.IMAP, func() { closed.Add(100) })
		if n := h.e.LiveSessions(); n != 4 {
			t.Fatalf("live sessions: %d", n)
		}
		s, _ := h.e.Open(ip("203.0.113.62"), service.IMAP, func() { t.Error("the tripping session is closed by its front-end, not by the closer") })
		s.LoginFailed("a", 1)
		s.LoginFailed("a", 2)
		if d := s.LoginFailed("a", 3); d.Action != Close {
			t.Fatalf("the connection that tripped the block must close: %+v", d)
		}
		want := int32(0)
		if all {
			want = 3
		}
		if got := closed.Load(); got != want {
			t.Errorf("close_all=%v: %d other connections closed, want %d", all, got, want)
		}
		neighbour.Close()
		s.Close()
		if n := h.e.LiveSessions(); n != 3 {
			t.Errorf("live sessions after two closed: %d", n)
		}
	}
}

func TestAccountProtection(t *testing.T) {
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  account_protection: { failures: 3, delay: 2s }", 1)
	h := newHarness(t, cfg, nil)
	s := h.open("198.51.100.1", service.IMAP)
	for i := range 3 {
		if d := s.LoginDelay("ceo@example.com"); d != 0 {
			t.Fatalf("delay before %d failures: %v", i, d)
		}
		h.open(fmt.Sprintf("192.0.2.%d", 100+i), service.IMAP).LoginFailed("CEO@example.com", 1)
	}
	if d := s.LoginDelay("ceo@example.com"); d != 2*time.Second {
		t.Fatalf("account under attack from 3 addresses: delay %v", d)
	}
	if d := s.LoginDelay("other@example.com"); d != 0 {
		t.Fatal("other accounts are not slowed")
	}
	h.clock.Advance(61 * time.Minute)
	if d := s.LoginDelay("ceo@example.com"); d != 0 {
		t.Fatal("the delay ends with the window; the account is never locked")
	}
}

func TestTrustedUpstreamNeverBlocked(t *testing.T) {
	h := newHarness(t, allTriggers+"trusted_upstreams: \"10.0.0.5\"\n", nil)
	s := h.open("10.0.0.5", service.SMTP)
	for i := range 10 {
		s.LoginFailed("a", uint64(i+1))
	}
	if h.st.len() != 0 || h.e.Admit(ip("10.0.0.5"), service.SMTP).Action != Allow {
		t.Fatal("a trusted upstream must never be blocked automatically")
	}
}

func TestAdmitAppliesPolicy(t *testing.T) {
	h := newHarness(t, `
patterns: { Office: "203.0.113.0/24" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office]", deny: "203.0.113.13" }
`, nil)
	for addr, want := range map[string]Action{"203.0.113.1": Allow, "203.0.113.13": Refuse, "8.8.8.8": Refuse, "::ffff:203.0.113.2": Allow} {
		if got := h.e.Admit(ip(addr), service.IMAP); got.Action != want || got.Reason != 0 {
			t.Errorf("%s: %+v, want %v", addr, got, want)
		}
	}
	if h.e.Admit(ip("203.0.113.1"), service.POP3).Action != Refuse {
		t.Error("an unconfigured service admits no one")
	}
}

func TestAdminOperations(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	ctx := context.Background()
	var closed atomic.Int32
	h.e.Open(ip("192.0.2.99"), service.SMTP, func() { closed.Add(1) })
	b, err := h.e.BlockManual(ctx, netip.MustParsePrefix("192.0.2.0/24"), 2*time.Hour, "scanner", "cli")
	if err != nil || b.Reason != reason.Manual || b.By != "admin:cli" || b.Comment != "scanner" {
		t.Fatalf("manual block: %+v %v", b, err)
	}
	if closed.Load() != 1 {
		t.Error("a manual block closes live connections inside it")
	}
	if h.e.Admit(ip("192.0.2.1"), service.SMTP).Reason != reason.Manual {
		t.Fatal("manual block not enforced")
	}
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("192.0.2.1/24")} {
		if _, err := h.e.BlockManual(ctx, bad, 0, "", "cli"); err == nil {
			t.Errorf("%v must be refused", bad)
		}
	}
	if _, err := h.e.BlockManual(ctx, netip.MustParsePrefix("192.0.3.0/24"), -time.Second, "", "cli"); err == nil {
		t.Error("negative duration must be refused")
	}
	h.open("198.51.100.5", service.SMTP).DNSBLListed("zen.example.org")
	if len(h.e.Blocks()) != 2 {
		t.Fatalf("blocks: %+v", h.e.Blocks())
	}
	h.clock.Advance(90 * time.Minute) // the DNSBL block (60 min) expired; the manual one (2h) not
	if len(h.e.Blocks()) != 2 {
		t.Fatal("expired blocks stay listed until purged")
	}
	if h.e.Admit(ip("198.51.100.5"), service.SMTP).Action != Allow {
		t.Fatal("an expired block is not enforced")
	}
	if n, err := h.e.PurgeExpired(ctx, "cli"); n != 1 || err != nil {
		t.Fatalf("purge: %d %v", n, err)
	}
	if n, _ := h.e.Unblock(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.9.9.9/32")}, "cli"); n != 1 {
		t.Fatalf("unblock: %d", n)
	}
	if h.st.len() != 0 || h.e.Admit(ip("192.0.2.1"), service.SMTP).Action != Allow {
		t.Fatal("unblocked address still refused")
	}
	imp := []store.Block{
		{Prefix: netip.MustParsePrefix("2001:db8::/64"), Reason: reason.Login, Expires: h.clock.Now().Add(time.Hour), Detail: "imported"},
		{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Reason: reason.Relay},
	}
	if n, err := h.e.Import(ctx, imp, "cli"); n != 2 || err != nil {
		t.Fatalf("import: %d %v", n, err)
	}
	if h.e.Admit(ip("2001:db8::5"), service.SMTP).Reason != reason.Login || h.e.Admit(ip("203.0.113.7"), service.SMTP).Reason != reason.Relay {
		t.Fatal("imported blocks (one never expiring) must be enforced")
	}
	if _, err := h.e.Import(ctx, []store.Block{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Reason: 'Q'}}, "cli"); err == nil {
		t.Fatal("an invalid import must be refused")
	}
	if n, _ := h.e.UnblockAll(ctx, "cli"); n != 2 || h.st.len() != 0 || len(h.e.Blocks()) != 0 {
		t.Fatalf("unblock all: %d", n)
	}
	// Nothing left to remove: nothing changes, and the audit log records
	// only what changed (10.9.9.9 above was never blocked).
	if n, _ := h.e.PurgeExpired(ctx, "cli"); n != 0 {
		t.Fatalf("purge again: %d", n)
	}
	if n, _ := h.e.UnblockAll(ctx, "cli"); n != 0 {
		t.Fatalf("unblock all again: %d", n)
	}
	if n, _ := h.e.Unblock(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, "cli"); n != 0 {
		t.Fatalf("unblock again: %d", n)
	}
	var actions []string
	for _, a := range h.st.audit {
		actions = append(actions, a.Action+" "+a.Target)
	}
	if got := strings.Join(actions, ", "); got != "block 192.0.2.0/24, purge-expired , unblock 192.0.2.0/24, import , unblock-all " {
		t.Errorf("audit: %s", got)
	}
}

// TestBlockDoesNotWaitForTheStore: a session that trips a block gets its
// decision while the store's write is still held (a disk that stalls);
// the block is enforced at once and stored once the disk moves.
func TestBlockDoesNotWaitForTheStore(t *testing.T) {
	h := &harness{clock: newClock(), st: newMemStore()}
	gate := make(chan struct{})
	h.st.gate = gate
	// A store timeout of an hour: a session that waited for the write
	// would hold the test up until it times out.
	e, err := New(context.Background(), settingsFrom(t, allTriggers, nil), Options{Store: h.st, Clock: h.clock.Now, Node: "test", StoreTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	released := false
	t.Cleanup(func() { // before Close: a failed test leaves the gate shut
		if !released {
			close(gate)
		}
	})
	h.e, h.st.engine = e, e
	d := h.open("198.51.100.44", service.SMTP).DNSBLListed("zen.example.org")
	if !d.Blocked {
		t.Fatalf("decision %+v, want a block", d)
	}
	if h.e.Admit(ip("198.51.100.44"), service.SMTP).Action != Refuse {
		t.Fatal("the block is not enforced while its write is held")
	}
	close(gate)
	released = true
	if b, ok := h.st.get("198.51.100.44/32"); !ok || b.By != "engine" {
		t.Fatalf("stored %+v %v once the disk moved", b, ok)
	}
}

func TestStoreFailureKeepsEnforcing(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	h.st.fail = errors.New("disk full")
	h.open("198.51.100.9", service.SMTP).DNSBLListed("zen.example.org")
	if h.e.Admit(ip("198.51.100.9"), service.SMTP).Action != Refuse {
		t.Fatal("a block whose store write failed must still be enforced")
	}
	// The session did not wait for the write; it has failed once Sync
	// returns.
	if _, ok := h.st.get("198.51.100.9/32"); ok {
		t.Fatal("stored although the store fails")
	}
	h.st.mu.Lock()
	h.st.fail = nil
	h.st.mu.Unlock()
	if err := h.e.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.st.get("198.51.100.9/32"); !ok {
		t.Fatal("Sweep must retry the failed write")
	}
}

func TestRestartRestoresBlocksAndHistory(t *testing.T) {
	clock := newClock()
	st := newMemStore()
	s := settingsFrom(t, strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  escalation: { factor: 2 }", 1), nil)
	e1, err := New(context.Background(), s, Options{Store: st, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ses, _ := e1.Open(ip("203.0.113.80"), service.SMTP, nil)
	ses.ContentRule("x")
	e1.Close()
	e2, err := New(context.Background(), s, Options{Store: st, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	st.engine = e2
	if e2.Admit(ip("203.0.113.80"), service.SMTP).Reason != reason.Content {
		t.Fatal("block lost across restart")
	}
	clock.Advance(2 * time.Hour)
	ses, _ = e2.Open(ip("203.0.113.80"), service.SMTP, nil)
	ses.ContentRule("x")
	if b, _ := st.get("203.0.113.80/32"); b.Level != 1 || b.Expires.Sub(clock.Now()) != 2*time.Hour {
		t.Fatalf("escalation history lost across restart: %+v", b)
	}
}

func TestSweepPurgesOldExpiredBlocks(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	h.open("198.51.100.30", service.SMTP).DNSBLListed("zen.example.org")
	h.clock.Advance(61 * time.Minute)
	h.e.Sweep(context.Background())
	if h.st.len() != 1 {
		t.Fatal("a just-expired block stays listed")
	}
	h.clock.Advance(7 * 24 * time.Hour)
	h.e.Sweep(context.Background())
	if h.st.len() != 0 || len(h.e.Blocks()) != 0 {
		t.Fatal("blocks expired more than purge_expired_after ago are purged")
	}
}
