package smtpproxy

import (
	"errors"
	"strings"

	"github.com/postern/postern/internal/mailaddr"
)

// How a command line is read.
//
// postern must read every command exactly as the mail server behind it
// does, or a command it passes as harmless is executed as something else
// (a verb followed by a TAB that postern did not recognise, but Postfix
// did, once let AUTH, XCLIENT and RCPT through unchecked). So postern
// tokenizes a line with Postfix's rules (smtpd_token): tokens are separated
// by runs of white space, leading and trailing white space is ignored, the
// verb is compared without regard to case, "<…>" and "\"…\"" protect the
// white space inside them, a backslash escapes the next byte, and "FROM:" /
// "TO:" end a token. Lines holding control characters other than TAB never
// get here (they are refused as binary data), so the white space is SP and
// TAB.
//
// postern then relays only what it rewrote itself: the verb in upper case
// and its arguments joined by single spaces — the canonical form, which any
// RFC 5321 server reads the same way — and only for verbs it knows. Every
// other verb is refused without reaching the backend.

// verb identifies a command postern knows.
type verb uint8

// The verbs.
const (
	verbUnknown verb = iota
	verbEHLO
	verbHELO
	verbSTARTTLS
	verbAUTH
	verbMAIL
	verbRCPT
	verbDATA
	verbBDAT
	verbRSET
	verbNOOP
	verbQUIT
	verbHELP
	verbVRFY
	verbEXPN
	verbPrivileged // XCLIENT, XFORWARD, ETRN, …: never from a client
	verbNonSMTP    // an HTTP request or a mail header sent as a command
)

var verbs = map[string]verb{
	"EHLO": verbEHLO, "HELO": verbHELO, "STARTTLS": verbSTARTTLS, "AUTH": verbAUTH,
	"MAIL": verbMAIL, "RCPT": verbRCPT, "DATA": verbDATA, "BDAT": verbBDAT,
	"RSET": verbRSET, "NOOP": verbNOOP, "QUIT": verbQUIT, "HELP": verbHELP,
	"VRFY": verbVRFY, "EXPN": verbEXPN,
	"XCLIENT": verbPrivileged, "XFORWARD": verbPrivileged, "XEXCH50": verbPrivileged,
	"ETRN": verbPrivileged, "ATRN": verbPrivileged, "TURN": verbPrivileged,
	"X-EXPS": verbPrivileged, "X-LINK2STATE": verbPrivileged, "XSHADOW": verbPrivileged,
	"XUSR": verbPrivileged, "XQDISCARD": verbPrivileged, "XPROXY": verbPrivileged,
	"XAUTH": verbPrivileged, "XSTATE": verbPrivileged,
	// Postfix hangs up on these (smtpd_forbidden_commands), and so does postern.
	"CONNECT": verbNonSMTP, "GET": verbNonSMTP, "POST": verbNonSMTP, "PUT": verbNonSMTP,
	"HEAD": verbNonSMTP, "OPTIONS": verbNonSMTP, "DELETE": verbNonSMTP, "PATCH": verbNonSMTP,
}

// command is one client command line as the backend reads it.
type command struct {
	verb verb
	name string   // the verb as sent (for log lines)
	args []string // the tokens after the verb, quoting and escapes kept
}

// errBadSyntax: a quote or angle bracket that is not closed, or a line
// with no token.
var errBadSyntax = errors.New("bad syntax")

// parseCommand reads a command line (without its line ending, free of
// control characters other than TAB) with Postfix's tokenizer rules
// (mailaddr.Tokens).
func parseCommand(line string) (command, error) { return parseCommandInto(nil, line) }

// parseCommandInto is parseCommand splitting the line into buf's
// storage (a session's, reused command after command: a command's args
// are valid until the next is read).
func parseCommandInto(buf []string, line string) (command, error) {
	toks, err := mailaddr.AppendTokens(buf[:0], line)
	if err != nil {
		return command{}, errBadSyntax
	}
	if len(toks) == 0 {
		return command{}, errBadSyntax
	}
	c := command{name: toks[0], args: toks[1:]}
	c.verb = lookupVerb(toks[0])
	if c.verb == verbUnknown && isHeaderName(toks[0]) {
		c.verb = verbNonSMTP
	}
	return c, nil
}

// lookupVerb is verbs[ascii.Upper(t)]: the verbs of a message's session
// by a switch, the others from the map, without a copy of t.
func lookupVerb(t string) verb {
	var u [16]byte
	if len(t) > len(u) {
		return verbUnknown // no verb is that long
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		u[i] = c
	}
	switch string(u[:len(t)]) {
	case "EHLO":
		return verbEHLO
	case "MAIL":
		return verbMAIL
	case "RCPT":
		return verbRCPT
	case "DATA":
		return verbDATA
	case "QUIT":
		return verbQUIT
	case "RSET":
		return verbRSET
	}
	return verbs[string(u[:len(t)])]
}

// isHeaderName reports whether a verb looks like a mail header name
// ("Subject:", "From:"): a client that sends a message as commands.
func isHeaderName(t string) bool {
	if len(t) < 2 || t[len(t)-1] != ':' {
		return false
	}
	for i := 0; i < len(t)-1; i++ {
		if c := t[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// canonicalVerb is how each verb is written to the backend.
var canonicalVerb = [...]string{
	verbEHLO: "EHLO", verbHELO: "HELO", verbSTARTTLS: "STARTTLS", verbAUTH: "AUTH",
	verbMAIL: "MAIL", verbRCPT: "RCPT", verbDATA: "DATA", verbBDAT: "BDAT",
	verbRSET: "RSET", verbNOOP: "NOOP", verbQUIT: "QUIT", verbHELP: "HELP",
	verbVRFY: "VRFY", verbEXPN: "EXPN",
}

// line returns the command in canonical form: the verb in upper case, then
// the arguments separated by single spaces.
func (c command) line() string {
	n := len(canonicalVerb[c.verb])
	for _, a := range c.args {
		n += 1 + len(a)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(canonicalVerb[c.verb])
	for _, a := range c.args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	return b.String()
}
