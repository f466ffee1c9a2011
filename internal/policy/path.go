package policy

import (
	"net/netip"
	"path"
	"strings"
)

// maxUnescape bounds how many layers of percent-encoding CleanPath peels
// off. A path still changing after that many is not canonical: every path
// rule applies to it (see AllowPath).
const maxUnescape = 8

// CleanPath returns the canonical form of a request path for path rules:
// percent-escapes decoded (repeatedly, so double encoding cannot hide a
// segment; a malformed escape is kept as written and the valid ones around
// it are still decoded), backslashes read as slashes, ";parameters"
// dropped, dot segments resolved and repeated slashes collapsed. "/%61dmin",
// "//admin", "/x/../admin", "/admin%2f", "/%2e%2e/admin" and "/admin;x=1"
// all clean to "/admin". Case is kept; rules compare case-insensitively.
func CleanPath(p string) string {
	c, _ := cleanPath(p)
	return c
}

// cleanPath is CleanPath; stable is false when the path still held escapes
// after maxUnescape rounds of decoding.
func cleanPath(p string) (clean string, stable bool) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	stable = true
	for i := 0; ; i++ {
		d := unescape(p)
		if d == p {
			break
		}
		if i == maxUnescape {
			stable = false
			break
		}
		p = d
	}
	p = strings.ReplaceAll(p, "\\", "/")
	if strings.IndexByte(p, ';') >= 0 {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			if j := strings.IndexByte(s, ';'); j >= 0 {
				segs[i] = s[:j]
			}
		}
		p = strings.Join(segs, "/")
	}
	return path.Clean("/" + p), stable
}

// simplePath reports whether p (up to any query) is already canonical
// apart from case and a trailing slash: ASCII letters, digits and "-_.~/!$&'()*+,=:@"
// only, no empty or dot segments. Such a path needs no cleaning, so the
// common request costs no allocation.
func simplePath(p string) (string, bool) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if p == "" || p[0] != '/' {
		return "", false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			c := p[i]
			if c >= 0x80 || c <= ' ' || c == '%' || c == '\\' || c == ';' || c == 0x7f {
				return "", false
			}
			continue
		}
		seg := p[segStart:i]
		if (seg == "" && i < len(p)) || seg == "." || seg == ".." {
			return "", false
		}
		segStart = i + 1
	}
	return p, true
}

// hasFoldPrefix reports whether s starts with prefix, which is lower case,
// ignoring ASCII case.
func hasFoldPrefix(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// pathAllowed is AllowPath for one service's rules.
func (s *Service) pathAllowed(p string, addr netip.Addr) bool {
	if len(s.Paths) == 0 {
		return true
	}
	clean, all := pathKey(p)
	for i := range s.Paths {
		r := &s.Paths[i]
		if (all || hasFoldPrefix(clean, r.Prefix)) && !allowed(r.Grant, r.Deny, addr) {
			return false
		}
	}
	return true
}

// pathKey returns the lower-cased canonical form of request path p that
// rule prefixes are compared with; all is true when p cannot be made
// canonical, and then every rule applies.
func pathKey(p string) (clean string, all bool) {
	if c, ok := simplePath(p); ok {
		return c, false // compared with hasFoldPrefix: no lower-casing needed
	}
	c, stable := cleanPath(p)
	return strings.ToLower(c), !stable
}

// unescape decodes every valid %XX escape of s; malformed ones stay as
// written.
func unescape(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
