package mailgate

import (
	"encoding/base64"
	"testing"
)

// Only canonical base64 is taken; it decodes to what any decoder reads.
func TestDecodeSASL(t *testing.T) {
	for in, ok := range map[string]bool{
		"AGJvYgBwdw==": true, "AGJvYgBwdw": false, "AGJv YgBwdw==": false, " AGJvYgBwdw==": false,
		"AGJvYgBwdw==\r": false, "AGJvYgBwdx==": false /* non-zero padding bits */, "AA==AA==": false,
		"": true, "=": false, "*": false,
	} {
		_, err := DecodeSASL(in)
		if (err == nil) != ok {
			t.Errorf("DecodeSASL(%q): %v, want ok=%v", in, err, ok)
		}
	}
}

// The SASL decoder takes only what re-encodes to the same text.
func FuzzSASLDecode(f *testing.F) {
	for _, s := range []string{"AGJvYgBwdw==", "AGJvYgBwdw", "AGJv YgBwdw==", "=", "*", "AA==AA==", "AGJvYgBwdx=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeSASL(s)
		if err != nil {
			return
		}
		if base64.StdEncoding.EncodeToString(b) != s {
			t.Fatalf("DecodeSASL(%q) = %q, which encodes differently", s, b)
		}
	})
}
