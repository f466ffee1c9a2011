package geoip

import (
	"strings"
	"testing"
)

func TestCountryCodesTable(t *testing.T) {
	if len(countryCodes)%3 != 0 {
		t.Fatalf("len(countryCodes) = %d, not a multiple of 3", len(countryCodes))
	}
	if numCountryCodes != 249+5 {
		t.Errorf("%d codes, want 249 ISO codes + 5 extras", numCountryCodes)
	}
	prev := ""
	for i := range numCountryCodes {
		cc, sep := countryCodes[3*i:3*i+2], countryCodes[3*i+2]
		if sep != ' ' && sep != '\n' {
			t.Errorf("code %d (%q) is followed by %q", i, cc, sep)
		}
		if cc <= prev || strings.ToUpper(cc) != cc || !isASCIILetter(cc[0]) || !isASCIILetter(cc[1]) {
			t.Errorf("code %d: %q after %q", i, cc, prev)
		}
		prev = cc
		if l, ok := countryLabel(cc); !ok || l != uint32(i) || countryCode(l) != cc {
			t.Errorf("countryLabel(%q) = %d, %v", cc, l, ok)
		}
	}
}

func TestValidCountryCode(t *testing.T) {
	for _, cc := range []string{"MY", "SG", "US", "GB", "SS", "BQ", "CW", "SX", "XK", "EU", "AP", "AN", "ZZ", "AD", "ZW"} {
		if !ValidCountryCode(cc) {
			t.Errorf("ValidCountryCode(%q) = false", cc)
		}
	}
	for _, cc := range []string{"", "M", "my", "My", "UK", "QQ", "XX", "AA", "USA", "YU", "CS", "M Y", "\x00\x00"} {
		if ValidCountryCode(cc) {
			t.Errorf("ValidCountryCode(%q) = true", cc)
		}
	}
	if countryCode(uint32(numCountryCodes)) != "" {
		t.Error("countryCode(out of range) != \"\"")
	}
	if l, ok := dataCountryLabel([]byte("my")); !ok || countryCode(l) != "MY" {
		t.Errorf("dataCountryLabel(my) = %d, %v", l, ok)
	}
	if _, ok := dataCountryLabel([]byte("m1")); ok {
		t.Error("dataCountryLabel(m1) = true")
	}
}
