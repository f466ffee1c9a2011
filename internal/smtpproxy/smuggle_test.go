package smtpproxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
)

// Commands that a lenient server (Postfix splits on any white space,
// ignores leading blanks and case) would execute must be read by postern
// the same way: checked, counted, or refused — never relayed unread.
func TestCommandSmuggling(t *testing.T) {
	cfg := baseIPS + "local_domains: \"example.test\"\nlogin_restrictions:\n  - \"@example.test=127.0.0.0/24\"\n"
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pass-1"))

	t.Run("AUTH with a TAB needs TLS like AUTH", func(t *testing.T) {
		h := newHarness(t, cfg, func(c *Config) { c.AllowInsecureAuth = false }, nil)
		c := h.dial("127.0.0.20")
		c.expect(220)
		c.cmd("EHLO x", 250)
		for _, line := range []string{"AUTH\tPLAIN " + plain, " AUTH PLAIN " + plain, "auth\t\tplain\t" + plain, "\tAuTh PLAIN"} {
			if text := c.cmd(line, 538); !strings.Contains(text, "5.7.11") {
				t.Errorf("%q: %q", line, text)
			}
		}
	})
	t.Run("AUTH with a TAB meets the login restriction and counts", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.1.20") // outside the restriction for @example.test
		c.expect(220)
		c.cmd("EHLO x", 250)
		pw := func(p string) string {
			return base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00" + p))
		}
		c.cmd("AUTH\tPLAIN\t"+plain, 535)
		c.cmd(" auth plain "+pw("guess-2"), 535)
		c.cmd("AUTH\tPLAIN "+pw("guess-3")+"\t", 535)
		c.expect(421) // failed_logins: 3
		if b, ok := h.eng.BlockOf(netip.MustParseAddr("127.0.1.20")); !ok || b.Reason != reason.Login {
			t.Fatalf("block: %+v %v", b, ok)
		}
	})
	t.Run("XCLIENT and friends in any spelling are refused", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.21")
		c.expect(220)
		c.cmd("EHLO x", 250)
		for _, line := range []string{"XCLIENT\tADDR=192.0.2.1", " xclient LOGIN=bob@example.test", "XFORWARD\tADDR=1.2.3.4", "ETRN\texample.test", "xclient\t"} {
			c.cmd(line, 550)
		}
	})
	t.Run("RCPT with a TAB meets the relay check", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.22")
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("MAIL\tFROM:<x@example.org>", 250)
		c.cmd("RCPT\tTO:<v1@elsewhere.example>", 554)
		c.cmd("  rcpt to: <v2@elsewhere.example>", 554)
		c.cmd("RCPT TO:<\"v3\"@Elsewhere.Example>", 554)
		c.expect(421)
		if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.22")); b.Reason != reason.Relay {
			t.Fatalf("Y block: %+v", b)
		}
	})
	t.Run("routed recipients are never local", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.23")
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("MAIL FROM:<x@example.org>", 250)
		c.cmd("RCPT TO:<victim%elsewhere.example@example.test>", 554)
		c.cmd("RCPT TO:<elsewhere.example!victim@example.test>", 554)
		c.cmd("RCPT TO:<victim@[192.0.2.1]>", 554)
		c.expect(421)
	})
	t.Run("tarpit accounts in quoted, routed and upper-case spellings", func(t *testing.T) {
		for i, rcpt := range []string{`<"trap"@example.test>`, "<@relay.example:trap@example.test>", "<trap@EXAMPLE.TEST>", "<trap@example.test.>", `"trap"@example.test`} {
			h := newHarness(t, cfg, nil, nil)
			src := netip.AddrFrom4([4]byte{127, 0, 2, byte(10 + i)}).String()
			c := h.dial(src)
			c.expect(220)
			c.cmd("EHLO x", 250)
			c.cmd("MAIL FROM:<x@example.org>", 250)
			c.cmd("RCPT TO:"+rcpt, 550)
			c.expect(421)
			if b, _ := h.eng.BlockOf(netip.MustParseAddr(src)); b.Reason != reason.TarpitAccount {
				t.Errorf("%s: A block: %+v", rcpt, b)
			}
		}
	})
	t.Run("RSET with blanks counts", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.24")
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("RSET\t", 250)
		c.cmd(" rset", 250)
		c.cmd("RSET x", 501) // the server would refuse it too: not counted
		c.cmd("\tRSET\t", 250)
		c.expect(421)
		if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.24")); b.Reason != reason.RSET {
			t.Fatalf("R block: %+v", b)
		}
	})
	t.Run("VRFY and EXPN in any spelling are disabled", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.25")
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("VRFY\talice", 502)
		c.cmd(" vrfy alice", 502)
		c.cmd("EXPN\tstaff", 502)
	})
	t.Run("MAIL with a TAB needs AUTH on submission", func(t *testing.T) {
		h := newHarness(t, cfg, func(c *Config) { c.Service, c.RequireAuth = service.Submission, true }, nil)
		c := h.dial("127.0.0.26")
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("MAIL\tFROM:<alice@example.test>", 530)
		c.cmd(" mail from:<alice@example.test>", 530)
	})
	t.Run("unknown verbs never reach the backend", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.27")
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("FOO bar", 502)
		c.cmd(`"MAIL" FROM:<a@b>`, 502)
		c.cmd("MAIL FROM:<a@b>SIZE=1", 501)
		c.cmd("MAIL FROM:<a@b> SIZE=\"1\"", 501)
		c.cmd("NOOP", 250)
		c.cmd("BAR", 421) // the third protocol error closes
		c.closed()
	})
	t.Run("HTTP requests are hung up on", func(t *testing.T) {
		h := newHarness(t, cfg, nil, nil)
		c := h.dial("127.0.0.28")
		c.expect(220)
		c.cmd("POST / HTTP/1.1", 221)
		c.closed()
	})
}

