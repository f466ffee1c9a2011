package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The running gateway in front of the real Postfix and rspamd: a message
// relayed leaves exactly one info line naming the client, the sender, the
// recipients, the size and Postfix's own reply with its queue id; a login
// over submission one login line, and no password anywhere; and
// `postern status --json` (the real binary against the gateway's socket)
// reports each SMTP service bound where it listens, Postfix reachable, and
// health.
func testStatusAndMessageLog(t *testing.T, s *suite) {
	const a = "198.51.100.60"
	tok := uniq("msglog")
	file := writeFile(t, "m.eml", richMessage(tok))
	r := swaks(t, s.gw.SMTP, ap(a, 40001), "--from", "bob@example.test", "--to", alice, "--data", "@"+file)
	mustQueue(t, "postern smtp", r)
	m := regexp.MustCompile(`250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)`).FindStringSubmatch(r.out)
	if m == nil {
		t.Fatalf("no queue id in swaks' output:\n%s", r.out)
	}
	var lines []string
	poll(5*time.Second, func() bool {
		lines = linesWith(s.gw.logTail(0), "msg=message ", "client="+a+" ")
		return len(lines) > 0
	})
	if len(lines) != 1 {
		t.Fatalf("%d message lines for %s, want 1:\n%s", len(lines), a, strings.Join(lines, "\n"))
	}
	for _, w := range []string{"level=INFO", "service=smtp", "sender=bob@example.test", "recipients=1", "size=",
		"reply=250", "status=2.0.0", `text="Ok: queued as ` + m[1] + `"`, "duration="} {
		if !strings.Contains(lines[0], w) {
			t.Errorf("message line lacks %q:\n%s", w, lines[0])
		}
	}

	// A login over submission (Postfix asks Dovecot): one login line, and
	// the message line names the account; the password is in neither.
	const b = "198.51.100.61"
	pass := s.env.Users[alice]
	r = swaks(t, s.gw.Submission, ap(b, 40001), "-tls", "--auth", "PLAIN", "--auth-user", alice, "--auth-password", pass,
		"--from", alice, "--to", alice, "--data", "@"+file)
	mustQueue(t, "postern submission", r)
	poll(5*time.Second, func() bool { return len(linesWith(s.gw.logTail(0), "msg=message ", "client="+b+" ")) > 0 })
	logins := linesWith(s.gw.logTail(0), "msg=login ", "client="+b+" ")
	msgs := linesWith(s.gw.logTail(0), "msg=message ", "client="+b+" ")
	if len(logins) != 1 || !strings.Contains(logins[0], "service=submission") || !strings.Contains(logins[0], "account="+alice+" result=ok") {
		t.Errorf("login lines for %s, want one ok:\n%s", b, strings.Join(logins, "\n"))
	}
	if len(msgs) != 1 || !strings.Contains(msgs[0], "account="+alice) || !strings.Contains(msgs[0], "reply=250") {
		t.Errorf("message lines for %s:\n%s", b, strings.Join(msgs, "\n"))
	}
	if strings.Contains(s.gw.logTail(0), pass) {
		t.Error("postern's log holds alice's password")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, posternBinary(t), "status", "-c", s.gw.cfg, "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("postern status: %v", err)
	}
	var st struct {
		Healthy  bool     `json:"healthy"`
		Problems []string `json:"problems"`
		Node     string   `json:"node"`
		Config   struct {
			File string `json:"file"`
		} `json:"config"`
		Services []struct {
			Name     string `json:"name"`
			Bound    string `json:"bound"`
			Backends []struct {
				Address   string `json:"address"`
				Reachable bool   `json:"reachable"`
			} `json:"backends"`
		} `json:"services"`
		Store struct {
			Path string `json:"path"`
		} `json:"store"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		t.Fatalf("postern status --json: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if err != nil || !st.Healthy || len(st.Problems) != 0 {
		t.Errorf("postern status: %v, healthy %v, problems %q", err, st.Healthy, st.Problems)
	}
	if st.Node != "e2e-node" || st.Config.File != s.gw.cfg || st.Store.Path == "" {
		t.Errorf("postern status: node %q, config %q, store %q", st.Node, st.Config.File, st.Store.Path)
	}
	bound := map[string]string{"smtp": s.gw.SMTP, "submission": s.gw.Submission, "smtps": s.gw.SMTPS}
	if len(st.Services) != 3 {
		t.Fatalf("postern status: %d services, want smtp, submission, smtps:\n%s", len(st.Services), stdout.String())
	}
	for _, svc := range st.Services {
		if svc.Bound != bound[svc.Name] || len(svc.Backends) != 1 || svc.Backends[0].Address != s.env.SMTPProxy || !svc.Backends[0].Reachable {
			t.Errorf("service %s: bound %q (want %q), backends %+v (want Postfix at %s, reachable)", svc.Name, svc.Bound, bound[svc.Name], svc.Backends, s.env.SMTPProxy)
		}
	}
}
