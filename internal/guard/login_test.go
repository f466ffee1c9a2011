package guard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

const loginCfg = services + `
intrusion_prevention:
  block_minutes: 60
  imap_pop3: { failed_logins: 5 }
  web: { failed_logins: 5 }
`

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gateState returns the pending and waiting attempts of prefix p, in
// every protocol group (not the shared gate of failed_logins_across_groups).
func (h *harness) gateState(p string) (pending, waiters int) {
	for g := range numGroups {
		n, w := h.gateStateIn(p, g)
		pending, waiters = pending+n, waiters+w
	}
	return pending, waiters
}

// gateStateIn returns the pending and waiting attempts of prefix p in
// group g (groupAll: the shared gate).
func (h *harness) gateStateIn(p string, g Group) (pending, waiters int) {
	h.e.gates.mu.Lock()
	defer h.e.gates.mu.Unlock()
	if gt := h.e.gates.m[gateKey{netip.MustParsePrefix(p), g}]; gt != nil {
		return gt.pending, gt.waiters
	}
	return 0, 0
}

func (h *harness) gateCount() int {
	h.e.gates.mu.Lock()
	defer h.e.gates.mu.Unlock()
	return len(h.e.gates.m)
}

// TestConcurrentWrongLoginsStopAtThreshold: ten wrong logins at once, one
// per connection, with failed_logins 5: exactly five reach the backend,
// the other five are held and then refused by the block.
func TestConcurrentWrongLoginsStopAtThreshold(t *testing.T) {
	for _, cross := range []bool{true, false} {
		t.Run(fmt.Sprintf("cross_session=%v", cross), func(t *testing.T) {
			cfg := loginCfg
			if !cross {
				cfg = strings.Replace(cfg, "block_minutes: 60", "block_minutes: 60\n  cross_session: false", 1)
			}
			h := newHarness(t, cfg, nil)
			// With cross-session counting, ten connections; per session,
			// ten requests on one connection (HTTP/2).
			shared := h.open("192.0.2.10", service.Web)
			answer := make(chan struct{})
			var reached, refused atomic.Int32
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Go(func() {
					s := shared
					if cross {
						s = h.open("192.0.2.10", service.Web)
					}
					l, d := s.BeginLogin(context.Background(), "alice")
					if l == nil {
						if d.Action != Close || !d.Blocked || d.Reason != reason.Login {
							t.Errorf("held attempt refused with %+v", d)
						}
						refused.Add(1)
						return
					}
					reached.Add(1)
					<-answer
					l.Failed(uint64(i + 1))
				})
			}
			if cross {
				waitFor(t, "five pending and five held", func() bool { p, w := h.gateState("192.0.2.10/32"); return p == 5 && w == 5 })
			} else {
				waitFor(t, "five pending and five held", func() bool {
					shared.mu.Lock()
					defer shared.mu.Unlock()
					return shared.gate != nil && shared.gate.pending == 5 && shared.gate.waiters == 5
				})
			}
			if n := reached.Load(); n != 5 {
				t.Fatalf("%d attempts reached the backend before any answer, want 5", n)
			}
			close(answer)
			wg.Wait()
			if reached.Load() != 5 || refused.Load() != 5 {
				t.Fatalf("reached %d, refused %d; want 5 and 5", reached.Load(), refused.Load())
			}
			if _, ok := h.st.get("192.0.2.10/32"); !ok {
				t.Fatal("the address must be blocked")
			}
			if n := h.gateCount(); n != 0 {
				t.Fatalf("%d gates left", n)
			}
		})
	}
}