// recordingBackend is an SMTP server that answers every command and
// records the lines it received, to check what postern relays.
type recordingBackend struct {
	addr  string
	mu    sync.Mutex
	lines []string
}

func startRecordingBackend(t *testing.T) *recordingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &recordingBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				r := bufio.NewReader(c)
				c.Write([]byte("220 rec ESMTP\r\n"))
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					b.mu.Lock()
					b.lines = append(b.lines, line)
					b.mu.Unlock()
					switch u := strings.ToUpper(line); {
					case strings.HasPrefix(u, "EHLO"):
						c.Write([]byte("250-rec\r\n250-AUTH PLAIN\r\n250-XCLIENT ADDR\r\n250 SIZE 1000000\r\n"))
					case u == "QUIT":
						c.Write([]byte("221 bye\r\n"))
						return
					case strings.HasPrefix(u, "AUTH"):
						c.Write([]byte("235 2.7.0 ok\r\n"))
					default:
						c.Write([]byte("250 2.0.0 ok\r\n"))
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return b
}

func (b *recordingBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

// postern relays only what it rewrote: upper-case verb, single spaces,
// MAIL FROM:/RCPT TO: glued to a canonical path.
func TestRelaysCanonicalCommands(t *testing.T) {
	rb := startRecordingBackend(t)
	h := newHarness(t, baseIPS, func(c *Config) { c.Backend, c.BackendProxy = rb.addr, "none" }, nil)
	c := h.dial("127.0.0.29")
	c.expect(220)
	for _, line := range []string{
		"\tehlo\t client.example ",
		"noop\tanything at all",
		"mail\tfrom: alice@example.test\tSIZE=10",
		` rcpt to:<"bob"@Example.TEST>  NOTIFY=NEVER`,
		"RCPT TO:<@relay.example:carol@example.test>",
		"rset\t",
		"help me",
	} {
		c.cmd(line, 250)
	}
	c.cmd("quit", 221)
	c.closed()
	want := []string{
		"EHLO client.example",
		"NOOP",
		"MAIL FROM:<alice@example.test> SIZE=10",
		"RCPT TO:<bob@example.test> NOTIFY=NEVER",
		"RCPT TO:<carol@example.test>",
		"RSET",
		"HELP",
		"QUIT",
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(rb.seen()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := rb.seen()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the backend read:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Silent clients cannot take every process of the backend: backend
// connections are bounded per client network and in all, and a client
// silent after the greeting is dropped after timeouts.first_command.
func TestSilentClientsCannotStarveBackend(t *testing.T) {
	limit := &relay.BackendLimit{Max: 10, PerNetwork: 4}
	h := newHarness(t, baseIPS, func(c *Config) {
		c.BackendLimit = limit
		c.Timeouts.FirstCommand = 500 * time.Millisecond
	}, nil)
	greeted, refused := 0, 0
	var silent []*client
	for i := range 20 {
		c := h.dial(fmt.Sprintf("127.0.0.%d", 51+i%5)) // five addresses of one /24
		code, text := c.read()
		switch {
		case code == 220:
			greeted++
			silent = append(silent, c)
		case code == 421 && strings.Contains(text, "too many connections from your network"):
			refused++
			c.closed()
		default:
			t.Fatalf("connection %d: %d %q", i, code, text)
		}
	}
	if greeted != 4 || refused != 16 {
		t.Fatalf("%d greeted, %d refused; want 4 and 16", greeted, refused)
	}
	if total, network := limit.InUse(netip.MustParseAddr("127.0.0.51")); total != 4 || network != 4 {
		t.Fatalf("backend connections %d (network %d), want 4", total, network)
	}
	// Another network is served meanwhile.
	ok := h.dial("127.0.1.9")
	ok.expect(220)
	ok.cmd("EHLO x", 250)
	// The silent ones are dropped and give their backend connections back.
	for _, c := range silent {
		if code, text := c.read(); code != 421 || !strings.Contains(text, "timeout") {
			t.Errorf("silent client: %d %q", code, text)
		}
		c.closed()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		total, _ := limit.InUse(netip.MustParseAddr("127.0.0.51"))
		if total == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend connections still held: %d, want 1 (the active client)", total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ok.cmd("NOOP", 250) // an active client is not cut by first_command
	ok.cmd("QUIT", 221)
}

// A block made while a connection is open reaches it at its next
// transaction, whatever close_all says.
func TestBlockReachesOpenConnection(t *testing.T) {
	h := newHarness(t, baseIPS, nil, nil)
	c := h.dial("127.0.0.60")
	c.expect(220)
	c.cmd("EHLO x", 250)
	// Another connection from the same address trips a block (R); close_all
	// is off, so this one stays open.
	b := h.dial("127.0.0.60")
	b.expect(220)
	b.cmd("EHLO x", 250)
	b.cmd("RSET", 250)
	b.cmd("RSET", 250)
	b.cmd("RSET", 250)
	b.expect(421)
	b.closed()
	if text := c.cmd("MAIL FROM:<x@example.org>", 421); !strings.Contains(text, "Blocked") {
		t.Fatalf("MAIL after the block: %q", text)
	}
	c.closed()
}
