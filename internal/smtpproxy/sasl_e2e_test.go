package smtpproxy

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/testenv"
)

// Real Postfix, asking Dovecot's SASL, against postern's one SASL reader
// (gate.SASL) for AUTH with an initial response: whatever postern reads as
// alice's right credentials Postfix logs in, what postern reads as another
// login Postfix does not log in as alice, and a mechanism postern does not
// know Postfix does not know either (a dotless ı is no I). Where postern
// refuses a response as not canonical base64, Postfix may still read it;
// those are counted, postern failing closed.
func TestPostfixReadsSASLAsPostern(t *testing.T) {
	env := testenv.Backends(t)
	user, pass := "alice@example.test", env.Users["alice@example.test"]
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	right := "\x00" + user + "\x00" + pass
	blob := b64(right)
	lines := []string{
		"AUTH PLAIN " + blob, "AUTH plain " + blob, "AUTH pLaIn " + blob,
		"AUTH PLAIN " + b64(user+"\x00"+user+"\x00"+pass),
		"AUTH PLAIN " + b64("\x00"+user+"\x00wrong-password"),
		"AUTH PLAIN " + b64("\x00"+user), "AUTH PLAIN " + b64(right+"\x00"), "AUTH PLAIN =",
		"AUTH PLAIN " + strings.TrimRight(blob, "="),
		"AUTH pla\u0131n " + blob, "AUTH PLA\u0130N " + blob, "AUTH CRAM-MD5",
	}
	if pad := strings.Count(blob, "="); pad > 0 {
		// The same bytes with non-zero padding bits: a lenient decoder
		// reads alice's login, a strict one refuses.
		i := len(blob) - pad - 1
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
		lines = append(lines, "AUTH PLAIN "+blob[:i]+string(alphabet[strings.IndexByte(alphabet, blob[i])|1])+blob[i+1:])
	}
	lenient := 0
	for _, line := range lines {
		c, err := parseCommand(line)
		if err != nil || len(c.args) == 0 {
			t.Fatalf("%q: %v", line, err)
		}
		mech, initial := c.args[0], ""
		if len(c.args) == 2 {
			initial = c.args[1]
		}
		_, u, p, err := gate.SASL(mech, initial, func(string) ([]byte, error) { return nil, errors.New("continuation") })
		direct := postfixReply(t, env.SMTPPlain, []string{"EHLO ctx.example"}, line)
		switch {
		case err == nil && u == user && p == pass:
			if !strings.HasPrefix(direct, "235") {
				t.Errorf("%q: postern reads alice's login, Postfix answers %q", line, direct)
			}
		case err == nil:
			if strings.HasPrefix(direct, "235") {
				t.Errorf("%q: postern reads %q, Postfix logs in", line, u)
			}
		case errors.Is(err, gate.ErrMechanism):
			if direct[0] == '2' || direct[0] == '3' {
				t.Errorf("%q: postern knows no such mechanism, Postfix answers %q", line, direct)
			}
		default:
			if direct[0] == '2' {
				lenient++
			}
		}
	}
	t.Logf("%d AUTH lines; Postfix logged in on %d that postern refuses as not canonical", len(lines), lenient)
}
