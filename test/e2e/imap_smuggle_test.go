package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// smuggleCase is one tricky pre-login input, sent as it is (CRLF included)
// both directly to Dovecot's plain port and through postern.
type smuggleCase struct {
	name, send string
	// Expectations besides the rule every case obeys (through postern
	// logged in ⇒ Dovecot logged in directly):
	both    bool // both log in: the form is read as Dovecot reads it
	refused bool // Dovecot logs in directly, postern refuses (stricter)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestIMAPPOP3CommandsLikeDovecot is the differential test of the IMAP and
// POP3 command readers: every line of the tables goes to Dovecot directly
// and through postern, in front of the same Dovecot. postern may refuse a
// form Dovecot takes; it may never log in where Dovecot directly would not
// (a command read differently). The cases that must log in both ways show
// that the comparison is not empty; those postern refuses although Dovecot
// logs in are listed so that the stricter reading is deliberate.
func TestIMAPPOP3CommandsLikeDovecot(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy, IMAP: env.IMAPProxy, IMAPS: env.IMAPSProxy,
		POP3: env.POP3Proxy, POP3S: env.POP3SProxy})
	const u, p = bob, bobPass
	plain := b64("\x00" + u + "\x00" + p)
	imapCases := []smuggleCase{
		{name: "LOGIN", send: "a LOGIN " + u + " " + p + "\r\n", both: true},
		{name: "ENABLE ID NOOP then LOGIN", send: "e ENABLE UTF8=ACCEPT\r\ni ID (\"name\" \"x\")\r\nn NOOP x\r\na LOGIN " + u + " " + p + "\r\n", both: true},
		{name: "unknown command with a literal", send: "x XYZZY {7}\r\na LOGIN\r\na LOGIN " + u + " " + p + "\r\n", both: true},
		{name: "lower case", send: "a login " + u + " " + p + "\r\n", both: true},
		{name: "spaces between arguments", send: "a LOGIN  " + u + "   " + p + "  \r\n", both: true},
		{name: "TAB after tag", send: "a\tLOGIN " + u + " " + p + "\r\n"},
		{name: "leading space", send: " a LOGIN " + u + " " + p + "\r\n"},
		{name: "two spaces after tag", send: "a  LOGIN " + u + " " + p + "\r\n"},
		{name: "TAB after LOGIN", send: "a LOGIN\t" + u + " " + p + "\r\n"},
		{name: "TAB between arguments", send: "a LOGIN " + u + "\t" + p + "\r\n"},
		{name: "dotless i", send: "a LOG\xc4\xb1N " + u + " " + p + "\r\n"},
		{name: "quoted", send: "a LOGIN \"" + u + "\" \"" + p + "\"\r\n", both: true},
		{name: "quoted adjacent", send: "a LOGIN \"" + u + "\"\"" + p + "\"\r\n", both: true},
		{name: "escaped any byte", send: "a LOGIN \"\\b\\ob@example.test\" \"" + p + "\"\r\n", both: true},
		{name: "quote inside atom", send: "a LOGIN " + u + "\"" + p + "\"\r\n"},
		{name: "quote inside name", send: "a LOGIN\"" + u + "\" " + p + "\r\n"},
		{name: "literals", send: fmt.Sprintf("a LOGIN {%d}\r\n%s {%d+}\r\n%s\r\n", len(u), u, len(p), p), both: true},
		{name: "literal LF only", send: fmt.Sprintf("a LOGIN %s {%d}\n%s\n", u, len(p), p), both: true},
		{name: "literal8", send: fmt.Sprintf("a LOGIN %s ~{%d}\r\n%s\r\n", u, len(p), p)},
		{name: "literal +size", send: fmt.Sprintf("a LOGIN %s {+%d}\r\n%s\r\n", u, len(p), p)},
		{name: "NUL in password literal", send: fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\x00x\r\n", u, len(p)+2, p), refused: true},
		{name: "NUL in name literal", send: fmt.Sprintf("a LOGIN {%d+}\r\n%s\x00x %s\r\n", len(u)+2, u, p), refused: true},
		{name: "NUL in quoted", send: "a LOGIN \"" + u + "\x00\" " + p + "\r\n"},
		{name: "NIL", send: "a LOGIN NIL " + p + "\r\n"},
		{name: "list", send: "a LOGIN (" + u + ") " + p + "\r\n"},
		{name: "upper-case name", send: "a LOGIN BOB@EXAMPLE.TEST " + p + "\r\n", both: true},
		{name: "8-bit quoted name", send: "a LOGIN \"" + u + "\xff\" " + p + "\r\n"},
		{name: "CR inside", send: "a LOGIN " + u + " " + p + "\r\r\n"},
		{name: "DEL in tag", send: "a\x7f LOGIN " + u + " " + p + "\r\n", both: true},
		{name: "tag of 127", send: strings.Repeat("t", 127) + " LOGIN " + u + " " + p + "\r\n"},
		{name: "plus in tag", send: "a+ LOGIN " + u + " " + p + "\r\n"},
		{name: "overlong argument", send: "a LOGIN " + u + " " + strings.Repeat("x", 2000) + "\r\n"},
		{name: "extra argument", send: fmt.Sprintf("a LOGIN {%d}\r\n%s %s extra\r\n", len(u), u, p)},
		{name: "AUTHENTICATE", send: "a AUTHENTICATE PLAIN " + plain + "\r\n", both: true},
		{name: "AUTHENTICATE lower", send: "a authenticate plain " + plain + "\r\n", both: true},
		{name: "AUTHENTICATE two spaces", send: "a AUTHENTICATE PLAIN  " + plain + "\r\n", refused: true},
		{name: "AUTHENTICATE trailing space", send: "a AUTHENTICATE PLAIN " + plain + " \r\n", refused: true},
		{name: "AUTHENTICATE no padding", send: "a AUTHENTICATE PLAIN " + strings.TrimRight(plain, "=") + "\r\n"},
		{name: "AUTHENTICATE =", send: "a AUTHENTICATE PLAIN =\r\n"},
		{name: "AUTHENTICATE continued", send: "a AUTHENTICATE PLAIN\r\n" + plain + "\r\n", both: true},
		{name: "AUTHENTICATE cancelled", send: "a AUTHENTICATE PLAIN\r\n*\r\n"},
		{name: "AUTHENTICATE empty answer", send: "a AUTHENTICATE PLAIN\r\n\r\n"},
		{name: "AUTHENTICATE answer with space", send: "a AUTHENTICATE PLAIN\r\n " + plain + "\r\n"},
		{name: "AUTHENTICATE quoted mechanism", send: "a AUTHENTICATE \"PLAIN\" " + plain + "\r\n"},
		{name: "AUTHENTICATE LOGIN", send: "a AUTHENTICATE LOGIN\r\n" + b64(u) + "\r\n" + b64(p) + "\r\n", both: true},
		{name: "authzid = login name", send: "a AUTHENTICATE PLAIN " + b64(u+"\x00"+u+"\x00"+p) + "\r\n", both: true},
		{name: "authzid other", send: "a AUTHENTICATE PLAIN " + b64("alice@example.test\x00"+u+"\x00"+p) + "\r\n"},
		{name: "three NULs", send: "a AUTHENTICATE PLAIN " + b64("\x00"+u+"\x00"+p+"\x00") + "\r\n"},
	}
	pop3Cases := []smuggleCase{
		{name: "USER PASS", send: "USER " + u + "\r\nPASS " + p + "\r\n", both: true},
		{name: "lower case", send: "user " + u + "\r\npass " + p + "\r\n", both: true},
		{name: "TAB after USER", send: "USER\t" + u + "\r\nPASS " + p + "\r\n"},
		{name: "leading space", send: " USER " + u + "\r\nPASS " + p + "\r\n"},
		{name: "two spaces after USER", send: "USER  " + u + "\r\nPASS " + p + "\r\n"},
		{name: "trailing space after name", send: "USER " + u + " \r\nPASS " + p + "\r\n"},
		{name: "trailing space after password", send: "USER " + u + "\r\nPASS " + p + " \r\n"},
		{name: "CR inside USER", send: "US\rER " + u + "\r\nPASS " + p + "\r\n", refused: true},
		{name: "CR after password", send: "USER " + u + "\r\nPASS " + p + "\r\r\n"},
		{name: "NUL after name", send: "USER " + u + "\x00x\r\nPASS " + p + "\r\n", refused: true},
		{name: "long s", send: "\xc5\xbfSER " + u + "\r\nPASS " + p + "\r\n"},
		{name: "upper-case name", send: "USER BOB@EXAMPLE.TEST\r\nPASS " + p + "\r\n", both: true},
		{name: "AUTH PLAIN", send: "AUTH PLAIN " + plain + "\r\n", both: true},
		{name: "auth plain", send: "auth plain " + plain + "\r\n", both: true},
		{name: "AUTH two spaces before response", send: "AUTH PLAIN  " + plain + "\r\n", refused: true},
		{name: "AUTH two spaces before mechanism", send: "AUTH  PLAIN " + plain + "\r\n"},
		{name: "AUTH TAB", send: "AUTH PLAIN\t" + plain + "\r\n"},
		{name: "AUTH continued", send: "AUTH PLAIN\r\n" + plain + "\r\n", both: true},
		{name: "AUTH cancelled", send: "AUTH PLAIN\r\n*\r\n"},
		{name: "AUTH =", send: "AUTH PLAIN =\r\n"},
		{name: "AUTH no padding", send: "AUTH PLAIN " + strings.TrimRight(plain, "=") + "\r\n"},
		{name: "AUTH LOGIN", send: "AUTH LOGIN\r\n" + b64(u) + "\r\n" + b64(p) + "\r\n", both: true},
		{name: "authzid = login name", send: "AUTH PLAIN " + b64(u+"\x00"+u+"\x00"+p) + "\r\n", both: true},
		{name: "authzid other", send: "AUTH PLAIN " + b64("alice@example.test\x00"+u+"\x00"+p) + "\r\n"},
		{name: "XCLIENT", send: "XCLIENT ADDR=198.51.100.1\r\nUSER " + u + "\r\nPASS " + p + "\r\n", both: true},
		{name: "PASS with spaces", send: "USER " + u + "\r\nPASS " + p + " extra\r\n"},
	}
	var mu sync.Mutex
	var table []string
	run := func(t *testing.T, proto, direct, through string, srcBase netip.Addr, cases []smuggleCase) {
		src := srcBase
		for _, tc := range cases {
			tc, from := tc, src
			src = src.Next()
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				d, dTrace := smuggleOutcome(t, proto, direct, netip.AddrPort{}, tc.send)
				g, gTrace := smuggleOutcome(t, proto, through, netip.AddrPortFrom(from, 40000), tc.send)
				mu.Lock()
				table = append(table, fmt.Sprintf("%s %-32s direct=%-5v postern=%-5v", proto, tc.name, d, g))
				mu.Unlock()
				switch {
				case g && !d:
					t.Errorf("%q: postern logged in, Dovecot directly did not\ndirect: %q\npostern: %q", tc.send, dTrace, gTrace)
				case tc.both && !(d && g):
					t.Errorf("%q: want a login both ways, direct=%v postern=%v\ndirect: %q\npostern: %q", tc.send, d, g, dTrace, gTrace)
				case tc.refused && !(d && !g):
					t.Errorf("%q: want Dovecot to log in and postern to refuse, direct=%v postern=%v\ndirect: %q\npostern: %q", tc.send, d, g, dTrace, gTrace)
				}
			})
		}
	}
	t.Run("group", func(t *testing.T) {
		run(t, "imap", env.IMAPPlain, gw.IMAP, netip.MustParseAddr("192.0.2.80"), imapCases)
		run(t, "pop3", env.POP3Plain, gw.POP3, netip.MustParseAddr("203.0.113.80"), pop3Cases)
	})
	t.Logf("outcomes:\n%s", strings.Join(table, "\n"))
}

