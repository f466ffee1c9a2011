package dnsbl

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxNameLen is the longest domain name, in presentation form without the
// final dot, that DNS can carry (RFC 1035: 255 octets on the wire).
const maxNameLen = 253

// queryName returns the fully qualified name (with a final dot) under which
// addr is looked up in zone: reversed octets for IPv4, reversed nibbles for
// IPv6. It fails for an invalid address or zone.
func queryName(addr netip.Addr, zone string) (string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return "", err
	}
	if !addr.IsValid() {
		return "", fmt.Errorf("invalid address")
	}
	addr = addr.Unmap().WithZone("")
	var b strings.Builder
	if addr.Is4() {
		a := addr.As4()
		b.Grow(16 + len(z) + 1)
		for i := 3; i >= 0; i-- {
			fmt.Fprintf(&b, "%d.", a[i])
		}
	} else {
		const hex = "0123456789abcdef"
		a := addr.As16()
		b.Grow(64 + len(z) + 1)
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0x0f])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(z)
	if b.Len() > maxNameLen {
		return "", fmt.Errorf("zone %q: query name longer than %d characters", zone, maxNameLen)
	}
	b.WriteByte('.')
	return b.String(), nil
}

// normalizeZone lowercases zone and strips one final dot, and checks that
// it is a plausible domain name: non-empty labels of at most 63 letters,
// digits, hyphens or underscores.
func normalizeZone(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if z == "" {
		return "", fmt.Errorf("empty zone")
	}
	for label := range strings.SplitSeq(z, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("zone %q: bad label", zone)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("zone %q: bad character %q", zone, c)
			}
		}
	}
	return z, nil
}
