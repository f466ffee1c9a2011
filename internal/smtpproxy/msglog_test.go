package smtpproxy

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// linesWith returns the log lines holding every one of parts.
func linesWith(log string, parts ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// A relayed message writes exactly one info line: the client, the
// sender, the number of recipients, the size, the backend's final reply
// and the time the transaction took; a login writes one line with the
// account and the result. Neither holds the password or the SASL blob.
func TestMessageAndLoginLogLines(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	const pass = "alice-pass-1"
	blob := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00" + pass))
	c := h.dial("127.0.0.61")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("AUTH PLAIN "+blob, 235)
	c.cmd("MAIL FROM:<alice@example.test>", 250)
	c.cmd("RCPT TO:<bob@example.test>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	body := "Subject: log line\r\n\r\nhello\r\n"
	c.send(body + ".\r\n")
	c.expect(250)

	// A second message in chunks (BDAT), with one recipient.
	c.cmd("MAIL FROM:<alice@example.test>", 250)
	c.cmd("RCPT TO:<bob@example.test>", 250)
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
	c.expect(250)
	c.cmd("QUIT", 221)
	c.closed()

	log := h.logs.String()
	msgs := linesWith(log, "msg=message ")
	if len(msgs) != 2 {
		t.Fatalf("%d message lines, want 2:\n%s", len(msgs), log)
	}
	for i, want := range [][]string{
		{"level=INFO", "service=smtp", "client=127.0.0.61", "sender=alice@example.test", "recipients=2",
			fmt.Sprintf("size=%d", len(body)), "reply=250", "status=2.0.0", `text="Ok: queued as TESTX"`, "duration=", "account=alice@example.test"},
		{"level=INFO", "client=127.0.0.61", "recipients=1", fmt.Sprintf("size=%d", len(body)), "reply=250", `text="Ok: queued as TESTXX"`},
	} {
		for _, w := range want {
			if !strings.Contains(msgs[i], w) {
				t.Errorf("message line %d lacks %q:\n%s", i+1, w, msgs[i])
			}
		}
	}
	logins := linesWith(log, "msg=login ")
	if len(logins) != 1 || !strings.Contains(logins[0], "level=INFO") || !strings.Contains(logins[0], "service=smtp") ||
		!strings.Contains(logins[0], "client=127.0.0.61") || !strings.Contains(logins[0], "account=alice@example.test") ||
		!strings.Contains(logins[0], "result=ok") {
		t.Errorf("login lines:\n%s", strings.Join(logins, "\n"))
	}
	if strings.Contains(log, pass) || strings.Contains(log, blob) {
		t.Errorf("the log holds the password or the SASL blob:\n%s", log)
	}

	// A failed login is one line with its result.
	c = h.dial("127.0.0.62")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00bob@example.test\x00wrong-pass")), 535)
	c.cmd("QUIT", 221)
	c.closed()
	log = h.logs.String()
	if l := linesWith(log, "msg=login ", "client=127.0.0.62"); len(l) != 1 || !strings.Contains(l[0], "result=failed") || !strings.Contains(l[0], "account=bob@example.test") {
		t.Errorf("failed login lines: %q", l)
	}
	if strings.Contains(log, "wrong-pass") {
		t.Errorf("the log holds a password:\n%s", log)
	}
}
