package guard

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// Action is what a front-end must do: at accept (Accept's Verdict), when
// it checks an open connection again (Session.Recheck) and after reporting
// an event (Decision). Front-ends obey it and add only their own wording.
type Action uint8

// The actions.
const (
	Continue Action = iota // go on
	Close                  // answer with the protocol's "blocked, closing" error (Refusal) and close this connection now
	Refuse                 // answer with the protocol's refusal (Refusal) and close
	Tarpit                 // go on, but delay the greeting and every reply by Delay from now on
)

// Allow is Continue at accept: the connection may go on.
const Allow = Continue

// Decision is the engine's answer to an event (and, inside a Verdict, at
// accept).
type Decision struct {
	Action Action
	// Delay is how long to wait before every reply from now on: the tarpit
	// delay for a blocked address still connected (Action Tarpit, or Close
	// after the delay).
	Delay time.Duration
	// Reject says what reported the event is refused (a mail to a tarpit
	// account, a message that matched a content rule, a connection from
	// a blocked address listed on a DNSBL), whatever Action says of the
	// connection.
	Reject bool
	// Blocked says the address is blocked (by this event or before); Reason
	// is the block's reason. They are for logs: Action says what to do.
	Blocked bool
	Reason  reason.Code
	// DryRun says a trigger set to log only would have blocked.
	DryRun bool
}

// Refusal is the protocol-neutral text of a refusal or a close: "Blocked
// (<reason name>)" for a block, "Access denied" for the access policy.
// Each front-end wraps it in its own wording.
func (d Decision) Refusal() string {
	if d.Reason == 0 {
		return "Access denied"
	}
	return "Blocked (" + d.Reason.Name() + ")"
}

// tarpit turns a decision that goes on after a delay into Action Tarpit.
func (d Decision) tarpit() Decision {
	if d.Action == Continue && d.Delay > 0 {
		d.Action = Tarpit
	}
	return d
}

// Session is one client connection as the engine sees it. Front-ends get
// it from Accept, report events on it, and close it
// when the connection ends. Its methods are safe for concurrent use.
type Session struct {
	e       *Engine
	addr    netip.Addr
	service service.Service
	group   Group
	closer  func()
	killed  atomic.Bool
	// dead is closed when the session is closed or killed, made by the
	// first that waits for it (deadChan): most sessions never do. isDead:
	// closed or killed. deadMu guards both.
	deadMu sync.Mutex
	dead   chan struct{}
	isDead bool

	// The engine's list of the address's open sessions (liveSessions),
	// guarded by its shard's lock.
	inLive             bool
	livePrev, liveNext *Session

	mu          sync.Mutex
	counts      [numTriggers]int32
	fps         fingerprints // per-session wrong-password fingerprints
	gate        *loginGate   // pending logins, when counting per session
	authed      bool
	whitelisted bool
	senderOK    bool // the sender is bypassed (s:, l:)
	rcptOK      bool // a recipient of this message is bypassed (r:)
}

// Accept is the connection gate: it decides whether a connection from
// addr may use service (Admit) and, if so, opens its session and counts
// the connection toward connections per minute (I), which may close it at
// once. The Verdict says what to do: Refuse (the session is nil; Quiet
// says to close without a word where answering costs a TLS handshake),
// Close (blocked by this very connection; the session is nil), Tarpit
// (with Delay) or Allow. closer is called (once, from any goroutine) when
// the engine wants the connection closed because its address was blocked
// later; it must not block. The caller closes a non-nil session when the
// connection ends.
func (e *Engine) Accept(addr netip.Addr, svc service.Service, closer func()) (*Session, Verdict) {
	v := e.admitObserved(addr, svc)
	if v.Action == Refuse {
		return nil, v
	}
	s, d := e.Open(addr, svc, closer)
	e.observeAccepted(svc, d.Action)
	switch d.Action {
	case Close:
		s.Close()
		return nil, Verdict{Decision: d}
	case Tarpit:
		v.Decision = d
	}
	return s, v
}

// Open starts a session for a connection from addr to service without the
// access check of Admit; front-ends use Accept. closer is as for Accept.
// Open counts the connection for the connections-per-minute trigger (I)
// and may decide to close it at once.
func (e *Engine) Open(addr netip.Addr, svc service.Service, closer func()) (*Session, Decision) {
	g, ok := GroupOf(svc)
	if !ok {
		g = GroupSMTP
	}
	s := &Session{e: e, addr: addr.Unmap(), service: svc, group: g, closer: closer}
	e.live.add(s)
	return s, s.event(trigI, 0, "", "")
}

