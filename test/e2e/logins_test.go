package e2e

import (
	"strings"
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// TestLoginNames: login names meet a restriction as Dovecot resolves them.
// Dovecot here has auth_default_realm = other.test and
// auth_username_format = %Lu, so "carol" and "CAROL" log in as
// carol@other.test; postern, with logins.default_domain: other.test, holds
// them to carol's domain restriction ("@other.test=203.0.113.0/24"). From
// inside both log in at Dovecot as carol@other.test; from outside (before,
// a name without a domain met no restriction, and Dovecot logged carol in
// from anywhere) both are refused with Dovecot's wrong-password reply,
// never reach Dovecot, and count as failed logins of one account: a third
// password blocks with detail "account carol@other.test".
func TestLoginNames(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy,
		IMAP: env.IMAPProxy, IMAPS: env.IMAPSProxy, POP3: env.POP3Proxy, POP3S: env.POP3SProxy, DefaultDomain: "other.test"})
	const in, out = "203.0.113.90", "192.0.2.90"
	mark := env.LogMark(t, "dovecot")
	for i, name := range []string{"carol", "CAROL"} {
		r := mailc(t, "imap", gw.IMAP, ap(in, uint16(40001+i)), "", mlogin("login", name, carolPass), mop("logout"))
		if got := r.at(1); !got.OK || !strings.HasSuffix(got.Text, "] Logged in") {
			t.Fatalf("%s from %s: %v%v", name, in, got, r)
		}
	}
	// Dovecot resolved both names to carol@other.test.
	waitDovecot(t, env, mark, 2, loginLine("imap", carol, in)...)

	r := mailc(t, "imap", gw.IMAP, ap(out, 40001), "",
		mlogin("login", "alice@example.test", "wrong-1"),
		mlogin("login", "carol", carolPass),
		mlogin("login", "CAROL", carolPass),
		mop("noop"), mop("logout"))
	wrong := r.at(1)
	if wrong.OK || wrong.Text != "NO [AUTHENTICATIONFAILED] Authentication failed." {
		t.Fatalf("wrong password: %v%v", wrong, r)
	}
	for i := 2; i <= 3; i++ {
		if got := r.at(i); got.OK || got.Text != wrong.Text {
			t.Fatalf("carol's login from %s (step %d): %v, want exactly %q%v", out, i, got, wrong.Text, r)
		}
	}
	gw.noBlock(t, out) // alice's wrong password, and carol's one password counted once
	r = mailc(t, "imap", gw.IMAP, ap(out, 40002), "", mlogin("login", "Carol", "guess-2"), mop("noop"))
	if got := r.at(1); got.OK || !strings.Contains(got.Text, "[AUTHENTICATIONFAILED] Authentication failed.") {
		t.Fatalf("third refused login: %v%v", got, r)
	}
	gw.wantBlock(t, out, "L", "imap", "account "+carol)
	waitDovecot(t, env, mark, 1, "passwd-file(alice@example.test,"+out+",", "Password mismatch")
	// The three refused logins reached Dovecot with decoy passwords only.
	dovecotSawDecoys(t, env, mark, 3, carol, out)
}
