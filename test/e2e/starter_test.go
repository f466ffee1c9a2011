package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// starterClient logs in through the gateway as a mail client does, with
// Python's imaplib and smtplib, trusting only the certificate postern init
// wrote (verified, host name included): IMAPS, IMAP with STARTTLS, and a
// message sent on submission after STARTTLS and AUTH.
const starterClient = `
import imaplib, smtplib, ssl, sys
cafile, imaps, imap, submission, user, password, rcpt, subject = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=cafile)
host, port = imaps.rsplit(":", 1)
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
m.login(user, password)
typ, data = m.select("INBOX")
print("imaps", typ, m.sock.version())
m.logout()
host, port = imap.rsplit(":", 1)
m = imaplib.IMAP4(host, int(port))
m.starttls(ssl_context=ctx)
m.login(user, password)
print("imap", m.select("INBOX")[0])
m.logout()
host, port = submission.rsplit(":", 1)
s = smtplib.SMTP(host, int(port), timeout=30)
s.starttls(context=ctx)
s.login(user, password)
s.sendmail(user, [rcpt], "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nsent through the starter configuration\r\n" % (user, rcpt, subject))
print("submission sent")
s.quit()
`

var listeningLine = regexp.MustCompile(`msg=listening service=(\w+) addr=(\S+)`)

// TestStarterConfigTakesLogins: the configuration `postern init` writes,
// with only its backend addresses moved to the test's Postfix and Dovecot
// and its listen ports to free ones, passes check without a word and
// serves real logins through `postern serve`: IMAPS and IMAP STARTTLS
// logins at Dovecot, and submission AUTH at Postfix, whose message arrives.
func TestStarterConfigTakesLogins(t *testing.T) {
	env := testenv.Backends(t)
	bin := posternBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out, err := exec.CommandContext(ctx, bin, "init", "-o", cfg, "--hostname", "mail.e2e.test").CombinedOutput()
	if err != nil {
		t.Fatalf("postern init: %v\n%s", err, out)
	}
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	edited := string(text)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(edited, old) {
			t.Fatalf("the starter has no %q", old)
		}
		edited = strings.ReplaceAll(edited, old, new)
	}
	// Only what the issue allows: the backends (Postfix's and Dovecot's
	// PROXY ports) and the listen ports.
	replace(`"127.0.0.1:10025"`, fmt.Sprintf("%q", env.SMTPProxy))
	replace(`"127.0.0.1:10587"`, fmt.Sprintf("%q", env.SMTPProxy))
	replace(`"127.0.0.1:10143"`, fmt.Sprintf("%q", env.IMAPProxy))
	replace(`"127.0.0.1:10110"`, fmt.Sprintf("%q", env.POP3Proxy))
	for _, port := range []string{"25", "587", "465", "143", "993", "110", "995", "443"} {
		replace(`listen: ":`+port+`"`, `listen: "127.0.0.1:0"`)
	}
	if err := os.WriteFile(cfg, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}

	check := exec.CommandContext(ctx, bin, "check", "-c", cfg)
	var stdout, stderr bytes.Buffer
	check.Stdout, check.Stderr = &stdout, &stderr
	if err := check.Run(); err != nil || stderr.Len() != 0 {
		t.Fatalf("postern check: %v\n%s%s", err, stdout.String(), stderr.String())
	}

	logPath := filepath.Join(dir, "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	serve := exec.Command(bin, "serve", "-c", cfg)
	serve.Stdout, serve.Stderr, serve.Dir = logf, logf, dir
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	logText := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("postern serve exited with %v after SIGTERM", err)
			}
		case <-time.After(40 * time.Second):
			serve.Process.Kill()
			<-exited
			t.Error("postern serve did not stop within 40s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("postern log:\n%s", logText())
		}
	}()
	if !poll(30*time.Second, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true
		default:
		}
		return strings.Contains(logText(), "postern running")
	}) || !strings.Contains(logText(), "postern running") {
		t.Fatalf("postern serve did not start:\n%s", logText())
	}
	addrs := make(map[string]string)
	for _, m := range listeningLine.FindAllStringSubmatch(logText(), -1) {
		addrs[m[1]] = m[2]
	}
	for _, svc := range []string{"imaps", "imap", "submission"} {
		if addrs[svc] == "" {
			t.Fatalf("no listening line for %s:\n%s", svc, logText())
		}
	}
	for _, l := range strings.Split(logText(), "\n") {
		// run_as is commented out in the starter, and the test runs as root.
		if strings.Contains(l, "level=WARN") && !strings.Contains(l, "running as root") {
			t.Errorf("serve warns about the starter: %s", l)
		}
	}

	const user, rcpt = "alice@example.test", "bob@example.test"
	subject := fmt.Sprintf("starter %d", time.Now().UnixNano())
	py := exec.CommandContext(ctx, "python3", "-c", starterClient, filepath.Join(dir, "cert.pem"),
		addrs["imaps"], addrs["imap"], addrs["submission"], user, env.Users[user], rcpt, subject)
	res, err := py.CombinedOutput()
	if err != nil {
		t.Fatalf("python clients: %v\n%s", err, res)
	}
	for _, want := range []string{"imaps OK TLSv1.3", "imap OK", "submission sent"} {
		if !strings.Contains(string(res), want) {
			t.Errorf("clients' output lacks %q:\n%s", want, res)
		}
	}
	env.WaitForMessage(t, rcpt, subject, 30*time.Second)
}