// Recheck consults the gate again for an open connection, where it starts
// something a block made since accept must stop (an SMTP transaction, an
// HTTP request): Refuse (the access policy or a refused block), Tarpit or
// Continue. It is Admit for the session's address and service, and counts
// as Admit does.
func (s *Session) Recheck() Decision {
	return s.e.Admit(s.addr, s.service).Decision
}

// Close ends the session.
func (s *Session) Close() {
	s.killed.Store(true)
	s.markDead()
	s.e.live.remove(s)
}

func (s *Session) kill() {
	if !s.killed.Swap(true) && s.closer != nil {
		s.closer()
	}
	s.markDead()
}

// markDead closes the session's dead channel, if one was made, once.
func (s *Session) markDead() {
	s.deadMu.Lock()
	if !s.isDead {
		s.isDead = true
		if s.dead != nil {
			close(s.dead)
		}
	}
	s.deadMu.Unlock()
}

// deadChan returns a channel closed when the session is closed or
// killed (already closed if it was).
func (s *Session) deadChan() <-chan struct{} {
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	if s.dead == nil {
		s.dead = make(chan struct{})
		if s.isDead {
			close(s.dead)
		}
	}
	return s.dead
}

// Addr returns the client address.
func (s *Session) Addr() netip.Addr { return s.addr }

// LoginFailed reports a failed login (L) for account with the password's
// fingerprint (PasswordFingerprint; 0 if unknown). A retry with the same
// wrong password is counted once.
func (s *Session) LoginFailed(account string, fp uint64) Decision {
	st := s.e.settings.Load()
	account = st.Policy.Logins().Canon(account)
	if st.AccountFailures > 0 {
		s.e.accounts.fail(account, st.prefixOf(s.addr), s.e.clock(), st.BlockTime)
	}
	return s.event(trigL, fp, "account ", account)
}

// LoginSucceeded marks the session authenticated: later triggers that an
// authenticated session bypasses (P Y S M A C) no longer apply.
func (s *Session) LoginSucceeded(account string) {
	s.mu.Lock()
	s.authed = true
	s.mu.Unlock()
}

// LoginDelay returns how long to wait before asking the backend to check
// a login for account: account protection slows an account that failed from
// many addresses, without ever locking it.
func (s *Session) LoginDelay(account string) time.Duration {
	st := s.e.settings.Load()
	if st.AccountFailures <= 0 {
		return 0
	}
	if s.e.accounts.failing(st.Policy.Logins().Canon(account), s.e.clock(), st.BlockTime) >= st.AccountFailures {
		return st.AccountDelay
	}
	return 0
}

// Whitelisted reports that the address is listed on one of the bypass
// file's DNS whitelist zones (w:).
func (s *Session) Whitelisted() {
	s.mu.Lock()
	s.whitelisted = true
	s.mu.Unlock()
}

// Sender reports the transaction's MAIL FROM address, for the s: and l:
// bypass conditions.
func (s *Session) Sender(mail string) {
	st := s.e.settings.Load()
	ok := st.Bypass.Sender(mail)
	if !ok && st.Bypass.LocalSenders() {
		if i := strings.LastIndexByte(mail, '@'); i >= 0 {
			ok = st.LocalDomains[strings.ToLower(strings.Trim(mail[i+1:], "<> "))]
		}
	}
	s.mu.Lock()
	s.senderOK = ok
	s.mu.Unlock()
}

// Recipient reports a recipient before the backend is asked: mail to a
// tarpit account blocks the address at once (A), and the decision rejects
// the recipient (Reject) when it made or met that block.
func (s *Session) Recipient(rcpt string) Decision {
	st := s.e.settings.Load()
	if st.Bypass.Recipient(rcpt) {
		s.mu.Lock()
		s.rcptOK = true
		s.mu.Unlock()
		return s.tarpitted()
	}
	if g := &st.groups[s.group]; g.tarpit != nil && g.tarpit.ContainsMail(rcpt) {
		d := s.event(trigA, 0, "recipient ", rcpt)
		d.Reject = d.Blocked && d.Reason == reason.TarpitAccount && !d.DryRun
		return d
	}
	return s.tarpitted()
}

// UnknownRecipient reports that the backend refused a recipient as unknown
// (P: a 550 5.1.1 reply).
func (s *Session) UnknownRecipient(rcpt string) Decision {
	if s.e.settings.Load().Bypass.Recipient(rcpt) {
		return s.tarpitted()
	}
	return s.event(trigP, 0, "recipient ", rcpt)
}