// TestParallelRightLoginsNotHeld: a phone opening five connections at once
// with the right password, failed_logins 5: none waits.
func TestParallelRightLoginsNotHeld(t *testing.T) {
	h := newHarness(t, loginCfg, nil)
	var logins []*Login
	for range 5 {
		// Sequential calls, none answered yet: each must return at once.
		l, d := h.open("192.0.2.20", service.IMAP).BeginLogin(context.Background(), "bob")
		if l == nil || d.Action != Continue {
			t.Fatalf("a right login was held or refused: %+v", d)
		}
		logins = append(logins, l)
	}
	if p, w := h.gateState("192.0.2.20/32"); p != 5 || w != 0 {
		t.Fatalf("pending %d, waiting %d", p, w)
	}
	for _, l := range logins {
		l.Succeeded()
		l.Succeeded() // a second verdict is ignored
		l.Abandon()
	}
	if n := h.gateCount(); n != 0 {
		t.Fatalf("%d gates left after every attempt succeeded", n)
	}
	// One earlier failure leaves room for four in flight.
	s := h.open("192.0.2.21", service.IMAP)
	l, _ := s.BeginLogin(context.Background(), "bob")
	l.Failed(1)
	for i := range 4 {
		if l, _ := h.open("192.0.2.21", service.IMAP).BeginLogin(context.Background(), "bob"); l == nil {
			t.Fatalf("attempt %d refused", i)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *Login)
	go func() { l, _ := h.open("192.0.2.21", service.IMAP).BeginLogin(ctx, "bob"); done <- l }()
	waitFor(t, "the fifth attempt held", func() bool { _, w := h.gateState("192.0.2.21/32"); return w == 1 })
	cancel()
	if l := <-done; l != nil {
		t.Fatal("a held attempt whose context ended must not proceed")
	}
	if _, w := h.gateState("192.0.2.21/32"); w != 0 {
		t.Fatal("the cancelled waiter is still counted")
	}
}

// TestBlockReachesOpenSessions: twenty connections opened before a block
// (close_blocked_connection and close_all off) get no login to the backend
// after it.
func TestBlockReachesOpenSessions(t *testing.T) {
	cfg := strings.Replace(loginCfg, "block_minutes: 60", "block_minutes: 60\n  close_blocked_connection: false\n  refuse_blocked: false", 1)
	h := newHarness(t, cfg, nil)
	var open []*Session
	for range 20 {
		open = append(open, h.open("192.0.2.30", service.IMAP))
	}
	for i := range 5 {
		l, _ := open[i].BeginLogin(context.Background(), "carol")
		d := l.Failed(uint64(i + 1))
		if (i == 4) != d.Blocked {
			t.Fatalf("failure %d: %+v", i+1, d)
		}
	}
	for i, s := range open {
		l, d := s.BeginLogin(context.Background(), "carol")
		if l != nil || d.Action != Close || !d.Blocked {
			t.Fatalf("connection %d: an attempt after the block got %+v", i, d)
		}
	}
	if d, ok := open[19].Blocked(); !ok || d.Action != Close || d.Reason != reason.Login {
		t.Fatalf("Blocked on an open session: %+v %v", d, ok)
	}
	// A block made by hand reaches open sessions too.
	s := h.open("198.51.100.40", service.Web)
	if _, ok := s.Blocked(); ok {
		t.Fatal("not blocked yet")
	}
	if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("198.51.100.0/24"), 0, "", "test"); err != nil {
		t.Fatal(err)
	}
	if l, d := s.BeginLogin(context.Background(), "dave"); l != nil || d.Reason != reason.Manual {
		t.Fatalf("after a manual block: %+v", d)
	}
	if d, ok := s.Blocked(); !ok || d.Reason != reason.Manual {
		t.Fatalf("Blocked after a manual block: %+v", d)
	}
}

// TestLoginNotGated: addresses the engine never blocks, log-only L and L
// off are never held.
func TestLoginNotGated(t *testing.T) {
	cfg := loginCfg + "trusted_upstreams: \"10.0.0.5\"\n"
	h := newHarness(t, cfg, nil)
	for i := range 20 {
		l, _ := h.open("10.0.0.5", service.IMAP).BeginLogin(context.Background(), "u")
		if l == nil {
			t.Fatalf("attempt %d of a trusted upstream refused", i)
		}
		l.Failed(uint64(i + 1))
	}
	for i := range 20 {
		if l, _ := h.open("192.0.2.50", service.SMTP).BeginLogin(context.Background(), "u"); l == nil {
			t.Fatalf("attempt %d refused with L off", i)
		}
	}
	if h.gateCount() != 0 {
		t.Fatal("ungated attempts left gates")
	}
}

// TestSessionCloseWakesHeldLogin: a held attempt returns when the engine
// closes its session.
func TestSessionCloseWakesHeldLogin(t *testing.T) {
	h := newHarness(t, loginCfg, nil)
	for range 5 {
		if l, _ := h.open("192.0.2.60", service.IMAP).BeginLogin(context.Background(), "u"); l == nil {
			t.Fatal("refused")
		}
	}
	s := h.open("192.0.2.60", service.IMAP)
	done := make(chan *Login)
	go func() { l, _ := s.BeginLogin(context.Background(), "u"); done <- l }()
	waitFor(t, "the attempt held", func() bool { _, w := h.gateState("192.0.2.60/32"); return w == 1 })
	s.Close()
	if l := <-done; l != nil {
		t.Fatal("a held attempt of a closed session proceeded")
	}
}

