package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// passCmd runs `postern pass ARGS -c CFG` against the gateway's admin API.
func (g *gateway) passCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(posternBinary(t), append(append([]string{"pass"}, args...), "-c", g.cfg)...).CombinedOutput()
	return string(out), err
}

// TestTravelPass: carol@other.test may log in only from 203.0.113.0/24
// ("@other.test=203.0.113.0/24"). She travels to the test's country MY
// (testdata/my.zone: 192.0.2.0/24 among others). Before a pass, her right
// password from 192.0.2.101 gets Dovecot's wrong-password reply; with
// `postern pass add carol@other.test --from country:MY --for 40s` she logs
// in from MY over IMAP (Dovecot) and SMTP AUTH (Postfix), and `postern
// explain` names the pass; once the pass has ended, the same logins are
// refused again and `pass list` no longer shows it. Nothing removes the
// pass: its end is compared with the clock at each login.
func TestTravelPass(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy, IMAP: env.IMAPProxy, IMAPS: env.IMAPSProxy, POP3: env.POP3Proxy, POP3S: env.POP3SProxy})
	const before, during, after, afterSMTP = "192.0.2.101", "192.0.2.102", "192.0.2.104", "192.0.2.105"
	refusedIMAP := func(addr string) {
		t.Helper()
		r := mailc(t, "imap", gw.IMAP, ap(addr, 40001), "", mlogin("login", carol, carolPass), mop("logout"))
		if got := r.at(1); got.OK || got.Text != "NO [AUTHENTICATIONFAILED] Authentication failed." {
			t.Fatalf("carol over IMAP from %s: %v, want Dovecot's wrong-password reply%v", addr, got, r)
		}
	}
	refusedIMAP(before)

	// A bad pass is refused with the reason, and nothing is added.
	if out, err := gw.passCmd(t, "add", "alice@example.test", "--from", "country:MY", "--for", "1d"); err == nil ||
		!strings.Contains(out, "no login IP restriction applies to alice@example.test") {
		t.Fatalf("pass for an unrestricted account: %v\n%s", err, out)
	}
	if out, err := gw.passCmd(t, "add", carol, "--from", "country:ZZ", "--for", "1d"); err == nil || !strings.Contains(out, "ZZ") {
		t.Fatalf("pass from an unknown country: %v\n%s", err, out)
	}

	out, err := gw.passCmd(t, "add", carol, "--from", "country:MY", "--for", "40s", "--comment", "e2e trip")
	if err != nil || !strings.Contains(out, carol+" may log in from country:MY") {
		t.Fatalf("pass add: %v\n%s", err, out)
	}
	out, err = gw.passCmd(t, "list", "--json")
	var l struct {
		Passes []struct {
			ID      string
			Account string
			Until   time.Time
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &l) != nil || len(l.Passes) != 1 || l.Passes[0].Account != carol {
		t.Fatalf("pass list: %v\n%s", err, out)
	}
	until := l.Passes[0].Until

	mark := env.LogMark(t, "dovecot")
	r := mailc(t, "imap", gw.IMAP, ap(during, 40001), "", mlogin("login", carol, carolPass), mop("logout"))
	if got := r.at(1); !got.OK || !strings.HasSuffix(got.Text, "] Logged in") {
		t.Fatalf("carol over IMAP from %s with the pass: %v%v", during, got, r)
	}
	s := python(t, gw.Submission, ap(during, 40002), false, ehlo(), starttls(), ehlo(), auth("PLAIN", carol, carolPass), quit())
	if got := s.reply(4); got.Code != 235 {
		t.Fatalf("carol over SMTP AUTH from %s with the pass: %v, want 235%v", during, got, s)
	}
	waitDovecot(t, env, mark, 1, loginLine("imap", carol, during)...)
	ex, err := exec.Command(posternBinary(t), "explain", "-c", gw.cfg, "--ip", "192.0.2.103", "--service", "imap", "--account", carol).CombinedOutput()
	if err != nil || !strings.Contains(string(ex), "travel pass "+l.Passes[0].ID) || !strings.Contains(string(ex), "decision  allow") {
		t.Fatalf("explain with the pass: %v\n%s", err, ex)
	}
	if time.Now().After(until) {
		t.Fatalf("the logins under the pass took longer than the pass (%s); the test cannot judge them", until)
	}
	if !gw.logContains("login allowed by a travel pass", 5*time.Second) {
		t.Fatal("postern did not log the login the pass allowed")
	}

	// The pass ends on the clock, with nothing removing it: poll the
	// list (which hides ended passes) until it is gone, bounded.
	for deadline := until.Add(10 * time.Second); ; {
		out, err := gw.passCmd(t, "list")
		if err == nil && strings.Contains(out, "no travel passes") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pass is still listed 10s after its end (%s): %v\n%s", until, err, out)
		}
		time.Sleep(500 * time.Millisecond) // each poll runs the CLI
	}
	if time.Now().Before(until) {
		t.Fatalf("the pass was gone before its end (%s)", until)
	}
	refusedIMAP(after)
	s = python(t, gw.Submission, ap(afterSMTP, 40002), false, ehlo(), starttls(), ehlo(), auth("PLAIN", carol, carolPass), quit())
	if got := s.reply(4); got.Code != 535 {
		t.Fatalf("carol over SMTP AUTH from %s after the pass: %v, want 535%v", afterSMTP, got, s)
	}
}
