package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// deadConfig switches on triggers that nothing can feed: failed logins
// where no password is taken (no TLS) or no login form is known, spam_score
// without a scanner, content_rules without rules, a whole group without a
// service, a log_only entry for a trigger that is off; and blocks that
// neither refuse nor close.
const deadConfig = `services:
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143" }
intrusion_prevention:
  refuse_blocked: false
  close_blocked_connection: false
  smtp: { connections_per_minute: 10, failed_logins: 5, spam_score: 8.5, content_rules: true, log_only: [D, spam_score] }
  imap_pop3: { failed_logins: 5 }
  web: { connections_per_minute: 100, failed_logins: 3 }
`

// liveConfig is deadConfig with what each trigger needs.
const liveConfig = `services:
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025", allow_insecure_auth: true }
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", plaintext_login: "127.0.0.1" }
  web:
    listen: "127.0.0.1:0"
    backend: "http://127.0.0.1:8080"
    login_forms: [{ method: POST, path: /login, user_field: user, fail_status: 401 }]
spam: { rspamd: "http://127.0.0.1:11333" }
content_rules:
  - { name: exe, body: '\.exe' }
intrusion_prevention:
  refuse_blocked: false
  close_blocked_connection: true
  smtp: { connections_per_minute: 10, failed_logins: 5, spam_score: 8.5, content_rules: true, log_only: [spam_score] }
  imap_pop3: { failed_logins: 5 }
  web: { connections_per_minute: 100, failed_logins: 3 }
`

func TestCheckWarnsAboutTriggersThatCannotFire(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, deadConfig)
	code, out, errs := postern(t, "check", "-c", cfg)
	// imap without TLS or plaintext_login takes no login: an error of
	// its own; the triggers' warnings come with it.
	if code != exitError {
		t.Fatalf("check: exit %d, want %d\n%s%s", code, exitError, out, errs)
	}
	want := []string{
		cfg + ":3:3: service imap: no client can ever log in: it has no tls: (so no STARTTLS) and no plaintext_login, so it announces LOGINDISABLED and refuses every login; give it tls: { cert, key } (postern init writes a self-signed pair), or plaintext_login for networks you trust",
		cfg + ": 1 error",
		cfg + ":7:9: intrusion_prevention.smtp.failed_logins (L) can never fire: SMTP AUTH needs TLS and no smtp, submission or smtps service has tls: (or allow_insecure_auth)",
		cfg + ":7:9: intrusion_prevention.smtp.spam_score (S) can never fire: no spam scanner is configured (spam.rspamd or spam.spamd)",
		cfg + ":7:9: intrusion_prevention.smtp.content_rules (C) can never fire: no content_rules are defined",
		cfg + ":8:14: intrusion_prevention.imap_pop3.failed_logins (L) can never fire: logins need TLS and no imap, imaps, pop3 or pop3s service has tls: (or plaintext_login)",
		cfg + ":9:8: intrusion_prevention.web.connections_per_minute (I) can never fire: no web service is configured",
		cfg + ":9:8: intrusion_prevention.web.failed_logins (L) can never fire: no web service is configured",
		cfg + ":7:106: intrusion_prevention.smtp.log_only lists dnsbl, which is off: nothing to log",
		cfg + ": intrusion_prevention: refuse_blocked and close_blocked_connection are both off, so a block neither refuses nor closes a connection (it only slows the address down, with tarpit_delay): turn at least one on",
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(errs), "\n") {
		got = append(got, strings.TrimPrefix(l, "warning: "))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The summary does not list a dead trigger as active.
	writeFile(t, cfg, strings.Replace(deadConfig, `imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143" }`, `pop3: { listen: "127.0.0.1:0", backend: "127.0.0.1:10110", plaintext_login: "192.0.2.0/24" }`, 1))
	if code, out, errs = postern(t, "check", "-c", cfg); code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errs)
	}
	for _, line := range []string{
		"  ips       smtp       triggers I; block 4h0m0s; never fire: LSC (see the warnings)\n",
		"  ips       imap_pop3  triggers L; block 4h0m0s\n",
		"  ips       web        triggers none; block 4h0m0s; never fire: IL (see the warnings)\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("summary lacks %q:\n%s", line, out)
		}
	}

	writeFile(t, cfg, liveConfig)
	code, out, errs = postern(t, "check", "-c", cfg)
	if code != 0 || errs != "" {
		t.Fatalf("check with every trigger fed: exit %d, warnings:\n%s", code, errs)
	}
	for _, line := range []string{
		"  ips       smtp       triggers ILS(log)C; block 4h0m0s\n",
		"  ips       imap_pop3  triggers L; block 4h0m0s\n",
		"  ips       web        triggers IL; block 4h0m0s\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("summary lacks %q:\n%s", line, out)
		}
	}

	// One of refuse and close is enough: liveConfig closes only; refuse only.
	writeFile(t, cfg, strings.Replace(strings.Replace(liveConfig, "close_blocked_connection: true", "close_blocked_connection: false", 1), "refuse_blocked: false", "refuse_blocked: true", 1))
	if code, _, errs := postern(t, "check", "-c", cfg); code != 0 || errs != "" {
		t.Errorf("refuse only: exit %d\n%s", code, errs)
	}

	// Both off at the top but a group refusing its blocks: no warning.
	bothOff := strings.Replace(liveConfig, "close_blocked_connection: true", "close_blocked_connection: false", 1)
	if code, _, errs := postern(t, "check", "-c", writeFile2(t, cfg, bothOff)); code != 0 || !strings.Contains(errs, "both off") {
		t.Errorf("both off: exit %d, want the warning\n%s", code, errs)
	}
	groupRefuses := strings.Replace(bothOff, "  imap_pop3: {", "  imap_pop3: { refuse_blocked: true,", 1)
	if groupRefuses == bothOff {
		t.Fatal("liveConfig has no imap_pop3 group to set refuse_blocked in")
	}
	if code, _, errs := postern(t, "check", "-c", writeFile2(t, cfg, groupRefuses)); code != 0 || strings.Contains(errs, "both off") {
		t.Errorf("a group refuses: exit %d, want no both-off warning\n%s", code, errs)
	}

	// Where every SMTP service takes mail only after AUTH, the message
	// triggers never fire: an authenticated session bypasses them.
	authOnly := `services:
  submission: { listen: "127.0.0.1:0", backend: "127.0.0.1:10587", allow_insecure_auth: true }
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025", require_auth: true, allow_insecure_auth: true }
intrusion_prevention:
  smtp: { failed_logins: 5, unknown_recipients: 5, rset_count: 5, message_size: 10MB }
`
	writeFile(t, cfg, authOnly)
	code, out, errs = postern(t, "check", "-c", cfg)
	if code != 0 || strings.Count(errs, "warning:") != 2 ||
		!strings.Contains(errs, "smtp.unknown_recipients (P) can never fire: every smtp, submission and smtps service requires AUTH before mail") ||
		!strings.Contains(errs, "smtp.message_size (M) can never fire: every smtp, submission and smtps service requires AUTH before mail") ||
		!strings.Contains(out, "triggers LR; block 4h0m0s; never fire: PM") {
		t.Errorf("AUTH everywhere: exit %d\n%s%s", code, out, errs)
	}
	writeFile(t, cfg, strings.Replace(authOnly, ", require_auth: true, allow_insecure_auth: true", "", 1))
	if code, out, errs := postern(t, "check", "-c", cfg); code != 0 || errs != "" || !strings.Contains(out, "triggers LPRM; block") {
		t.Errorf("port 25 without AUTH: exit %d\n%s%s", code, out, errs)
	}
}

