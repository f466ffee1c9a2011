package gate_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/postern/postern/internal/gate"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// The one SASL reader of SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH: the
// mechanism in ASCII without case, the initial response, the
// continuations (each line the client answers one with), and what is
// refused.
func TestSASL(t *testing.T) {
	for _, tc := range []struct {
		name, mech, initial string
		lines               []string // the client's answers, one per continuation (all read)
		challenges          string   // the continuations sent, joined with "|"
		user, pass, authz   string
		err                 error
	}{
		{name: "PLAIN initial", mech: "PLAIN", initial: b64("\x00alice\x00pw"), user: "alice", pass: "pw"},
		{name: "plain lower case", mech: "plain", initial: b64("admin\x00alice\x00pw"), authz: "admin", user: "alice", pass: "pw"},
		{name: "PLAIN asked", mech: "PLAIN", lines: []string{b64("\x00alice\x00pw")}, challenges: "", user: "alice", pass: "pw"},
		{name: "PLAIN empty initial", mech: "PLAIN", initial: "=", err: gate.ErrBadSASL},
		{name: "PLAIN one NUL", mech: "PLAIN", initial: b64("alice\x00pw"), err: gate.ErrBadSASL},
		{name: "PLAIN three NULs", mech: "PLAIN", initial: b64("\x00alice\x00pw\x00x"), err: gate.ErrBadSASL},
		{name: "PLAIN no user", mech: "PLAIN", initial: b64("\x00\x00pw"), err: gate.ErrBadSASL},
		{name: "PLAIN padding bits", mech: "PLAIN", initial: "AGJvYgBwdx==", err: gate.ErrBadSASL},
		{name: "PLAIN white space", mech: "PLAIN", initial: "AGJv YgBwdw==", err: gate.ErrBadSASL},
		{name: "PLAIN no padding", mech: "PLAIN", initial: "AGJvYgBwdw", err: gate.ErrBadSASL},
		{name: "PLAIN cancelled", mech: "PLAIN", lines: []string{"*"}, challenges: "", err: gate.ErrCancelled},
		{name: "LOGIN asked", mech: "LOGIN", lines: []string{b64("alice"), b64("pw")}, challenges: "VXNlcm5hbWU6|UGFzc3dvcmQ6", user: "alice", pass: "pw"},
		{name: "LOGIN initial", mech: "login", initial: b64("alice"), lines: []string{b64("pw")}, challenges: "UGFzc3dvcmQ6", user: "alice", pass: "pw"},
		{name: "LOGIN empty initial", mech: "LOGIN", initial: "=", err: gate.ErrBadSASL},
		{name: "LOGIN empty name", mech: "LOGIN", lines: []string{"", b64("pw")}, challenges: "VXNlcm5hbWU6|UGFzc3dvcmQ6", err: gate.ErrBadSASL},
		{name: "LOGIN cancelled", mech: "LOGIN", lines: []string{b64("alice"), "*"}, challenges: "VXNlcm5hbWU6|UGFzc3dvcmQ6", err: gate.ErrCancelled},
		{name: "LOGIN bad password", mech: "LOGIN", initial: b64("alice"), lines: []string{"cHc=\r"}, challenges: "UGFzc3dvcmQ6", err: gate.ErrBadSASL},
		// strings.ToUpper would read a dotless i as I; Dovecot and Postfix compare ASCII.
		{name: "dotless i", mech: "logın", initial: b64("alice"), err: gate.ErrMechanism},
		{name: "CRAM-MD5", mech: "CRAM-MD5", err: gate.ErrMechanism},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent []string
			lines := tc.lines
			authz, user, pass, err := gate.SASL(tc.mech, tc.initial, func(challenge string) ([]byte, error) {
				sent = append(sent, challenge)
				if len(lines) == 0 {
					t.Fatalf("continuation %q not expected", challenge)
				}
				line := lines[0]
				lines = lines[1:]
				return gate.SASLResponse(line)
			})
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if authz != tc.authz || user != tc.user || pass != tc.pass {
				t.Fatalf("%q %q %q, want %q %q %q", authz, user, pass, tc.authz, tc.user, tc.pass)
			}
			if got := strings.Join(sent, "|"); got != tc.challenges {
				t.Fatalf("continuations %q, want %q", sent, tc.challenges)
			}
			if len(lines) != 0 {
				t.Fatalf("answers left unread: %q", lines)
			}
		})
	}
}

// An error of the step (the connection's) ends the exchange as it is.
func TestSASLStepError(t *testing.T) {
	lost := errors.New("connection lost")
	_, _, _, err := gate.SASL("LOGIN", "", func(string) ([]byte, error) { return nil, lost })
	if err != lost {
		t.Fatalf("err %v", err)
	}
}
