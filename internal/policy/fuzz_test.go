package policy

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzLoginCanon: a login name and its upper- and lower-case spellings
// resolve to one account; resolving is idempotent; an ASCII name resolves
// exactly as Dovecot does with auth_default_realm and %Lu (the default
// domain appended to a name without '@', then ASCII lower case).
func FuzzLoginCanon(f *testing.F) {
	for _, s := range []string{"bob", "BOB@Example.Test", " bob ", "straße", "STRASSE", "ſ", "\u212A", "İ", "ı", "ǅ", "\xff", "a@b@c", "@x", ""} {
		f.Add(s, "example.test", false)
	}
	f.Add("Bob@Other.Test", "example.test", true)
	f.Fuzz(func(t *testing.T, name, domain string, force bool) {
		domain = strings.ToLower(strings.TrimSpace(domain))
		if domain == "" || strings.ContainsAny(domain, "@ \t\r\n\v\f\u0085\u00a0") || !isASCII(domain) {
			domain, force = "", false
		}
		n := LoginNames{DefaultDomain: domain, ForceDomain: force}
		c := n.Canon(name)
		if again := n.Canon(c); again != c {
			t.Fatalf("Canon(%q) = %q, but Canon of that = %q", name, c, again)
		}
		for _, v := range []string{strings.ToUpper(name), strings.ToLower(name)} {
			if got := n.Canon(v); got != c {
				t.Fatalf("Canon(%q) = %q but Canon(%q) = %q", name, c, v, got)
			}
		}
		if isASCII(name) && !force {
			want := strings.TrimSpace(name)
			if domain != "" && !strings.Contains(want, "@") {
				want += "@" + domain
			}
			if want = strings.ToLower(want); c != want {
				t.Fatalf("Canon(%q) = %q, Dovecot resolves it to %q", name, c, want)
			}
		}
		if utf8.ValidString(name) && !utf8.ValidString(c) {
			t.Fatalf("Canon(%q) = %q is not UTF-8", name, c)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
