package guard

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// Observer is told what the engine sees, for metrics (internal/metrics
// implements it). Its methods run on the accept and event paths: they must
// be cheap, must not block and must not allocate. Nothing the engine tells
// it names an address or an account.
type Observer interface {
	// Connection reports the gate's answer to one connection (Accept).
	Connection(svc service.Service, o ConnOutcome)
	// AdmitLatency reports how long one Admit took; only a sample of the
	// connections (one in AdmitSample) is timed.
	AdmitLatency(d time.Duration)
	// Event reports one occurrence of a trigger in a protocol group,
	// counted whether or not it leads to a block.
	Event(g Group, r reason.Code)
	// Blocked reports a block made (not a refreshed one), automatic or
	// manual.
	Blocked(r reason.Code)
	// Login reports the end of a login attempt taken through BeginLogin.
	Login(svc service.Service, r LoginResult)
	// StoreCommit reports one store transaction writing blocks: how long
	// it took and whether it failed.
	StoreCommit(d time.Duration, err error)
}

// ConnOutcome is what the connection gate did with a connection.
type ConnOutcome uint8

// The outcomes of Accept.
const (
	ConnAccepted     ConnOutcome = iota // allowed or tarpitted
	ConnRefusedGrant                    // refused by the access policy (grant/deny)
	ConnRefusedBlock                    // refused while blocked
	ConnRefusedLimit                    // closed: this connection tripped connections per minute (I)
	NumConnOutcomes
)

// LoginResult is how a login attempt ended.
type LoginResult uint8

// The results of a login.
const (
	LoginOK         LoginResult = iota // the backend accepted it
	LoginFailed                        // the backend refused it (or never answered)
	LoginRestricted                    // the login IP restriction refused it
	NumLoginResults
)

// AdmitSample is the share of connections whose Admit is timed for
// Observer.AdmitLatency: one in AdmitSample (a power of two), chosen at
// random by the runtime's per-thread generator, so no counter is shared
// between cores.
const AdmitSample = 64

// Groups lists the protocol groups.
func Groups() []Group { return []Group{GroupSMTP, GroupMail, GroupWeb} }

// admitObserved is Accept's Admit, timed for the observer on a sample of calls,
// and the observer told the outcome of a refusal.
func (e *Engine) admitObserved(addr netip.Addr, svc service.Service) Verdict {
	o := e.obs
	if o == nil {
		return e.Admit(addr, svc)
	}
	var v Verdict
	if rand.Uint32()&(AdmitSample-1) == 0 {
		t := time.Now()
		v = e.Admit(addr, svc)
		o.AdmitLatency(time.Since(t))
	} else {
		v = e.Admit(addr, svc)
	}
	if v.Action == Refuse {
		why := ConnRefusedBlock
		if s := e.settings.Load(); s.Policy != nil && !s.Policy.AllowService(svc, addr.Unmap()) {
			why = ConnRefusedGrant
		}
		o.Connection(svc, why)
	}
	return v
}

// observeAccepted tells the observer what became of an admitted
// connection: closed (it tripped I) or accepted.
func (e *Engine) observeAccepted(svc service.Service, a Action) {
	if o := e.obs; o != nil {
		if a == Close {
			o.Connection(svc, ConnRefusedLimit)
		} else {
			o.Connection(svc, ConnAccepted)
		}
	}
}

// Restricted marks the attempt as refused by the login IP restriction: its
// failure is reported to the observer as LoginRestricted.
func (l *Login) Restricted() {
	if l != nil {
		l.restricted = true
	}
}

func (l *Login) observe(r LoginResult) {
	if o := l.s.e.obs; o != nil {
		if r == LoginFailed && l.restricted {
			r = LoginRestricted
		}
		o.Login(l.s.service, r)
	}
}

// ActiveBlocksByReason calls fn with the number of active blocks of each reason
// that has any, reading the block table as it is now (for a metrics
// scrape). It takes no lock.
func (e *Engine) ActiveBlocksByReason(fn func(r reason.Code, n int)) {
	var counts [256]int
	now := e.clock()
	for _, ent := range e.blocks.Load().All() {
		if ent.active(now) {
			counts[byte(ent.rec.Reason)]++
		}
	}
	for c, n := range counts {
		if n > 0 {
			fn(reason.Code(c), n)
		}
	}
}
