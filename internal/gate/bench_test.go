package gate_test

import (
	"context"
	"strings"
	"testing"

	"github.com/postern/postern/internal/decoy"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/service"
)

// BenchmarkLogin is one login through the gate (gate) and the same steps
// written out as each front-end wrote them before the gate was shared
// (inline): allowed and logged in, and refused by the login restriction
// (a decoy derived, the answer not about the password).
func BenchmarkLogin(b *testing.B) {
	w := newWorld(b, 1)
	l := gate.NewLogins(w.eng)
	decoys := decoy.New()
	cred := gate.Credentials{User: "alice@example.test", Pass: "secret"}
	for _, tc := range []struct {
		name, addr string
		answer     gate.Outcome
	}{{"allowed", "127.0.0.50", gate.Accepted}, {"refused", "127.0.1.50", gate.Answered}} {
		gs, a := w.session(b, service.IMAP, tc.addr)
		b.Run("gate/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Run(context.Background(), gs, w.pol, a, cred, discard, func(string) (gate.Outcome, error) { return tc.answer, nil })
			}
		})
		b.Run("inline/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				fp := w.eng.PasswordFingerprint(strings.ToLower(cred.User), cred.Pass)
				lg, _ := gs.BeginLogin(context.Background(), cred.User)
				pass := cred.Pass
				if !w.pol.AllowLogin(cred.User, a) {
					discard.Info("login refused by the login IP restriction", "account", cred.User)
					pass = decoys.Password(pass)
				}
				_, _ = pass, fp
				if tc.answer == gate.Accepted {
					lg.Succeeded()
					discard.Info("logged in", "account", cred.User)
				}
				lg.Abandon()
			}
		})
	}
}
