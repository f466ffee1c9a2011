package imapproxy

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/ascii"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/mailgate"
	"github.com/postern/postern/internal/testenv"
)

// loginLines is the differential corpus of pre-login LOGIN and
// AUTHENTICATE PLAIN lines (with an initial response): the
// harness user's real name and password in every spelling a client may
// use (atoms, quoted strings with and without needless escapes, literals
// and LITERAL+ literals, the command name's case, white space between
// and around the arguments, bare LF), and near misses that one reader
// could take for the real credentials and another not.
func loginLines(user, pass string) []string {
	quoted := func(s string) string { q, _ := quote(s); return q }
	escapeAll := func(s string) string {
		var b strings.Builder
		b.WriteByte('"')
		for i := 0; i < len(s); i++ {
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
		b.WriteByte('"')
		return b.String()
	}
	lit := func(s string) string { return fmt.Sprintf("{%d}\r\n%s", len(s), s) }
	litPlus := func(s string) string { return fmt.Sprintf("{%d+}\r\n%s", len(s), s) }
	litLF := func(s string) string { return fmt.Sprintf("{%d}\n%s", len(s), s) }
	users := []string{
		user, quoted(user), escapeAll(user), lit(user), litPlus(user), litLF(user),
		ascii.Upper(user), quoted(ascii.Upper(user)),
		// near misses
		quoted(user + " "), quoted(" " + user), user + "\\", `"` + user, user + `"`,
		fmt.Sprintf("{%d}\r\n%s", len(user)+1, user+" "), fmt.Sprintf("{%d}\r\n%s", len(user)-1, user[:len(user)-1]),
		"(" + user + ")", "NIL", `""`, "{0}\r\n", strings.Replace(user, "@", "%40", 1),
		strings.Replace(user, "a", "\u0430", 1), // Cyrillic a
		strings.Replace(user, "i", "\u0131", 1), // dotless i
		quoted(user + "\x7f"), "\"" + user + "\x00\"",
	}
	passes := []string{
		pass, quoted(pass), escapeAll(pass), lit(pass), litPlus(pass),
		quoted(pass + " "), ascii.Upper(pass), `"` + pass, fmt.Sprintf("{%d}\r\n%s", len(pass)+1, pass+" "),
		"NIL", "(" + pass + ")",
	}
	names := []string{"LOGIN", "login", "LoGiN", "LOG\u0131N", "LOGIN\t", "LOGINX"}
	var out []string
	for _, u := range users {
		for _, p := range passes {
			out = append(out, "a LOGIN "+u+" "+p+"\r\n")
		}
	}
	for _, n := range names {
		out = append(out, "a "+n+" "+user+" "+pass+"\r\n")
	}
	plain := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, b := range []string{
		"\x00" + user + "\x00" + pass,
		user + "\x00" + user + "\x00" + pass,
		"\x00" + ascii.Upper(user) + "\x00" + pass,
		"\x00" + user + " \x00" + pass,
		"\x00 " + user + "\x00" + pass,
		"\x00" + user + "\x00" + pass + " ",
		"\x00" + user + "\x00" + pass + "\x00",
		"\x00" + user + "\x00" + pass + "\x00x",
		"\x00" + user,
		"bob@example.test\x00" + user + "\x00" + pass,
		"\x00NIL\x00" + pass,
		"\x00\x00" + pass,
	} {
		for _, f := range []string{"a AUTHENTICATE PLAIN %s", "a authenticate plain %s", "a AUTHENTICATE plain %s", "a AUTHENTICATE PLAIN  %s", "a AUTHENTICATE PLAIN %s ", "a AUTHENTICATE  PLAIN %s", "a AUTHENTICATE \"PLAIN\" %s", "a AUTHENTICATE PLAIN \"%s\""} {
			out = append(out, fmt.Sprintf(f, plain(b))+"\r\n")
		}
	}
	out = append(out, []string{
		"a AUTHENTICATE PLAIN " + strings.TrimRight(plain("\x00"+user+"\x00"+pass), "=") + "\r\n",
		"a AUTHENTICATE PLAIN =\r\n",
		"a AUTHENTICATE PLAIN " + plain("\x00"+user+"\x00"+pass) + "=\r\n",
		"a AUTHENTICATE PLAIN " + plain("\x00"+user+"\x00"+pass) + "\n",
		"a AUTHENTICATE PL\u0130N " + plain("\x00"+user+"\x00"+pass) + "\r\n",
		"a AUTHENTICATE XPLAIN " + plain("\x00"+user+"\x00"+pass) + "\r\n",
		"a LOGIN  " + user + "   " + pass + "\r\n", // spaces between the arguments
		"a LOGIN " + user + " " + pass + "   \r\n", // and after them
		"a LOGIN " + user + " " + pass + "\n",      // bare LF
		"a LOGIN " + user + " " + pass + "\r\r\n",
		"a LOGIN " + user + " " + pass + "\rx\r\n",
		"a LOGIN " + user + "\t" + pass + "\r\n",
		"a LOGIN\t" + user + " " + pass + "\r\n",
		"a  LOGIN " + user + " " + pass + "\r\n",
		" a LOGIN " + user + " " + pass + "\r\n",
		"a LOGIN " + user + " " + pass + " x\r\n",
		"a LOGIN " + user + "\r\n",
		"a LOGIN " + quoted(user) + quoted(pass) + "\r\n", // no space between quoted strings
		"a LOGIN " + user + quoted(pass) + "\r\n",
		"a LOGIN " + user + " " + pass + "\x00\r\n",
		"a.b LOGIN " + user + " " + pass + "\r\n", // tags
		"A1 LOGIN " + user + " " + pass + "\r\n",
		"a\x7f LOGIN " + user + " " + pass + "\r\n",
		"a+ LOGIN " + user + " " + pass + "\r\n",
		"a] LOGIN " + user + " " + pass + "\r\n",
		"a{1} LOGIN " + user + " " + pass + "\r\n",
		"* LOGIN " + user + " " + pass + "\r\n",
		"+ LOGIN " + user + " " + pass + "\r\n",
		"a% LOGIN " + user + " " + pass + "\r\n",
		"a\" LOGIN " + user + " " + pass + "\r\n",
		"\"a\" LOGIN " + user + " " + pass + "\r\n",
		"a LOGIN " + user + " ~{" + fmt.Sprint(len(pass)) + "}\r\n" + pass + "\r\n", // literal8
		"a LOGIN " + user + " {" + fmt.Sprint(len(pass)) + "} \r\n" + pass + "\r\n",
		"a LOGIN " + user + " {+" + fmt.Sprint(len(pass)) + "}\r\n" + pass + "\r\n",
		"a LOGIN " + user + " {0" + fmt.Sprint(len(pass)) + "}\r\n" + pass + "\r\n",
		// A NUL escaped in a quoted string: Dovecot reads it (and cuts the
		// name there) and goes on into the literal; postern closes.
		"a LOGIN \"" + user + "\\\x00x\" {" + fmt.Sprint(len(pass)) + "}\r\n" + pass + "\r\n",
		"a LOGIN \"" + user + "\\\x00\" " + pass + "\r\n",
	}...)
	return out
}

// verdict sends line to the IMAP server at addr (Dovecot's imap-login,
// or the gateway in front of it) on a connection of its own and returns
// the status of its first answer to it: "OK", "NO" or "BAD" from a tagged
// answer (with its tag) or an untagged BAD, "BYE" when the server hangs
// up.
func verdict(addr, line string) (tag, verdict string, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if g, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		return "", "", fmt.Errorf("%s: greeting %q: %v", addr, g, err)
	}
	if _, err := c.Write([]byte(line)); err != nil {
		return "", "", err
	}
	for range 20 {
		l, err := r.ReadString('\n')
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return "", "", fmt.Errorf("%s: %q: no answer in 10 s", addr, line)
			}
			return "", "BYE", nil
		}
		l = strings.TrimRight(l, "\r\n")
		tag, rest, _ := strings.Cut(l, " ")
		status, _, _ := strings.Cut(rest, " ")
		switch {
		case tag == "+":
			continue // a literal's continuation
		case strings.Contains(l, gwtest.UserIPLimit):
			return "", "", gwtest.ErrUserIPLimit
		case tag == "*" && status == "BYE":
			return "", "BYE", nil
		case tag == "*" && status == "BAD":
			return "*", "BAD", nil
		case tag == "*":
			continue
		case status == "OK" || status == "NO" || status == "BAD":
			return tag, status, nil
		}
	}
	return "", "", fmt.Errorf("%s: %q: no answer in 20 lines", addr, line)
}

