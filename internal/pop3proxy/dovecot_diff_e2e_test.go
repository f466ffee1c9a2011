package pop3proxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/ascii"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/testenv"
)

// loginExchanges is the differential corpus of pre-login POP3 exchanges:
// USER and PASS, and AUTH PLAIN with an initial response, carrying the
// harness user's real name and password in the spellings a client may
// use and near misses (white space around them, case, CR, bare LF).
func loginExchanges(user, pass string) [][]string {
	users := []string{
		"USER " + user, "user " + user, "UsEr " + user, "USER " + ascii.Upper(user),
		"USER  " + user, "USER " + user + " ", "USER " + user + "\t", "USER\t" + user,
		"USER " + user + "\r", "USER " + user + " x", "USER", "USER ", "USERX " + user,
		"USE\u0131 " + user[1:], "\u017fUSER " + user, " USER " + user,
	}
	passes := []string{
		"PASS " + pass, "pass " + pass, "PASS  " + pass, "PASS " + pass + " ",
		"PASS " + pass + "\r", "PASS " + ascii.Upper(pass), "PASS\t" + pass, "PASS", "PASS " + pass + "\x00x",
	}
	var out [][]string
	for _, u := range users {
		for _, p := range passes {
			out = append(out, []string{u + "\r\n", p + "\r\n"})
		}
	}
	out = append(out,
		[]string{"USER " + user + "\n", "PASS " + pass + "\n"},
		[]string{"USER " + user + "\r\r\n", "PASS " + pass + "\r\n"},
		[]string{"PASS " + pass + "\r\n"},
		[]string{"USER " + user + "\r\n", "USER bob@example.test\r\n", "PASS " + pass + "\r\n"},
		[]string{"USER " + user + "\r\n", "NOOP\r\n", "PASS " + pass + "\r\n"},
		[]string{"USER " + user + "\r\n", "PASS wrong\r\n", "PASS " + pass + "\r\n"},
	)
	plain := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, b := range []string{
		"\x00" + user + "\x00" + pass,
		user + "\x00" + user + "\x00" + pass,
		"\x00" + ascii.Upper(user) + "\x00" + pass,
		"\x00" + user + " \x00" + pass,
		"\x00" + user + "\x00" + pass + " ",
		"\x00" + user + "\x00" + pass + "\x00",
		"bob@example.test\x00" + user + "\x00" + pass,
	} {
		for _, f := range []string{"AUTH PLAIN %s", "auth plain %s", "AUTH plain %s", "AUTH PLAIN  %s", "AUTH PLAIN %s ", "AUTH  PLAIN %s", "AUTH\tPLAIN %s"} {
			out = append(out, []string{fmt.Sprintf(f, plain(b)) + "\r\n"})
		}
	}
	out = append(out, []string{"AUTH PLAIN " + strings.TrimRight(plain("\x00"+user+"\x00"+pass), "=") + "\r\n"})
	return out
}

// verdict sends the exchange's lines to the POP3 server at addr
// (Dovecot's pop3-login, or the gateway in front of it) on a connection
// of its own, each after the answer to the one before, then STAT, and
// reports whether that logged in: "+OK" when STAT is answered with a
// maildrop's size, "-ERR" when it is refused (no login), "BYE" when the
// server hangs up first.
func verdict(addr string, lines []string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if g, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(g, "+OK") {
		return "", fmt.Errorf("%s: greeting %q: %v", addr, g, err)
	}
	// An answer's first line is +OK or -ERR; a mechanism list (AUTH with
	// no mechanism) goes on until ".", and STAT's answer, which starts
	// with +OK or -ERR too, is read after it.
	for _, l := range append(lines, "STAT\r\n") {
		if _, err := c.Write([]byte(l)); err != nil {
			return "BYE", nil
		}
		for {
			a, err := r.ReadString('\n')
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return "", fmt.Errorf("%s: %q: no answer to %q in 10 s", addr, lines, l)
				}
				return "BYE", nil
			}
			a = strings.TrimRight(a, "\r\n")
			if strings.Contains(a, gwtest.UserIPLimit) {
				return "", gwtest.ErrUserIPLimit
			}
			if !strings.HasPrefix(a, "+OK") && !strings.HasPrefix(a, "-ERR") {
				continue // a mechanism list's lines
			}
			if l != "STAT\r\n" {
				break
			}
			if f := strings.Fields(a); len(f) == 3 && f[0] == "+OK" {
				return "+OK", nil // "+OK 0 0": logged in
			}
			if strings.HasPrefix(a, "-ERR") {
				return "-ERR", nil
			}
		}
	}
	return "", fmt.Errorf("%s: %q: no answer to STAT", addr, lines)
}

// refusedOnPurpose reports whether the exchange is one Dovecot logs in
// and the gateway refuses by design: a line with a NUL (Dovecot cuts the
// argument there), or an AUTH initial response with white space around
// its base64 (Dovecot's decoder skips it; the gateway takes base64 in its
// strict form only). Both fail closed: the client is refused, never let
// in as someone else.
func refusedOnPurpose(ex []string) bool {
	for _, l := range ex {
		if strings.IndexByte(l, 0) >= 0 {
			return true
		}
		if name, _, arg := parseCommand(strings.TrimRight(l, "\r\n")); name == "AUTH" {
			if _, initial, list := parseAuth(arg); !list && initial != strings.TrimSpace(initial) {
				return true
			}
		}
	}
	return false
}

// TestLoginsLikeDovecot sends every exchange of the corpus to the
// harness's real Dovecot, directly and through the gateway in front of
// it: an exchange logs in through the gateway exactly when it logs in to
// Dovecot, except where the gateway refuses on purpose
// (refusedOnPurpose).
func TestLoginsLikeDovecot(t *testing.T) {
	env := testenv.Backends(t)
	const user = "alice@example.test"
	pass := env.Users[user]
	h := newHarnessIdle(t, "services:\n  pop3: { listen: \":110\", backend: \"127.0.0.1:1\" }\nintrusion_prevention:\n  imap_pop3: { failed_logins: 1000000, connections_per_minute: 100000000 }\n",
		env.POP3Proxy, 5*time.Second)
	exchanges := loginExchanges(user, pass)
	// A failed login is answered after half a second: ask several
	// exchanges at a time.
	direct, through, err := gwtest.BothSides(len(exchanges), 16, func(i, side int) (string, error) {
		addr := env.POP3Plain
		if side == 1 {
			addr = h.addr
		}
		return verdict(addr, exchanges[i])
	})
	if err != nil {
		t.Fatal(err)
	}
	oks, strict := 0, 0
	for i, ex := range exchanges {
		d, p := direct[i], through[i]
		if d == "+OK" {
			oks++
		}
		switch {
		case p == d:
		case p == "+OK":
			t.Errorf("%q: postern logs in, Dovecot does not (%s)", ex, d)
		case d != "+OK":
		case refusedOnPurpose(ex):
			strict++
		default:
			t.Errorf("%q: Dovecot logs in, postern does not (%s)", ex, p)
		}
	}
	if oks < 10 {
		t.Fatalf("only %d of %d exchanges log in to Dovecot: the corpus lost its real logins", oks, len(exchanges))
	}
	t.Logf("%d exchanges, %d of them log in to Dovecot, %d of those refused by postern on purpose", len(exchanges), oks, strict)
}
