package smtpproxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/mailaddr"
	"github.com/postern/postern/internal/testenv"
)

// relayedForm is what the session sends the backend for a client's line,
// or false when postern answers the line itself (refuses it). It follows
// the session's command handlers.
func relayedForm(line string) (string, bool) {
	if strings.ContainsAny(line, "\r\n\x00") || !isPrintable(line) {
		return "", false
	}
	c, err := parseCommand(line)
	if err != nil {
		return "", false
	}
	switch c.verb {
	case verbMAIL:
		a, err := mailaddr.ParseMailArg(strings.Join(c.args, " "))
		return "MAIL " + a.Canonical(), err == nil
	case verbRCPT:
		a, err := mailaddr.ParseRcptArg(strings.Join(c.args, " "))
		return "RCPT " + a.Canonical(), err == nil
	case verbEHLO, verbHELO:
		return c.line(), len(c.args) > 0
	case verbRSET, verbDATA, verbSTARTTLS:
		return c.line(), len(c.args) == 0
	case verbNOOP, verbHELP, verbQUIT:
		return canonicalVerb[c.verb], true
	case verbAUTH:
		return c.line(), len(c.args) == 1 || len(c.args) == 2
	}
	return "", false
}

// smtpLines is the differential corpus: each template in every spelling
// of white space, case and quoting that a client could send.
func smtpLines(blob string) []string {
	templates := []string{
		"EHLO_client.example", "HELO_client.example", "EHLO_client.example_extra",
		"MAIL_FROM:<alice@example.test>", "MAIL_FROM:_<alice@example.test>", "MAIL_FROM:alice@example.test",
		"MAIL_FROM:<alice@example.test>_SIZE=100", "MAIL_FROM:<alice@example.test>_BODY=8BITMIME",
		"MAIL_FROM:<>", `MAIL_FROM:<"alice"@example.test>`, "MAIL_FROM:<@a.example:alice@example.test>",
		"MAIL_FROM:<alice@example.test>SIZE=1", "MAIL_FROM_:<alice@example.test>", "MAIL_FROM:<alice@example.test>_SIZE=\"1\"",
		"RCPT_TO:<alice@example.test>", "RCPT_TO:<nobody@example.test>", "RCPT_TO:<ALICE@EXAMPLE.TEST>",
		`RCPT_TO:<"alice"@example.test>`, `RCPT_TO:"alice"@example.test`, "RCPT_TO:<@relay.example,@b.example:alice@example.test>",
		"RCPT_TO:<alice@example.test.>", "RCPT_TO:<alice@example.test>_NOTIFY=NEVER", "RCPT_TO:<postmaster>",
		`RCPT_TO:<"a_b"@example.test>`, "RCPT_TO:<>", "RCPT_TO:<alice@example.test>_ORCPT=rfc822;alice@example.test",
		"RSET", "RSET_x", "NOOP", "NOOP_x_y", "HELP", "VRFY_alice", "EXPN_alice",
		"AUTH_PLAIN_" + blob, "AUTH_LOGIN", "XCLIENT_ADDR=192.0.2.1", "XCLIENT_LOGIN=bob@example.test",
		"XFORWARD_ADDR=192.0.2.1", "ETRN_example.test", "STARTTLS_x",
		// Letters whose Unicode case maps to ASCII ones (dotless i, long
		// s): Postfix compares ASCII-only.
		"maıl_FROM:<alice@example.test>", "MAIL_ſROM:<alice@example.test>", "RCPT_TO:<poſtmaster>",
		"RſET", "XCLıENT_ADDR=192.0.2.1", "ſTARTTLS",
	}
	seps := []string{" ", "\t", "  ", " \t", "\t\t"}
	var out []string
	for _, tpl := range templates {
		for i, sep := range seps {
			l := strings.ReplaceAll(tpl, "_", sep)
			out = append(out, l)
			switch i {
			case 0:
				out = append(out, strings.ToLower(l), " "+l, l+" ", "\t"+l+"\t")
			case 1:
				out = append(out, mixedCase(l))
			}
		}
	}
	return out
}

