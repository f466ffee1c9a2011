// Package mailaddr reads the address of an SMTP MAIL FROM or RCPT TO
// command the way Postfix reads it, or refuses it.
//
// Postfix is lenient: it takes RFC 822 forms with comments, phrases, white
// space and backslashes outside quotes, strips a source route, and later
// routes a local part containing '%', '!' or (quoted) '@' to another host.
// This package accepts only the RFC 5321 forms whose meaning to Postfix is
// certain and returns them in an internal form (local part unquoted, domain
// in lower case) together with flags for everything a backend may route
// differently from what the address seems to say. Anything else is an error,
// so a caller that refuses errors never lets through an address that
// Postfix would read differently. A caller relays Canonical(), never the
// client's bytes.
package mailaddr

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/postern/postern/internal/ascii"
)

// ErrSyntax is wrapped by every error this package returns for an address
// or argument it does not accept.
var ErrSyntax = errors.New("mail address syntax")

// MaxPathLen bounds the length of the path token read (RFC 5321 allows 256
// octets; longer forms are common enough with SRS and VERP that the limit
// is more generous, and the command line length bounds it anyway).
const MaxPathLen = 1024

// Flags record what was read besides the local part and the domain.
type Flags uint16

const (
	// SourceRoute: an RFC 821 source route ("@a,@b:") was given and
	// dropped, as Postfix drops it.
	SourceRoute Flags = 1 << iota
	// PercentHack: the local part contains '%'; Postfix rewrites
	// user%remote@local to user@remote (allow_percent_hack, on by default).
	PercentHack
	// BangPath: the local part contains '!'; Postfix rewrites host!user to
	// user@host (swap_bangpath, on by default).
	BangPath
	// AtInLocal: the quoted local part contains '@'; Postfix cracks it
	// open and routes "user@remote"@local to remote (resolve_dequoted).
	AtInLocal
	// AddressLiteral: the domain is an address literal, [192.0.2.1] or
	// [IPv6:2001:db8::1]; Postfix treats it as local only when it is one
	// of its own addresses.
	AddressLiteral
	// NoDomain: the RFC 5321 special <postmaster> without a domain.
	NoDomain
	// Unbracketed: the path had no angle brackets (Postfix accepts that
	// unless strict_rfc821_envelopes is set).
	Unbracketed
	// TrailingDot: one trailing dot after the domain was dropped, as
	// Postfix drops it.
	TrailingDot
	// Quoted: the local part was a quoted string.
	Quoted
)

// Routed is the set of flags under which a backend may deliver the address
// to a host other than the one its domain names.
const Routed = PercentHack | BangPath | AtInLocal

// Path is an SMTP reverse-path or forward-path in internal form.
type Path struct {
	// Local is the local part, unquoted (the quotes and backslashes of a
	// quoted string removed). "" only for the null path <>.
	Local string
	// Domain is the domain in lower case (ASCII letters only; UTF-8 labels
	// are kept as they are), without a trailing dot; an address literal is
	// normalised to "[192.0.2.1]" or "[IPv6:2001:db8::1]". "" for the null
	// path and for <postmaster>.
	Domain string
	// Literal is the address of an address-literal domain.
	Literal netip.Addr
	// Flags says what else was read.
	Flags Flags

	// addr is Address() when the path read held it as it is (no quotes,
	// route, trailing dot or upper-case domain): a substring of the
	// client's line, not a copy. "" otherwise.
	addr string
}

// IsNull reports whether p is the null path <>.
func (p Path) IsNull() bool { return p.Local == "" && p.Domain == "" }

// Routed reports whether a backend may route the address elsewhere than
// its domain says (percent hack, bang path, '@' inside a quoted local part).
func (p Path) Routed() bool { return p.Flags&Routed != 0 }

// InDomains reports whether p is an address in one of domains (keys in
// lower case, as Domain is) that no backend may route elsewhere: not the
// null path, not Routed, not an address literal. <postmaster> is local.
// A caller applies its relay check to every recipient for which this is
// false.
func (p Path) InDomains(domains map[string]bool) bool {
	switch {
	case p.IsNull() || p.Routed() || p.Flags&AddressLiteral != 0:
		return false
	case p.Flags&NoDomain != 0:
		return true
	}
	return domains[p.Domain]
}

// Address returns the internal form "local@domain" (Postfix's internal,
// unquoted form); "" for the null path, the bare local part for
// <postmaster>.
func (p Path) Address() string {
	if p.addr != "" {
		return p.addr
	}
	if p.Domain == "" {
		return p.Local
	}
	return p.Local + "@" + p.Domain
}

