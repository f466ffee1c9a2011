package gate_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/postern/postern/internal/decoy"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// world is an engine and a policy from a configuration: IMAP, SMTP and web
// services, failed_logins for every group, logins allowed from
// 127.0.0.0/24 only.
type world struct {
	eng *guard.Engine
	pol *policy.Policy
}

// services are one service of each gateway: the login gate is one for all.
var services = []service.Service{service.SMTP, service.IMAP, service.POP3, service.Web}

func newWorld(t testing.TB, failed int) *world {
	t.Helper()
	n := strconv.Itoa(failed)
	yaml := `services:
  smtp: { listen: ":25", backend: "127.0.0.1:1" }
  imap: { listen: ":143", backend: "127.0.0.1:1" }
  pop3: { listen: ":110", backend: "127.0.0.1:1" }
  web: { listen: ":80", backend: "http://127.0.0.1:1" }
intrusion_prevention:
  smtp: { failed_logins: ` + n + ` }
  imap_pop3: { failed_logins: ` + n + ` }
  web: { failed_logins: ` + n + ` }
login_restrictions: [ "*=127.0.0.0/24" ]
`
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return &world{eng: eng, pol: snap.Policy}
}

func (w *world) session(t testing.TB, svc service.Service, addr string) (*guard.Session, netip.Addr) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	gs, v := w.eng.Accept(a, svc, func() {})
	if gs == nil {
		t.Fatalf("%s from %s not admitted: %+v", svc, addr, v)
	}
	t.Cleanup(gs.Close)
	return gs, a
}

func (w *world) blocked(a netip.Addr) bool {
	b, ok := w.eng.BlockOf(a)
	return ok && b.Reason == reason.Login
}

var discard = slog.New(slog.DiscardHandler)

// allowed is where the login restriction lets everyone log in from.
var allowed = netip.MustParsePrefix("127.0.0.0/24")

// One login through the gate, for every gateway's service: what the
// backend answers (or what went wrong) decides what the session does and
// what the engine counts. failed_logins is 1, so a counted failure blocks
// the address.
func TestRun(t *testing.T) {
	errLost := errors.New("connection reset")
	for _, tc := range []struct {
		name    string
		addr    string // 127.0.0.0/24 may log in; others are refused by the restriction
		answer  gate.Outcome
		err     error
		want    gate.Outcome
		counted bool // a failed login: the address is blocked
	}{
		{name: "accepted", addr: "127.0.0.10", answer: gate.Accepted, want: gate.Accepted},
		{name: "rejected", addr: "127.0.0.11", answer: gate.Rejected, want: gate.Rejected, counted: true},
		{name: "answered", addr: "127.0.0.12", answer: gate.Answered, want: gate.Answered},
		{name: "unexpected", addr: "127.0.0.13", answer: gate.Unexpected, want: gate.Unexpected, counted: true},
		{name: "no answer", addr: "127.0.0.14", err: errLost, want: gate.Unexpected, counted: true},
		{name: "refused, decoy rejected", addr: "127.0.1.15", answer: gate.Rejected, want: gate.Rejected, counted: true},
		{name: "refused, decoy accepted", addr: "127.0.1.16", answer: gate.Accepted, want: gate.DecoyAccepted, counted: true},
		{name: "refused, decoy answered", addr: "127.0.1.17", answer: gate.Answered, want: gate.Answered},
	} {
		for _, svc := range services {
			t.Run(tc.name+"/"+svc.String(), func(t *testing.T) {
				w := newWorld(t, 1)
				gs, a := w.session(t, svc, tc.addr)
				refused := !allowed.Contains(a)
				var sent string
				o, d, err := gate.NewLogins(w.eng).Run(context.Background(), gs, w.pol, a,
					gate.Credentials{User: "alice@example.test", Pass: "secret"}, discard,
					func(pass string) (gate.Outcome, error) {
						sent = pass
						return tc.answer, tc.err
					})
				if o != tc.want || !errors.Is(err, tc.err) {
					t.Fatalf("Run: %v, %v; want %v, %v", o, err, tc.want, tc.err)
				}
				if refused {
					if sent == "secret" || len(sent) != decoy.Size {
						t.Fatalf("a refused login was replayed with %q, not a decoy", sent)
					}
				} else if sent != "secret" {
					t.Fatalf("replayed with %q, want the client's password", sent)
				}
				if w.blocked(a) != tc.counted {
					t.Fatalf("blocked %v, want %v", w.blocked(a), tc.counted)
				}
				if tc.counted && o != gate.Unexpected && o != gate.DecoyAccepted && !gate.Ends(d) {
					t.Fatalf("the blocking failure's decision %+v does not end the session", d)
				}
			})
		}
	}
}