func mixedCase(s string) string {
	b := []byte(s)
	for i := range b {
		if i%2 == 0 && 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

// contextFor is what a session must have said before line for Postfix to
// read it in the state it is meant for.
func contextFor(line string) []string {
	c, err := parseCommand(line)
	if err != nil {
		return []string{"EHLO ctx.example"}
	}
	switch c.verb {
	case verbEHLO, verbHELO:
		return nil
	case verbRCPT, verbDATA:
		return []string{"EHLO ctx.example", "MAIL FROM:<>"}
	}
	return []string{"EHLO ctx.example"}
}

// postfixReply opens a session with Postfix (its port without a PROXY
// header), says pre, then line, and returns the reply's code and enhanced
// code.
func postfixReply(t *testing.T, addr string, pre []string, line string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Error(err)
		return "dial error"
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	read := func() string {
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "EOF"
			}
			last = strings.TrimRight(l, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				break
			}
		}
		code, rest, _ := strings.Cut(last, " ")
		enh, _, _ := strings.Cut(rest, " ")
		if len(enh) > 1 && enh[1] == '.' {
			return code + " " + enh
		}
		return code
	}
	if g := read(); !strings.HasPrefix(g, "220") {
		t.Errorf("Postfix greeting: %q", g)
		return "no greeting"
	}
	for _, p := range pre {
		fmt.Fprintf(c, "%s\r\n", p)
		if got := read(); got[0] != '2' {
			t.Errorf("Postfix: %q → %q", p, got)
			return "context refused"
		}
	}
	fmt.Fprintf(c, "%s\r\n", line)
	got := read()
	fmt.Fprintf(c, "QUIT\r\n")
	return got
}

// TestPostfixReadsRelayedFormAsOriginal is the differential test against
// real Postfix: every line of the corpus is either refused by postern, or
// Postfix answers the canonical form that postern relays exactly as it
// answers the line the client sent — so postern's checks looked at the
// command Postfix executes. It also shows that the corpus holds the
// attacks: lines Postfix executes although they are not spelt as RFC
// 5321 writes them.
func TestPostfixReadsRelayedFormAsOriginal(t *testing.T) {
	env := testenv.Backends(t)
	blob := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00" + env.Users["alice@example.test"]))
	lines := append(smtpLines(blob), fuzzCorpus(t, "FuzzParseCommand")...)
	// Postfix answers each session in tens of milliseconds: ask it in
	// parallel, a bounded number of sessions at a time.
	direct := make([]string, len(lines))
	viaCanon := make([]string, len(lines))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, line := range lines {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pre := contextFor(line)
			direct[i] = postfixReply(t, env.SMTPPlain, pre, line)
			if canon, ok := relayedForm(line); ok {
				viaCanon[i] = postfixReply(t, env.SMTPPlain, pre, canon)
			}
		}()
	}
	wg.Wait()
	relayed, refused, lenient := 0, 0, 0
	for i, line := range lines {
		direct, via := direct[i], viaCanon[i]
		canon, ok := relayedForm(line)
		odd := line != strings.TrimSpace(line) || strings.Contains(line, "\t") || strings.Contains(line, "  ")
		if odd && (direct[0] == '2' || direct[0] == '3') {
			lenient++
		}
		if !ok {
			refused++
			continue
		}
		relayed++
		if via != direct {
			t.Errorf("%q: Postfix answers %q, but %q to postern's canonical form %q", line, direct, via, canon)
		}
	}
	t.Logf("%d lines: %d relayed in canonical form and read alike by Postfix, %d refused by postern; Postfix executed %d oddly spelt lines",
		len(lines), relayed, refused, lenient)
	if lenient == 0 {
		t.Error("no oddly spelt line was executed by Postfix: the corpus does not exercise its leniency")
	}
	// The attacks of the review: Postfix executes them as written.
	for _, line := range []string{"AUTH\tPLAIN " + blob, "XCLIENT\tADDR=192.0.2.1", " RSET", "MAIL\tFROM:<alice@example.test>"} {
		if got := postfixReply(t, env.SMTPPlain, []string{"EHLO ctx.example"}, line); got[0] != '2' {
			t.Errorf("Postfix answers %q to %q: the test no longer shows its leniency", got, line)
		}
	}
}

// fuzzCorpus returns the string inputs of a fuzz target's committed corpus.
func fuzzCorpus(t *testing.T, target string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus for %s: %v", target, err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if q, ok := strings.CutPrefix(l, "string("); ok {
				if v, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil {
					out = append(out, v)
				}
			}
		}
	}
	return out
}
