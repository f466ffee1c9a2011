package policyd

import (
	"sync"
	"time"

	"github.com/postern/postern/internal/guard"
)

// Limits of the logins held between Dovecot's allow and report.
const (
	maxPending = 10000              // logins in flight at once; beyond it a login is not held
	pendingTTL = guard.MaxLoginHold // a login never reported is abandoned (uncounted) after this
)

// pending is a login between Dovecot's allow and its report: the engine's
// Login (BeginLogin, as the inline login gate holds it) and its session;
// both nil for a login answered with a delay, which holds no place.
type pending struct {
	s     *guard.Session
	l     *guard.Login
	begun time.Time
}

// end frees the login's place uncounted and closes its session.
func (p pending) end() {
	if p.l != nil {
		p.l.Abandon()
		p.s.Close()
	}
}

// inflight holds the logins Dovecot asked about and has not reported,
// keyed by Dovecot's session id, so that failures plus logins in flight
// never exceed failed_logins, as with the inline gateways.
type inflight struct {
	mu sync.Mutex
	m  map[string]pending
}

// add records a login; false when the table is full (the login is then
// not held).
func (f *inflight) add(id string, p pending) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[string]pending)
	}
	if len(f.m) >= maxPending {
		return false
	}
	if old, ok := f.m[id]; ok {
		old.end()
	}
	f.m[id] = p
	return true
}

// has reports whether a login of session id is in flight.
func (f *inflight) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[id]
	return ok
}

// take removes and returns the login of session id.
func (f *inflight) take(id string) (pending, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.m[id]
	if ok {
		delete(f.m, id)
	}
	return p, ok
}

// sweep abandons (counting nothing) the logins begun before cut: Dovecot
// never reported them (auth_policy_report_after_auth = no, or a lost
// request).
func (f *inflight) sweep(cut time.Time) int {
	f.mu.Lock()
	var old []pending
	for id, p := range f.m {
		if p.begun.Before(cut) {
			old = append(old, p)
			delete(f.m, id)
		}
	}
	f.mu.Unlock()
	for _, p := range old {
		p.end()
	}
	return len(old)
}

// closeAll abandons every login in flight (at shutdown).
func (f *inflight) closeAll() { f.sweep(time.Now().Add(time.Hour)) }
