package mailaddr

import (
	"slices"
	"strings"
	"testing"
)

// tokensByCopy is Tokens as it was written first, copying each token
// byte by byte: the reference the substring version must match.
func tokensByCopy(s string) ([]string, error) {
	var toks []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		i++
		switch {
		case isSpace(c):
			flush()
		case c == '<' || c == '"':
			want := byte('>')
			if c == '"' {
				want = '"'
			}
			cur.WriteByte(c)
			stack := []byte{want}
			closed := false
			for i < len(s) && !closed {
				c := s[i]
				i++
				cur.WriteByte(c)
				switch {
				case c == '\\':
					if i >= len(s) {
						return nil, errUnterminated
					}
					cur.WriteByte(s[i])
					i++
				case c == stack[len(stack)-1]:
					stack = stack[:len(stack)-1]
					closed = len(stack) == 0
				case c == '"':
					stack = append(stack, '"')
				case c == '<' && stack[len(stack)-1] == '>':
					stack = append(stack, '>')
				}
			}
			if !closed {
				return nil, errUnterminated
			}
		case c == ':':
			cur.WriteByte(c)
			if t := cur.String(); strings.EqualFold(t, "to:") || strings.EqualFold(t, "from:") {
				flush()
			}
		default:
			if c == '\\' {
				cur.WriteByte(c)
				if i >= len(s) {
					break
				}
				c = s[i]
				i++
			}
			cur.WriteByte(c)
		}
	}
	flush()
	return toks, nil
}

var tokenSeeds = []string{
	"MAIL FROM:<a@example.test> SIZE=10240 BODY=8BITMIME",
	"rcpt to: <\"b c\"@example.test>  NOTIFY=NEVER",
	"MAIL From:<<a@b>> x\\ y \"q\\\"\" \\", "RCPT TO:<a@b", "\"open", "x:y: To: from:a",
	"MAIL\tFROM:<\"<\\>\"@x>\v\f\r", "", "   ", "a\\", "<\"<>\">", "TO:TO:",
}

func TestTokensAreSubstrings(t *testing.T) {
	for _, s := range tokenSeeds {
		got, err := Tokens(s)
		want, werr := tokensByCopy(s)
		if !slices.Equal(got, want) || (err == nil) != (werr == nil) {
			t.Errorf("Tokens(%q) = %q, %v; by copy %q, %v", s, got, err, want, werr)
		}
	}
	// The only allocation left is the slice of tokens.
	line := "MAIL FROM:<sender@other.test> SIZE=10240 BODY=8BITMIME"
	if raceEnabled {
		return // the race detector allocates on its own
	}
	if n := testing.AllocsPerRun(100, func() { Tokens(line) }); n > 3 {
		t.Errorf("Tokens: %v allocations, want at most 3 (the growing slice)", n)
	}
}

func FuzzTokens(f *testing.F) {
	for _, s := range tokenSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Tokens(s)
		want, werr := tokensByCopy(s)
		if !slices.Equal(got, want) || (err == nil) != (werr == nil) {
			t.Fatalf("Tokens(%q) = %q, %v; by copy %q, %v", s, got, err, want, werr)
		}
	})
}
