package doctor

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// Required once per package: stops the backends after the last test.
func TestMain(m *testing.M) { testenv.Main(m) }

// The doctor against the real Postfix and Dovecot (POSTERN_E2E=1), set up
// right: every check passes and reports what the servers offer.
func TestE2ERightSettings(t *testing.T) {
	env := testenv.Backends(t)
	rep := runTimeout(t, DefaultTimeout, fmt.Sprintf(`services:
  smtp: { listen: ":1025", backend: %q }
  submission: { listen: ":1587", backend: %q, backend_proxy: xclient }
  smtps: { listen: ":1465", backend: %q, backend_tls: starttls, backend_tls_verify: false, tls: { cert: %q, key: %q } }
  imap: { listen: ":1143", backend: %q }
  imaps: { listen: ":1993", backend: %q, backend_tls: tls, backend_tls_verify: false, tls: { cert: %q, key: %q } }
  pop3: { listen: ":1110", backend: %q, backend_proxy: v1 }
  pop3s: { listen: ":1995", backend: %q, backend_tls: tls, backend_tls_verify: false, tls: { cert: %q, key: %q } }
`, env.SMTPProxy, env.SMTPPlain, env.SMTPProxy, env.CertFile, env.CertFile,
		env.IMAPProxy, env.IMAPSProxy, env.CertFile, env.CertFile,
		env.POP3Proxy, env.POP3SProxy, env.CertFile, env.CertFile))
	b, _ := json.MarshalIndent(rep, "", "  ")
	if !rep.OK {
		t.Fatalf("not OK against the real servers:\n%s", b)
	}
	t.Logf("%s", b)
	for _, name := range []string{"imap", "imaps", "pop3", "pop3s", "smtps", "submission"} {
		r := result(t, rep, name)
		if len(r.Auth) == 0 || !strings.Contains(strings.Join(r.Auth, " "), "PLAIN") {
			t.Errorf("%s: no AUTH PLAIN offered: %+v", name, r)
		}
	}
	if r := result(t, rep, "imap"); !strings.HasPrefix(r.Greeting, "* OK") || r.StartTLS == nil || !*r.StartTLS {
		t.Errorf("imap: %+v", r)
	}
	if r := result(t, rep, "pop3"); !strings.HasPrefix(r.Greeting, "+OK") || r.StartTLS == nil || !*r.StartTLS {
		t.Errorf("pop3: %+v", r)
	}
	if r := result(t, rep, "smtp"); !strings.HasPrefix(r.Greeting, "220 ") || !*r.StartTLS {
		t.Errorf("smtp: %+v", r)
	}
	if r := result(t, rep, "submission"); strings.Join(r.Notes, ";") != "XCLIENT accepted" {
		t.Errorf("submission: %+v", r)
	}
}

// The doctor against the real servers set up wrong: each mistake gets its
// advice.
func TestE2EWrongSettings(t *testing.T) {
	env := testenv.Backends(t)
	rep := runTimeout(t, DefaultTimeout, fmt.Sprintf(`services:
  smtp: { listen: ":1025", backend: %q, backend_proxy: none }
  submission: { listen: ":1587", backend: %q }
  smtps: { listen: ":1465", backend: %q, backend_proxy: xclient, tls: { cert: %q, key: %q } }
  imap: { listen: ":1143", backend: %q, backend_proxy: none }
  imaps: { listen: ":1993", backend: %q, tls: { cert: %q, key: %q } }
  pop3: { listen: ":1110", backend: %q }
  pop3s: { listen: ":1995", backend: %q, backend_proxy: v1, tls: { cert: %q, key: %q } }
`, env.SMTPProxy, env.SMTPPlain, env.SMTPProxy, env.CertFile, env.CertFile,
		env.IMAPProxy, env.IMAPPlain, env.CertFile, env.CertFile, env.POP3Plain, env.POP3Plain, env.CertFile, env.CertFile))
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("%s", b)
	for _, c := range []struct{ check, want string }{
		// Postfix waits for a header that does not come: 421.
		{"smtp", "Postfix at " + env.SMTPProxy + ` answered "421 4.3.0`},
		{"smtps", "and postern sends no PROXY header (backend_proxy: xclient); it probably expects one"},
		// Dovecot waits for a header that does not come: closed after haproxy_timeout.
		{"imap", "Dovecot at " + env.IMAPProxy + " closed the connection before its greeting and postern sends no PROXY header (backend_proxy: none)"},
		// A header where none is expected: read as commands.
		{"submission", "Postfix at " + env.SMTPPlain + " read postern's PROXY v2 header as commands"},
		{"imaps", "Dovecot at " + env.IMAPPlain + " read postern's PROXY v2 header as commands"},
		{"pop3", "Dovecot at " + env.POP3Plain + " read postern's PROXY v2 header as commands"},
		{"pop3s", "Dovecot at " + env.POP3Plain + " read postern's PROXY v1 header as commands"},
	} {
		r := result(t, rep, c.check)
		if r.OK || !strings.Contains(r.Problem, c.want) {
			t.Errorf("%s: problem %q, want it to contain %q", c.check, r.Problem, c.want)
		}
	}
}
