package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// ---- the Postfix log ---------------------------------------------------

// postfixSince returns what Postfix logged after mark (env.LogMark).
func postfixSince(t testing.TB, env *testenv.Env, mark int64) string {
	t.Helper()
	f, err := os.Open(env.PostfixLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, mark, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// linesWith returns the lines of log that contain every one of subs.
func linesWith(log string, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// client is how Postfix names a proxied client in its log.
func client(a string) string { return "unknown[" + a + "]" }

// waitPostfix waits until Postfix logged, after mark, n lines containing
// every one of subs; it returns them.
func waitPostfix(t testing.TB, env *testenv.Env, mark int64, n int, subs ...string) []string {
	t.Helper()
	var got []string
	if poll(10*time.Second, func() bool { got = linesWith(postfixSince(t, env, mark), subs...); return len(got) >= n }) {
		return got
	}
	t.Fatalf("Postfix logged %d line(s) with %q after the mark, want %d:\n%s", len(got), subs, n, lastLines(postfixSince(t, env, mark), 30))
	return nil
}

// disconnect waits for Postfix's "disconnect from unknown[a]" line after
// mark (the end of the session, with its command counts) and returns it.
func disconnect(t testing.TB, env *testenv.Env, mark int64, a string) string {
	t.Helper()
	return waitPostfix(t, env, mark, 1, "disconnect from "+client(a))[0]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ---- Maildirs --------------------------------------------------------------

// messagesWith returns user's messages that contain token, oldest first.
func messagesWith(env *testenv.Env, user, token string) []string {
	var out []string
	for _, p := range env.Messages(user) {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(token)) {
			out = append(out, p)
		}
	}
	return out
}

// waitMessages waits until user has n messages containing token and
// returns their paths, oldest first.
func waitMessages(t testing.TB, env *testenv.Env, user, token string, n int) []string {
	t.Helper()
	var got []string
	if poll(15*time.Second, func() bool { got = messagesWith(env, user, token); return len(got) >= n }) {
		return got
	}
	t.Fatalf("%s has %d message(s) with %q, want %d", user, len(got), token, n)
	return nil
}

// noMessage checks that no message of user contains token.
func noMessage(t testing.TB, env *testenv.Env, user, token string) {
	t.Helper()
	if got := messagesWith(env, user, token); len(got) > 0 {
		b, _ := os.ReadFile(got[0])
		t.Fatalf("%s received a message with %q that must not be delivered:\n%s", user, token, b)
	}
}

// ---- comparing two deliveries ---------------------------------------------

// traceFields are the header fields that legitimately differ between two
// deliveries of one message: the trace fields Postfix and Dovecot's LMTP
// prepend. Received carries queue ids, LMTP session ids, dates, the TLS
// and AUTH state Postfix saw (ESMTP/ESMTPS/ESMTPA/ESMTPSA); Delivered-To
// and X-Original-To are added by the delivery agent. Return-Path is NOT
// among them: it must be identical.
var traceFields = []string{"received", "delivered-to", "x-original-to"}

// normalize returns a stored message without the trace fields (each field
// with its continuation lines) in its header section. The body and every
// other header byte stay as they are.
func normalize(b []byte) []byte {
	end := bytes.Index(b, []byte("\n\n"))
	if end < 0 {
		end = len(b)
	}
	head, rest := b[:end+1], b[end+1:]
	var out bytes.Buffer
	skipping := false
	for _, line := range bytes.SplitAfter(head, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !skipping {
				out.Write(line)
			}
			continue
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		skipping = false
		for _, f := range traceFields {
			if strings.EqualFold(strings.TrimSpace(string(name)), f) {
				skipping = true
			}
		}
		if !skipping {
			out.Write(line)
		}
	}
	out.Write(rest)
	return out.Bytes()
}

// receivedRe matches Postfix's own Received field: the client it saw.
var receivedRe = regexp.MustCompile(`(?m)^Received: from \S+ \(unknown \[([^\]]+)\]\)\n\tby mx\.example\.test \(Postfix\) with (\S+) id`)

// postfixSaw returns the client address (without Postfix's "IPv6:" tag)
// and protocol in Postfix's Received field of a stored message.
func postfixSaw(t testing.TB, msg []byte) (addr, proto string) {
	t.Helper()
	m := receivedRe.FindSubmatch(msg)
	if m == nil {
		t.Fatalf("no Received field of Postfix in the message:\n%s", head(msg))
	}
	return strings.TrimPrefix(string(m[1]), "IPv6:"), string(m[2])
}

func head(b []byte) string {
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return string(b[:i])
	}
	return string(b[:min(len(b), 2000)])
}

// sameDelivery checks that two stored copies of one message are equal
// byte for byte once the trace fields are removed.
func sameDelivery(t testing.TB, direct, viaPostern []byte) {
	t.Helper()
	a, b := normalize(direct), normalize(viaPostern)
	if bytes.Equal(a, b) {
		return
	}
	al, bl := bytes.SplitAfter(a, []byte("\n")), bytes.SplitAfter(b, []byte("\n"))
	for i := range max(len(al), len(bl)) {
		var x, y []byte
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("the copy delivered through postern differs from the direct one at line %d (of %d/%d, %d/%d bytes):\ndirect: %q\npostern: %q\n--- direct (normalized) ---\n%s\n--- through postern (normalized) ---\n%s",
				i+1, len(al), len(bl), len(a), len(b), x, y, head(a), head(b))
		}
	}
}

// deliverBoth sends one message twice, first directly to Postfix's PROXY
// port and then through postern (each send is a func that must end with
// the message accepted), waits for both copies in user's Maildir (both
// contain token) and compares them. It returns the two stored copies.
func deliverBoth(t testing.TB, env *testenv.Env, user, token, src string, direct, viaPostern func()) (d, p []byte) {
	t.Helper()
	if n := len(messagesWith(env, user, token)); n != 0 {
		t.Fatalf("%d message(s) with %q before the test", n, token)
	}
	direct()
	first := waitMessages(t, env, user, token, 1)[0]
	viaPostern()
	var second string
	for _, m := range waitMessages(t, env, user, token, 2) {
		if m != first {
			second = m
		}
	}
	d, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = os.ReadFile(second); err != nil {
		t.Fatal(err)
	}
	for what, m := range map[string][]byte{"direct": d, "through postern": p} {
		if a, _ := postfixSaw(t, m); a != src {
			t.Errorf("%s: Postfix saw the client as %s, want %s", what, a, src)
		}
	}
	sameDelivery(t, d, p)
	return d, p
}

// richMessage is a message that exercises transparency: folded headers,
// dot-stuffing (a lone ".", lines starting with "." and ".."), trailing
// white space, tabs, a 3000-byte line (longer than postern's line
// buffer), empty lines at the end. Lines end in CRLF.
func richMessage(token string, extraHeaders ...string) []byte {
	var b strings.Builder
	b.WriteString("Date: Mon, 23 Nov 2026 10:00:00 +0000\n")
	b.WriteString("From: Bob Sender <bob@example.test>\n")
	b.WriteString("To: Alice <alice@example.test>\n")
	fmt.Fprintf(&b, "Subject: %s\n", token)
	fmt.Fprintf(&b, "Message-ID: <%s@client.e2e.test>\n", token)
	for _, h := range extraHeaders {
		b.WriteString(h + "\n")
	}
	b.WriteString("X-Folded: first part;\n\tsecond part;\n   third part\n")
	b.WriteString("\n")
	b.WriteString("Body line one.\n")
	b.WriteString(".\n")
	b.WriteString(".leading dot\n")
	b.WriteString("..two leading dots\n")
	b.WriteString("trailing spaces   \n")
	b.WriteString("\ttab-led line\n")
	b.WriteString(strings.Repeat("0123456789", 300) + "\n")
	b.WriteString("\n")
	b.WriteString("last line\n")
	b.WriteString("\n\n")
	return crlf(b.String())
}

// uniq returns a token unique to this run and test.
func uniq(name string) string {
	return fmt.Sprintf("e2e-%s-%d", name, time.Now().UnixNano())
}
