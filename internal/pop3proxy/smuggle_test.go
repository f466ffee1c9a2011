package pop3proxy

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/mailgate"
)

// Command lines that Dovecot reads differently from postern's first cut, or
// that postern cannot pass on exactly, are refused: they never log in.
func TestSmuggledCommandsRefused(t *testing.T) {
	h := newHarness(t, cfg)
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pass-1"))
	for _, tc := range [][]string{
		{"USER\talice@example.test", "-ERR Unknown"},
		{" USER alice@example.test", "-ERR Unknown"},
		{"US\xc4\xb1R alice@example.test", "-ERR Unknown"},
		{"\xc5\xbfSER alice@example.test", "-ERR Unknown"},
		{"US\rER alice@example.test", "-ERR"},
		{"USER  alice@example.test", "-ERR Invalid"},
		{"USER alice@example.test ", "-ERR Invalid"},
		{"USER alice@example.test\t", "-ERR Invalid"},
		{"USER alice@example.test", "+OK", "PASS alice-pass-1\r", "-ERR"},
		{"USER alice@example.test", "+OK", "PASS alice-pass-1 ", "-ERR"},
		{"AUTH PLAIN  " + plain, "-ERR"},
		{"AUTH PLAIN " + plain + " ", "-ERR"},
		{"AUTH PLAIN " + strings.TrimRight(plain, "="), "-ERR"},
		{"AUTH PLAIN\t" + plain, "-ERR Unsupported"},
		{"AUTH  PLAIN " + plain, "+OK", "", "PLAIN", "", "LOGIN", "", "."},
		{"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("bob\x00alice@example.test\x00alice-pass-1")), "-ERR"},
		{"AUTH PLAIN", "+ ", "  " + plain, "-ERR"},
	} {
		c := h.dial(t, "127.0.0.2")
		c.cmd("")
		for i := 0; i < len(tc); i += 2 {
			if l := c.cmd(tc[i]); !strings.HasPrefix(l, tc[i+1]) {
				t.Errorf("%q: %q, want %q", tc, l, tc[i+1])
			}
		}
		// Still before login: postern answers, the backend is not reached.
		if l := c.cmd("STAT"); !strings.HasPrefix(l, "-ERR") {
			t.Errorf("%q: STAT after it: %q", tc, l)
		}
	}
	// What Dovecot reads the same way and postern takes.
	for _, tc := range [][]string{
		{"user alice@example.test", "pass alice-pass-1"},
		{"AUTH plain " + plain},
		{"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("alice@example.test\x00alice@example.test\x00alice-pass-1"))},
	} {
		c := h.dial(t, "127.0.0.3")
		c.cmd("")
		var last string
		for _, l := range tc {
			last = c.cmd(l)
		}
		if !strings.HasPrefix(last, "+OK") {
			t.Errorf("%q: %q", tc, last)
		}
		if l := c.cmd("STAT"); !strings.HasPrefix(l, "+OK") {
			t.Errorf("%q: STAT after login: %q", tc, l)
		}
	}
}

// Commands pipelined behind a login reach the backend only once that login
// succeeded; behind a refused one, postern reads them itself.
func TestPipelinedAfterLogin(t *testing.T) {
	h := newHarness(t, cfg)
	c := h.dial(t, "127.0.0.4")
	c.cmd("")
	c.c.Write([]byte("USER alice@example.test\r\nPASS wrong\r\nSTAT\r\nUSER alice@example.test\r\nPASS alice-pass-1\r\nSTAT\r\n"))
	for i, want := range []string{"+OK", "-ERR", "-ERR", "+OK", "+OK", "+OK 1 "} {
		if l := c.cmd(""); !strings.HasPrefix(l, want) {
			t.Fatalf("reply %d: %q, want %q", i, l, want)
		}
	}
}

// The login postern replays is written by postern: AUTH PLAIN in base64,
// or USER and PASS whose arguments Dovecot reads raw to the line end.
func TestBackendLoginCanonical(t *testing.T) {
	for _, tc := range []struct {
		caps             []string
		user, pass, want string
	}{
		{[]string{"SASL PLAIN LOGIN"}, "a\"b c", "p w\xff ", "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00a\"b c\x00p w\xff ")) + "\r\n"},
		{nil, "a\"b c", "p w\xff ", "USER a\"b c\r\nPASS p w\xff \r\n"},
		{nil, "bob\r\nUSER x", "pw", ""},
		{[]string{"SASL PLAIN"}, "bob", "pw\nQUIT", ""},
	} {
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
				io.WriteString(b, "+OK\r\n")
			}
		}()
		p := New(Config{BackendTimeout: 5 * time.Second}, nil, nil, nil)
		s := &session{Session: &mailgate.Session{Gate: p.g, BE: a, BR: bufio.NewReader(a)}, caps: tc.caps}
		reply, err := s.backendLogin("", tc.user, tc.pass)
		a.Close()
		b.Close()
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != tc.want {
			t.Errorf("%q %q: backend got %q, want %q", tc.user, tc.pass, got.String(), tc.want)
		}
		if tc.want == "" && !strings.HasPrefix(reply, "-ERR") {
			t.Errorf("%q: %q, want a refusal", tc.user, reply)
		}
	}
}
