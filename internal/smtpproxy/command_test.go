package smtpproxy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/postern/postern/internal/ascii"
)

// Postfix's own tokenizer tests (smtpd_token.in and .ref): the same tokens.
func TestParseCommandPostfixReference(t *testing.T) {
	for _, tc := range []struct {
		line string
		toks []string
		err  bool
	}{
		{line: `mail from:<wietse@porcupine.org>`, toks: []string{"mail", "from:", "<wietse@porcupine.org>"}},
		{line: `mail from:<"wietse venema"@porcupine.org>`, toks: []string{"mail", "from:", `<"wietse venema"@porcupine.org>`}},
		{line: `mail from:wietse@porcupine.org`, toks: []string{"mail", "from:", "wietse@porcupine.org"}},
		{line: `mail from:<wietse @ porcupine.org>`, toks: []string{"mail", "from:", "<wietse @ porcupine.org>"}},
		{line: `mail from:<"wietse venema"@porcupine.org ("wietse ) venema")>`, toks: []string{"mail", "from:", `<"wietse venema"@porcupine.org ("wietse ) venema")>`}},
		{line: `mail from:<"wietse venema" <wietse@porcupine.org>>`, toks: []string{"mail", "from:", `<"wietse venema" <wietse@porcupine.org>>`}},
		{line: `mail from:"wietse venema"@porcupine.org`, toks: []string{"mail", "from:", `"wietse venema"@porcupine.org`}},
		{line: `mail from:wietse\ venema@porcupine.org`, toks: []string{"mail", "from:", `wietse\ venema@porcupine.org`}},
		{line: `mail to:<"wietse venema>`, err: true},
		{line: `mail to:<wietse@[stuff>`, toks: []string{"mail", "to:", "<wietse@[stuff>"}},
		{line: `mail to:<wietse@["stuff]>`, err: true},
		// White space as Postfix reads it: any run of SP and TAB, leading and trailing ignored.
		{line: "AUTH\tPLAIN\tAGFsaWNlAHB3", toks: []string{"AUTH", "PLAIN", "AGFsaWNlAHB3"}},
		{line: " \t RCPT \t TO:<a@b>  ", toks: []string{"RCPT", "TO:", "<a@b>"}},
		{line: "RCPT TO: <a@b>", toks: []string{"RCPT", "TO:", "<a@b>"}},
		{line: "RCPT TO :<a@b>", toks: []string{"RCPT", "TO", ":<a@b>"}},
		{line: "XCLIENT\tADDR=1.2.3.4", toks: []string{"XCLIENT", "ADDR=1.2.3.4"}},
		{line: "   ", err: true},
		{line: "", err: true},
	} {
		c, err := parseCommand(tc.line)
		if tc.err {
			if err == nil {
				t.Errorf("%q: want an error, got %q %q", tc.line, c.name, c.args)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if got := append([]string{c.name}, c.args...); !reflect.DeepEqual(got, tc.toks) {
			t.Errorf("%q: tokens %q, want %q", tc.line, got, tc.toks)
		}
	}
}

func TestParseCommandVerbs(t *testing.T) {
	for line, want := range map[string]verb{
		"ehlo x": verbEHLO, "\tEhLo x": verbEHLO, "AUTH\tPLAIN": verbAUTH, "xclient\tADDR=1": verbPrivileged,
		"XFORWARD NAME=x": verbPrivileged, "ETRN x": verbPrivileged, "GET / HTTP/1.1": verbNonSMTP,
		"Subject: hello": verbNonSMTP, "FOO bar": verbUnknown, `"MAIL" FROM:<a>`: verbUnknown,
		`MAIL\ FROM:<a>`: verbUnknown, "MAIL:FROM:<a>": verbUnknown, "RSET\t": verbRSET, "QUIT now": verbQUIT,
		// Postfix compares verbs ASCII-only: these are unknown to it.
		"maıl FROM:<a>": verbUnknown, "ſtarttls": verbUnknown, "xclıent ADDR=1": verbUnknown, "rcpt\u212a": verbUnknown,
	} {
		c, err := parseCommand(line)
		if err != nil {
			t.Errorf("%q: %v", line, err)
			continue
		}
		if c.verb != want {
			t.Errorf("%q: verb %d, want %d", line, c.verb, want)
		}
	}
}

func TestCanonicalLine(t *testing.T) {
	for line, want := range map[string]string{
		"ehlo\t\tclient.example":         "EHLO client.example",
		" rcpt\tto:<a@b>\tNOTIFY=NEVER ": "RCPT to: <a@b> NOTIFY=NEVER",
		"auth plain =":                   "AUTH plain =",
	} {
		c, err := parseCommand(line)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.line(); got != want {
			t.Errorf("%q: %q, want %q", line, got, want)
		}
	}
}

// Every verb is found whatever its case, by the switch or the map.
func TestLookupVerb(t *testing.T) {
	for name, v := range verbs {
		for _, s := range []string{name, strings.ToLower(name), strings.ToLower(name[:1]) + name[1:]} {
			if got := lookupVerb(s); got != v {
				t.Errorf("lookupVerb(%q) = %d, want %d", s, got, v)
			}
		}
	}
	for _, s := range []string{"", "MAILX", "MAI", "EHLO\t", "ÉHLO", strings.Repeat("X", 17), "mail:"} {
		if got := lookupVerb(s); got != verbUnknown {
			t.Errorf("lookupVerb(%q) = %d, want unknown", s, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { lookupVerb("ehlo"); lookupVerb("xclient") }); n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
}

// FuzzParseCommand: a line postern accepts reads, in the canonical form it
// relays, exactly as it read the original (so the server behind it reads
// the same command), and the relayed line holds no line break or NUL.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"EHLO client.example", "AUTH\tPLAIN AGFsaWNlAHB3", " rcpt\tto:<a@b> NOTIFY=NEVER", `MAIL FROM:<"a b"@c> SIZE=10`,
		"XCLIENT\tADDR=1.2.3.4", "BDAT 10 LAST", `mail to:<"wietse venema>`, "RSET\t", "a\\", `<x\>`, "to:to:from:",
		"MAIL FROM:<@a,@b:c@d>", "RCPT TO:<a@b>SIZE=1", `"x y" z`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\r\n\x00") || !isPrintable(line) {
			return // refused before parsing
		}
		c, err := parseCommand(line)
		if err != nil {
			return
		}
		if v, want := lookupVerb(c.name), verbs[ascii.Upper(c.name)]; v != want {
			t.Fatalf("%q: lookupVerb %d, the map %d", c.name, v, want)
		}
		if c.verb == verbUnknown || c.verb == verbPrivileged || c.verb == verbNonSMTP {
			return // never relayed
		}
		out := c.line()
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("%q: canonical form %q holds a line break", line, out)
		}
		again, err := parseCommand(out)
		if err != nil {
			t.Fatalf("%q: canonical form %q does not parse: %v", line, out, err)
		}
		if again.verb != c.verb || !reflect.DeepEqual(again.args, c.args) && !(len(again.args) == 0 && len(c.args) == 0) {
			t.Fatalf("%q: read as %d %q, canonical %q read as %d %q", line, c.verb, c.args, out, again.verb, again.args)
		}
	})
}
