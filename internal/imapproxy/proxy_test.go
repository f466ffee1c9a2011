package imapproxy

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
)

func TestLoginAndFetchThroughPostern(t *testing.T) {
	h := newHarness(t, baseCfg, nil)
	c, err := imapclient.DialInsecure(h.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps := c.Caps()
	if !caps.Has(imap.CapIMAP4rev1) || !caps.Has(imap.CapLiteralMinus) || !caps.Has(imap.CapSASLIR) || !caps.Has(imap.AuthCap("PLAIN")) {
		t.Errorf("capabilities must be the backend's plus postern's AUTH: %v", caps)
	}
	if err := c.Login("alice@example.test", "alice-pass-1").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("messages: %d", len(msgs))
	}
	for _, body := range msgs[0].BodySection {
		if string(body.Bytes) != testMessage {
			t.Errorf("body changed in transit: %q", body.Bytes)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	if got := h.be.clients(); len(got) == 0 || got[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("the backend must see the client address through PROXY: %v", got)
	}
}

func TestLoginForms(t *testing.T) {
	h := newHarness(t, baseCfg, nil)
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pass-1"))
	for name, script := range map[string]func(c *client) string{
		"LOGIN quoted": func(c *client) string {
			c.send("a1 LOGIN \"alice@example.test\" \"alice-pass-1\"\r\n")
			return c.until("a1 ")
		},
		"LOGIN literals": func(c *client) string {
			c.send("a1 LOGIN {18}\r\n")
			if l := c.line(); !strings.HasPrefix(l, "+") {
				t.Fatalf("continuation: %q", l)
			}
			c.send("alice@example.test {12+}\r\nalice-pass-1\r\n")
			return c.until("a1 ")
		},
		"AUTHENTICATE PLAIN SASL-IR": func(c *client) string {
			c.send("a1 AUTHENTICATE PLAIN " + plain + "\r\n")
			return c.until("a1 ")
		},
		"AUTHENTICATE PLAIN continued": func(c *client) string {
			c.send("a1 AUTHENTICATE PLAIN\r\n")
			c.line()
			c.send(plain + "\r\n")
			return c.until("a1 ")
		},
		"AUTHENTICATE LOGIN": func(c *client) string {
			c.send("a1 AUTHENTICATE LOGIN\r\n")
			c.line()
			c.send(base64.StdEncoding.EncodeToString([]byte("alice@example.test")) + "\r\n")
			c.line()
			c.send(base64.StdEncoding.EncodeToString([]byte("alice-pass-1")) + "\r\n")
			return c.until("a1 ")
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := h.dial("127.0.0.2")
			if g := c.line(); !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1") {
				t.Fatalf("greeting: %q", g)
			}
			if got := script(c); !strings.HasPrefix(got, "a1 OK") {
				t.Fatalf("login: %q", got)
			}
			// Spliced: the backend answers from now on.
			c.send("a2 SELECT INBOX\r\n")
			if l := c.until("a2 "); !strings.HasPrefix(l, "a2 OK") {
				t.Fatalf("select after login: %q", l)
			}
		})
	}
}

func TestFailedLoginsAndRestriction(t *testing.T) {
	h := newHarness(t, baseCfg+"login_restrictions: [ \"*=127.0.0.0/24\" ]\n", nil)
	c := h.dial("127.0.0.3")
	c.line()
	c.send("a1 LOGIN alice@example.test wrong1\r\n")
	wrong := strings.TrimPrefix(c.until("a1 "), "a1 ")
	if !strings.HasPrefix(wrong, "NO") {
		t.Fatalf("wrong password: %q", wrong)
	}
	// Outside the login restriction: the same answer, the backend asked with a decoy password.
	c2 := h.dial("127.0.1.3")
	c2.line()
	c2.send("b1 LOGIN alice@example.test alice-pass-1\r\n")
	if refused := strings.TrimPrefix(c2.until("b1 "), "b1 "); refused != wrong {
		t.Errorf("a refused login must read like a wrong password: %q vs %q", refused, wrong)
	}
	// The third failure blocks the address (L) and closes the connection.
	c.send("a2 LOGIN alice@example.test wrong2\r\n")
	c.until("a2 ")
	c.send("a3 LOGIN alice@example.test wrong3\r\n")
	c.until("a3 ")
	if l := c.line(); !strings.HasPrefix(l, "* BYE Blocked (failed logins)") {
		t.Fatalf("after the threshold: %q", l)
	}
	if b, ok := h.eng.BlockOf(netip.MustParseAddr("127.0.0.3")); !ok || b.Reason != reason.Login {
		t.Fatalf("block: %+v", b)
	}
	c = h.dial("127.0.0.3")
	if l := c.line(); !strings.HasPrefix(l, "* BYE Blocked (failed logins)") {
		t.Fatalf("refused at connect: %q", l)
	}
}

