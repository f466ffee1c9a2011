package imapproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/postern/postern/internal/ascii"
)

// The pre-login command reader follows Dovecot 2.3's imap-login (the
// backend behind postern) byte for byte, and refuses what Dovecot would
// read differently or what postern cannot read with certainty. The model
// is written down in docs/security/imap-pop3.md; in short:
//
//   - the tag and the command name are each a run of atom characters ended
//     by exactly one space (two spaces, a TAB, a leading space, 8-bit bytes
//     or a control character are errors, as in Dovecot);
//   - the command name is compared ASCII case-insensitively (never with
//     Unicode case folding: "logın" is not LOGIN);
//   - arguments are separated by spaces only; atoms end at a space (or a
//     ')' inside a list); quoted strings may hold any byte but NUL, CR and
//     LF, and a backslash escapes any byte; literals are {n} or {n+} at
//     the end of a line; literal8 (~{n}) is an error; NIL is not a string;
//   - AUTHENTICATE is not parsed as arguments: the mechanism is the bytes up
//     to the next space and the initial response the rest of the line, raw.
//
// Beyond that postern is stricter than Dovecot: a NUL or a CR anywhere in a
// line is refused, and an argument over maxArg bytes, more than maxArgs
// arguments or a command over maxCommand bytes close the connection (Dovecot
// would read on where postern stops, so the next command could not be
// found with certainty). So does a line with a NUL that ends as a literal's
// announcement ('}'): Dovecot reads a NUL escaped in a quoted string and
// would go on into the literal, where postern would look for the next
// command.

// Limits of the commands postern reads before authentication. Dovecot's
// imap-login reads a command of up to 8192 bytes (literals included) into
// a buffer of 1026 bytes: an argument that does not fit disconnects.
const (
	maxLine    = 8 << 10 // one line of a command
	maxCommand = 8 << 10 // a whole command, literals included
	maxArg     = 1000    // one atom, quoted string or literal
	maxLiteral = maxArg
	maxArgs    = 100 // ID takes up to 30 pairs in a list
	maxTag     = 126 // Dovecot's IMAP_TAG_MAX_LEN
)

var (
	errLineTooLong = errors.New("line too long")
	errSyntax      = errors.New("syntax error")
	errLiteralSize = errors.New("literal too big")
	errTooBig      = errors.New("argument too long or too many arguments")
	// errUncertain: a line postern refuses where Dovecot might read on
	// past its end (a NUL before a literal's announcement).
	errUncertain = errors.New("NUL in a line that announces a literal")
)

// argKind is the type of one parsed argument.
type argKind uint8

const (
	argAtom   argKind = iota
	argNil            // the atom NIL, in any case: a string only where an astring is read
	argString         // a quoted string or a literal, decoded
	argList
)

// arg is one argument of a command.
type arg struct {
	kind argKind
	s    string
	list []arg
}

// astring reports the argument's value if it is an IMAP astring: an atom,
// a quoted string or a literal, and NIL, which is an atom where a string
// is expected (Dovecot's imap-login logs in "a LOGIN NIL x" as the user
// NIL, spelt as sent); not a list.
func (a arg) astring() (string, bool) {
	if a.kind == argAtom || a.kind == argString || a.kind == argNil {
		return a.s, true
	}
	return "", false
}

// command is one client command before authentication.
type command struct {
	tag  string
	name string // upper case (ASCII)
	args []arg
	// raw is AUTHENTICATE's text after the command name and its space,
	// unparsed, as Dovecot reads it ("" when the name ended the line).
	raw string
}

// reader reads IMAP commands. It asks for synchronizing literals through
// cont, which must send the continuation request.
type reader struct {
	r    *bufio.Reader
	cont continuer
	// args holds a command's first arguments (a LOGIN's two), so that
	// reading one allocates no list for them; the next read reuses it.
	args [4]arg
}

// continuer sends the continuation request for a synchronizing literal.
type continuer interface{ continueLiteral() error }

// contFunc is a continuer that calls itself.
type contFunc func() error

