package gate

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/decoy"
	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/policy"
)

// Fingerprinter gives a password's fingerprint for the failed-login
// counters (*guard.Engine is one).
type Fingerprinter interface {
	PasswordFingerprint(account, password string) uint64
}

// PassChecker finds the travel pass that lets an account (as the backend
// resolves it) log in from an address its login IP restriction refuses
// (*guard.Engine is one, when it has passes).
type PassChecker interface {
	LoginPass(ctx context.Context, account string, addr netip.Addr) (passes.Pass, bool)
}

// LoginWatcher judges logins by the account's login history (logins
// from a new country, impossible travel; *loginhistory.Alerts is one).
// Neither method may block for long: they run in the session, after the
// connection was admitted.
type LoginWatcher interface {
	// RefuseLogin reports whether a login of account from client, that
	// nothing else refuses, is to be refused because it comes from a
	// country never seen for the account (block_new_country). A travel
	// pass is checked by the gate after it says true.
	RefuseLogin(account string, client netip.Addr) bool
	// LoginSucceeded records a successful login of account from client
	// on service and announces what it finds.
	LoginSucceeded(account string, client netip.Addr, service string)
}

// Logins is one service's login gate: what its sessions' logins share.
// It is safe for concurrent use once Watch is done.
type Logins struct {
	eng     Fingerprinter
	decoys  *decoy.Passwords
	watch   LoginWatcher
	service string
}

// Watch has w judge and record the logins of this gate, named service in
// what it announces. Call it before the gate is used.
func (l *Logins) Watch(w LoginWatcher, service string) {
	l.watch, l.service = w, service
}

// NewLogins returns a service's login gate, with a fresh decoy key.
func NewLogins(eng Fingerprinter) *Logins {
	return &Logins{eng: eng, decoys: decoy.New()}
}

// Credentials are what a client logs in with.
type Credentials struct {
	// User is the account; "" when the request named none (a web form
	// without the field): then nothing is checked or fingerprinted.
	User string
	// Pass is the password.
	Pass string
	// NoPassword says Pass was not read (a web form without a password
	// field, or an empty one): a failure counts without a fingerprint.
	NoPassword bool
}

// Outcome is what the backend answered a replayed login, and, from
// Report and Run, what the session is to do.
type Outcome int

// The outcomes of a login.
const (
	// Unexpected: neither success nor failure; the backend is not
	// speaking the protocol (or gave no answer), and what it said is
	// never relayed. It counts as a failed login: the backend may have
	// checked the password.
	Unexpected Outcome = iota
	// Accepted: logged in.
	Accepted
	// Rejected: a wrong password, counted as a failed login.
	Rejected
	// Answered: an answer that is not about the password (relayed);
	// nothing is counted.
	Answered
	// DecoyAccepted: the backend accepted the decoy password of a login
	// the login IP restriction refused (a passdb that checks none). The
	// login stays refused and counts as failed; the backend's session is
	// never handed over, and the client is answered as a wrong password
	// is.
	DecoyAccepted
	// Blocked: the gate let no attempt through (a blocked address, or
	// the session ended during account protection's delay); the decision
	// refuses or closes.
	Blocked
)

// Attempt is one login let through the gate, until its outcome is
// reported. A nil *Attempt (no engine session) reports nothing.
type Attempt struct {
	// Pass is the password to replay to the backend: the client's, or a
	// decoy when Refused.
	Pass string
	// Refused says the login IP restriction refused the login: the
	// backend is asked with a decoy in place of the client's password,
	// fails it with its own text in its own time, and that answer is
	// relayed; the client's password never leaves postern.
	Refused bool

	login *guard.Login
	user  string
	// eng and pass give the password's fingerprint, computed only when
	// a failure is reported (a successful login needs none); noPass says
	// there is no password to fingerprint.
	eng    Fingerprinter
	pass   string
	noPass bool
	log    *slog.Logger
	logged bool // the login line is written
	// watch, when set, is told of a successful login from client.
	watch   LoginWatcher
	service string
	client  netip.Addr
}

// failed reports the attempt's failure to the engine with the password's
// fingerprint (none when no password was read or no account named).
func (a *Attempt) failed() guard.Decision {
	var fp uint64
	if !a.noPass && a.user != "" {
		fp = a.eng.PasswordFingerprint(strings.ToLower(a.user), a.pass)
	}
	return a.login.Failed(fp)
}

// The results a login line names.
const (
	ResultOK         = "ok"         // the backend accepted the password
	ResultFailed     = "failed"     // the backend refused the password
	ResultRestricted = "restricted" // the login IP restriction refused it; the password never left postern
	ResultBlocked    = "blocked"    // no attempt: the address is blocked (or the session ended while held)
	ResultNoAnswer   = "no_answer"  // the backend gave no answer postern could read; counted as failed
	ResultNotJudged  = "not_judged" // the backend answered neither yes nor no (a temporary failure); nothing counted
)

// logResult writes the one info line of a login: its account, result
// and, when the failure made one, the block. The logger carries the
// service and the client. Never a password.
func (a *Attempt) logResult(result string, d guard.Decision) {
	if a.logged {
		return
	}
	a.logged = true
	logLogin(a.log, a.user, result, d)
}

// logLogin writes a login's line: the account, the result and, when the
// login made one, the block.
//
// It hands the record to the logger's handler itself: Logger.Info would
// also look up its caller's program counter (runtime.Callers), which
// postern's handlers never print, for every login.
func logLogin(log *slog.Logger, account, result string, d guard.Decision) {
	ctx := context.Background()
	h := log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "login", 0)
	if d.Blocked {
		r.AddAttrs(slog.String("account", account), slog.String("result", result), slog.Bool("blocked", true), slog.String("reason", d.Reason.String()))
	} else {
		r.AddAttrs(slog.String("account", account), slog.String("result", result))
	}
	_ = h.Handle(ctx, r) // as Logger.Info: a handler's error is its own to report
}

