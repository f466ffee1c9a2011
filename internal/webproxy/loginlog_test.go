package webproxy

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// lockedLog is a log the gateway's goroutines write and the test reads.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) lines(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// A webmail login form's login writes the one login line every gateway
// writes: service, client, account and result, never the password.
func TestWebLoginLogLine(t *testing.T) {
	var log lockedLog
	h := newHarness(t, harnessOpts{cfg: guardWebCfg, logw: &log})
	c := h.client("127.0.0.71")
	if code := post(c, h.url("/login"), "alice@example.com", "right-password"); code != 302 {
		t.Fatalf("right password: %d", code)
	}
	if code := post(c, h.url("/login"), "alice@example.com", "wrong-password-9"); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	lines := log.lines("msg=login ")
	if len(lines) != 2 {
		t.Fatalf("%d login lines, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, result := range []string{"result=ok", "result=failed"} {
		for _, w := range []string{"level=INFO", "service=web", "client=127.0.0.71", "account=alice@example.com", result} {
			if !strings.Contains(lines[i], w) {
				t.Errorf("login line %d lacks %q: %s", i+1, w, lines[i])
			}
		}
	}
	if p := append(log.lines("right-password"), log.lines("wrong-password-9")...); len(p) > 0 {
		t.Errorf("the log holds a password:\n%s", strings.Join(p, "\n"))
	}
}
