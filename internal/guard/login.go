package guard

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/reason"
)

// MaxLoginHold bounds how long BeginLogin holds an attempt while other
// attempts of the same address (or block prefix) are waiting for the
// backend's answer at the failed-login threshold. An attempt held longer is
// refused (Close), never passed.
const MaxLoginHold = 30 * time.Second

// Login is one login attempt between BeginLogin and the backend's answer.
// While it is open it holds a pending slot of its address's block prefix
// (or of its session, when failures are counted per session): the engine
// counts it as a failure that may come, so that failures plus pending
// attempts never exceed the failed-login threshold. Exactly one of Failed,
// Succeeded or Abandon ends it and frees the slot; later calls do nothing,
// so a front-end may defer Abandon right after BeginLogin. Its methods are
// safe for concurrent use.
type Login struct {
	s       *Session
	account string
	refs    [2 + maxSubnets]gateRef // the gates whose slots it holds
	nref    int                     // 0: not gated (L off, bypassed)
	done    atomic.Bool

	restricted bool // refused by the login IP restriction (Restricted)
}

// maxSubnets bounds the enclosing subnets of multi-prefix counting that
// hold attempts too.
const maxSubnets = 4

// gateRef is one gate an attempt is counted in: its block prefix in its
// protocol group, an enclosing subnet with factor × the threshold, or its
// block prefix in the gate every group shares (failed_logins_across_groups);
// key.p is invalid for the session's own gate (cross_session off).
type gateRef struct {
	key   gateKey
	g     *loginGate
	limit int
}

// gateKey names a cross-session gate: a prefix in a protocol group, or in
// groupAll for failed_logins_across_groups.
type gateKey struct {
	p netip.Prefix
	g Group
}

// loginGate counts the attempts of one block prefix (or one session) that
// are waiting for the backend's answer.
type loginGate struct {
	pending int
	waiters int
	wake    chan struct{} // closed when pending drops, if any waits; made by the first to wait
}

// loginGates holds the gates of cross-session counting, by block prefix
// and protocol group. A gate exists only while it has pending attempts or
// waiters.
type loginGates struct {
	mu sync.Mutex
	m  map[gateKey]*loginGate
}

