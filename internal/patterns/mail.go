package patterns

import (
	"fmt"
	"strings"
)

// parseMailMask validates a mail-address mask such as *@example.com,
// info@* or trap@honeypot.example.com and returns it lower-cased. '*'
// matches any run of characters and '?' any one character.
func parseMailMask(s string) (string, error) {
	local, domain, _ := strings.Cut(s, "@")
	if strings.Contains(domain, "@") {
		return "", fmt.Errorf("bad mail mask %q: more than one '@'", s)
	}
	if local == "" || domain == "" {
		return "", fmt.Errorf("bad mail mask %q: want local@domain, e.g. *@example.com or info@*", s)
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c == 0x7f || c == ',' || c == '<' || c == '>' || c == '"' {
			return "", fmt.Errorf("bad mail mask %q: character %q is not allowed", s, c)
		}
	}
	return strings.ToLower(s), nil
}

// globMatch reports whether the lower-case string s matches the lower-case
// mask pattern with '*' and '?' wildcards. It runs in O(len(s)·len(mask))
// at worst and never recurses.
func globMatch(mask, s string) bool {
	mi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case mi < len(mask) && (mask[mi] == '?' || mask[mi] == s[si]):
			mi++
			si++
		case mi < len(mask) && mask[mi] == '*':
			star, mark = mi, si
			mi++
		case star >= 0:
			mi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for mi < len(mask) && mask[mi] == '*' {
		mi++
	}
	return mi == len(mask)
}

// mailSet matches mail addresses against masks. Exact addresses and the
// common *@domain and local@* forms are map lookups; other masks are globbed.
type mailSet struct {
	exact   map[string]struct{}
	domains map[string]struct{} // *@domain
	locals  map[string]struct{} // local@*
	globs   []string
}

func (m *mailSet) add(mask string) {
	local, domain, _ := strings.Cut(mask, "@")
	wild := func(s string) bool { return strings.ContainsAny(s, "*?") }
	switch {
	case !wild(mask):
		if m.exact == nil {
			m.exact = make(map[string]struct{})
		}
		m.exact[mask] = struct{}{}
	case local == "*" && !wild(domain):
		if m.domains == nil {
			m.domains = make(map[string]struct{})
		}
		m.domains[domain] = struct{}{}
	case domain == "*" && !wild(local):
		if m.locals == nil {
			m.locals = make(map[string]struct{})
		}
		m.locals[local] = struct{}{}
	default:
		m.globs = append(m.globs, mask)
	}
}

// match reports whether the lower-case address addr matches any mask.
func (m *mailSet) match(addr string) bool {
	if _, ok := m.exact[addr]; ok {
		return true
	}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		if _, ok := m.domains[addr[i+1:]]; ok {
			return true
		}
		if _, ok := m.locals[addr[:i]]; ok {
			return true
		}
	}
	for _, g := range m.globs {
		if globMatch(g, addr) {
			return true
		}
	}
	return false
}

// NormalizeMail lower-cases a mail address and strips the angle brackets an
// SMTP path may carry, so it can be matched against masks.
func NormalizeMail(addr string) string {
	addr = strings.TrimSpace(addr)
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	return strings.ToLower(addr)
}