func TestBlockClosesSplicedSessions(t *testing.T) {
	cfg := strings.Replace(baseCfg, "intrusion_prevention:", "intrusion_prevention:\n  close_all: true", 1)
	h := newHarness(t, cfg, nil)
	logged := h.dial("127.0.0.4")
	logged.line()
	logged.send("a1 LOGIN alice@example.test alice-pass-1\r\n")
	if l := logged.until("a1 "); !strings.HasPrefix(l, "a1 OK") {
		t.Fatal(l)
	}
	bad := h.dial("127.0.0.4")
	bad.line()
	for i := range 3 {
		bad.send(fmt.Sprintf("x%d LOGIN alice@example.test nope%d\r\n", i, i))
		bad.until(fmt.Sprintf("x%d ", i))
	}
	if !logged.closed() {
		t.Fatal("close_all must close the logged-in session of the blocked address")
	}
}

func TestPlaintextAndBadInput(t *testing.T) {
	h := newHarness(t, baseCfg, func(c *Config) { c.PlaintextLogin = nil; c.MaxErrors = 4 })
	c := h.dial("127.0.0.5")
	if g := c.line(); !strings.Contains(g, "LOGINDISABLED") || strings.Contains(g, "AUTH=PLAIN") {
		t.Fatalf("without TLS, login must be disabled: %q", g)
	}
	c.send("a1 LOGIN alice@example.test alice-pass-1\r\n")
	if l := c.until("a1 "); !strings.HasPrefix(l, "a1 NO [PRIVACYREQUIRED]") {
		t.Fatalf("plaintext login: %q", l)
	}
	c.send("a2 CAPABILITY\r\n")
	c.until("a2 OK")
	c.send("a3 NOOP\r\na4 ID NIL\r\n")
	c.until("a3 OK")
	c.until("a4 OK")
	c.send("a5 FETCH 1 BODY[]\r\n") // not before login
	if l := c.until("a5 "); !strings.HasPrefix(l, "a5 BAD") {
		t.Fatalf("pre-auth FETCH: %q", l)
	}
	c.send("a6 LOGIN \"unterminated\r\n")
	c.until("a6 BAD")
	c.send("a7 NOOP \x00\r\n")
	c.until("* BAD")
	c.send(strings.Repeat("x", 1<<20) + "\r\n")
	if l := c.until("* B"); !strings.HasPrefix(l, "* BYE Too many") && !strings.HasPrefix(l, "* BAD") {
		t.Fatalf("1 MB line: %q", l)
	}

	h2 := newHarness(t, baseCfg, nil)
	c = h2.dial("127.0.0.6")
	c.line()
	c.send("a1 LOGIN {1000000000000}\r\n")
	if l := c.line(); !strings.HasPrefix(l, "a1 BAD Literal too big") {
		t.Fatalf("huge literal: %q", l)
	}
	if !c.closed() {
		t.Fatal("the connection must close after a literal that cannot be skipped")
	}
	// A client that announces a literal and vanishes, one that sends LOGIN
	// and vanishes, and pipelining before the greeting.
	c = h2.dial("127.0.0.7")
	c.send("a1 LOGIN {5}\r\n")
	c.c.Close()
	c = h2.dial("127.0.0.8")
	c.send("a1 NOOP\r\na2 LOGOUT\r\n")
	c.line()
	c.until("a1 OK")
	c.until("* BYE")
	c.until("a2 OK")
}

func TestBackendDownAndGarbage(t *testing.T) {
	h := newHarness(t, baseCfg, func(c *Config) { c.Backend.Addr = "127.0.0.1:1" })
	c := h.dial("127.0.0.9")
	if l := c.line(); !strings.HasPrefix(l, "* BYE [UNAVAILABLE]") {
		t.Fatalf("backend down: %q", l)
	}
}

// The engine satisfies the gateway's interface.
var _ Engine = (*guard.Engine)(nil)

// Found by the end-to-end suite: commands sent before the greeting were
// logged as an early talker only when they had arrived together with the
// connection's first bytes (a read deadline already past never reads).
// The client's bytes race with postern's backend round trips, so up to five
// connections try; before the fix none was ever noticed.
func TestEarlyTalkerLogged(t *testing.T) {
	h := newHarness(t, baseCfg, nil)
	for range 5 {
		c := h.dial("127.0.0.13")
		c.send("a1 NOOP\r\n")
		if l := c.line(); !strings.HasPrefix(l, "* OK") {
			t.Fatalf("greeting: %q", l)
		}
		if l := c.line(); l != "a1 OK NOOP completed." {
			t.Fatalf("NOOP: %q", l)
		}
		if strings.Contains(h.logs.String(), "early talker") {
			return
		}
	}
	t.Fatalf("no early talker logged:\n%s", h.logs.String())
}
