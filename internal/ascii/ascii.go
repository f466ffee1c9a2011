// Package ascii maps and compares letters the way mail servers compare
// protocol words: ASCII letters only, byte for byte (Postfix's and
// Dovecot's strcasecmp, Dovecot's i_toupper, PHP's strtolower).
//
// The strings package's case functions follow Unicode: strings.ToUpper
// turns "maıl" (dotless i) into "MAIL", strings.EqualFold("ſtarttls",
// "STARTTLS") is true (long s), and both can change a string's length. A
// gateway that used them would read a command, an address or a header
// differently from the server behind it.
package ascii

// Upper returns s with its ASCII letters upper-cased; every other byte is
// left as it is, so the result has the same length.
func Upper(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'a' <= c && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Lower returns s with its ASCII letters lower-cased; every other byte is
// left as it is, so the result has the same length.
func Lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// EqualFold reports whether s and t are equal when ASCII letters are
// compared without case; any other byte must be equal exactly.
func EqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if a == b {
			continue
		}
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// HasPrefixFold reports whether s begins with prefix, ASCII letters
// compared without case.
func HasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && EqualFold(s[:len(prefix)], prefix)
}