var pop3StatOK = regexp.MustCompile(`^\+OK [0-9]+ [0-9]+$`)

// smuggleOutcome sends one case and a probe after it, and reports whether
// the probe ran logged in: IMAP "SELECT INBOX" answered OK, POP3 STAT
// answered "+OK n size". The connection ends with LOGOUT / QUIT (or is
// closed by the server); a case that leaves the server waiting ends at the
// read deadline, not logged in. src valid: through postern with a PROXY
// header from src.
func smuggleOutcome(t *testing.T, proto, addr string, src netip.AddrPort, send string) (bool, []string) {
	t.Helper()
	var c net.Conn
	if src.IsValid() {
		c = dialRaw(t, addr, src).Conn
	} else {
		var err error
		if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s greeting: %v", addr, err)
	}
	probe := "zy SELECT INBOX\r\nzz LOGOUT\r\n"
	if proto == "pop3" {
		probe = "STAT\r\nQUIT\r\n"
	}
	if _, err := c.Write([]byte(send + probe)); err != nil {
		return false, []string{"write: " + err.Error()}
	}
	trace := []string{strings.TrimRight(greeting, "\r\n")}
	in := false
	for range 200 {
		l, err := r.ReadString('\n')
		if l != "" {
			l = strings.TrimRight(l, "\r\n")
			trace = append(trace, l)
			if proto == "imap" && strings.HasPrefix(l, "zy OK") || proto == "pop3" && pop3StatOK.MatchString(l) {
				in = true
			}
		}
		if err != nil {
			break
		}
	}
	return in, trace
}
