package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/service"
)

// lockedBuffer is a log several goroutines may write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the JSON log lines with msg "login".
func (l *lockedBuffer) logins(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "login" {
			out = append(out, m)
		}
	}
	return out
}

// Every login through the gate writes exactly one info line "login" with
// the account and the result (the logger carries service and client), for
// every way it ends, and never the password or the decoy.
func TestLoginLogLine(t *testing.T) {
	const pass = "s3cret-Passw0rd"
	for _, tc := range []struct {
		name    string
		addr    string
		answer  gate.Outcome
		err     error
		result  string
		blocked bool // failed_logins is 1: a counted failure blocks
	}{
		{name: "accepted", addr: "127.0.0.10", answer: gate.Accepted, result: gate.ResultOK},
		{name: "rejected", addr: "127.0.0.11", answer: gate.Rejected, result: gate.ResultFailed, blocked: true},
		{name: "answered", addr: "127.0.0.12", answer: gate.Answered, result: gate.ResultNotJudged},
		{name: "unexpected", addr: "127.0.0.13", answer: gate.Unexpected, result: gate.ResultNoAnswer, blocked: true},
		{name: "no answer", addr: "127.0.0.14", err: errors.New("connection reset"), result: gate.ResultNoAnswer, blocked: true},
		{name: "restricted", addr: "127.0.1.15", answer: gate.Rejected, result: gate.ResultRestricted, blocked: true},
		{name: "restricted, decoy accepted", addr: "127.0.1.16", answer: gate.Accepted, result: gate.ResultRestricted, blocked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 1)
			gs, a := w.session(t, service.IMAP, tc.addr)
			buf := new(lockedBuffer)
			log := slog.New(slog.NewJSONHandler(buf, nil)).With("service", "imap", "client", a.String())
			var sent string
			gate.NewLogins(w.eng).Run(context.Background(), gs, w.pol, a, gate.Credentials{User: "alice@example.test", Pass: pass}, log,
				func(p string) (gate.Outcome, error) { sent = p; return tc.answer, tc.err })
			lines := buf.logins(t)
			if len(lines) != 1 {
				t.Fatalf("%d login lines, want 1:\n%s", len(lines), buf.b.String())
			}
			l := lines[0]
			if l["level"] != "INFO" || l["account"] != "alice@example.test" || l["result"] != tc.result ||
				l["service"] != "imap" || l["client"] != a.String() {
				t.Errorf("login line %v, want result %s", l, tc.result)
			}
			if got := l["blocked"] == true; got != tc.blocked || tc.blocked && l["reason"] != "L" {
				t.Errorf("login line %v: blocked %v, want %v", l, got, tc.blocked)
			}
			if all := buf.b.String(); strings.Contains(all, pass) || strings.Contains(all, sent) {
				t.Errorf("the log holds a password:\n%s", all)
			}
		})
	}

	// A blocked address: no attempt, one line saying so.
	w := newWorld(t, 1)
	gs, a := w.session(t, service.SMTP, "127.0.0.20")
	l := gate.NewLogins(w.eng)
	cred := gate.Credentials{User: "bob@example.test", Pass: pass}
	l.Run(context.Background(), gs, w.pol, a, cred, discard, func(string) (gate.Outcome, error) { return gate.Rejected, nil })
	buf := new(lockedBuffer)
	log := slog.New(slog.NewJSONHandler(buf, nil))
	l.Run(context.Background(), gs, w.pol, a, cred, log, func(string) (gate.Outcome, error) { return gate.Accepted, nil })
	if lines := buf.logins(t); len(lines) != 1 || lines[0]["result"] != gate.ResultBlocked || lines[0]["reason"] != "L" {
		t.Errorf("blocked login lines: %v", lines)
	}

	// Begin and Report (the web), then Failed and Abandon: still one line.
	w = newWorld(t, 3)
	gs, a = w.session(t, service.Web, "127.0.0.30")
	buf = new(lockedBuffer)
	log = slog.New(slog.NewJSONHandler(buf, nil))
	at, _ := gate.NewLogins(w.eng).Begin(context.Background(), gs, w.pol, a, cred, log)
	at.Report(gate.Rejected)
	at.Failed()
	at.Abandon()
	if lines := buf.logins(t); len(lines) != 1 || lines[0]["result"] != gate.ResultFailed || lines[0]["blocked"] != nil {
		t.Errorf("web login lines: %v", lines)
	}
}
