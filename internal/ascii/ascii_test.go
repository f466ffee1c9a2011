package ascii

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCase(t *testing.T) {
	for _, c := range []struct{ in, upper, lower string }{
		{"", "", ""},
		{"MAIL", "MAIL", "mail"},
		{"mAiL fRoM:<A@b>", "MAIL FROM:<A@B>", "mail from:<a@b>"},
		{"maıl", "MAıL", "maıl"},             // dotless i stays
		{"ſtarttls", "ſTARTTLS", "ſtarttls"}, // long s stays
		{"\u212aelvin", "\u212aELVIN", "\u212aelvin"},
		{"İSTANBUL", "İSTANBUL", "İstanbul"},
		{"\xc0BOUNDARY", "\xc0BOUNDARY", "\xc0boundary"}, // invalid UTF-8 kept byte for byte
	} {
		if got := Upper(c.in); got != c.upper {
			t.Errorf("Upper(%q) = %q, want %q", c.in, got, c.upper)
		}
		if got := Lower(c.in); got != c.lower {
			t.Errorf("Lower(%q) = %q, want %q", c.in, got, c.lower)
		}
	}
}

func TestEqualFold(t *testing.T) {
	for _, c := range []struct {
		s, t string
		want bool
	}{
		{"FROM:", "from:", true},
		{"From:", "FROM:", true},
		{"ſROM:", "FROM:", false}, // strings.EqualFold says true
		{"LAſT", "LAST", false},
		{"\u212a", "K", false},
		{"postmaster", "POSTMASTER", true},
		{"poſtmaster", "postmaster", false},
		{"a", "ab", false},
		{"@", "`", false}, // 0x40 and 0x60 differ by the case bit but are not letters
		{"[", "{", false},
	} {
		if got := EqualFold(c.s, c.t); got != c.want {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", c.s, c.t, got, c.want)
		}
	}
	if !HasPrefixFold("IPv6:::1", "ipv6:") || HasPrefixFold("IPv", "ipv6:") || HasPrefixFold("ıpv6:", "ipv6:") {
		t.Error("HasPrefixFold")
	}
}

// FuzzASCII: the mappings keep the length, touch ASCII letters only, and
// agree with strings' functions on ASCII text.
func FuzzASCII(f *testing.F) {
	f.Add("MAIL FROM:<a@b>", "mail from:<a@b>")
	f.Add("ſ\u212aı", "SKI")
	f.Fuzz(func(t *testing.T, s, u string) {
		up, lo := Upper(s), Lower(s)
		if len(up) != len(s) || len(lo) != len(s) {
			t.Fatalf("%q: lengths %d %d", s, len(up), len(lo))
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
			if !letter && (up[i] != c || lo[i] != c) {
				t.Fatalf("%q: byte %d (%q) changed", s, i, c)
			}
		}
		isASCII := func(x string) bool {
			for i := 0; i < len(x); i++ {
				if x[i] >= utf8.RuneSelf {
					return false
				}
			}
			return true
		}
		if isASCII(s) {
			if up != strings.ToUpper(s) || lo != strings.ToLower(s) {
				t.Fatalf("%q: differs from strings on ASCII", s)
			}
		}
		if isASCII(s) && isASCII(u) && EqualFold(s, u) != strings.EqualFold(s, u) {
			t.Fatalf("EqualFold(%q, %q) differs from strings on ASCII", s, u)
		}
		if EqualFold(s, u) != (Lower(s) == Lower(u)) {
			t.Fatalf("EqualFold(%q, %q) != (Lower == Lower)", s, u)
		}
	})
}