// RelayDenied reports a refused relay attempt (Y).
func (s *Session) RelayDenied(rcpt string) Decision {
	if s.e.settings.Load().Bypass.Recipient(rcpt) {
		return s.tarpitted()
	}
	return s.event(trigY, 0, "recipient ", rcpt)
}

// Rset reports an RSET command from the client (R) and ends the
// transaction's sender and recipient bypass.
func (s *Session) Rset() Decision {
	d := s.event(trigR, 0, "", "")
	s.MessageDone()
	return d
}

// MessageDone ends a transaction: the sender and recipient bypass
// conditions start afresh.
func (s *Session) MessageDone() {
	s.mu.Lock()
	s.senderOK, s.rcptOK = false, false
	s.mu.Unlock()
}

// MessageSize reports the bytes of the current message received so far.
// Crossing message_size blocks the address (M) and the connection must be
// closed at once, before the rest is read.
func (s *Session) MessageSize(n int64) Decision {
	g := &s.e.settings.Load().groups[s.group]
	if g.messageSize <= 0 || n <= g.messageSize {
		return Decision{}
	}
	d := s.event(trigM, 0, fmt.Sprintf("%d bytes, limit %d", n, g.messageSize), "")
	if d.Blocked && !d.DryRun {
		d.Action = Close
	}
	return d
}

// SpamScore reports a message's spam score (S).
func (s *Session) SpamScore(score float64) Decision {
	g := &s.e.settings.Load().groups[s.group]
	if g.spamScore <= 0 || score <= g.spamScore {
		return s.tarpitted()
	}
	return s.event(trigS, 0, fmt.Sprintf("score %.2f, limit %.2f", score, g.spamScore), "")
}

// DNSBLListed reports that the address is listed on a DNSBL zone (D).
// When the address is blocked (and not in a dry run) the listed
// connection is refused (Reject), whatever close_blocked_connection says.
func (s *Session) DNSBLListed(zone string) Decision {
	d := s.event(trigD, 0, "zone ", zone)
	d.Reject = d.Blocked && !d.DryRun
	return d
}

// ContentRule reports that a message matched a content rule (C). The
// message is refused (Reject) unless the trigger only logs (DryRun); a
// front-end that cannot refuse a message it is streaming closes the
// connection.
func (s *Session) ContentRule(rule string) Decision {
	d := s.event(trigC, 0, "rule ", rule)
	d.Reject = !d.DryRun
	return d
}

// bypassed reports whether a bypass condition of the session covers t.
func (s *Session) bypassed(st *Settings, t trigger) bool {
	if st.Bypass.Addr(s.addr) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.whitelisted && t != trigI:
		return true
	case (s.authed || st.Policy != nil && st.Policy.TrustedUpstream(s.addr)) && afterAuth(t):
		return true
	case s.senderOK && (afterAuth(t) || t == trigR):
		return true
	case s.rcptOK && (t == trigS || t == trigM || t == trigC):
		return true
	}
	return false
}

// afterAuth: the triggers an authenticated or trusted session bypasses.
func afterAuth(t trigger) bool {
	switch t {
	case trigP, trigY, trigS, trigM, trigA, trigC:
		return true
	}
	return false
}

// tarpitted is the decision for an event that triggers nothing: go on,
// slowed down if the address is blocked and still connected.
func (s *Session) tarpitted() Decision {
	st := s.e.settings.Load()
	tbl := s.e.blocks.Load()
	if !tbl.Contains(s.addr) {
		return Decision{}
	}
	ent, ok := activeBlock(tbl, s.addr, s.e.clock())
	if !ok {
		return Decision{}
	}
	return Decision{Delay: st.TarpitDelay, Blocked: true, Reason: ent.rec.Reason}.tarpit()
}