// Key returns the address case-folded, for comparing addresses the way
// Postfix's table lookups compare them (case-insensitively).
func (p Path) Key() string { return strings.ToLower(p.Address()) }

// Canonical returns the path as postern relays it: "<local@domain>" with
// the local part quoted only when it is not a dot-string, no source route,
// the domain in lower case; "<>" for the null path.
func (p Path) Canonical() string {
	if p.IsNull() {
		return "<>"
	}
	var buf [128]byte // most paths: the string is the one allocation
	return string(p.AppendCanonical(buf[:0]))
}

// AppendCanonical appends Canonical() to b: a caller writing the command
// into its own buffer makes no string.
func (p Path) AppendCanonical(b []byte) []byte {
	if p.IsNull() {
		return append(b, "<>"...)
	}
	b = append(b, '<')
	b = appendLocal(b, p.Local)
	if p.Domain != "" {
		b = append(b, '@')
		b = append(b, p.Domain...)
	}
	return append(b, '>')
}

// String returns Canonical().
func (p Path) String() string { return p.Canonical() }

func appendLocal(b []byte, local string) []byte {
	if isDotString(local) {
		return append(b, local...)
	}
	b = append(b, '"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, local[i])
	}
	return append(b, '"')
}

func syntaxErr(tok, format string, args ...any) error {
	return fmt.Errorf("%w: %q: %s", ErrSyntax, printable(tok), fmt.Sprintf(format, args...))
}

// printable shortens and escapes s for an error message.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// ParsePath reads one path token, as Postfix's SMTP tokenizer hands it to
// its address parser: "<local@domain>", "<>", "<@route:local@domain>", or
// an unbracketed "local@domain". The local part is an RFC 5321 dot-string
// or quoted string (UTF-8 allowed, as with SMTPUTF8); the domain is a host
// name or an address literal. White space, comments, phrases, nested
// brackets, backslashes outside quotes, empty local parts, domains written
// as bare IP addresses and every other form Postfix might read differently
// are errors.
func ParsePath(tok string) (Path, error) {
	var p Path
	if len(tok) > MaxPathLen {
		return p, syntaxErr(tok, "longer than %d octets", MaxPathLen)
	}
	inner := tok
	if strings.HasPrefix(tok, "<") {
		if len(tok) < 2 || tok[len(tok)-1] != '>' {
			return p, syntaxErr(tok, "unbalanced angle brackets")
		}
		inner = tok[1 : len(tok)-1]
		if inner == "" {
			return p, nil // the null path
		}
	} else {
		p.Flags |= Unbracketed
		if inner == "" {
			return p, syntaxErr(tok, "empty")
		}
	}
	if strings.HasPrefix(inner, "@") {
		// Postfix truncates at the first colon; a route whose domains are
		// plain host names has no other colon, so both read the same.
		i := strings.IndexByte(inner, ':')
		if i < 0 {
			return p, syntaxErr(tok, "empty local part")
		}
		for _, hop := range strings.Split(inner[:i], ",") {
			if !strings.HasPrefix(hop, "@") {
				return p, syntaxErr(tok, "bad source route")
			}
			if _, _, err := parseHostname(hop[1:]); err != nil {
				return p, syntaxErr(tok, "bad source route: %v", err)
			}
		}
		inner = inner[i+1:]
		p.Flags |= SourceRoute
	}
	local, rest, quoted, err := parseLocal(inner)
	if err != nil {
		return p, syntaxErr(tok, "%v", err)
	}
	if quoted {
		p.Flags |= Quoted
	}
	if local == "" {
		return p, syntaxErr(tok, "empty local part")
	}
	p.Local = local
	if rest == "" {
		// RFC 5321: <Postmaster> without a domain must be accepted. Any
		// other local part alone gets Postfix's $myhostname, which postern
		// does not know.
		if !ascii.EqualFold(local, "postmaster") {
			return Path{}, syntaxErr(tok, "no domain")
		}
		p.Flags |= NoDomain
		return p, nil
	}
	if rest[0] != '@' {
		return Path{}, syntaxErr(tok, "unexpected %q after the local part", rest[0])
	}
	dom := rest[1:]
	if strings.HasPrefix(dom, "[") {
		d, a, err := parseLiteral(dom)
		if err != nil {
			return Path{}, syntaxErr(tok, "%v", err)
		}
		p.Domain, p.Literal = d, a
		p.Flags |= AddressLiteral
	} else {
		d, dot, err := parseHostname(dom)
		if err != nil {
			return Path{}, syntaxErr(tok, "%v", err)
		}
		p.Domain = d
		if dot {
			p.Flags |= TrailingDot
		}
	}
	if p.Flags&(SourceRoute|Quoted) == 0 && len(inner) == len(local)+1+len(p.Domain) &&
		inner[:len(local)] == local && inner[len(local)] == '@' && inner[len(local)+1:] == p.Domain {
		p.addr = inner // Address() as read: no copy
	}
	if strings.ContainsRune(local, '%') {
		p.Flags |= PercentHack
	}
	if strings.ContainsRune(local, '!') {
		p.Flags |= BangPath
	}
	if strings.ContainsRune(local, '@') {
		p.Flags |= AtInLocal
	}
	return p, nil
}

