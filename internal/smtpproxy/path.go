package smtpproxy

import (
	"errors"
	"strings"
)

// path is the address of a MAIL FROM or RCPT TO command.
type path struct {
	// addr is the address as the mail server uses it: local part without
	// its quotes and escapes, "@", the domain in lower case without a
	// trailing dot. "" for the null path <>.
	addr string
	// domain is addr's domain ("" when the address has none).
	domain string
	// routed says the local part holds routing (user%host, host!user) or
	// the domain is an address literal: the server may deliver it
	// somewhere else than the domain says, so it is never taken as local.
	routed bool
	// text is the path as postern sends it on: <local@domain>, the local
	// part quoted only where it must be.
	text string
}

var errBadPath = errors.New("bad address syntax")

// parsePath reads a path token (with or without its angle brackets, a
// source route is dropped as the server drops it). What postern cannot
// read with certainty is an error: comments, several addresses, stray
// brackets or quotes.
func parsePath(tok string) (path, error) {
	inner := tok
	if strings.HasPrefix(tok, "<") {
		if len(tok) < 2 || !strings.HasSuffix(tok, ">") {
			return path{}, errBadPath
		}
		inner = tok[1 : len(tok)-1]
	}
	if strings.HasPrefix(inner, "@") {
		route, rest, ok := strings.Cut(inner, ":")
		if !ok || !validRoute(route) {
			return path{}, errBadPath
		}
		inner = rest
	}
	if inner == "" {
		return path{text: "<>"}, nil
	}
	local, domain, err := splitAddr(inner)
	if err != nil {
		return path{}, err
	}
	p := path{domain: strings.TrimSuffix(strings.ToLower(domain), ".")}
	p.routed = strings.ContainsAny(local, "%!") || strings.HasPrefix(domain, "[")
	p.addr = local
	if domain != "" {
		p.addr += "@" + p.domain
	}
	p.text = "<" + quoteLocal(local)
	if domain != "" {
		p.text += "@" + domain
	}
	p.text += ">"
	return p, nil
}

// validRoute checks "@a,@b" (RFC 5321 A-d-l).
func validRoute(r string) bool {
	for _, d := range strings.Split(r, ",") {
		if len(d) < 2 || d[0] != '@' || !validDomain(d[1:]) {
			return false
		}
	}
	return true
}

// splitAddr splits local@domain, unquoting a quoted local part.
func splitAddr(s string) (local, domain string, err error) {
	rest := s
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		i := 1
		for ; i < len(s); i++ {
			c := s[i]
			if c == '\\' {
				i++
				if i >= len(s) {
					return "", "", errBadPath
				}
				b.WriteByte(s[i])
				continue
			}
			if c == '"' {
				break
			}
			b.WriteByte(c)
		}
		if i >= len(s) {
			return "", "", errBadPath
		}
		local, rest = b.String(), s[i+1:]
		if local == "" {
			return "", "", errBadPath
		}
		if rest == "" {
			return local, "", nil
		}
		if rest[0] != '@' {
			return "", "", errBadPath
		}
		domain = rest[1:]
	} else {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			local = s
		} else {
			local, domain = s[:at], s[at+1:]
		}
		if !validDotAtom(local) {
			return "", "", errBadPath
		}
		if at < 0 {
			return local, "", nil
		}
	}
	if !validDomain(domain) {
		return "", "", errBadPath
	}
	return local, domain, nil
}

// atext reports RFC 5322 atext, with 8-bit bytes for SMTPUTF8.
func atext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func validDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' {
			if s[i-1] == '.' {
				return false
			}
		} else if !atext(c) {
			return false
		}
	}
	return true
}

// validDomain accepts a host name (a trailing dot allowed) or an address
// literal [..].
func validDomain(d string) bool {
	if strings.HasPrefix(d, "[") {
		if len(d) < 3 || !strings.HasSuffix(d, "]") {
			return false
		}
		for i := 1; i < len(d)-1; i++ {
			if c := d[i]; c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\' {
				return false
			}
		}
		return true
	}
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c >= 0x80) {
				return false
			}
		}
	}
	return true
}

// quoteLocal writes a local part as a dot-atom, or quoted when it must be.
func quoteLocal(l string) string {
	if validDotAtom(l) {
		return l
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(l); i++ {
		if c := l[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(l[i])
	}
	b.WriteByte('"')
	return b.String()
}

// validParams checks MAIL/RCPT parameters (RFC 5321 esmtp-param): a
// keyword, optionally "=" and a value without white space, quotes,
// brackets or backslashes, so postern and the server read the same
// parameters.
func validParams(params []string) bool {
	for _, p := range params {
		key, val, hasVal := strings.Cut(p, "=")
		if key == "" || hasVal && val == "" {
			return false
		}
		for i := 0; i < len(key); i++ {
			if c := key[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' && i > 0) {
				return false
			}
		}
		for i := 0; i < len(val); i++ {
			if c := val[i]; c <= ' ' || c == 0x7f || c == '=' || c == '"' || c == '<' || c == '>' || c == '\\' {
				return false
			}
		}
	}
	return true
}
