package imapproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits of the commands postern reads before authentication.
const (
	maxLine    = 8 << 10  // one line of a command
	maxLiteral = 64 << 10 // one literal (a user name or password)
	maxCommand = 128 << 10
	maxArgs    = 32
)

var (
	errLineTooLong = errors.New("line too long")
	errSyntax      = errors.New("syntax error")
	errLiteralSize = errors.New("literal too big")
)

// command is one client command before authentication. Its arguments are
// decoded: atoms, quoted strings (escapes removed) and literals alike.
type command struct {
	tag  string
	name string // upper case
	args []string
}

// reader reads IMAP commands. It asks for synchronizing literals through
// cont, which must send the continuation request.
type reader struct {
	r    *bufio.Reader
	cont func() error
}

// read reads one complete command, literals included. A syntax error
// reports the tag if it could be read, so the caller can answer BAD.
func (rd *reader) read() (command, error) {
	var cmd command
	var toks []string
	total := 0
	for {
		line, err := rd.line()
		if err != nil {
			return cmd, err
		}
		total += len(line)
		if total > maxCommand {
			return cmd, errLineTooLong
		}
		lit, ok, err := scanLine(line, &toks)
		if len(toks) > 0 && cmd.tag == "" {
			cmd.tag = toks[0]
		}
		if err != nil {
			return cmd, err
		}
		if len(toks) > maxArgs+2 {
			return cmd, errSyntax
		}
		if !ok {
			break
		}
		if lit.size > maxLiteral {
			return cmd, errLiteralSize
		}
		if !lit.plus {
			if err := rd.cont(); err != nil {
				return cmd, err
			}
		}
		buf := make([]byte, lit.size)
		if _, err := io.ReadFull(rd.r, buf); err != nil {
			return cmd, fmt.Errorf("reading a literal: %w", err)
		}
		total += int(lit.size)
		toks = append(toks, string(buf))
	}
	if len(toks) < 2 {
		return cmd, errSyntax
	}
	cmd.tag, cmd.name, cmd.args = toks[0], strings.ToUpper(toks[1]), toks[2:]
	if !validTag(cmd.tag) {
		cmd.tag = ""
		return cmd, errSyntax
	}
	return cmd, nil
}

// line reads one CRLF- (or LF-) terminated line without its ending.
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
		return "", errSyntax
	}
	return s, nil
}

type literal struct {
	size int64
	plus bool // LITERAL+: the data follows without a continuation request
}

// scanLine appends the tokens of line to toks. If the line ends with a
// literal announcement, it returns it with ok set.
func scanLine(line string, toks *[]string) (lit literal, ok bool, err error) {
	i := 0
	for i < len(line) {
		switch c := line[i]; {
		case c == ' ':
			i++
		case c == '"':
			s, n, err := quoted(line[i:])
			if err != nil {
				return lit, false, err
			}
			*toks = append(*toks, s)
			i += n
		case c == '{':
			end := strings.IndexByte(line[i:], '}')
			if end < 0 || i+end != len(line)-1 {
				return lit, false, errSyntax
			}
			spec := line[i+1 : i+end]
			if strings.HasSuffix(spec, "+") {
				lit.plus = true
				spec = spec[:len(spec)-1]
			}
			if spec == "" || len(spec) > 12 {
				if len(spec) > 12 {
					return lit, false, errLiteralSize
				}
				return lit, false, errSyntax
			}
			n, err := strconv.ParseInt(spec, 10, 64)
			if err != nil || n < 0 {
				return lit, false, errSyntax
			}
			lit.size = n
			return lit, true, nil
		case c == '(' || c == ')':
			*toks = append(*toks, string(c))
			i++
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '(' && line[j] != ')' && line[j] != '"' {
				if line[j] < 0x20 || line[j] == 0x7f {
					return lit, false, errSyntax
				}
				j++
			}
			*toks = append(*toks, line[i:j])
			i = j
		}
	}
	return lit, false, nil
}

// quoted decodes a quoted string at the start of s and returns it and the
// number of bytes it took.
func quoted(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 >= len(s) || s[i+1] != '"' && s[i+1] != '\\' {
				return "", 0, errSyntax
			}
			i++
			b.WriteByte(s[i])
		case '\r', '\n':
			return "", 0, errSyntax
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errSyntax // unterminated
}

func validTag(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]+`, c) >= 0 {
			return false
		}
	}
	return true
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
