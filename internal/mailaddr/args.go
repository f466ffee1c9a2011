package mailaddr

import (
	"fmt"
	"strings"

	"github.com/postern/postern/internal/ascii"
)

// Arg is the argument of a MAIL or RCPT command: its path and its ESMTP
// parameters.
type Arg struct {
	// Keyword is "FROM:" or "TO:" in upper case.
	Keyword string
	// Path is the address.
	Path Path
	// Params are the ESMTP parameters (SIZE=1000, BODY=8BITMIME, ...) as
	// given, in order.
	Params []string
}

// Canonical returns the argument as postern relays it after the verb:
// "FROM:<local@domain> PARAM PARAM" with single spaces.
func (a Arg) Canonical() string {
	var buf [128]byte // most arguments: the string is the one allocation
	return string(a.AppendCanonical(buf[:0]))
}

// AppendCanonical appends Canonical() to b: a caller writing the command
// into its own buffer makes no string.
func (a Arg) AppendCanonical(b []byte) []byte {
	b = append(b, a.Keyword...)
	b = a.Path.AppendCanonical(b)
	for _, p := range a.Params {
		b = append(b, ' ')
		b = append(b, p...)
	}
	return b
}

// ParseMailArg reads the argument of MAIL (everything after the verb, for
// example "FROM:<a@example.org> SIZE=100"). The null path is accepted.
func ParseMailArg(args string) (Arg, error) { return parseArg(args, "FROM:", true) }

// ParseRcptArg reads the argument of RCPT ("TO:<b@example.org>"). The null
// path is an error.
func ParseRcptArg(args string) (Arg, error) { return parseArg(args, "TO:", false) }

// ParseMailTokens is ParseMailArg for the argument already split by
// Tokens, as a command line's tokens after its verb: Postfix, too, splits
// the command line once.
func ParseMailTokens(toks []string) (Arg, error) { return parseArgTokens(toks, "FROM:", true) }

// ParseRcptTokens is ParseRcptArg for the argument already split by
// Tokens.
func ParseRcptTokens(toks []string) (Arg, error) { return parseArgTokens(toks, "TO:", false) }

func parseArg(args, keyword string, allowNull bool) (Arg, error) {
	toks, err := Tokens(args)
	if err != nil {
		return Arg{Keyword: keyword}, err
	}
	return parseArgTokens(toks, keyword, allowNull)
}

func parseArgTokens(toks []string, keyword string, allowNull bool) (Arg, error) {
	a := Arg{Keyword: keyword}
	var err error
	if len(toks) < 2 || !ascii.EqualFold(toks[0], keyword) {
		return a, fmt.Errorf("%w: expected %s<address>", ErrSyntax, keyword)
	}
	if a.Path, err = ParsePath(toks[1]); err != nil {
		return a, err
	}
	if a.Path.IsNull() && !allowNull {
		return a, fmt.Errorf("%w: the null path <> is not a recipient", ErrSyntax)
	}
	for _, p := range toks[2:] {
		if err := checkParam(p); err != nil {
			return a, err
		}
	}
	if len(toks) > 2 {
		a.Params = toks[2:]
	}
	return a, nil
}

// checkParam accepts esmtp-keyword ["=" esmtp-value] (RFC 5321), without
// the quoting characters Postfix's tokenizer would treat specially.
func checkParam(p string) error {
	kw, val, hasVal := strings.Cut(p, "=")
	if kw == "" || !isAlnum(kw[0]) {
		return fmt.Errorf("%w: ESMTP parameter %q", ErrSyntax, printable(p))
	}
	for i := 1; i < len(kw); i++ {
		if !isAlnum(kw[i]) && kw[i] != '-' {
			return fmt.Errorf("%w: ESMTP parameter %q", ErrSyntax, printable(p))
		}
	}
	if hasVal && val == "" {
		return fmt.Errorf("%w: ESMTP parameter %q has an empty value", ErrSyntax, printable(p))
	}
	for i := 0; i < len(val); i++ {
		c := val[i]
		if c < 33 || c > 126 || c == '=' || c == '"' || c == '<' || c == '>' || c == '\\' {
			return fmt.Errorf("%w: ESMTP parameter %q", ErrSyntax, printable(p))
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isSpace is C's isspace in the C locale, which Postfix's tokenizer uses.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// Tokens splits an SMTP command's text the way Postfix's smtpd tokenizer
// (smtpd_token.c) does: tokens are separated by white space; "<...>" and
// "\"...\"" keep white space inside them (nesting quotes in brackets and
// brackets in brackets, with backslash escapes); a token that reads "to:"
// or "from:" (any case) ends at its colon. An unterminated quote or
// bracket is an error (Postfix's SMTPD_TOK_ERROR).
func Tokens(s string) ([]string, error) { return AppendTokens(nil, s) }

// AppendTokens is Tokens appending the tokens to toks (a caller's
// buffer, so that splitting a line allocates nothing).
func AppendTokens(toks []string, s string) ([]string, error) {
	// Every byte of a token is a byte of s, in order (quotes and escapes
	// are kept, white space outside them ends the token), so a token is
	// the substring between where it begins and where it ends: no copy.
	start := -1 // where the current token began; -1: between tokens
	for i := 0; i < len(s); {
		c := s[i]
		if isSpace(c) {
			if start >= 0 {
				toks = append(toks, s[start:i])
				start = -1
			}
			i++
			continue
		}
		if start < 0 {
			start = i
		}
		i++
		switch c {
		case '<', '"':
			want := byte('>')
			if c == '"' {
				want = '"'
			}
			j, err := quoted(s, i, want)
			if err != nil {
				return nil, err
			}
			i = j
		case ':':
			if t := s[start:i]; ascii.EqualFold(t, "to:") || ascii.EqualFold(t, "from:") {
				toks = append(toks, t)
				start = -1
			}
		case '\\':
			if i < len(s) {
				i++ // the escaped byte belongs to the token, white space or not
			}
		}
	}
	if start >= 0 {
		toks = append(toks, s[start:])
	}
	return toks, nil
}

// quoted finds, in s[i:], the quote that closes the one before i
// (Postfix's smtp_quoted) and returns the index after it.
func quoted(s string, i int, last byte) (int, error) {
	var st [8]byte // nesting rarely goes deeper; append grows it if it does
	stack := append(st[:0], last)
	wanted := last
	for i < len(s) {
		c := s[i]
		i++
		switch {
		case c == '\\':
			if i >= len(s) {
				return i, errUnterminated
			}
			i++
		case c == wanted:
			if len(stack) == 1 {
				return i, nil
			}
			stack = stack[:len(stack)-1]
			wanted = stack[len(stack)-1]
		case c == '"':
			stack = append(stack, '"')
			wanted = '"'
		case c == '<' && wanted == '>':
			stack = append(stack, '>')
			wanted = '>'
		}
	}
	return i, errUnterminated
}

var errUnterminated = fmt.Errorf("%w: unterminated quote or angle bracket", ErrSyntax)
