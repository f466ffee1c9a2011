package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// TestTLSResumption: Python's ssl module (OpenSSL) resumes its TLS 1.3 and
// TLS 1.2 sessions with postern on imaps, imap STARTTLS, smtps and smtp
// STARTTLS, in front of the real Dovecot and Postfix, before a SIGHUP
// reload and after it with the tickets issued before it.
func TestTLSResumption(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy, IMAP: env.IMAPProxy, IMAPS: env.IMAPSProxy})
	// Loopback sources (untrusted peers: postern takes them as the
	// clients' own), one per service and TLS version, three connections
	// each: under the SMTP connections-per-minute trigger (5), IMAP's
	// inside the grant (127.0.0.16/28).
	args := []string{filepath.Join(testdataDir(t), "tlsresume.py"), gw.CertFile,
		"imaps=imaps:" + gw.IMAPS + ":127.0.0.23,127.0.0.24", "imap=imap-starttls:" + gw.IMAP + ":127.0.0.25,127.0.0.26",
		"smtps=smtps:" + gw.SMTPS + ":127.0.1.23,127.0.1.24", "smtp=smtp-starttls:" + gw.SMTP + ":127.0.1.25,127.0.1.26"}
	cmd := exec.Command("python3", args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	out := bufio.NewReader(stdout)
	readJSON := func(v any) {
		t.Helper()
		type line struct {
			s   string
			err error
		}
		ch := make(chan line, 1)
		go func() { s, err := out.ReadString('\n'); ch <- line{s, err} }()
		select {
		case l := <-ch:
			if l.err != nil {
				t.Fatalf("tlsresume.py: %v\n%s\npostern log:\n%s", l.err, stderr.String(), gw.logTail(30))
			}
			if err := json.Unmarshal([]byte(l.s), v); err != nil {
				t.Fatalf("tlsresume.py said %q: %v", l.s, err)
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("tlsresume.py: no answer in 60s\n%s", stderr.String())
		}
	}

	var before map[string][2]bool
	readJSON(&before)
	if len(before) != 8 {
		t.Fatalf("before the reload: %v", before)
	}
	for k, r := range before {
		if r[0] || !r[1] {
			t.Errorf("%s before the reload: first handshake resumed %v, second %v; want false, true", k, r[0], r[1])
		}
	}

	reloads := strings.Count(gw.logTail(0), "configuration reloaded")
	if err := gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !poll(20*time.Second, func() bool { return strings.Count(gw.logTail(0), "configuration reloaded") > reloads }) {
		t.Fatalf("no reload after SIGHUP:\n%s", gw.logTail(20))
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	var after map[string]bool
	readJSON(&after)
	if len(after) != 8 {
		t.Fatalf("after the reload: %v", after)
	}
	for k, r := range after {
		if !r {
			t.Errorf("%s: a session from before the reload did not resume after it", k)
		}
	}
}