func (f contFunc) continueLiteral() error { return f() }

// read reads one complete command, literals included. A syntax error
// reports the tag if it could be read, so the caller can answer BAD.
func (rd *reader) read() (command, error) {
	var cmd command
	line, err := rd.line()
	if err != nil {
		return cmd, err
	}
	tag, rest, more, err := nextWord(line, true)
	if err != nil || len(tag) > maxTag {
		return cmd, errSyntax // the tag is not echoed
	}
	cmd.tag = tag
	if strings.IndexByte(line, '\r') >= 0 {
		return cmd, errSyntax // a CR without LF: an error in Dovecot too
	}
	if !more {
		return cmd, errSyntax // no command name
	}
	name, rest, more, err := nextWord(rest, false)
	if err != nil {
		return cmd, errSyntax
	}
	cmd.name = ascii.Upper(name)
	if cmd.name == "AUTHENTICATE" {
		if !more || rest == "" || rest[0] == ' ' {
			return cmd, errSyntax // no mechanism name
		}
		cmd.raw = rest
		return cmd, nil
	}
	if !more {
		return cmd, nil
	}
	clear(rd.args[:]) // the last command's strings, a password among them
	p := argParser{rd: rd, line: rest, total: len(line)}
	cmd.args, err = p.parse()
	return cmd, err
}

// nextWord reads a tag (tag set) or a command name at the start of s, as
// Dovecot's imap_parser_read_tag and imap_parser_read_command_name: atom
// characters up to one space or the end of the line. more reports that a
// space followed; rest is what follows that space.
func nextWord(s string, tag bool) (word, rest string, more bool, err error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' {
			if i == 0 {
				return "", "", false, errSyntax
			}
			return s[:i], s[i+1:], true, nil
		}
		if c < ' ' || c >= 0x80 || strings.IndexByte(`(){%*"\]`, c) >= 0 || tag && c == '+' {
			return "", "", false, errSyntax
		}
	}
	if s == "" {
		return "", "", false, errSyntax
	}
	return s, "", false, nil
}

// argParser reads the arguments of one command, as Dovecot's
// imap_parser_read_args with no flags.
type argParser struct {
	rd    *reader
	line  string // the current line (without its CRLF)
	pos   int
	total int // bytes of the command so far
}

func (p *argParser) parse() ([]arg, error) {
	var stack [][]arg // the enclosing lists
	var cur []arg
	if p.rd != nil {
		cur = p.rd.args[:0] // valid until the reader's next command
	}
	n := 0
	for {
		for p.pos < len(p.line) && p.line[p.pos] == ' ' {
			p.pos++
		}
		if p.pos == len(p.line) {
			if len(stack) > 0 {
				return nil, errSyntax // missing ')'
			}
			return cur, nil
		}
		if n++; n > maxArgs {
			return nil, errTooBig
		}
		switch c := p.line[p.pos]; {
		case c == '"':
			s, w, err := quoted(p.line[p.pos:])
			if err != nil {
				return nil, err
			}
			p.pos += w
			cur = append(cur, arg{kind: argString, s: s})
		case c == '{':
			s, err := p.literal()
			if err != nil {
				return nil, err
			}
			cur = append(cur, arg{kind: argString, s: s})
		case c == '(':
			stack = append(stack, cur)
			cur = nil
			p.pos++
		case c == ')':
			if len(stack) == 0 {
				return nil, errSyntax // unexpected ')'
			}
			parent := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			cur = append(parent, arg{kind: argList, list: cur})
			p.pos++
		case c == '~' && p.pos+1 < len(p.line) && p.line[p.pos+1] == '{':
			return nil, errSyntax // literal8 is not allowed before login
		default:
			j := p.pos
			for j < len(p.line) && p.line[j] != ' ' {
				if p.line[j] == ')' {
					if len(stack) == 0 {
						return nil, errSyntax
					}
					break
				}
				if !atomChar(p.line[j]) {
					return nil, errSyntax
				}
				j++
			}
			if j-p.pos > maxArg {
				return nil, errTooBig
			}
			a := arg{kind: argAtom, s: p.line[p.pos:j]}
			if ascii.EqualFold(a.s, "NIL") {
				a.kind = argNil
			}
			cur = append(cur, a)
			p.pos = j
		}
	}
}