// BeginLogin starts a login attempt for account and must be called before
// the credentials are sent to the backend (or refused by postern itself).
//
// It consults the block table at this moment: when the address is blocked
// it returns a nil Login and a Decision with Action Close (whatever
// close_blocked_connection and close_all say): the front-end answers with
// its refusal and closes the connection, and the backend never sees the
// attempt. It then waits out account protection's delay, and holds the
// attempt while the failures counted for the address's block prefix in
// the session's protocol group (or the session, with cross_session off)
// plus the group's attempts still waiting for the backend's answer reach
// the group's failed_logins — or, with failed_logins_across_groups, those
// of every group together reach that threshold; it proceeds when pending
// attempts are answered and failures plus pending are below the threshold
// again, so that at most failed_logins failures reach the backend whatever
// the rate and concurrency of an attack. Attempts below the threshold are
// not held: five parallel logins with the right password go through at
// once with failed_logins 5.
//
// A nil Login always comes with Action Close and a Reason: the attempt must
// not reach the backend. Besides a block, that happens (Blocked false,
// Reason L) when ctx ends, the session is closed, or the attempt was held
// longer than MaxLoginHold.
func (s *Session) BeginLogin(ctx context.Context, account string) (*Login, Decision) {
	if d, blocked := s.blockedNow(); blocked {
		return nil, d
	}
	st := s.e.settings.Load()
	if st.AccountFailures > 0 {
		if d := s.LoginDelay(account); d > 0 {
			evloop.MayBlock(ctx)
			t := time.NewTimer(d)
			dead := s.deadChan()
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, Decision{Action: Close, Reason: reason.Login}
			case <-dead:
				t.Stop()
				return nil, Decision{Action: Close, Reason: reason.Login}
			}
			if d, blocked := s.blockedNow(); blocked {
				return nil, d
			}
		}
	}
	l := &Login{s: s, account: account}
	// The group's own threshold holds attempts, and the shared one of
	// failed_logins_across_groups; a group's attempts never wait for
	// another group's failures.
	limit := st.limit(s.group, s.service, trigL)
	if st.groups[s.group].logOnly[trigL] {
		limit = 0
	}
	across := st.acrossOn(s.group)
	// Nothing to hold when no failure can block: L off or log only (and
	// not counted across groups), or an address the engine never blocks
	// (bypassed, a trusted upstream such as the webmail server's own IMAP
	// connections).
	if limit <= 0 && !across || !autoBlockable(st, s.addr) || s.bypassed(st, trigL) {
		return l, Decision{}
	}
	mu := l.gates(st, limit, across)
	var hold *time.Timer
	defer func() {
		if hold != nil {
			hold.Stop()
		}
	}()
	for {
		// Failures so far, read under the gate's lock: a Failed call
		// counts its failure before it frees its slot, so failures plus
		// pending never drop below the truth.
		var g *loginGate // the gate at its threshold, if any
		for i := range l.nref {
			r := &l.refs[i]
			if n := s.loginFailures(r.key); r.g.pending > 0 && n+r.g.pending >= r.limit {
				g = r.g
				break
			}
		}
		// Checked after reading the counts: a block goes into the table
		// before its counters are reset, so a count read after a reset
		// always sees the block here.
		if d, blocked := s.blockedNow(); blocked {
			l.dropGates()
			mu.Unlock()
			return nil, d
		}
		if g == nil {
			for i := range l.nref {
				l.refs[i].g.pending++
			}
			mu.Unlock()
			return l, Decision{}
		}
		if hold == nil {
			hold = time.NewTimer(MaxLoginHold)
		}
		g.waiters++
		if g.wake == nil {
			g.wake = make(chan struct{}) // made by the first to wait
		}
		wake := g.wake
		mu.Unlock()
		evloop.MayBlock(ctx)
		dead := s.deadChan()
		var stop bool
		select {
		case <-wake:
		case <-ctx.Done():
			stop = true
		case <-dead:
			stop = true
		case <-hold.C:
			stop = true
			s.e.log.Info("login attempt held too long at the failed-login threshold; refused",
				"addr", s.addr.String(), "service", s.service.String())
		}
		mu.Lock()
		g.waiters--
		if stop {
			l.dropGates()
			mu.Unlock()
			d, blocked := s.blockedNow()
			if !blocked {
				d = Decision{Action: Close, Reason: reason.Login}
			}
			return nil, d
		}
	}
}

// Blocked reports whether the session's address is blocked at this moment
// — a block made after the connection was accepted, by any session or by
// hand, included — with the decision for the front-end: refuse and close
// (Action Close, whatever close_blocked_connection, close_all and
// refuse_blocked say). A front-end about to forward a login it reads itself
// (a webmail form) calls it after Recheck; BeginLogin does the same for
// the login attempts it gates.
func (s *Session) Blocked() (Decision, bool) { return s.blockedNow() }

// blockedNow reports whether the session's address is blocked at this
// moment, with the decision for a login attempt: refuse and close.
func (s *Session) blockedNow() (Decision, bool) {
	tbl := s.e.blocks.Load()
	if !tbl.Contains(s.addr) {
		return Decision{}, false
	}
	ent, ok := activeBlock(tbl, s.addr, s.e.clock())
	if !ok {
		return Decision{}, false
	}
	ent.hit(s.e.clock())
	return Decision{Action: Close, Blocked: true, Reason: ent.rec.Reason}, true
}

// loginFailures returns the failed logins counted so far for key (cross
// session), or for the session when key.p is invalid.
func (s *Session) loginFailures(key gateKey) int {
	if !key.p.IsValid() {
		return int(s.counts[trigL]) // the session's own gate: s.mu is held
	}
	return s.e.counters.get(key.p, key.g, trigL, s.e.clock())
}