// Begin takes a login through the gate before any credentials leave
// postern: the engine's BeginLogin (a blocked address gets no attempt,
// account protection's delay, attempts in flight held at the threshold),
// then the login IP restriction of pol (nil: none) for the client. A nil
// Attempt comes with the decision that refused it.
func (l *Logins) Begin(ctx context.Context, gs *guard.Session, pol *policy.Policy, client netip.Addr, c Credentials, log *slog.Logger) (*Attempt, guard.Decision) {
	a := new(Attempt)
	if d, ok := l.begin(a, ctx, gs, pol, client, c, log); !ok {
		return nil, d
	}
	return a, guard.Decision{}
}

// begin is Begin filling a; false with the decision that refused it.
func (l *Logins) begin(a *Attempt, ctx context.Context, gs *guard.Session, pol *policy.Policy, client netip.Addr, c Credentials, log *slog.Logger) (guard.Decision, bool) {
	lg, d := gs.BeginLogin(ctx, c.User)
	if lg == nil {
		logLogin(log, c.User, ResultBlocked, d)
		return d, false
	}
	*a = Attempt{Pass: c.Pass, login: lg, user: c.User, eng: l.eng, pass: c.Pass, noPass: c.NoPassword, log: log,
		watch: l.watch, service: l.service, client: client}
	if c.User == "" {
		return guard.Decision{}, true
	}
	restricted := pol != nil && !pol.AllowLogin(c.User, client)
	newCountry := !restricted && l.watch != nil && l.watch.RefuseLogin(c.User, client)
	if restricted || newCountry {
		account := c.User
		if pol != nil {
			account = pol.Logins().Canon(c.User)
		}
		if pc, ok := l.eng.(PassChecker); ok {
			evloop.MayBlock(ctx) // a pass may be looked up in the cluster's store
			if p, ok := pc.LoginPass(ctx, account, client); ok {
				log.Info("login allowed by a travel pass", "account", c.User, "pass", p.ID, "pass_account", p.Account, "until", p.Until)
				return guard.Decision{}, true
			}
		}
		if newCountry {
			log.Info("login refused: a country never seen for the account", "account", c.User)
		} else {
			log.Info("login refused by the login IP restriction", "account", c.User)
		}
		a.Refused, a.Pass = true, l.decoys.Password(c.Pass)
		lg.Restricted()
	}
	return guard.Decision{}, true
}

// Report reports the backend's answer to the engine and returns what the
// session is to do: o, but DecoyAccepted when a refused login's decoy was
// accepted. Accepted, for a login that named no account, is no account's
// success and counts nothing. The decision is the engine's after a
// failure (it may tarpit, block, close).
func (a *Attempt) Report(o Outcome) (Outcome, guard.Decision) {
	if a == nil {
		return o, guard.Decision{}
	}
	switch {
	case o == Accepted && a.Refused:
		a.log.Error("the backend accepted the decoy password of a refused login; the login stays refused", "account", a.user)
		d := a.failed()
		a.logResult(ResultRestricted, d)
		return DecoyAccepted, d
	case o == Accepted && a.user == "":
		a.login.Abandon()
		a.logResult(ResultOK, guard.Decision{})
	case o == Accepted:
		a.login.Succeeded()
		a.logResult(ResultOK, guard.Decision{})
		if a.watch != nil {
			a.watch.LoginSucceeded(a.user, a.client, a.service)
		}
	case o == Answered:
		a.login.Abandon()
		a.logResult(ResultNotJudged, guard.Decision{})
	default:
		d := a.failed()
		switch {
		case a.Refused:
			a.logResult(ResultRestricted, d)
		case o == Rejected:
			a.logResult(ResultFailed, d)
		default:
			a.logResult(ResultNoAnswer, d)
		}
		return o, d
	}
	return o, guard.Decision{}
}

// Failed reports a failed login without an answer to read: postern
// refused it itself, or the backend, asked, never answered (it may have
// checked the password, so it counts). It does nothing after a report.
func (a *Attempt) Failed() guard.Decision {
	if a == nil {
		return guard.Decision{}
	}
	d := a.failed()
	if a.Refused {
		a.logResult(ResultRestricted, d)
	} else {
		a.logResult(ResultNoAnswer, d)
	}
	return d
}

// Abandon ends an attempt whose credentials never reached the backend,
// counting nothing; after a report it does nothing, so it can be
// deferred.
func (a *Attempt) Abandon() {
	if a != nil {
		a.login.Abandon()
	}
}

// Run takes a login through the gate in one go, for a session that asks
// the backend itself: Begin, the replay (given the password to send: the
// client's or a decoy), the report. A replay error is returned with
// Unexpected, counted as a failed login.
func (l *Logins) Run(ctx context.Context, gs *guard.Session, pol *policy.Policy, client netip.Addr, c Credentials, log *slog.Logger, replay func(pass string) (Outcome, error)) (Outcome, guard.Decision, error) {
	var a Attempt // on the stack: a login costs no more than its steps
	if d, ok := l.begin(&a, ctx, gs, pol, client, c, log); !ok {
		return Blocked, d, nil
	}
	defer a.Abandon()
	o, err := replay(a.Pass)
	if err != nil {
		return Unexpected, a.Failed(), err
	}
	o, d := a.Report(o)
	return o, d, nil
}
