package imapproxy

import (
	"bytes"
	"strings"
)

// This file is a test-only model of how Dovecot 2.3's imap-login reads one
// pre-login command (src/lib-imap/imap-parser.c with no flags,
// src/imap-login/imap-login-client.c and client-authenticate.c), written
// from Dovecot's source independently of parse.go, so that the fuzz target
// and the table tests can check postern's reader against it: whatever
// postern accepts, Dovecot must read the same way, and both must go on
// reading at the same byte.

// dcArg is one argument as Dovecot's parser returns it.
type dcArg struct {
	kind argKind
	s    string
	list []dcArg
}

// dcCmd is one command as Dovecot reads it.
type dcCmd struct {
	tag, name string
	args      []dcArg
	mech, ir  string // AUTHENTICATE
}

const (
	dcTagMax     = 126  // IMAP_TAG_MAX_LEN
	dcMaxLine    = 8192 // IMAP_LOGIN_MAX_LINE_LENGTH
	dcResultOK   = 1
	dcResultBad  = 0  // a BAD, then Dovecot skips to the next LF
	dcResultMore = -1 // the input ended first
	dcResultBye  = -2 // Dovecot disconnects
)

// dovecotRead reads one command at the start of b. It returns the result,
// the command (when ok), and where the next command starts (for a bad
// command: after the next LF from where the error was found).
func dovecotRead(b []byte) (dcCmd, int, int) {
	var cmd dcCmd
	i := 0
	bad := func(at int) (dcCmd, int, int) {
		j := bytes.IndexByte(b[at:], '\n')
		if j < 0 {
			return dcCmd{}, dcResultMore, len(b)
		}
		return dcCmd{}, dcResultBad, at + j + 1
	}
	word := func(tag bool) (string, int) { // imap_parser_read_next_atom
		for j := i; j < len(b); j++ {
			switch c := b[j]; {
			case c == ' ' || c == '\r' || c == '\n':
				w := string(b[i:j])
				if j == i {
					return "", -1
				}
				i = j
				if c == ' ' {
					i++
				}
				return w, 1
			case strings.IndexByte(`(){%*"\]`, c) >= 0, tag && c == '+', c < ' ', c >= 0x80:
				return "", -1
			}
		}
		return "", 0
	}
	tag, r := word(true)
	if r == 0 {
		return cmd, dcResultMore, len(b)
	}
	if r < 0 || len(tag) > dcTagMax {
		return bad(i)
	}
	cmd.tag = tag
	name, r := word(false)
	if r == 0 {
		return cmd, dcResultMore, len(b)
	}
	if r < 0 {
		return bad(i)
	}
	cmd.name = name
	if strings.EqualFold(name, "AUTHENTICATE") {
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\r' && b[j] != '\n' {
			j++
		}
		if j == len(b) {
			return cmd, dcResultMore, len(b)
		}
		if j == i {
			return bad(i)
		}
		cmd.mech = string(b[i:j])
		if b[j] == ' ' {
			j++
		}
		k := bytes.IndexByte(b[j:], '\n')
		if k < 0 {
			return cmd, dcResultMore, len(b)
		}
		cmd.ir = strings.TrimSuffix(string(b[j:j+k]), "\r")
		return cmd, dcResultOK, j + k + 1
	}
	// imap_parser_read_args(parser, 0, 0, ...)
	type frame struct{ args []dcArg }
	var stack []frame
	var cur []dcArg
	for {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		if i > dcMaxLine {
			return bad(i)
		}
		if i == len(b) {
			return cmd, dcResultMore, len(b)
		}
		switch c := b[i]; c {
		case '\r', '\n':
			if c == '\r' {
				if i+1 == len(b) {
					return cmd, dcResultMore, len(b)
				}
				if b[i+1] != '\n' {
					return bad(i)
				}
				i++
			}
			if len(stack) > 0 {
				return bad(i)
			}
			cmd.args = cur
			return cmd, dcResultOK, i + 1
		case '"':
			var s []byte
			j := i + 1
			for ; ; j++ {
				if j == len(b) {
					return cmd, dcResultMore, len(b)
				}
				if b[j] == '"' {
					break
				}
				if b[j] == 0 {
					return bad(j)
				}
				if b[j] == '\\' {
					if j+1 == len(b) {
						return cmd, dcResultMore, len(b)
					}
					j++
				}
				if b[j] == '\r' || b[j] == '\n' {
					return bad(j)
				}
				s = append(s, b[j])
			}
			cur = append(cur, dcArg{kind: argString, s: string(s)})
			i = j + 1
		case '{':
			j := i + 1
			var size uint64
			nonsync := false
			for ; ; j++ {
				if j == len(b) {
					return cmd, dcResultMore, len(b)
				}
				if b[j] == '}' {
					break
				}
				if nonsync {
					return bad(j)
				}
				if b[j] == '+' {
					nonsync = true
					continue
				}
				if b[j] < '0' || b[j] > '9' {
					return bad(j)
				}
				if size > (1<<64-1)/10 {
					return cmd, dcResultBye, j
				}
				size = size*10 + uint64(b[j]-'0')
			}
			j++
			if j >= dcMaxLine || size > uint64(dcMaxLine-j) {
				return cmd, dcResultBye, j
			}
			if j < len(b) && b[j] == '\r' {
				j++
			}
			if j == len(b) {
				return cmd, dcResultMore, len(b)
			}
			if b[j] != '\n' {
				return bad(j)
			}
			j++
			if uint64(len(b)-j) < size {
				return cmd, dcResultMore, len(b)
			}
			cur = append(cur, dcArg{kind: argString, s: string(b[j : j+int(size)])})
			i = j + int(size)
		case '(':
			stack = append(stack, frame{cur})
			cur = nil
			i++
		case ')':
			if len(stack) == 0 {
				return bad(i)
			}
			parent := stack[len(stack)-1].args
			stack = stack[:len(stack)-1]
			cur = append(parent, dcArg{kind: argList, list: cur})
			i++
		default:
			if c == '~' {
				if i+1 == len(b) {
					return cmd, dcResultMore, len(b)
				}
				if b[i+1] == '{' {
					return bad(i)
				}
			}
			j := i
			for ; ; j++ {
				if j == len(b) {
					return cmd, dcResultMore, len(b)
				}
				d := b[j]
				if d == ' ' || d == '\r' || d == '\n' {
					break
				}
				if d == ')' {
					if len(stack) > 0 {
						break
					}
					return bad(j)
				}
				if d <= ' ' || d == 0x7f || d >= 0x80 || d == '(' || d == '{' || d == '"' {
					return bad(j)
				}
			}
			a := dcArg{kind: argAtom, s: string(b[i:j])}
			if strings.EqualFold(a.s, "NIL") {
				a.kind = argNil
			}
			cur = append(cur, a)
			i = j
		}
	}
}

// sameArgs compares postern's arguments with Dovecot's.
func sameArgs(p []arg, d []dcArg) bool {
	if len(p) != len(d) {
		return false
	}
	for i := range p {
		if p[i].kind != d[i].kind || p[i].s != d[i].s || !sameArgs(p[i].list, d[i].list) {
			return false
		}
	}
	return true
}