// refusedOnPurpose reports whether line is a login the gateway refuses
// as bad by design where Dovecot tries it (and answers NO, or OK): a
// LOGIN whose user name postern does not pass on (mailgate.ValidUser:
// empty, white space around it, control bytes), or an AUTHENTICATE whose
// initial response it does not take: base64 not in its strict form
// (Dovecot skips white space around it), a PLAIN message with another
// authorization identity, too few or too many NULs, or a name it does
// not pass on. No such line logs in through the gateway.
func refusedOnPurpose(line string) bool {
	rd := reader{r: bufio.NewReaderSize(strings.NewReader(line), maxLine+2), cont: contFunc(func() error { return nil })}
	cmd, err := rd.read()
	if errors.Is(err, errUncertain) {
		return true // closed: Dovecot would read on into a literal
	}
	if first, _, _ := strings.Cut(line, "\n"); errors.Is(err, errSyntax) && strings.IndexByte(first, 0) >= 0 {
		return true // a NUL in a command line (escaped, Dovecot reads it)
	}
	if err != nil {
		return false
	}
	switch cmd.name {
	case "LOGIN":
		if len(cmd.args) != 2 {
			return false
		}
		u, ok := cmd.args[0].astring()
		return ok && !mailgate.ValidUser(u)
	case "AUTHENTICATE":
		mech, ir, _ := strings.Cut(cmd.raw, " ")
		authz, user, _, err := gate.SASL(mech, ir, func(string) ([]byte, error) { return nil, gate.ErrCancelled })
		if errors.Is(err, gate.ErrBadSASL) {
			return true
		}
		return err == nil && (authz != "" && authz != user || !mailgate.ValidUser(user))
	}
	return false
}

