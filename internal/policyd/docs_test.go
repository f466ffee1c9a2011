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

// The nginx snippet of docs/POLICY.md points at postern's auth_http
// listener and is what nginx (with Debian's libnginx-mod-mail) reads
// without a complaint (nginx -t, with a certificate made for the test).
func TestPolicyDocNginxSnippet(t *testing.T) {
	blocks := docBlocks(t)
	conf, yaml := blocks["# nginx.conf (nginx)"], blocks["# postern.yaml"]
	if conf == "" {
		t.Fatal("POLICY.md lacks the nginx snippet")
	}
	f, err := config.Parse("/etc/postern/postern.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if n := f.Policy.Nginx; n.Listen.Value != "127.0.0.1:8085" || !strings.Contains(conf, "auth_http "+n.Listen.Value+"/auth;") {
		t.Fatalf("the nginx snippet does not point at policy.nginx.listen %q", n.Listen.Value)
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Skip("nginx not installed")
	}
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_mail_module.so"); err != nil {
		t.Skip("nginx's mail module not installed (libnginx-mod-mail)")
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "mail.pem"), filepath.Join(dir, "mail.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-subj", "/CN=mail.example.com", "-days", "1", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	conf = strings.NewReplacer("/etc/ssl/mail.pem", cert, "/etc/ssl/mail.key", key).Replace(conf)
	path := filepath.Join(dir, "nginx.conf")
	head := "pid " + filepath.Join(dir, "nginx.pid") + ";\nerror_log " + filepath.Join(dir, "error.log") + ";\n"
	if err := os.WriteFile(path, []byte(head+conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nginx", "-t", "-p", dir, "-c", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "test is successful") || strings.Contains(string(out), "[warn]") {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}