// TestLoginStress: many goroutines, many addresses, random outcomes and
// abandons, under the race detector: no address ever has more than
// failed_logins failures reach the backend, and no gate leaks.
func TestLoginStress(t *testing.T) {
	h := newHarness(t, loginCfg, nil)
	const addrs, workers, perWorker = 8, 32, 40
	var backendFailures [addrs]atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range perWorker {
				a := r.IntN(addrs)
				s := h.open(fmt.Sprintf("203.0.113.%d", a+1), service.IMAP)
				l, _ := s.BeginLogin(context.Background(), "victim")
				if l != nil {
					switch r.IntN(4) {
					case 0:
						l.Abandon()
					case 1:
						l.Succeeded()
					default:
						backendFailures[a].Add(1)
						l.Failed(uint64(w*1000 + i + 1))
					}
					l.Abandon()
				}
				s.Close()
			}
		})
	}
	wg.Wait()
	for a := range addrs {
		if n := backendFailures[a].Load(); n > 5 {
			t.Errorf("203.0.113.%d: %d failures reached the backend, threshold 5", a+1, n)
		}
	}
	if n := h.gateCount(); n != 0 {
		t.Fatalf("%d gates leaked", n)
	}
	if h.e.LiveSessions() != 0 {
		t.Fatal("sessions leaked")
	}
}

// TestCounterWindows: a connections-per-minute counter lives for its
// minute, not for the block time; a failed-login counter for the block
// time.
func TestCounterWindows(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	h.open("192.0.2.70", service.SMTP)
	s := h.open("192.0.2.71", service.SMTP)
	s.LoginFailed("u", 1)
	if n := h.e.counters.len(); n != 3 {
		t.Fatalf("%d counters, want 3 (two I, one L)", n)
	}
	h.clock.Advance(61 * time.Second)
	if err := h.e.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h.e.counters.len(); n != 1 {
		t.Fatalf("%d counters a minute later, want the L counter only", n)
	}
	h.clock.Advance(60 * time.Minute)
	h.e.Sweep(context.Background())
	if n := h.e.counters.len(); n != 0 {
		t.Fatalf("%d counters after the block time", n)
	}
}

// TestCounterCapKeepsNearThreshold: with the counters at their cap, new
// addresses evict those farthest from their threshold; a counter one
// event short of its threshold survives a flood of new addresses.
func TestCounterCapKeepsNearThreshold(t *testing.T) {
	c := newCounters(counterShards * evictSample)
	now := time.Unix(1e9, 0)
	hot := netip.MustParsePrefix("198.51.100.1/32")
	for range 9 {
		c.add(hot, GroupSMTP, trigI, now, time.Minute, 10, 0)
	}
	for i := range 100000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		c.add(netip.PrefixFrom(a, 32), GroupSMTP, trigI, now, time.Minute, 10, 0)
	}
	if n := c.len(); n > counterShards*evictSample {
		t.Fatalf("%d counters, cap %d", n, counterShards*evictSample)
	}
	if n := c.get(hot, GroupSMTP, trigI, now); n != 9 {
		t.Fatalf("the counter near its threshold was evicted (count %d)", n)
	}
	if n := c.add(hot, GroupSMTP, trigI, now, time.Minute, 10, 0); n != 10 {
		t.Fatalf("count %d, want 10", n)
	}
	// Expired counters go first, whatever their count.
	c.add(hot, GroupSMTP, trigI, now, time.Minute, 10, 0)
	later := now.Add(2 * time.Minute)
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{11, 0, byte(i >> 8), byte(i)})
		c.add(netip.PrefixFrom(a, 32), GroupSMTP, trigI, later, time.Minute, 10, 0)
	}
	if n := c.get(hot, GroupSMTP, trigI, later); n != 0 {
		t.Fatalf("an expired counter reads %d", n)
	}
}

// TestRefusedConnectionsCount: connections the grant list refuses count
// toward connections per minute and get the address blocked.
func TestRefusedConnectionsCount(t *testing.T) {
	h := newHarness(t, `
patterns: { Office: "203.0.113.0/24" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office]" }
intrusion_prevention:
  imap_pop3: { connections_per_minute: 4 }
`, nil)
	for i := range 3 {
		if a := h.e.Admit(ip("198.51.100.9"), service.IMAP); a.Action != Refuse || a.Reason != 0 {
			t.Fatalf("refusal %d: %+v", i+1, a)
		}
	}
	if a := h.e.Admit(ip("198.51.100.9"), service.IMAP); a.Action != Refuse || a.Reason != reason.Connections {
		t.Fatalf("fourth refusal: %+v", a)
	}
	if b, ok := h.st.get("198.51.100.9/32"); !ok || b.Reason != reason.Connections {
		t.Fatalf("no block stored: %+v", b)
	}
	if a := h.e.Admit(ip("203.0.113.1"), service.IMAP); a.Action != Allow {
		t.Fatal("granted addresses are not affected")
	}
}