// TestLoginsLikeDovecot sends every line of the LOGIN corpus to the
// harness's real Dovecot, directly and through the gateway in front of
// it, and compares the answers: the same status under the same tag. A
// line Dovecot logs in with logs in through the gateway, as the same user
// (the gateway checks access for the name it passes on), a line Dovecot
// refuses is refused, and where Dovecot hangs up the gateway does not log
// in.
func TestLoginsLikeDovecot(t *testing.T) {
	env := testenv.Backends(t)
	const user = "alice@example.test"
	pass := env.Users[user]
	gw := startProxyFailing(t, env.IMAPProxy, nil, 1000000)
	lines := loginLines(user, pass)
	// A failed login is answered after half a second: ask several lines
	// at a time.
	type answer struct{ tag, verdict string }
	direct, through, err := gwtest.BothSides(len(lines), 16, func(i, side int) (answer, error) {
		addr := env.IMAPPlain
		if side == 1 {
			addr = gw
		}
		var a answer
		var err error
		a.tag, a.verdict, err = verdict(addr, lines[i])
		return a, err
	})
	if err != nil {
		t.Fatal(err)
	}
	oks, strict := 0, 0
	for i, line := range lines {
		d, p := direct[i], through[i]
		if d.verdict == "OK" {
			oks++
		}
		switch {
		case d.verdict == "BYE":
			if p.verdict == "OK" {
				t.Errorf("%q: postern logs in, Dovecot hangs up", line)
			}
		case p.verdict == "BAD" && (d.verdict == "NO" || d.verdict == "OK") && refusedOnPurpose(line):
			strict++
		case p.verdict != d.verdict:
			t.Errorf("%q: postern %s, Dovecot %s", line, p.verdict, d.verdict)
		case p.tag != d.tag && (p.tag != "*" && d.tag != "*" || p.verdict != "BAD"):
			// Whether a refusal carries the tag is cosmetic; another tag
			// is not.
			t.Errorf("%q: postern answers under tag %q, Dovecot under %q", line, p.tag, d.tag)
		}
	}
	if oks < 20 {
		t.Fatalf("only %d of %d lines log in to Dovecot: the corpus lost its real logins", oks, len(lines))
	}
	t.Logf("%d lines, %d of them logins with the real credentials, %d refused as bad on purpose where Dovecot tries the login", len(lines), oks, strict)
}
