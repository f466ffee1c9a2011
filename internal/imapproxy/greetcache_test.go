package imapproxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/testserver"
)

// startGreeter is a backend that greets with *greeting and answers
// CAPABILITY with a capability that counts the times it was asked.
func startGreeter(t *testing.T, greeting *atomic.Pointer[string], asked *atomic.Int32) string {
	return testserver.TCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if !skipProxyV2(r) {
			return
		}
		io.WriteString(c, *greeting.Load()+"\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, cmd, _ := strings.Cut(strings.TrimSpace(l), " ")
			if cmd == "CAPABILITY" {
				n := asked.Add(1)
				fmt.Fprintf(c, "* CAPABILITY IMAP4rev1 X-ASKED-%d AUTH=PLAIN\r\n%s OK done\r\n", n, tag)
				continue
			}
			fmt.Fprintf(c, "%s BAD no\r\n", tag)
		}
	})
}

// TestGreetingCapabilities: the capabilities of a greeting serve every
// session the backend greets the same way, the greeting's change is seen
// by the next session, and a backend whose greeting has none is asked in
// every session.
func TestGreetingCapabilities(t *testing.T) {
	var greeting atomic.Pointer[string]
	var asked atomic.Int32
	set := func(s string) { greeting.Store(&s) }
	set("* OK [CAPABILITY IMAP4rev1 ID STARTTLS AUTH=PLAIN LOGINDISABLED SASL-IR X-ONE] one ready.")
	addr := startBenchProxy(t, startGreeter(t, &greeting, &asked))
	greet := func() (string, string) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		g, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "a CAPABILITY\r\n")
		capa, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(g), strings.TrimSpace(capa)
	}
	for range 2 {
		g, capa := greet()
		if want := "* OK [CAPABILITY IMAP4rev1 ID X-ONE SASL-IR AUTH=PLAIN AUTH=LOGIN] one ready."; g != want {
			t.Errorf("greeting %q, want %q", g, want)
		}
		if want := "* CAPABILITY IMAP4rev1 ID X-ONE SASL-IR AUTH=PLAIN AUTH=LOGIN"; capa != want {
			t.Errorf("CAPABILITY %q, want %q", capa, want)
		}
	}
	set("* OK [CAPABILITY IMAP4rev1 X-TWO] two ready.")
	if g, _ := greet(); g != "* OK [CAPABILITY IMAP4rev1 X-TWO SASL-IR AUTH=PLAIN AUTH=LOGIN] two ready." {
		t.Errorf("greeting after the backend's changed: %q", g)
	}
	set("* OK three ready.")
	for i := 1; i <= 2; i++ {
		want := fmt.Sprintf("* OK [CAPABILITY IMAP4rev1 X-ASKED-%d SASL-IR AUTH=PLAIN AUTH=LOGIN] three ready.", i)
		if g, _ := greet(); g != want {
			t.Errorf("greeting without capabilities, session %d: %q, want %q", i, g, want)
		}
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the backend was asked CAPABILITY %d times, want 2", n)
	}
}

// appendAuthenticatePlain writes the command the plain formula gives,
// for short credentials (on the caller's stack) and long ones, after what
// the buffer held.
func TestAuthenticatePlain(t *testing.T) {
	for _, c := range [][3]string{
		{"", "alice@example.test", "alice-pass-1"},
		{"admin", "alice", "p"},
		{"", "", ""},
		{"", strings.Repeat("u", 300), strings.Repeat("p\x7f", 200)},
		{strings.Repeat("z", 1000), "x", strings.Repeat("é", 900)},
	} {
		authz, user, pass := c[0], c[1], c[2]
		want := "t1 AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte(authz+"\x00"+user+"\x00"+pass))
		var stack [512]byte
		if got := appendAuthenticatePlain(stack[:0], "t1", authz, user, pass); string(got) != want {
			t.Errorf("appendAuthenticatePlain(%q, %q, %q) = %q, want %q", authz, user, pass, got, want)
		}
		if got := appendAuthenticatePlain(append(stack[:0], "x"...), "t1", authz, user, pass); string(got) != "x"+want {
			t.Errorf("appendAuthenticatePlain after x: %q, want %q", got, "x"+want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		var stack [512]byte
		clear(appendAuthenticatePlain(stack[:0], "a", "", "alice@example.test", "alice-pass-1"))
	}); n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
}

// A shared set's capabilities and greetings, made once, are what a
// session's own set makes on demand, for each of postern's additions.
func TestCapSetMadeOnce(t *testing.T) {
	caps := []string{"IMAP4rev1", "LITERAL+", "sasl-ir", "AUTH=PLAIN", "ID", "starttls", "ENABLE"}
	shared, own := newCapSet("* OK x", "Ready.", caps, true), newCapSet("* OK x", "Ready.", caps, false)
	for i, tail := range capTails {
		want := "IMAP4rev1 LITERAL+ ID ENABLE " + tail
		if shared.full[i] != want || own.full[i] != "" || own.kept+tail != want {
			t.Errorf("%d: shared %q, own %q+%q; want %q", i, shared.full[i], own.kept, tail, want)
		}
		if g := "* OK [CAPABILITY " + want + "] Ready."; shared.greeting[i] != g {
			t.Errorf("%d: greeting %q; want %q", i, shared.greeting[i], g)
		}
	}
}
