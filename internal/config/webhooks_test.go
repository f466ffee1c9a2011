package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func webhookSecret(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "hook.key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWebhooksConfig(t *testing.T) {
	dir := t.TempDir()
	webhookSecret(t, dir, "  0123456789abcdef0123\n")
	f, err := Parse(filepath.Join(dir, "p.yaml"), []byte(`
webhooks:
  - { url: "https://hooks.example.com/postern", events: [block, unblock, escalation, new_country_login, reload_failed], secret_file: hook.key }
  - { name: local, url: "http://127.0.0.1:8080/x", events: [reload_failed], secret_file: hook.key, timeout: 2s, delivery_deadline: 1m, max_attempts: 3, queue: 10 }
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Webhooks) != 2 {
		t.Fatalf("webhooks: %+v", f.Webhooks)
	}
	a, b := f.Webhooks[0], f.Webhooks[1]
	if a.Name.Value != "webhook1" || a.URL.Value != "https://hooks.example.com/postern" || a.SecretFile.Value != filepath.Join(dir, "hook.key") ||
		a.Timeout.D != 5*time.Second || a.Deadline.D != 10*time.Minute || a.MaxAttempts != 8 || a.Queue != 1000 || !a.Wants("new_country_login") {
		t.Errorf("defaults: %+v", a)
	}
	if b.Name.Value != "local" || b.Timeout.D != 2*time.Second || b.Deadline.D != time.Minute || b.MaxAttempts != 3 || b.Queue != 10 || b.Wants("block") || !b.Wants("reload_failed") {
		t.Errorf("second: %+v", b)
	}
	s, err := ReadWebhookSecret(a.SecretFile.Value)
	if err != nil || string(s) != "0123456789abcdef0123" {
		t.Errorf("secret %q, %v", s, err)
	}
}

func TestWebhooksConfigErrors(t *testing.T) {
	dir := t.TempDir()
	webhookSecret(t, dir, "0123456789abcdef")
	if err := os.WriteFile(filepath.Join(dir, "short.key"), []byte("tooshort-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := `secret_file: hook.key, events: [block]`
	for _, tc := range []struct{ yaml, want string }{
		{`webhooks: [{ url: "http://hooks.example.com/x", ` + ok + ` }]`, "plain http only to a loopback address"},
		{`webhooks: [{ url: "ftp://hooks.example.com/x", ` + ok + ` }]`, "want https://"},
		{`webhooks: [{ url: "https://user:hunter2@hooks.example.com/x", ` + ok + ` }]`, "no user name or password"},
		{`webhooks: [{ url: "https:///x", ` + ok + ` }]`, "no host"},
		{`webhooks: [{ ` + ok + ` }]`, "url: missing"},
		{`webhooks: [{ url: "https://h.example/x", secret_file: hook.key }]`, "list its events"},
		{`webhooks: [{ url: "https://h.example/x", secret_file: hook.key, events: [blocked] }]`, `unknown event "blocked"`},
		{`webhooks: [{ url: "https://h.example/x", events: [block] }]`, "needs a secret_file"},
		{`webhooks: [{ url: "https://h.example/x", events: [block], secret_file: missing.key }]`, "no such file"},
		{`webhooks: [{ url: "https://h.example/x", events: [block], secret_file: short.key }]`, "at least 16 bytes"},
		{`webhooks: [{ url: "https://h.example/x", ` + ok + `, timeout: 0s }]`, "timeout must be positive"},
		{`webhooks: [{ url: "https://h.example/x", ` + ok + `, timeout: 10s, delivery_deadline: 5s }]`, "delivery_deadline must be at least"},
		{`webhooks: [{ url: "https://h.example/x", ` + ok + `, queue: 0 }]`, "queue"},
		{`webhooks: [{ name: "Bad Name", url: "https://h.example/x", ` + ok + ` }]`, "want 1 to 32 lower-case"},
		{`webhooks: [{ name: a, url: "https://h.example/x", ` + ok + ` }, { name: a, url: "https://h.example/y", ` + ok + ` }]`, "used twice"},
		{`webhooks: [{ url: "https://h.example/x", ` + ok + `, secret: x }]`, "secret"},
	} {
		_, err := Parse(filepath.Join(dir, "p.yaml"), []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("password in the error: %v", err)
		}
	}
	// Plain http: loopback, or anywhere when allowed explicitly.
	for _, u := range []string{"http://localhost:9/x", "http://[::1]:9/x", "http://127.8.9.10/x"} {
		if _, err := Parse(filepath.Join(dir, "p.yaml"), []byte(`webhooks: [{ url: "`+u+`", `+ok+` }]`)); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if _, err := Parse(filepath.Join(dir, "p.yaml"), []byte(`webhooks: [{ url: "http://hooks.example.com/x", allow_insecure_http: true, `+ok+` }]`)); err != nil {
		t.Errorf("allow_insecure_http: %v", err)
	}
}
