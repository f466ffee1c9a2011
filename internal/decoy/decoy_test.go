package decoy

import (
	"strings"
	"testing"
)

func TestPassword(t *testing.T) {
	d := New()
	a, b := d.Password("carol-pass-3"), d.Password("carol-pass-3")
	if a != b {
		t.Fatalf("the same password gave two decoys: %q %q", a, b)
	}
	if len(a) != Size || strings.Trim(a, "0123456789abcdef") != "" {
		t.Fatalf("decoy %q: want %d hexadecimal digits", a, Size)
	}
	if c := d.Password("carol-pass-4"); c == a {
		t.Fatalf("two passwords gave the same decoy %q", c)
	}
	if strings.Contains(a, "carol") || a == "carol-pass-3" {
		t.Fatalf("decoy %q shows the password", a)
	}
	if e := New().Password("carol-pass-3"); e == a {
		t.Fatalf("two keys gave the same decoy %q", e)
	}
	if d.Password("") == "" {
		t.Fatal("an empty password needs a decoy too")
	}
}
