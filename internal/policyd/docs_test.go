package policyd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/config"
)

// docBlocks returns docs/POLICY.md's fenced blocks by their first line.
func docBlocks(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "POLICY.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	parts := strings.Split(string(b), "```")
	for i := 1; i < len(parts); i += 2 {
		_, body, _ := strings.Cut(parts[i], "\n")
		first, _, _ := strings.Cut(body, "\n")
		out[first] = body
	}
	return out
}

// The snippets of docs/POLICY.md are what postern, Postfix and Dovecot
// read without a complaint.
func TestPolicyDocSnippets(t *testing.T) {
	blocks := docBlocks(t)
	yaml, maincf, dovecot := blocks["# postern.yaml"], blocks["# main.cf (Postfix)"], blocks["# dovecot.conf (Dovecot)"]
	if yaml == "" || maincf == "" || dovecot == "" {
		t.Fatalf("POLICY.md lacks a snippet: %q", blocks)
	}
	f, err := config.Parse("/etc/postern/postern.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if f.Policy.Postfix.Listen.Value != "127.0.0.1:10040" || f.Policy.Dovecot.Listen.Value != "127.0.0.1:8084" {
		t.Fatalf("postern.yaml: %+v", f.Policy)
	}
	if !strings.Contains(maincf, "inet:127.0.0.1:10040") || !strings.Contains(dovecot, "http://127.0.0.1:8084/") {
		t.Fatal("the mail servers' snippets do not point at postern's listeners")
	}
	t.Run("postconf", func(t *testing.T) {
		if _, err := exec.LookPath("postconf"); err != nil {
			t.Skip("postconf not installed")
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(maincf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "master.cf"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("postconf", "-c", dir, "-n").CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") || !strings.Contains(string(out), "smtpd_policy_service_default_action = DUNNO") {
			t.Fatalf("postconf -n: %v\n%s", err, out)
		}
	})
	t.Run("doveconf", func(t *testing.T) {
		if _, err := exec.LookPath("doveconf"); err != nil {
			t.Skip("doveconf not installed")
		}
		dir := t.TempDir()
		nonce := filepath.Join(dir, "nonce")
		if err := EnsureNonce(nonce); err != nil {
			t.Fatal(err)
		}
		conf := strings.ReplaceAll(dovecot, "/etc/postern/dovecot-nonce", nonce)
		if err := os.WriteFile(filepath.Join(dir, "dovecot.conf"), []byte("protocols = imap pop3\n"+conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("doveconf", "-c", filepath.Join(dir, "dovecot.conf"), "-n").CombinedOutput()
		if err != nil || strings.Contains(string(out), "Warning") || strings.Contains(string(out), "Error") ||
			!strings.Contains(string(out), "auth_policy_server_url = http://127.0.0.1:8084/") {
			t.Fatalf("doveconf -n: %v\n%s", err, out)
		}
	})
}
