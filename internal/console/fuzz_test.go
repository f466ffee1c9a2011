package console

import "testing"

// FuzzParsePHC: no hash line read from a users file makes the parser
// panic, and whatever it accepts is within the bounds a sign-in may cost.
func FuzzParsePHC(f *testing.F) {
	for _, s := range []string{
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=65536,t=3,p=2$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=4294967295,t=1,p=255$c2FsdHNhbHQ$aGFzaA",
		"$argon2id$v=19$$$",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			return
		}
		if h.p.Memory > maxMemoryKiB || h.p.Time > maxTime || h.p.Time < 1 || h.p.Threads < 1 || len(h.key) < 16 || len(h.salt) < 8 {
			t.Fatalf("accepted out-of-bounds hash %q: %+v", s, h.p)
		}
	})
}
