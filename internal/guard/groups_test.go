package guard

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// groupsCfg has the thresholds: SMTP blocks at 86 connections a
// minute and 3 failed logins; the web group allows 300 connections a
// minute. The imap_pop3 group is filled in by each test.
const groupsCfg = services + `
intrusion_prevention:
  block_minutes: 60
  smtp: { connections_per_minute: 86, failed_logins: 3 }
  web:  { connections_per_minute: 300 }
`

// TestGroupsCountConnectionsApart: a webmail user whose browser opens 86
// HTTP connections in a minute, then sends one SMTP message, is not blocked
// under SMTP's connections_per_minute: each protocol group counts its own
// connections. SMTP's own 86th connection still blocks.
func TestGroupsCountConnectionsApart(t *testing.T) {
	h := newHarness(t, groupsCfg, nil)
	const addr = "198.51.100.7"
	for i := range 86 {
		if _, d := h.e.Open(ip(addr), service.Web, nil); d.Blocked {
			t.Fatalf("web connection %d blocked: %+v", i+1, d)
		}
	}
	if _, d := h.e.Open(ip(addr), service.SMTP, nil); d.Blocked || d.Action != Continue {
		t.Fatalf("one SMTP connection after 86 web connections: %+v", d)
	}
	if a := h.e.Admit(ip(addr), service.Submission); a.Action != Allow || h.st.len() != 0 {
		t.Fatalf("blocked after 86 web connections and one SMTP connection: %+v", a)
	}
	// SMTP's own count: 84 more connections are fine (86 in all with
	// the submission one below), the 86th blocks.
	for i := range 84 {
		if _, d := h.e.Open(ip(addr), service.SMTPS, nil); d.Blocked {
			t.Fatalf("SMTP connection %d blocked", i+2)
		}
	}
	if _, d := h.e.Open(ip(addr), service.Submission, nil); !d.Blocked || d.Reason != reason.Connections {
		t.Fatalf("the 86th SMTP connection: %+v", d)
	}
}

// TestGroupsCountLoginsApart: 2 IMAP failures and 1 SMTP AUTH failure do
// not block under SMTP's failed_logins: 3, whether imap_pop3 is absent,
// log only, or on with a higher threshold. An imap_pop3 group that is
// absent neither counts nor blocks.
func TestGroupsCountLoginsApart(t *testing.T) {
	for name, imap := range map[string]string{
		"absent":   "",
		"log_only": "  imap_pop3: { failed_logins: 3, log_only: [L] }\n",
		"on":       "  imap_pop3: { failed_logins: 5 }\n",
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, groupsCfg+imap, nil)
			const addr = "198.51.100.8"
			im := h.open(addr, service.IMAP)
			for i := range 2 {
				if d := im.LoginFailed("alice", uint64(i+1)); d.Blocked || d.DryRun {
					t.Fatalf("IMAP failure %d: %+v", i+1, d)
				}
			}
			if d := h.open(addr, service.SMTP).LoginFailed("alice", 3); d.Blocked || d.DryRun {
				t.Fatalf("2 IMAP failures + 1 SMTP AUTH failure: %+v", d)
			}
			if a := h.e.Admit(ip(addr), service.SMTP); a.Action != Allow || h.st.len() != 0 {
				t.Fatalf("blocked: %+v", a)
			}
			// Each group still blocks at its own threshold.
			sm := h.open(addr, service.Submission)
			sm.LoginFailed("alice", 4)
			if d := sm.LoginFailed("alice", 5); !d.Blocked || d.Reason != reason.Login {
				t.Fatalf("the third SMTP failure: %+v", d)
			}
		})
	}
	// imap_pop3 on: its own threshold, its own count.
	h := newHarness(t, groupsCfg+"  imap_pop3: { failed_logins: 5 }\n", nil)
	h.open("198.51.100.9", service.SMTP).LoginFailed("bob", 1)
	im := h.open("198.51.100.9", service.POP3)
	for i := range 4 {
		if d := im.LoginFailed("bob", uint64(10+i)); d.Blocked {
			t.Fatalf("POP3 failure %d blocked", i+1)
		}
	}
	if d := im.LoginFailed("bob", 20); !d.Blocked {
		t.Fatalf("the fifth POP3 failure: %+v", d)
	}
}

