package imapproxy

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/postern/postern/internal/ascii"
)

// readStream reads commands from input with postern's reader as the
// session does (continuations are not sent anywhere) and checks each one
// against the model of Dovecot's imap-login: a command postern reads must
// be read identically by Dovecot (tag, name, arguments, AUTHENTICATE's
// mechanism and initial response), and after a command (read or refused)
// both must go on at the same byte. It stops where postern closes the
// connection or the input ends.
func readStream(t testing.TB, input []byte) {
	br := bytes.NewReader(input)
	r := bufio.NewReaderSize(br, maxLine+2)
	rd := reader{r: r, cont: contFunc(func() error { return nil })}
	pos := 0
	for range 64 {
		if pos >= len(input) {
			return
		}
		cmd, err := rd.read()
		next := len(input) - br.Len() - r.Buffered()
		d, res, dnext := dovecotRead(input[pos:])
		dnext += pos
		at := input[pos:min(len(input), pos+120)]
		switch {
		case err == nil:
			if res != dcResultOK {
				t.Fatalf("postern read %q as %+v, Dovecot refuses it (%d)", at, cmd, res)
			}
			if cmd.tag != d.tag || !strings.EqualFold(cmd.name, d.name) || ascii.Upper(d.name) != cmd.name {
				t.Fatalf("%q: postern tag %q name %q, Dovecot %q %q", at, cmd.tag, cmd.name, d.tag, d.name)
			}
			if cmd.name == "AUTHENTICATE" {
				mech, ir, _ := strings.Cut(cmd.raw, " ")
				if mech != d.mech || ir != d.ir {
					t.Fatalf("%q: postern mechanism %q response %q, Dovecot %q %q", at, mech, ir, d.mech, d.ir)
				}
			} else if !sameArgs(cmd.args, d.args) {
				t.Fatalf("%q: postern arguments %+v, Dovecot %+v", at, cmd.args, d.args)
			}
			if cmd.name != "ID" && next != dnext {
				t.Fatalf("%q: postern goes on at %d, Dovecot at %d", at, next, dnext)
			}
		case errors.Is(err, errSyntax):
			if res == dcResultMore || res == dcResultBye {
				return
			}
			if next != dnext {
				t.Fatalf("%q refused: postern goes on at %d, Dovecot at %d (%v)", at, next, dnext, err)
			}
		default: // postern closes (or the input ended)
			return
		}
		pos = next
	}
}