// TestSubnetHoldsAttempts: with multi-prefix counting, attempts spread over
// a /24 (one per address, each far below its own threshold) are held at
// factor × the threshold of the /24: exactly six reach the backend.
func TestSubnetHoldsAttempts(t *testing.T) {
	cfg := strings.Replace(loginCfg, "block_minutes: 60", "block_minutes: 60\n  subnets: { ipv4: 24, factor: 2 }", 1)
	cfg = strings.Replace(cfg, "imap_pop3: { failed_logins: 5 }", "imap_pop3: { failed_logins: 3 }", 1)
	h := newHarness(t, cfg, nil)
	answer := make(chan struct{})
	var reached, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			l, d := h.open(fmt.Sprintf("203.0.113.%d", i+1), service.IMAP).BeginLogin(context.Background(), "u")
			if l == nil {
				if !d.Blocked {
					t.Errorf("refused without a block: %+v", d)
				}
				refused.Add(1)
				return
			}
			reached.Add(1)
			<-answer
			l.Failed(uint64(i + 1))
		})
	}
	waitFor(t, "six pending and six held on the /24", func() bool { p, w := h.gateState("203.0.113.0/24"); return p == 6 && w == 6 })
	close(answer)
	wg.Wait()
	if reached.Load() != 6 || refused.Load() != 6 {
		t.Fatalf("reached %d, refused %d; want 6 and 6", reached.Load(), refused.Load())
	}
	if _, ok := h.st.get("203.0.113.0/24"); !ok {
		t.Fatal("the /24 must be blocked")
	}
	if n := h.gateCount(); n != 0 {
		t.Fatalf("%d gates left", n)
	}
}

// TestBeginLoginAccountDelay: account protection's delay is waited out in
// BeginLogin, and a context that ends during it refuses the attempt.
func TestBeginLoginAccountDelay(t *testing.T) {
	cfg := strings.Replace(loginCfg, "block_minutes: 60", "block_minutes: 60\n  account_protection: { failures: 2, delay: 1h }", 1)
	h := newHarness(t, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if l, _ := h.open("198.51.100.7", service.IMAP).BeginLogin(ctx, "ceo@example.com"); l == nil {
		t.Fatal("an account without failures is not delayed")
	}
	for i := range 2 {
		l, _ := h.open(fmt.Sprintf("192.0.2.%d", 200+i), service.IMAP).BeginLogin(context.Background(), "CEO@example.com")
		l.Failed(1)
	}
	if l, d := h.open("198.51.100.7", service.IMAP).BeginLogin(ctx, "ceo@example.com"); l != nil || d.Action != Close {
		t.Fatalf("an account under attack must be delayed (the context ended during the delay): %+v", d)
	}
}

// TestQuietRefusals: the first AnsweredRefusals refusals of an address in a
// minute are to be answered, later ones closed quietly; blocked addresses
// too.
func TestQuietRefusals(t *testing.T) {
	h := newHarness(t, `
patterns: { Office: "203.0.113.0/24" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office]" }
`, nil)
	for i := range AnsweredRefusals + 2 {
		a := h.e.Admit(ip("198.51.100.9"), service.IMAP)
		if a.Action != Refuse || a.Quiet != (i >= AnsweredRefusals) {
			t.Fatalf("refusal %d: %+v", i+1, a)
		}
	}
	h.clock.Advance(61 * time.Second)
	if a := h.e.Admit(ip("198.51.100.9"), service.IMAP); a.Quiet {
		t.Fatal("the budget starts afresh after a minute")
	}
	if _, err := h.e.BlockManual(context.Background(), netip.MustParsePrefix("203.0.113.7/32"), 0, "", "test"); err != nil {
		t.Fatal(err)
	}
	for i := range AnsweredRefusals + 1 {
		if a := h.e.Admit(ip("203.0.113.7"), service.IMAP); a.Action != Refuse || a.Quiet != (i >= AnsweredRefusals) {
			t.Fatalf("blocked, refusal %d: %+v", i+1, a)
		}
	}
	if a := h.e.Admit(ip("203.0.113.8"), service.IMAP); a.Action != Allow || a.Quiet {
		t.Fatalf("another address: %+v", a)
	}
}