// TestGroupsHoldLoginsApart: attempts in flight are held per group: IMAP
// attempts waiting for the backend do not hold an SMTP AUTH attempt, and
// SMTP's threshold still holds SMTP's own.
func TestGroupsHoldLoginsApart(t *testing.T) {
	h := newHarness(t, groupsCfg+"  imap_pop3: { failed_logins: 5 }\n", nil)
	const addr = "198.51.100.10"
	h.open(addr, service.SMTP).LoginFailed("carol", 1)
	for i := range 3 {
		if l, _ := h.open(addr, service.IMAP).BeginLogin(context.Background(), "carol"); l == nil {
			t.Fatalf("IMAP attempt %d refused", i+1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, d := h.open(addr, service.SMTP).BeginLogin(ctx, "carol")
	if l == nil {
		t.Fatalf("an SMTP attempt was held behind IMAP attempts in flight: %+v", d)
	}
	l2, d := h.open(addr, service.Submission).BeginLogin(ctx, "carol")
	if l2 == nil {
		t.Fatalf("a second SMTP attempt was held: %+v", d)
	}
	defer l2.Abandon()
	if p, _ := h.gateStateIn(addr+"/32", GroupMail); p != 3 {
		t.Fatalf("IMAP pending %d, want 3", p)
	}
	if p, _ := h.gateStateIn(addr+"/32", GroupSMTP); p != 2 {
		t.Fatalf("SMTP pending %d, want 2", p)
	}
	// 1 SMTP failure + 2 SMTP attempts in flight = SMTP's threshold: the
	// next SMTP attempt is held.
	done := make(chan *Login)
	go func() { l, _ := h.open(addr, service.SMTPS).BeginLogin(context.Background(), "carol"); done <- l }()
	waitFor(t, "the SMTP attempt held at SMTP's threshold", func() bool { _, w := h.gateStateIn(addr+"/32", GroupSMTP); return w == 1 })
	l.Succeeded()
	if l := <-done; l == nil {
		t.Fatal("the held SMTP attempt was refused after the one in flight succeeded")
	} else {
		l.Abandon()
	}
}

// TestAbsentGroupNeitherCountsNorBlocks: without a web group, web
// connections and failed web logins count for nothing, and SMTP's
// thresholds are untouched by them.
func TestAbsentGroupNeitherCountsNorBlocks(t *testing.T) {
	h := newHarness(t, services+`
intrusion_prevention:
  smtp: { connections_per_minute: 5, failed_logins: 2 }
`, nil)
	for i := range 50 {
		s, d := h.e.Open(ip("198.51.100.11"), service.Web, nil)
		if d.Blocked {
			t.Fatalf("web connection %d blocked", i+1)
		}
		if d := s.LoginFailed("dave", uint64(i+1)); d.Blocked {
			t.Fatalf("web failure %d blocked", i+1)
		}
	}
	s, d := h.e.Open(ip("198.51.100.11"), service.SMTP, nil)
	if d.Blocked {
		t.Fatal("SMTP connection blocked after web traffic")
	}
	if d := s.LoginFailed("dave", 99); d.Blocked {
		t.Fatal("one SMTP failure blocked after web failures")
	}
	if h.e.counters.len() != 2 { // SMTP's I and L
		t.Fatalf("%d counters, want SMTP's two", h.e.counters.len())
	}
}

// acrossCfg sums failed logins across groups: 4 in all block, whatever
// the groups' own thresholds say.
const acrossCfg = services + `
intrusion_prevention:
  block_minutes: 60
  failed_logins_across_groups: 4
  smtp: { failed_logins: 10 }
  imap_pop3: { failed_logins: 10, log_only: [L] }
`

// TestFailedLoginsAcrossGroups: with failed_logins_across_groups, the
// failures of every configured group count toward one counter too (a log
// only group included: the shared threshold is the site's own choice); a
// group that is absent does not feed it; a retry with the same wrong
// password counts once.
func TestFailedLoginsAcrossGroups(t *testing.T) {
	h := newHarness(t, acrossCfg, nil)
	const addr = "198.51.100.20"
	im, sm := h.open(addr, service.IMAP), h.open(addr, service.SMTP)
	for i, d := range []Decision{
		im.LoginFailed("erin", 1),
		sm.LoginFailed("erin", 1), // the same wrong password: counted once
		sm.LoginFailed("erin", 2),
		h.open(addr, service.Web).LoginFailed("erin", 3), // no web group
		im.LoginFailed("erin", 4),
	} {
		if d.Blocked || d.DryRun {
			t.Fatalf("failure %d: %+v", i+1, d)
		}
	}
	d := sm.LoginFailed("erin", 5)
	if !d.Blocked || d.Reason != reason.Login || d.Action != Close {
		t.Fatalf("the fourth failure across groups: %+v", d)
	}
	b, ok := h.st.get(addr + "/32")
	if !ok || b.Reason != reason.Login || b.Service != "smtp" || !strings.Contains(b.Detail, "4 failed logins across protocols") {
		t.Fatalf("block: %+v", b)
	}
	// Off by default: the same events block nothing.
	h = newHarness(t, strings.Replace(acrossCfg, "  failed_logins_across_groups: 4\n", "", 1), nil)
	for i := range 9 {
		svc := []service.Service{service.IMAP, service.SMTP, service.POP3}[i%3]
		if d := h.open("198.51.100.21", svc).LoginFailed("erin", uint64(i+1)); d.Blocked {
			t.Fatalf("blocked without failed_logins_across_groups: failure %d on %s", i+1, svc)
		}
	}
}

// TestAcrossGroupsHoldsAttempts: the shared threshold holds attempts in
// flight of every group together: at most failed_logins_across_groups
// failures reach the backends, whatever the protocols.
func TestAcrossGroupsHoldsAttempts(t *testing.T) {
	h := newHarness(t, acrossCfg, nil)
	const addr = "198.51.100.22"
	h.open(addr, service.IMAP).LoginFailed("frank", 1)
	var ls []*Login
	for _, svc := range []service.Service{service.SMTP, service.IMAP, service.Submission} {
		l, d := h.open(addr, svc).BeginLogin(context.Background(), "frank")
		if l == nil {
			t.Fatalf("%s attempt refused: %+v", svc, d)
		}
		ls = append(ls, l)
	}
	if p, _ := h.gateStateIn(addr+"/32", groupAll); p != 3 {
		t.Fatalf("shared pending %d, want 3", p)
	}
	done := make(chan *Login)
	go func() { l, _ := h.open(addr, service.POP3).BeginLogin(context.Background(), "frank"); done <- l }()
	waitFor(t, "the fifth attempt held at the shared threshold", func() bool { _, w := h.gateStateIn(addr+"/32", groupAll); return w == 1 })
	if d := ls[0].Failed(2); d.Blocked {
		t.Fatalf("2 failures blocked: %+v", d)
	}
	ls[1].Failed(3)
	if d := ls[2].Failed(4); !d.Blocked {
		t.Fatalf("the fourth failure did not block: %+v", d)
	}
	if l := <-done; l != nil {
		t.Fatal("the held attempt went on after the block")
	}
	if h.gateCount() != 0 {
		t.Fatalf("%d gates left", h.gateCount())
	}
}

// refuseCloseCfg blocks on the third SMTP failure; refuse_blocked and
// close_blocked_connection are set by each case.
const refuseCloseCfg = services + `
intrusion_prevention:
  block_minutes: 60
  tarpit_delay: 2s
  smtp: { failed_logins: 3 }
  imap_pop3: { failed_logins: 3 }
`

// TestRefuseVersusClose: which new connections Admit refuses for a block a
// trigger made and for a manual one, under each combination of
// refuse_blocked and close_blocked_connection. With close only, "all
// connections just incoming from this address are blocked for the block
// time": refused on every service until the block expires; the connection
// that made the block is closed, the address's other current connections
// are not.
func TestRefuseVersusClose(t *testing.T) {
	type want struct {
		auto, manual Action
		closeTripper bool
	}
	for _, c := range []struct {
		refuse, close bool
		want
	}{
		{true, true, want{Refuse, Refuse, true}},
		{true, false, want{Refuse, Refuse, false}},
		{false, true, want{Refuse, Tarpit, true}},
		{false, false, want{Tarpit, Tarpit, false}},
	} {
		cfg := strings.Replace(refuseCloseCfg, "block_minutes: 60", "block_minutes: 60\n  refuse_blocked: "+bs(c.refuse)+"\n  close_blocked_connection: "+bs(c.close), 1)
		t.Run("refuse="+bs(c.refuse)+",close="+bs(c.close), func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			const addr = "203.0.113.5"
			var closed atomic.Int32
			other, _ := h.e.Open(ip(addr), service.IMAP, func() { closed.Add(1) })
			s := h.open(addr, service.SMTP)
			s.LoginFailed("gina", 1)
			s.LoginFailed("gina", 2)
			d := s.LoginFailed("gina", 3)
			if !d.Blocked || (d.Action == Close) != c.closeTripper {
				t.Fatalf("the event that blocks: %+v, want close %v", d, c.closeTripper)
			}
			if closed.Load() != 0 {
				t.Fatal("another current connection of the address was closed")
			}
			if _, ok := other.Blocked(); !ok {
				t.Fatal("the open session does not see the block")
			}
			for _, svc := range []service.Service{service.SMTP, service.Submission, service.IMAP, service.Web} {
				if a := h.e.Admit(ip(addr), svc); a.Action != c.auto || a.Reason != reason.Login {
					t.Errorf("%s after a trigger's block: %+v, want action %d", svc, a, c.auto)
				}
			}
			if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.6/32"), time.Hour, "", "test"); err != nil {
				t.Fatal(err)
			}
			if a := h.e.Admit(ip("203.0.113.6"), service.IMAP); a.Action != c.manual || a.Reason != reason.Manual {
				t.Errorf("after a manual block: %+v, want action %d", a, c.manual)
			}
			if got := h.e.Settings().RefusesBlock(service.IMAP, reason.Login); got != (c.auto == Refuse) {
				t.Errorf("RefusesBlock(imap, L) = %v", got)
			}
			h.clock.Advance(time.Hour)
			if a := h.e.Admit(ip(addr), service.SMTP); a.Action != Allow {
				t.Errorf("after the block time: %+v", a)
			}
		})
	}
}

// TestGroupRefuseBlockedOptOut: a group's own refuse_blocked: false lets
// a blocked address connect to that group's services (tarpitted), while
// the other groups refuse it; its login attempts are refused all the same.
func TestGroupRefuseBlockedOptOut(t *testing.T) {
	h := newHarness(t, strings.Replace(refuseCloseCfg, "imap_pop3: { failed_logins: 3 }",
		"imap_pop3: { failed_logins: 3, refuse_blocked: false }\n  web: { refuse_blocked: true }", 1), nil)
	const addr = "203.0.113.9"
	s := h.open(addr, service.SMTP)
	for i := range 3 {
		s.LoginFailed("hal", uint64(i+1))
	}
	if a := h.e.Admit(ip(addr), service.IMAP); a.Action != Tarpit || a.Delay != 2*time.Second {
		t.Fatalf("imap opted out: %+v", a)
	}
	for _, svc := range []service.Service{service.SMTP, service.Web} {
		if a := h.e.Admit(ip(addr), svc); a.Action != Refuse {
			t.Fatalf("%s: %+v", svc, a)
		}
	}
	if l, d := h.open(addr, service.IMAP).BeginLogin(context.Background(), "hal"); l != nil || d.Action != Close || !d.Blocked {
		t.Fatalf("a login attempt on the opted-out group: %+v", d)
	}

	// The other way round: refusing off at the top, on for web alone,
	// which then refuses a manual block too.
	h = newHarness(t, strings.Replace(refuseCloseCfg, "block_minutes: 60",
		"block_minutes: 60\n  refuse_blocked: false\n  close_blocked_connection: false\n  web: { refuse_blocked: true }", 1), nil)
	if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.10/32"), time.Hour, "", "test"); err != nil {
		t.Fatal(err)
	}
	if a := h.e.Admit(ip("203.0.113.10"), service.Web); a.Action != Refuse || a.Reason != reason.Manual {
		t.Fatalf("web with its own refuse_blocked: %+v", a)
	}
	if a := h.e.Admit(ip("203.0.113.10"), service.SMTP); a.Action != Tarpit {
		t.Fatalf("smtp without refusing: %+v", a)
	}
}