// atomChar reports whether Dovecot's argument parser takes c inside an
// atom (')' is handled by the caller).
func atomChar(c byte) bool {
	return c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"'
}

// literal reads a literal announced at p.pos, which must end the line, its
// data, and the next line, where the command goes on.
func (p *argParser) literal() (string, error) {
	spec := p.line[p.pos+1:]
	if !strings.HasSuffix(spec, "}") {
		return "", errSyntax // Dovecot: the size ends at '}', then CRLF
	}
	spec = spec[:len(spec)-1]
	plus := strings.HasSuffix(spec, "+")
	if plus {
		spec = spec[:len(spec)-1]
	}
	var size int64 // {} and {+} are literals of size 0 to Dovecot
	for i := 0; i < len(spec); i++ {
		if spec[i] < '0' || spec[i] > '9' {
			return "", errSyntax
		}
		if size > maxCommand {
			return "", errLiteralSize
		}
		size = size*10 + int64(spec[i]-'0')
	}
	if size > maxLiteral || int64(p.total)+size > maxCommand {
		return "", errLiteralSize
	}
	if !plus {
		if err := p.rd.cont.continueLiteral(); err != nil {
			return "", err
		}
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(p.rd.r, buf); err != nil {
		return "", fmt.Errorf("reading a literal: %w", err)
	}
	p.total += int(size)
	next, err := p.rd.line()
	if err != nil {
		return "", err
	}
	p.total += len(next)
	if p.total > maxCommand {
		return "", errTooBig
	}
	if strings.IndexByte(next, '\r') >= 0 {
		return "", errSyntax
	}
	p.line, p.pos = next, 0
	return string(buf), nil
}

// line reads one CRLF- (or LF-) terminated line without its ending: the LF
// and one CR before it, as Dovecot. A NUL anywhere is an error: errSyntax,
// after which Dovecot too goes on after the line (it stops at the NUL, or
// reads the line as one command), but errUncertain when the line ends in
// '}', which Dovecot may read as a literal's announcement and go on into
// the literal.
func (rd *reader) line() (string, error) {
	l, err := rd.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = rd.r.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(l), "\n"), "\r")
	if strings.IndexByte(s, 0) >= 0 {
		if strings.HasSuffix(s, "}") {
			return "", errUncertain
		}
		return "", errSyntax
	}
	return s, nil
}

// quoted decodes a quoted string at the start of s and returns it and the
// number of bytes it took. As Dovecot: a backslash escapes any byte, and
// the string holds any byte but NUL, CR and LF (8-bit and TAB included).
func quoted(s string) (string, int, error) {
	// Without escapes the string is a piece of s: no copy.
	for i := 1; i < len(s) && i <= maxArg; i++ {
		if s[i] == '"' {
			return s[1:i], i + 1, nil
		}
		if s[i] == '\\' {
			break
		}
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if i > maxArg {
			return "", 0, errTooBig
		}
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 >= len(s) {
				return "", 0, errSyntax // escapes the line end
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errSyntax // unterminated
}

// validPassword reports whether a password can be passed on: no NUL, CR or
// LF (Dovecot cuts a password at a NUL).
func validPassword(p string) bool {
	return strings.IndexByte(p, 0) < 0 && strings.IndexByte(p, '\r') < 0 && strings.IndexByte(p, '\n') < 0
}

func validTag(t string) bool {
	w, _, more, err := nextWord(t, true)
	return err == nil && !more && w == t && len(t) <= maxTag
}

// quote writes s as an IMAP quoted string, or reports false if it cannot
// be one (CR, LF, NUL or 8-bit bytes need a literal).
func quote(s string) (string, bool) {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 || c == '\r' || c == '\n' || c >= 0x80 {
			return "", false
		}
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String(), true
}