// A blocked address gets no attempt: the replay is never called, and the
// decision ends the session.
func TestRunBlocked(t *testing.T) {
	for _, svc := range services {
		t.Run(svc.String(), func(t *testing.T) {
			w := newWorld(t, 1)
			gs, a := w.session(t, svc, "127.0.0.20")
			l := gate.NewLogins(w.eng)
			cred := gate.Credentials{User: "alice@example.test", Pass: "wrong"}
			reject := func(string) (gate.Outcome, error) { return gate.Rejected, nil }
			if o, _, _ := l.Run(context.Background(), gs, w.pol, a, cred, discard, reject); o != gate.Rejected {
				t.Fatalf("first login: %v", o)
			}
			o, d, err := l.Run(context.Background(), gs, w.pol, a, cred, discard, func(string) (gate.Outcome, error) {
				t.Fatal("a blocked address's login reached the backend")
				return gate.Accepted, nil
			})
			if o != gate.Blocked || err != nil || !gate.Ends(d) || d.Refusal() == "" {
				t.Fatalf("after the block: %v %+v %v", o, d, err)
			}
		})
	}
}

// The same wrong password twice counts once (its fingerprint); a password
// postern did not read (NoPassword) has none, so each failure counts.
// failed_logins is 2.
func TestFingerprints(t *testing.T) {
	for _, svc := range services {
		t.Run(svc.String(), func(t *testing.T) {
			w := newWorld(t, 2)
			l := gate.NewLogins(w.eng)
			for _, tc := range []struct {
				addr       string
				noPassword bool
				blocked    bool
			}{{"127.0.0.30", false, false}, {"127.0.0.31", true, true}} {
				gs, a := w.session(t, svc, tc.addr)
				for range 2 {
					at, _ := l.Begin(context.Background(), gs, w.pol, a,
						gate.Credentials{User: "bob@example.test", Pass: "same", NoPassword: tc.noPassword}, discard)
					at.Report(gate.Rejected)
				}
				if w.blocked(a) != tc.blocked {
					t.Fatalf("NoPassword %v: blocked %v, want %v", tc.noPassword, w.blocked(a), tc.blocked)
				}
			}
		})
	}
}

// A login that names no account (a web form without the field) is not
// checked against the login restriction, and its success is no account's:
// nothing is counted either way it ends.
func TestNoAccount(t *testing.T) {
	w := newWorld(t, 1)
	gs, a := w.session(t, service.Web, "127.0.2.1") // outside the restriction
	l := gate.NewLogins(w.eng)
	at, _ := l.Begin(context.Background(), gs, w.pol, a, gate.Credentials{Pass: "x"}, discard)
	if at == nil || at.Refused || at.Pass != "x" {
		t.Fatalf("Begin without an account: %+v", at)
	}
	if o, d := at.Report(gate.Accepted); o != gate.Accepted || gate.Ends(d) {
		t.Fatalf("Report: %v %+v", o, d)
	}
	if w.blocked(a) {
		t.Fatal("blocked")
	}
}

// Once reported, an attempt counts nothing more: Failed and Abandon after
// Report are no-ops, and a nil attempt (no engine session) reports nothing.
func TestReportOnce(t *testing.T) {
	w := newWorld(t, 1)
	gs, a := w.session(t, service.IMAP, "127.0.0.40")
	at, _ := gate.NewLogins(w.eng).Begin(context.Background(), gs, w.pol, a, gate.Credentials{User: "carol@example.test", Pass: "p"}, discard)
	at.Report(gate.Accepted)
	if d := at.Failed(); gate.Ends(d) || w.blocked(a) {
		t.Fatalf("Failed after Accepted counted: %+v", d)
	}
	at.Abandon()
	var none *gate.Attempt
	none.Abandon()
	if o, d := none.Report(gate.Rejected); o != gate.Rejected || gate.Ends(d) || gate.Ends(none.Failed()) {
		t.Fatalf("nil attempt: %v %+v", o, d)
	}
}

// countingFP counts the fingerprints asked of the engine.
type countingFP struct {
	gate.Fingerprinter
	n int
}

func (c *countingFP) PasswordFingerprint(account, password string) uint64 {
	c.n++
	return c.Fingerprinter.PasswordFingerprint(account, password)
}

// A password's fingerprint (an HMAC) is computed only for a failure, where
// the engine uses it: a successful login, the most common, needs none.
func TestFingerprintOnlyOnFailure(t *testing.T) {
	w := newWorld(t, 5)
	fp := &countingFP{Fingerprinter: w.eng}
	l := gate.NewLogins(fp)
	gs, a := w.session(t, service.IMAP, "127.0.0.50")
	at, _ := l.Begin(context.Background(), gs, w.pol, a, gate.Credentials{User: "bob@example.test", Pass: "right"}, discard)
	at.Report(gate.Accepted)
	if fp.n != 0 {
		t.Fatalf("a successful login computed %d fingerprints, want 0", fp.n)
	}
	at, _ = l.Begin(context.Background(), gs, w.pol, a, gate.Credentials{User: "bob@example.test", Pass: "wrong"}, discard)
	at.Report(gate.Rejected)
	if fp.n != 1 {
		t.Fatalf("a failed login computed %d fingerprints, want 1", fp.n)
	}
}