func bs(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestBlockForgetsEveryGroupsCounters: a new block forgets the blocked
// prefix's counters of every group and the shared ones (countedKeys
// covers every pair that can have a counter).
func TestBlockForgetsEveryGroupsCounters(t *testing.T) {
	for tr := range numTriggers {
		found := false
		for _, k := range countedKeys {
			found = found || k.g == GroupSMTP && k.t == tr
		}
		if !found {
			t.Fatalf("countedKeys misses smtp's trigger %c", tr.reason())
		}
	}
	h := newHarness(t, strings.Replace(acrossCfg, "  smtp: { failed_logins: 10 }",
		"  smtp: { failed_logins: 10, rset_count: 5, connections_per_minute: 100 }\n  web: { connections_per_minute: 100, failed_logins: 10 }", 1), nil)
	const addr = "198.51.100.30"
	for _, svc := range []service.Service{service.IMAP, service.Web, service.SMTP} {
		h.open(addr, svc).LoginFailed("ivy", uint64(len(svc.String())))
	}
	h.open(addr, service.SMTP).Rset()
	if n := h.e.counters.len(); n != 7 { // imap L; web I L; smtp I L R; the shared L
		t.Fatalf("%d counters before the block", n)
	}
	if _, made := h.e.block(h.e.Settings(), offense{prefix: netip.MustParsePrefix(addr + "/32"), reason: reason.DNSBL, service: "smtp"}); !made {
		t.Fatal("no block")
	}
	if n := h.e.counters.len(); n != 0 {
		t.Fatalf("%d counters left after the block", n)
	}
}

// A held attempt ends when its own session is closed: the session's
// dead channel, made when the attempt began to wait, is closed; one made
// after the close is closed already.
func TestHeldAttemptEndsWithItsSession(t *testing.T) {
	h := newHarness(t, acrossCfg, nil)
	const addr = "198.51.100.23"
	h.open(addr, service.IMAP).LoginFailed("gina", 1)
	for _, svc := range []service.Service{service.SMTP, service.IMAP, service.Submission} {
		if l, d := h.open(addr, svc).BeginLogin(context.Background(), "gina"); l == nil {
			t.Fatalf("%s attempt refused: %+v", svc, d)
		}
	}
	held := h.open(addr, service.POP3)
	done := make(chan *Login)
	go func() { l, _ := held.BeginLogin(context.Background(), "gina"); done <- l }()
	waitFor(t, "the attempt held at the shared threshold", func() bool { _, w := h.gateStateIn(addr+"/32", groupAll); return w == 1 })
	held.Close()
	if l := <-done; l != nil {
		t.Fatal("the held attempt went on after its session closed")
	}
	select {
	case <-held.deadChan():
	default:
		t.Fatal("a closed session's dead channel is open")
	}
}