// event counts one occurrence of trigger t for the session's protocol
// group and blocks when it reaches the group's threshold. A failed login
// (L) also counts toward the counter every group shares when
// failed_logins_across_groups is set. fp is a wrong-password fingerprint (0
// for other triggers). The block's detail is label+value, joined only when
// a block is made.
func (s *Session) event(t trigger, fp uint64, label, value string) Decision {
	st := s.e.settings.Load()
	g := &st.groups[s.group]
	limit := st.limit(s.group, s.service, t)
	across := t == trigL && st.acrossOn(s.group)
	if limit <= 0 && !across || s.bypassed(st, t) {
		return s.tarpitted()
	}
	if o := s.e.obs; o != nil {
		o.Event(s.group, t.reason())
	}
	now := s.e.clock()
	p := st.prefixOf(s.addr)
	var n, nAll int
	if across {
		var counted bool
		nAll, counted = s.e.counters.count(p, groupAll, trigL, now, st.BlockTime, st.AcrossLogins, fp)
		if counted {
			s.clusterCount(p, groupAll, t, st.BlockTime, st.AcrossLogins, fp, label, value)
		}
	}
	if limit > 0 {
		if t == trigI || st.CrossSession {
			window := st.BlockTime
			if t == trigI {
				window = connectionWindow
			}
			var counted bool
			n, counted = s.e.counters.count(p, s.group, t, now, window, limit, fp)
			if counted && !g.logOnly[t] {
				s.clusterCount(p, s.group, t, window, limit, fp, label, value)
			}
			if n < limit && t != trigI && len(st.SubnetV6)+st.SubnetV4 > 0 {
				if d, ok := s.subnetEvent(st, t, fp, label+value, now); ok {
					return d
				}
			}
		} else {
			s.mu.Lock()
			if fp == 0 || !s.fps.seen(fp) {
				s.counts[t]++
			}
			n = int(s.counts[t])
			s.mu.Unlock()
		}
	}
	groupHit := limit > 0 && n >= limit
	switch {
	case groupHit && !g.logOnly[t]:
		return s.trip(st, t, p, label+value, n, now, false)
	case across && nAll >= st.AcrossLogins:
		return s.trip(st, t, p, fmt.Sprintf("%s%s; %d failed logins across protocols", label, value, nAll), nAll, now, false)
	case groupHit:
		return s.trip(st, t, p, label+value, n, now, true) // log only
	}
	return s.tarpitted()
}

// acrossOn reports whether group g's failed logins count toward the
// counter every group shares (failed_logins_across_groups).
func (st *Settings) acrossOn(g Group) bool {
	return st.AcrossLogins > 0 && st.groups[g].on
}

// subnetEvent counts t for the enclosing prefixes of multi-prefix counting
// and blocks a prefix that reaches factor × the threshold.
func (s *Session) subnetEvent(st *Settings, t trigger, fp uint64, detail string, now time.Time) (Decision, bool) {
	var buf [4]netip.Prefix
	limit := st.limit(s.group, s.service, t) * st.SubnetFactor
	for _, sp := range st.subnetsOf(s.addr, buf[:0]) {
		n, counted := s.e.counters.count(sp, s.group, t, now, st.BlockTime, limit, fp)
		if counted && !st.groups[s.group].logOnly[t] {
			s.clusterCount(sp, s.group, t, st.BlockTime, limit, fp, detail, "")
		}
		if n >= limit {
			return s.trip(st, t, sp, fmt.Sprintf("%s; %d events across %s", detail, n, sp), n, now, st.groups[s.group].logOnly[t]), true
		}
	}
	return Decision{}, false
}

// trip makes the block for trigger t (or logs it when logOnly, the dry
// run) and says what the front-end must do.
func (s *Session) trip(st *Settings, t trigger, p netip.Prefix, detail string, n int, now time.Time, logOnly bool) Decision {
	r := t.reason()
	if logOnly {
		s.e.log.Info("would block (log only)", "prefix", p.String(), "reason", r.String(), "why", r.Name(),
			"service", s.service.String(), "detail", detail, "count", n)
		return Decision{DryRun: true, Reason: r}
	}
	if !s.e.autoBlockable(st, s.addr, p) {
		s.e.log.Info("not blocking a trusted or bypassed address", "addr", s.addr.String(), "reason", r.String(), "detail", detail)
		return Decision{}
	}
	s.e.block(st, offense{prefix: p, reason: r, service: s.service.String(), detail: detail, hits: n, first: now})
	d := Decision{Blocked: true, Reason: r, Delay: st.TarpitDelay}
	if st.CloseBlocked {
		d.Action = Close
		if st.CloseAll {
			s.e.closeLive(p, s)
		}
	}
	return d.tarpit()
}

// clusterCount counts the event cluster-wide when the engine has a
// cluster (the detail string is built only then).
func (s *Session) clusterCount(p netip.Prefix, g Group, t trigger, window time.Duration, limit int, fp uint64, label, value string) {
	if s.e.cluster == nil {
		return
	}
	if !s.e.sharedFP {
		fp = 0 // another gateway's fingerprint of the same password differs
	}
	s.e.clusterCount(Event{Prefix: p, Group: g, Reason: t.reason(), Window: window, Limit: limit,
		Addr: s.addr, Service: s.service.String(), Detail: label + value, Fingerprint: fp})
}