// Command lines read as Dovecot reads them, or refused.
func TestReaderLikeDovecot(t *testing.T) {
	type want struct {
		err  error
		tag  string
		name string
		args []string // astring values; "NIL" marks NIL, "(" a list
	}
	for _, tc := range []struct {
		in string
		want
	}{
		{"a LOGIN bob pw\r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a login bob pw\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a LOGIN bob pw   \r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a LOGIN  bob   pw\r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}}, // Dovecot skips spaces between arguments
		{"a  LOGIN bob pw\r\n", want{errSyntax, "a", "", nil}},                    // two spaces after the tag
		{" a LOGIN bob pw\r\n", want{errSyntax, "", "", nil}},                     // leading space
		{"a\tLOGIN bob pw\r\n", want{errSyntax, "", "", nil}},                     // TAB
		{"a LOGIN\tbob pw\r\n", want{errSyntax, "a", "", nil}},
		{"a LOGIN bob\tpw\r\n", want{errSyntax, "a", "", nil}},
		{"a LOG\xc4\xb1N bob pw\r\n", want{errSyntax, "a", "", nil}}, // dotless i: not LOGIN
		{"a LOGIN b\xc3\xb6b pw\r\n", want{errSyntax, "a", "", nil}}, // 8-bit atom
		{"a LOGIN \"b\xc3\xb6b\" \"p w\\\\\\\"\"\r\n", want{nil, "a", "LOGIN", []string{"b\xc3\xb6b", "p w\\\""}}},
		{"a LOGIN \"b\\ob\" pw\r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}}, // any byte may be escaped
		{"a LOGIN \"bob\"\"pw\"\r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a LOGIN bob\"pw\"\r\n", want{errSyntax, "a", "", nil}}, // '"' inside an atom
		{"a LOGIN\"bob\" pw\r\n", want{errSyntax, "a", "", nil}}, // '"' inside the command name
		{"a LOGIN ( ) pw\r\n", want{nil, "a", "LOGIN", []string{"(", "pw"}}},
		{"a LOGIN NIL pw\r\n", want{nil, "a", "LOGIN", []string{"NIL", "pw"}}},
		{"a LOGIN bob ~{2}\r\n", want{errSyntax, "a", "", nil}}, // literal8
		// A NUL: refused, and Dovecot goes on after the line as postern does
		// (it stops at an unescaped NUL, or reads the line as one command).
		{"a LOGIN \"b\x00b\" pw\r\n", want{errSyntax, "", "", nil}},
		{"a LOGIN \"b\\\x00b\" pw\r\n", want{errSyntax, "", "", nil}},
		// But Dovecot reads an escaped NUL and would go on into the literal
		// the line announces: the connection is closed.
		{"a LOGIN \"b\\\x00b\" {2}\r\npw\r\n", want{errUncertain, "", "", nil}},
		{"0 0 \"\\\x00\"{}\n\n", want{errUncertain, "", "", nil}},
		{"a LOGIN bob {+2}\r\n", want{errSyntax, "a", "", nil}},
		{"a LOGIN bob {-0}\r\n", want{errSyntax, "a", "", nil}},
		{"a LOGIN bob {2} \r\n", want{errSyntax, "a", "", nil}},
		{"a LOGIN bob {2+}\r\npw\r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a LOGIN bob {2}\npw\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a LOGIN {3}\r\nbob{2}\r\npw\r\n", want{nil, "a", "LOGIN", []string{"bob", "pw"}}},
		{"a LOGIN bob {}\r\n\r\n", want{nil, "a", "LOGIN", []string{"bob", ""}}},
		{"a LOGIN bob pw\rx\r\n", want{errSyntax, "a", "", nil}},
		{"a LOGIN bob pw\x00\r\n", want{errSyntax, "", "", nil}},
		{"a+ LOGIN bob pw\r\n", want{errSyntax, "", "", nil}},
		{"a] LOGIN bob pw\r\n", want{errSyntax, "", "", nil}},
		{"a\x7f NOOP\r\n", want{nil, "a\x7f", "NOOP", nil}},
		{"a\r\n", want{errSyntax, "a", "", nil}},
		{"\r\n", want{errSyntax, "", "", nil}},
		{"a NOOP )\r\n", want{errSyntax, "a", "", nil}},
		{"a NOOP (x\r\n", want{errSyntax, "a", "", nil}},
		{"a LOGIN bob " + strings.Repeat("p", maxArg+1) + "\r\n", want{errTooBig, "a", "", nil}},
		{"a LOGIN bob {1001}\r\n", want{errLiteralSize, "a", "", nil}},
		{"a LOGIN bob {99999999999999999999999}\r\n", want{errLiteralSize, "a", "", nil}},
	} {
		rd := reader{r: bufio.NewReaderSize(strings.NewReader(tc.in), maxLine+2), cont: contFunc(func() error { return nil })}
		cmd, err := rd.read()
		if !errors.Is(err, tc.err) || err == nil && tc.err != nil {
			t.Errorf("%q: error %v, want %v", tc.in, err, tc.err)
			continue
		}
		if cmd.tag != tc.tag {
			t.Errorf("%q: tag %q, want %q", tc.in, cmd.tag, tc.tag)
		}
		if err != nil {
			readStream(t, []byte(tc.in))
			continue
		}
		var got []string
		for _, a := range cmd.args {
			switch a.kind {
			case argNil:
				got = append(got, "NIL")
			case argList:
				got = append(got, "(")
			default:
				got = append(got, a.s)
			}
		}
		if cmd.name != tc.name || strings.Join(got, "|") != strings.Join(tc.args, "|") {
			t.Errorf("%q: %s %q, want %s %q", tc.in, cmd.name, got, tc.name, tc.args)
		}
		readStream(t, []byte(tc.in))
	}
}

// AUTHENTICATE's line is not parsed as arguments, as in Dovecot.
func TestReaderAuthenticateRaw(t *testing.T) {
	for in, raw := range map[string]string{
		"a AUTHENTICATE PLAIN\r\n":            "PLAIN",
		"a AUTHENTICATE PLAIN \r\n":           "PLAIN ",
		"a AUTHENTICATE plain AGJvYgBwdw==\n": "plain AGJvYgBwdw==",
		"a AUTHENTICATE \"PLAIN\" {5}\r\n":    "\"PLAIN\" {5}",
		"a AUTHENTICATE PLAIN  AGJv\r\n":      "PLAIN  AGJv",
	} {
		rd := reader{r: bufio.NewReader(strings.NewReader(in)), cont: contFunc(func() error { t.Fatal("a continuation"); return nil })}
		cmd, err := rd.read()
		if err != nil || cmd.name != "AUTHENTICATE" {
			t.Fatalf("%q: %v %+v", in, err, cmd)
		}
		if cmd.raw != raw {
			t.Errorf("%q: raw %q, want %q", in, cmd.raw, raw)
		}
		readStream(t, []byte(in))
	}
}

// A LOGIN's arguments are read into the reader's own list: reading the
// command allocates its line only. The next command's read clears the
// list, the password with it.
func TestReaderLoginArgsKept(t *testing.T) {
	in := strings.Repeat("a LOGIN bob \"pw 1\"\r\n", 200)
	rd := reader{r: bufio.NewReaderSize(strings.NewReader(in), 4096)}
	n := testing.AllocsPerRun(100, func() {
		cmd, err := rd.read()
		if err != nil || len(cmd.args) != 2 || cmd.args[1].s != "pw 1" {
			t.Fatalf("%v %+v", err, cmd)
		}
	})
	if n > 1 {
		t.Errorf("reading a LOGIN: %v allocations; want at most 1 (its line)", n)
	}
	rd = reader{r: bufio.NewReader(strings.NewReader("a LOGIN bob pw\r\nb NOOP x\r\n"))}
	rd.read()
	if cmd, err := rd.read(); err != nil || cmd.name != "NOOP" || rd.args[1].s != "" {
		t.Errorf("after the next command: %v %+v, the password kept: %q", err, cmd, rd.args[1].s)
	}
}

func FuzzIMAPCommand(f *testing.F) {
	for _, s := range []string{
		"a LOGIN bob pw\r\n",
		"a login \"b\\\"o\" {2+}\r\npw\r\nb NOOP\r\n",
		"a LOGIN {3}\r\nbob {2}\r\npw\r\n",
		"a AUTHENTICATE PLAIN AGJvYgBwdw==\r\n",
		"a AUTHENTICATE PLAIN\r\nAGJvYgBwdw==\r\n",
		"a ID (\"name\" \"x\" \"v\" NIL)\r\nb CAPABILITY\r\n",
		"a\tLOGIN bob pw\r\n a LOGIN bob pw\r\n",
		"a LOGIN bob ~{2}\r\npw\r\n",
		"a LOGIN (bob) pw\r\na LOGIN NIL pw\r\n",
		"a NOOP {}\r\n\r\nb LOGIN x y\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		readStream(t, b)
	})
}

// Token streams built from the pieces that make IMAP readers disagree
// (separators, quotes, escapes, literal braces, lists, NIL, line ends, NUL,
// 8-bit bytes), checked against the Dovecot model: denser than byte-level
// fuzzing for literal and list combinations. Deterministic and bounded.
func TestReaderTokenStreams(t *testing.T) {
	vocab := []string{"a", "b1", " ", " ", "  ", "\t", "LOGIN", "login", "AUTHENTICATE", "PLAIN", "ID", "NOOP",
		"\"", "\\", "{", "}", "+", "~", "(", ")", "NIL", "nil", "\r\n", "\r\n", "\n", "\r", "\x00", "\xff", "\x7f",
		"2", "0", "12", "{2}\r\nxy", "{2+}\r\nx\n", "{0}\r\n", "\"q\\\"\"", "bob", "=", "AGJvYgBwdw==", "*", "]", "%"}
	seed := uint64(1)
	next := func(n int) int { // xorshift: no global state, same streams every run
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return int(seed % uint64(n))
	}
	n := 20000
	if testing.Short() {
		n = 5000
	}
	var b strings.Builder
	for range n {
		b.Reset()
		for range 1 + next(24) {
			b.WriteString(vocab[next(len(vocab))])
		}
		b.WriteString("\r\n")
		readStream(t, []byte(b.String()))
	}
}
