package pop3proxy

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// dovecotPOP3 is a test-only model of how Dovecot 2.3's pop3-login reads one
// command at the start of b (src/pop3-login/client.c client_read_cmd_name,
// i_stream_next_line, client-authenticate.c cmd_auth), written from
// Dovecot's source independently of session.go. It returns the command
// name, its argument (a C string: cut at a NUL), for AUTH the mechanism,
// the initial response and whether the mechanisms are listed instead, and
// where the next command starts; ok is false when the input ends first.
func dovecotPOP3(b []byte) (name, args, mech, ir string, list bool, next int, ok bool) {
	var cmd []byte
	i := 0
	for ; ; i++ {
		if i == len(b) {
			return
		}
		c := b[i]
		if c == '\r' {
			continue
		}
		if c == ' ' || c == '\n' || c == 0 || i >= 8 {
			break
		}
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		cmd = append(cmd, c)
	}
	name = string(cmd)
	if b[i] == ' ' {
		i++
	}
	line := func(from int) (string, int, bool) { // i_stream_next_line
		j := bytes.IndexByte(b[from:], '\n')
		if j < 0 {
			return "", 0, false
		}
		return strings.TrimSuffix(string(b[from:from+j]), "\r"), from + j + 1, true
	}
	if name == "AUTH" {
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\r' && b[j] != '\n' {
			j++
		}
		if j == len(b) {
			return
		}
		if j == i {
			_, next, ok = line(i)
			return name, "", "", "", true, next, ok
		}
		mech = string(b[i:j])
		if b[j] == ' ' {
			j++
		}
		ir, next, ok = line(j)
		return name, "", mech, ir, false, next, ok
	}
	args, next, ok = line(i)
	if k := strings.IndexByte(args, 0); k >= 0 {
		args = args[:k]
	}
	return name, args, "", "", false, next, ok
}

// readStream reads lines from input as the session does and checks each
// command postern knows against the model of Dovecot: same command, same
// argument (for AUTH: same mechanism and initial response), same next
// line.
func readStream(t testing.TB, input []byte) {
	br := bytes.NewReader(input)
	r := bufio.NewReaderSize(br, maxLine+2)
	pos := 0
	for range 64 {
		if pos >= len(input) {
			return
		}
		line, err := readCommandLine(r)
		next := len(input) - br.Len() - r.Buffered()
		dname, dargs, dmech, dir, dlist, dnext, ok := dovecotPOP3(input[pos:])
		dnext += pos
		at := input[pos:min(len(input), pos+100)]
		if errors.Is(err, errTooLong) {
			return // Dovecot disconnects: its buffer holds 1026 bytes
		}
		if err != nil && !errors.Is(err, errBad) {
			return // the input ended
		}
		if !ok {
			t.Fatalf("%q: postern read a line, Dovecot waits for more", at)
		}
		if next != dnext {
			t.Fatalf("%q: postern goes on at %d, Dovecot at %d", at, next, dnext)
		}
		if err == nil {
			name, _, arg := parseCommand(line)
			if name != "" && name != dname {
				t.Fatalf("%q: postern reads %s, Dovecot %q", at, name, dname)
			}
			switch name {
			case "USER", "PASS":
				if arg != dargs {
					t.Fatalf("%q: postern argument %q, Dovecot %q", at, arg, dargs)
				}
			case "AUTH":
				mech, initial, list := parseAuth(arg)
				if list != dlist || mech != dmech || initial != dir {
					t.Fatalf("%q: postern AUTH %q %q list=%v, Dovecot %q %q list=%v", at, mech, initial, list, dmech, dir, dlist)
				}
			}
		}
		pos = next
	}
}

func TestCommandsLikeDovecot(t *testing.T) {
	for _, tc := range []struct {
		in, name, arg string
		err           error
	}{
		{"USER bob\r\n", "USER", "bob", nil},
		{"user bob\n", "USER", "bob", nil},
		{"USER  bob\r\n", "USER", " bob", nil}, // Dovecot: the name " bob"
		{"PASS a b \r\n", "PASS", "a b ", nil}, // spaces belong to the password
		{"PASS\r\n", "PASS", "", nil},
		{"USER\tbob\r\n", "", "", nil}, // the unknown "USER\tBOB"
		{" USER bob\r\n", "", "", nil},
		{"US\xc4\xb1R bob\r\n", "", "", nil},
		{"\xc5\xbfSER bob\r\n", "", "", nil},     // long s upper-cases to S in Unicode only
		{"PASS secret\r\r\n", "", "", errBad},    // Dovecot: the password "secret\r"
		{"US\rER bob\r\n", "", "", errBad},       // Dovecot skips the CR: USER
		{"USER bob\x00evil\r\n", "", "", errBad}, // Dovecot cuts at the NUL
		{"AUTH PLAIN AGJvYgBwdw==\r\n", "AUTH", "PLAIN AGJvYgBwdw==", nil},
	} {
		line, err := readCommandLine(bufio.NewReader(strings.NewReader(tc.in)))
		if !errors.Is(err, tc.err) || err == nil && tc.err != nil {
			t.Errorf("%q: %v, want %v", tc.in, err, tc.err)
		}
		if err == nil {
			name, _, arg := parseCommand(line)
			if name != tc.name || name != "" && arg != tc.arg {
				t.Errorf("%q: %q %q, want %q %q", tc.in, name, arg, tc.name, tc.arg)
			}
		}
		readStream(t, []byte(tc.in))
	}
	for arg, want := range map[string][3]string{
		"":                    {"", "", "list"},
		" PLAIN x":            {"", "", "list"},
		"PLAIN":               {"PLAIN", "", ""},
		"PLAIN ":              {"PLAIN", "", ""},
		"PLAIN =":             {"PLAIN", "=", ""},
		"plain  AGJv":         {"plain", " AGJv", ""},
		"PLAIN\tAGJvYgBwdw==": {"PLAIN\tAGJvYgBwdw==", "", ""},
	} {
		mech, ir, list := parseAuth(arg)
		if mech != want[0] || ir != want[1] || list != (want[2] == "list") {
			t.Errorf("AUTH %q: %q %q %v, want %q", arg, mech, ir, list, want)
		}
	}
}

func FuzzPOP3Command(f *testing.F) {
	for _, s := range []string{
		"USER bob\r\nPASS a b \r\n",
		"user  bob\r\npass x\r\r\n",
		"USER\tbob\r\nAUTH PLAIN AGJvYgBwdw==\r\n",
		"AUTH  PLAIN x\r\nAUTH\r\nAUTH PLAIN\r\nAGJvYgBwdw==\r\n",
		"US\rER bob\r\nUSER b\x00ob\r\nCAPA\n",
		"USERNAMES bob\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		readStream(t, b)
	})
}

// Token streams built from the pieces that make POP3 readers disagree,
// checked against the Dovecot model. Deterministic and bounded.
func TestCommandTokenStreams(t *testing.T) {
	vocab := []string{"USER", "user", "PASS", "AUTH", "auth", "PLAIN", "LOGIN", "CAPA", "XCLIENT", "USERNAMES",
		" ", " ", "  ", "\t", "\r\n", "\r\n", "\n", "\r", "\x00", "\xc5\xbf", "bob", "=", "*", "AGJvYgBwdw==", "x y"}
	seed := uint64(1)
	next := func(n int) int {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return int(seed % uint64(n))
	}
	var b strings.Builder
	for range 5000 {
		b.Reset()
		for range 1 + next(16) {
			b.WriteString(vocab[next(len(vocab))])
		}
		b.WriteString("\r\n")
		readStream(t, []byte(b.String()))
	}
}
