package imapproxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/mailgate"
)

// Command lines that Dovecot reads differently from a cut at the first
// space, or refuses, are refused by postern: they never log in.
func TestSmuggledCommandsRefused(t *testing.T) {
	h := newHarness(t, baseCfg, func(c *Config) { c.MaxErrors = 100 })
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pass-1"))
	for _, tc := range []struct{ send, want string }{
		{"a\tLOGIN alice@example.test alice-pass-1\r\n", "* BAD"},
		{" a LOGIN alice@example.test alice-pass-1\r\n", "* BAD"},
		{"a  LOGIN alice@example.test alice-pass-1\r\n", "a BAD"},
		{"a LOGIN\talice@example.test alice-pass-1\r\n", "a BAD"},
		{"a LOG\xc4\xb1N alice@example.test alice-pass-1\r\n", "a BAD"},
		{"a LOGIN alice@example.test\"alice-pass-1\"\r\n", "a BAD"},
		{"a LOGIN\"alice@example.test\" alice-pass-1\r\n", "a BAD"},
		{"a LOGIN NIL alice-pass-1\r\n", "a NO"}, // Dovecot's imap-login tries the user NIL
		{"a LOGIN (alice@example.test) alice-pass-1\r\n", "a BAD"},
		{"a LOGIN ( ) \r\n", "a BAD"},
		{"a LOGIN alice@example.test alice-pass-1\rb NOOP\r\n", "a BAD"},
		{"a LOGIN alice@example.test {13+}\r\nalice-pass-1\x00\r\n", "a BAD"},
		{"a LOGIN \"alice@example.test\x01\" alice-pass-1\r\n", "a BAD"},
		{"a LOGIN \" alice@example.test\" alice-pass-1\r\n", "a BAD"},
		{"a AUTHENTICATE \"PLAIN\" " + plain + "\r\n", "a NO Unsupported"},
		{"a AUTHENTICATE PLAIN  " + plain + "\r\n", "a BAD"},
		{"a AUTHENTICATE PLAIN " + plain + " \r\n", "a BAD"},
		{"a AUTHENTICATE PLAIN \"" + plain + "\"\r\n", "a BAD"},
		{"a AUTHENTICATE  PLAIN " + plain + "\r\n", "a BAD"},
		{"a AUTHENTICATE PLAIN " + strings.TrimRight(plain, "=") + "\r\n", "a BAD"},
		{"a AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("bob\x00alice@example.test\x00alice-pass-1")) + "\r\n", "a BAD"},
		{"a AUTHENTICATE PLAIN =\r\n", "a BAD"},
		{"a AUTHENTICATE PL\xc4\xb0N " + plain + "\r\n", "a NO Unsupported"},
	} {
		c := h.dial("127.0.0.2")
		c.line()
		c.send(tc.send)
		if l := c.until(tc.want[:2]); !strings.HasPrefix(l, tc.want) {
			t.Errorf("%q: %q, want %q", tc.send, l, tc.want)
		}
		// Still before login: postern answers, the backend is not reached.
		c.send("z SELECT INBOX\r\n")
		if l := c.until("z "); !strings.HasPrefix(l, "z BAD") {
			t.Errorf("%q: after it, SELECT: %q", tc.send, l)
		}
	}
	// What Dovecot accepts in forms a cut at the first space misses, postern
	// reads as Dovecot does.
	for _, send := range []string{
		"a login alice@example.test alice-pass-1   \r\n",
		"a LOGIN   alice@example.test   \"alice-pass-1\"\r\n",
		"a LOGIN \"alice@example.test\"\"alice-pass-1\"\r\n",
		"a LOGIN \"\\a\\lice@example.test\" {12}\r\nalice-pass-1\r\n",
		"a AUTHENTICATE plain " + plain + "\r\n",
		"a AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("alice@example.test\x00alice@example.test\x00alice-pass-1")) + "\r\n",
	} {
		c := h.dial("127.0.0.3")
		c.line()
		c.send(send)
		for l := c.line(); !strings.HasPrefix(l, "a "); l = c.line() {
			if strings.HasPrefix(l, "+ ") {
				continue
			}
			if strings.HasPrefix(l, "EOF") {
				t.Fatalf("%q: closed", send)
			}
		}
		c.send("z SELECT INBOX\r\n")
		if l := c.until("z "); !strings.HasPrefix(l, "z OK") {
			t.Errorf("%q: SELECT after login: %q", send, l)
		}
	}
}

// Commands pipelined behind a login reach the backend only once that login
// succeeded; behind a refused one, postern reads them itself, before login.
func TestPipelinedAfterLogin(t *testing.T) {
	h := newHarness(t, baseCfg, nil)
	c := h.dial("127.0.0.4")
	c.line()
	c.send("a LOGIN alice@example.test wrong\r\nb SELECT INBOX\r\n" +
		"c LOGIN alice@example.test alice-pass-1\r\nd SELECT INBOX\r\n")
	if l := c.until("a "); !strings.HasPrefix(l, "a NO") {
		t.Fatalf("wrong password: %q", l)
	}
	if l := c.until("b "); !strings.HasPrefix(l, "b BAD") {
		t.Fatalf("SELECT behind a refused login must not reach the backend: %q", l)
	}
	if l := c.until("c "); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("login: %q", l)
	}
	if l := c.until("d "); !strings.HasPrefix(l, "d OK") {
		t.Fatalf("SELECT behind the good login: %q", l)
	}
}