// gates finds (or makes) the gates the attempt is counted in and returns
// their lock, locked: with cross-session counting the block prefix's in the
// session's group and those of the enclosing subnets of multi-prefix
// counting (factor × the threshold) when limit is above zero, and the
// block prefix's shared gate when across; else the session's own (across
// needs cross-session counting).
func (l *Login) gates(st *Settings, limit int, across bool) *sync.Mutex {
	s := l.s
	if !st.CrossSession {
		s.mu.Lock()
		if s.gate == nil {
			s.gate = new(loginGate)
		}
		l.refs[0] = gateRef{g: s.gate, limit: limit}
		l.nref = 1
		return &s.mu
	}
	p := st.prefixOf(s.addr)
	if limit > 0 {
		l.refs[0] = gateRef{key: gateKey{p, s.group}, limit: limit}
		l.nref = 1
		if len(st.SubnetV6)+st.SubnetV4 > 0 {
			var buf [maxSubnets]netip.Prefix
			for _, sp := range st.subnetsOf(s.addr, buf[:0]) {
				if l.nref < len(l.refs)-1 {
					l.refs[l.nref] = gateRef{key: gateKey{sp, s.group}, limit: limit * st.SubnetFactor}
					l.nref++
				}
			}
		}
	}
	if across {
		l.refs[l.nref] = gateRef{key: gateKey{p, groupAll}, limit: st.AcrossLogins}
		l.nref++
	}
	gs := &s.e.gates
	gs.mu.Lock()
	if gs.m == nil {
		gs.m = make(map[gateKey]*loginGate)
	}
	for i := range l.nref {
		r := &l.refs[i]
		r.g = gs.m[r.key]
		if r.g == nil {
			r.g = new(loginGate)
			gs.m[r.key] = r.g
		}
	}
	return &gs.mu
}

// dropGates forgets the attempt's cross-session gates that are idle; their
// lock is held.
func (l *Login) dropGates() {
	for i := range l.nref {
		r := &l.refs[i]
		if r.key.p.IsValid() && r.g.pending == 0 && r.g.waiters == 0 && l.s.e.gates.m[r.key] == r.g {
			delete(l.s.e.gates.m, r.key)
		}
	}
}

// finish claims the attempt's single verdict; false when it had one.
func (l *Login) finish() bool { return !l.done.Swap(true) }

// release frees the attempt's pending slot and wakes the attempts held
// behind it; finish has been claimed.
func (l *Login) release() {
	if l.nref == 0 {
		return
	}
	mu := &l.s.e.gates.mu
	if !l.refs[0].key.p.IsValid() {
		mu = &l.s.mu
	}
	mu.Lock()
	for i := range l.nref {
		g := l.refs[i].g
		g.pending--
		if g.waiters > 0 && g.wake != nil { // nil: woken already, by the release before
			close(g.wake)
			g.wake = nil // the next to wait makes another
		}
	}
	l.dropGates()
	mu.Unlock()
}

// Failed reports that the backend (or postern's login IP restriction)
// refused the attempt: a failed login (L) with the password's fingerprint
// (PasswordFingerprint; 0 if unknown), counted before the slot is freed.
// The Decision is LoginFailed's: it may block the address and ask for the
// connection to be closed.
func (l *Login) Failed(fp uint64) Decision {
	if l == nil || !l.finish() {
		return Decision{}
	}
	d := l.s.LoginFailed(l.account, fp)
	l.observe(LoginFailed)
	l.release()
	return d
}

// Succeeded reports that the backend accepted the login: the session is
// authenticated (LoginSucceeded) and the slot is freed.
func (l *Login) Succeeded() {
	if l == nil || !l.finish() {
		return
	}
	l.s.LoginSucceeded(l.account)
	l.observe(LoginOK)
	l.release()
}

// Abandon ends an attempt whose credentials never reached the backend (the
// client went away, postern refused it for another reason, the backend
// answered neither yes nor no to a well-formed attempt, such as SMTP's 454)
// and frees its slot without counting anything. After Failed or Succeeded
// it does nothing, so it can be deferred. An attempt sent to the backend
// whose answer never came (the connection broke, the answer was not the
// protocol) is to be ended with Failed: the backend may have checked the
// password, and freeing the slot uncounted would let one more guess
// through.
func (l *Login) Abandon() {
	if l == nil || !l.finish() {
		return
	}
	l.release()
}

// Account returns the account the attempt is for.
func (l *Login) Account() string { return l.account }