// TestServeLogsTriggersThatCannotFire: the running gateway logs the same
// warnings as check, at start and on every reload.
func TestServeLogsTriggersThatCannotFire(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, deadConfig+stateConfig(t, dir))
	var buf syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	g, err := startGateway(ctx, cfg, &buf)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"intrusion_prevention.smtp.spam_score (S) can never fire: no spam scanner is configured",
		"refuse_blocked and close_blocked_connection are both off",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf.String())
		}
	}
}

// writeFile2 writes body to path and returns path.
func writeFile2(t *testing.T, path, body string) string {
	t.Helper()
	writeFile(t, path, body)
	return path
}

// A host mask in tarpit_accounts names clients, not recipients: an error,
// never a list that silently matches nothing.
func TestCheckTarpitAccountsHostMask(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "postern.yaml")
	writeFile(t, cfg, `services:
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
intrusion_prevention:
  smtp: { tarpit_accounts: "honeypot.example.com" }
`)
	code, _, errs := postern(t, "check", "-c", cfg)
	if code != exitError || !strings.Contains(errs, "tarpit_accounts holds a host mask") || !strings.Contains(errs, ":4:") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
}

// TestCheckNamesAGroupsServices checks that a group with no service names
// every service of its protocol, in the configuration's order.
func TestCheckNamesAGroupsServices(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, `services:
  web: { listen: "127.0.0.1:0", backend: "http://127.0.0.1:8080" }
intrusion_prevention:
  smtp: { rset_count: 10 }
  imap_pop3: { connections_per_minute: 50 }
`)
	code, out, errs := postern(t, "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("check: exit %d, want 0 (warnings only)\n%s%s", code, out, errs)
	}
	for _, w := range []string{
		"intrusion_prevention.smtp.rset_count (R) can never fire: no smtp, submission, smtps service is configured",
		"intrusion_prevention.imap_pop3.connections_per_minute (I) can never fire: no imap, imaps, pop3, pop3s service is configured",
	} {
		if !strings.Contains(errs, w) {
			t.Errorf("warnings lack %q:\n%s", w, errs)
		}
	}
	if strings.Contains(errs, "intrusion_prevention.web.") {
		t.Errorf("a warning for web, which has a service:\n%s", errs)
	}
}