// fakeBackend is the backend end of a pipe: it records what postern
// writes and answers each line with reply.
func fakeBackend(t *testing.T, caps []string, reply func(line string) string) (*session, *strings.Builder, func()) {
	t.Helper()
	a, b := net.Pipe()
	var got strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(b)
		for {
			l, err := r.ReadString('\n')
			got.WriteString(l)
			if err != nil {
				return
			}
			if out := reply(l); out != "" {
				io.WriteString(b, out)
			}
		}
	}()
	p := New(Config{BackendTimeout: 5 * time.Second}, nil, nil, nil)
	s := &session{Session: &mailgate.Session{Gate: p.g, BE: a, BR: bufio.NewReader(a)}, p: p, caps: newCapSet("", "", caps, false)}
	return s, &got, func() { a.Close(); b.Close(); <-done }
}

// The login postern replays is written by postern: base64, quoted strings
// with escapes, or LITERAL+ literals; never the client's bytes as they came.
func TestBackendLoginCanonical(t *testing.T) {
	ok := func(l string) string {
		if strings.HasSuffix(l, "}\r\n") {
			return ""
		}
		return "t1 OK done\r\n"
	}
	for _, tc := range []struct {
		caps             []string
		user, pass, want string
	}{
		{[]string{"IMAP4rev1", "SASL-IR", "AUTH=PLAIN"}, `a"b\c d`, "p w\xff\"", "t1 AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00a\"b\\c d\x00p w\xff\"")) + "\r\n"},
		{[]string{"IMAP4rev1"}, `a"b\c d`, `p "w\`, `t1 LOGIN "a\"b\\c d" "p \"w\\"` + "\r\n"},
		{[]string{"IMAP4rev1", "LITERAL+"}, "b\xc3\xb6b", "pw", "t1 LOGIN {4+}\r\nb\xc3\xb6b {2+}\r\npw\r\n"},
		{[]string{"IMAP4rev1"}, "b\xc3\xb6b", "pw", ""},
		{[]string{"IMAP4rev1", "SASL-IR", "AUTH=PLAIN"}, "bob\r\nt2 LOGIN x y", "pw", ""},
	} {
		s, got, stop := fakeBackend(t, tc.caps, ok)
		_, tagged, err := s.backendLogin("t1", "", tc.user, tc.pass)
		stop()
		if err != nil {
			t.Fatalf("%q: %v", tc.user, err)
		}
		if got.String() != tc.want {
			t.Errorf("%q %q: backend got %q, want %q", tc.user, tc.pass, got.String(), tc.want)
		}
		if tc.want == "" && !strings.HasPrefix(tagged, "t1 NO") {
			t.Errorf("%q: %q, want a refusal", tc.user, tagged)
		}
	}
}

// ID is answered by postern: what clients send (NIL, or up to 30 pairs of
// strings) is taken; anything else closes, since Dovecot reads ID's
// arguments its own way and where it would go on is not certain.
func TestIDArguments(t *testing.T) {
	h := newHarness(t, baseCfg, nil)
	var pairs strings.Builder
	for i := range 30 {
		fmt.Fprintf(&pairs, "\"k%d\" \"v\" ", i)
	}
	for send, want := range map[string]string{
		"a ID NIL\r\n": "a OK",
		"a ID (\"name\" \"x\" \"version\" NIL)\r\n":            "a OK",
		"a ID (" + strings.TrimSpace(pairs.String()) + ")\r\n": "a OK",
		"a ID (name x)\r\n":        "a BAD",
		"a ID NIL extra\r\n":       "a BAD",
		"a ID (\"name\")\r\n":      "a BAD",
		"a ID ((\"n\" \"x\"))\r\n": "a BAD",
	} {
		c := h.dial("127.0.0.9")
		c.line()
		c.send(send)
		l := c.until("a ")
		if !strings.HasPrefix(l, want) {
			t.Errorf("%q: %q, want %q", send, l, want)
		}
		if want == "a BAD" && !c.closed() {
			t.Errorf("%q: the connection must close", send)
		}
	}
}

// ENABLE before login is answered as Dovecot's imap-login does, and
// enables nothing: the backend never sees it.
func TestEnableBeforeLogin(t *testing.T) {
	h := newHarness(t, baseCfg, nil)
	c := h.dial("127.0.0.10")
	c.line()
	c.send("a ENABLE UTF8=ACCEPT\r\n")
	if l := c.line(); l != "* ENABLED" {
		t.Fatalf("ENABLE: %q", l)
	}
	if l := c.line(); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("ENABLE: %q", l)
	}
}