// parseLocal reads a dot-string or a quoted string at the start of s and
// returns it unquoted with what follows it.
func parseLocal(s string) (local, rest string, quoted bool, err error) {
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); {
			c := s[i]
			switch {
			case c == '"':
				if !utf8.ValidString(b.String()) {
					return "", "", true, errors.New("invalid UTF-8 in the local part")
				}
				return b.String(), s[i+1:], true, nil
			case c == '\\':
				// quoted-pair: backslash and one printable ASCII character.
				if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
					return "", "", true, errors.New("bad quoted pair")
				}
				b.WriteByte(s[i+1])
				i += 2
			case c >= 32 && c <= 126 || c >= 0x80:
				b.WriteByte(c)
				i++
			default:
				return "", "", true, fmt.Errorf("control character %#x in a quoted string", c)
			}
		}
		return "", "", true, errors.New("unterminated quoted string")
	}
	end := strings.IndexByte(s, '@')
	if end < 0 {
		end = len(s)
	}
	local = s[:end]
	if !isDotString(local) {
		return "", "", false, errors.New("the local part is not a dot-string")
	}
	return local, s[end:], false, nil
}

// isAtext reports whether c may appear in an atom (RFC 5322 atext; bytes
// of UTF-8 sequences are checked separately).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isDotString reports whether s is a non-empty RFC 5321 dot-string (UTF-8
// allowed), which needs no quotes.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

// parseHostname checks a domain name and returns it in lower case without
// one trailing dot.
func parseHostname(d string) (string, bool, error) {
	dot := false
	if strings.HasSuffix(d, ".") && !strings.HasSuffix(d, "..") {
		d, dot = d[:len(d)-1], true
	}
	if d == "" {
		return "", false, errors.New("empty domain")
	}
	if len(d) > 253 {
		return "", false, errors.New("domain longer than 253 octets")
	}
	if !utf8.ValidString(d) {
		return "", false, errors.New("invalid UTF-8 in the domain")
	}
	var last string
	for rest := d; ; {
		l, more, found := strings.Cut(rest, ".")
		last = l
		if l == "" {
			return "", false, errors.New("empty domain label")
		}
		if len(l) > 63 {
			return "", false, errors.New("domain label longer than 63 octets")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", false, errors.New("domain label begins or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c >= 0x80) {
				return "", false, fmt.Errorf("character %q in the domain", c)
			}
		}
		if !found {
			break
		}
		rest = more
	}
	if strings.Trim(last, "0123456789") == "" {
		// 192.0.2.1 unbracketed: Postfix refuses to route it; whether
		// it is refused at RCPT or later depends on its configuration.
		return "", false, errors.New("a numeric top-level label (an IP address needs [brackets])")
	}
	return ascii.Lower(d), dot, nil
}

// parseLiteral reads [IPv4] or [IPv6:addr] and returns its normal form.
func parseLiteral(d string) (string, netip.Addr, error) {
	if !strings.HasSuffix(d, "]") || len(d) < 3 {
		return "", netip.Addr{}, errors.New("unterminated address literal")
	}
	in := d[1 : len(d)-1]
	if ascii.HasPrefixFold(in, "IPv6:") {
		a, err := netip.ParseAddr(in[5:])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", netip.Addr{}, errors.New("bad IPv6 address literal")
		}
		return "[IPv6:" + a.String() + "]", a, nil
	}
	a, err := netip.ParseAddr(in)
	if err != nil || !a.Is4() {
		return "", netip.Addr{}, errors.New("bad address literal (only IPv4 and IPv6: literals)")
	}
	return "[" + a.String() + "]", a, nil
}
