package admin

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/config"
)

// Limits on what a manual block may cover: no wider than the widest prefix
// the engine itself may block (intrusion_prevention.block_prefix).
const (
	minBitsIPv4 = 8
	minBitsIPv6 = 16
	// MaxBlockDuration is the longest manual block the API accepts.
	MaxBlockDuration = 100 * 365 * 24 * time.Hour
)

// ParseTarget parses a block target: an address ("203.0.113.7",
// "2001:db8::1"), taken as a /32 or /128, or a prefix ("2001:db8::/64").
// IPv4-mapped IPv6 forms are converted to IPv4. A prefix with host bits set
// is refused (it is almost always a typo), as are zoned addresses.
func ParseTarget(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty target: want an address or a prefix such as 203.0.113.7 or 2001:db8::/64")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("bad target %q: want an address or a prefix such as 203.0.113.7 or 2001:db8::/64", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad target %q: want an address or a prefix such as 203.0.113.7 or 2001:db8::/64", s)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("bad target %q: host bits are set; did you mean %s or the single address %s?", s, m, p.Addr())
	}
	return p, nil
}

// FormatTarget writes a prefix the way targets are shown: the address alone
// for a /32 or /128, else the prefix.
func FormatTarget(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// checkBlockable refuses prefixes too wide to block by hand.
func checkBlockable(p netip.Prefix) error {
	if p.Addr().Is4() && p.Bits() < minBitsIPv4 || p.Addr().Is6() && p.Bits() < minBitsIPv6 {
		return fmt.Errorf("target %s is too wide: block at most an IPv4 /%d or an IPv6 /%d", p, minBitsIPv4, minBitsIPv6)
	}
	return nil
}

// ParseBlockDuration parses a manual block's duration: a Go duration
// ("90m", "4h") or days ("7d"); "" and "0" mean the configured block time.
func ParseBlockDuration(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d > MaxBlockDuration {
		return 0, fmt.Errorf("bad duration %q: at most %dd", s, MaxBlockDuration/(24*time.Hour))
	}
	return d, nil
}
