package patterns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"go4.org/netipx"

	"github.com/postern/postern/internal/diag"
)

// Kind says what an item of a pattern is.
type Kind uint8

// The kinds of pattern items.
const (
	KindAddress  Kind = iota + 1 // 203.0.113.7, 2001:db8::1
	KindCIDR                     // 203.0.113.0/24, 2001:db8::/32
	KindWildcard                 // 192.168.*.*, 192-193.*.*.*, 10.0.0.1-99
	KindRange                    // 203.0.113.10-203.0.113.99
	KindRef                      // [OtherPattern]
	KindCountry                  // country:MY
	KindASN                      // asn:13335
	KindMail                     // *@example.com, info@*
	KindHost                     // *.example.com, icewarp.*, mail?.example.com: the client's verified name
)

var kindNames = [...]string{
	KindAddress:  "address",
	KindCIDR:     "network",
	KindWildcard: "wildcard",
	KindRange:    "range",
	KindRef:      "reference",
	KindCountry:  "country",
	KindASN:      "asn",
	KindMail:     "mail mask",
	KindHost:     "host mask",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// IsAddress reports whether items of kind k match IP addresses (host masks
// match a client through the name of its address).
func (k Kind) IsAddress() bool { return k != KindMail }

// maxWildcardPrefixes bounds how many networks one wildcard item may expand
// to, so that a typo cannot exhaust memory at load time.
const maxWildcardPrefixes = 1 << 16

// Item is one entry of a pattern, kept for explanations. Its address
// networks live only in the compiled table; they are parsed again from Text
// when an explanation needs them.
type Item struct {
	Text   string // as written, without a leading "!"
	Kind   Kind
	Negate bool // written with a leading "!": an exclusion
	file   *string
	line   int32
	col    int32
	ref    *Set // the referenced pattern, for KindRef
}

// Pos returns where the item was written.
func (it *Item) Pos() diag.Pos {
	var f string
	if it.file != nil {
		f = *it.file
	}
	return diag.Pos{File: f, Line: int(it.line), Col: int(it.col)}
}

// String returns the item as written, with its "!" if it is an exclusion.
func (it *Item) String() string {
	if it.Negate {
		return "!" + it.Text
	}
	return it.Text
}

// Ref returns the pattern a KindRef item refers to, or nil.
func (it *Item) Ref() *Set { return it.ref }

// term is one parsed item: what it is and what it denotes. Address kinds
// carry their networks; one or two networks fit without allocation.
type term struct {
	kind    Kind
	neg     bool
	body    string // the item without "!"
	one     [1]netip.Prefix
	pfxs    []netip.Prefix
	name    string // KindRef: the referenced name, lower-cased
	country string // KindCountry: upper-case ISO code
	asn     uint32 // KindASN
	mail    string // KindMail: the mask, lower-cased
	host    string // KindHost: the mask, lower-cased, without a trailing dot
}

// parseTerm parses one item. It never panics and reports errors without a
// position; callers add the position.
func parseTerm(s string) (term, error) {
	var t term
	if strings.HasPrefix(s, "!") {
		t.neg = true
		s = strings.TrimSpace(s[1:])
		if strings.HasPrefix(s, "!") {
			return t, errors.New(`double exclusion "!!"`)
		}
	}
	t.body = s
	if s == "" {
		return t, errors.New(`empty item after "!"`)
	}
	switch {
	case s[0] == '[':
		if !strings.HasSuffix(s, "]") || len(s) < 3 {
			return t, fmt.Errorf("bad reference %q: want [Name]", s)
		}
		name := s[1 : len(s)-1]
		if err := ValidName(name); err != nil {
			return t, err
		}
		t.kind, t.name = KindRef, strings.ToLower(name)
	case s[0] == '{':
		return t, fmt.Errorf("include %q cannot be excluded or nested here", s)
	case hasFoldPrefix(s, "country:"):
		cc := strings.ToUpper(strings.TrimSpace(s[len("country:"):]))
		if len(cc) != 2 || !isAlpha(cc) {
			return t, fmt.Errorf("bad country %q: want a two-letter ISO 3166 code such as country:MY", s)
		}
		t.kind, t.country = KindCountry, cc
	case hasFoldPrefix(s, "asn:"):
		v := strings.TrimSpace(s[len("asn:"):])
		v = strings.TrimPrefix(strings.TrimPrefix(v, "AS"), "as")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return t, fmt.Errorf("bad autonomous system %q: want asn:NUMBER such as asn:13335", s)
		}
		t.kind, t.asn = KindASN, uint32(n)
	case strings.Contains(s, "@"):
		m, err := parseMailMask(s)
		if err != nil {
			return t, err
		}
		t.kind, t.mail = KindMail, m
	default:
		return t, t.parseAddress(s)
	}
	return t, nil
}

// prefixes returns the networks of an address item.
func (t *term) prefixes() []netip.Prefix {
	if t.pfxs != nil {
		return t.pfxs
	}
	return t.one[:]
}

func (t *term) parseAddress(s string) error {
	if strings.ContainsRune(s, '%') {
		return fmt.Errorf("bad address %q: zones (%%) are not allowed", s)
	}
	if strings.Contains(s, "/") {
		p, err := parseNetwork(s)
		if err != nil {
			return err
		}
		t.kind, t.one[0] = KindCIDR, p
		return nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		t.kind, t.one[0] = KindAddress, netip.PrefixFrom(a, a.BitLen())
		return nil
	}
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, errA := netip.ParseAddr(strings.TrimSpace(lo))
		b, errB := netip.ParseAddr(strings.TrimSpace(hi))
		if errA == nil && errB == nil {
			a, b = a.Unmap(), b.Unmap()
			if a.Is4() != b.Is4() {
				return fmt.Errorf("bad range %q: the two ends are of different address families", s)
			}
			if b.Less(a) {
				return fmt.Errorf("bad range %q: the start is after the end", s)
			}
			t.kind, t.pfxs = KindRange, netipx.IPRangeFrom(a, b).Prefixes()
			return nil
		}
	}
	if s == "*" {
		t.kind, t.pfxs = KindWildcard, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
		return nil
	}
	if isAddressLike(s) || looksLikeIPv4(s) {
		pfxs, err := expandWildcard(s)
		if err != nil {
			return err
		}
		t.kind, t.pfxs = KindWildcard, pfxs
		return nil
	}
	if isHostLike(s) {
		h, err := parseHostMask(s)
		if err != nil {
			return err
		}
		t.kind, t.host = KindHost, h
		return nil
	}
	return fmt.Errorf("bad item %q: not an address, network, range, wildcard, host mask, [reference], {include}, country:XX, asn:N or mail mask", s)
}

// parseNetwork parses a network in CIDR notation (10.0.0.0/8, 2001:db8::/32)
// or with a dotted IPv4 netmask (10.0.0.0/255.0.0.0).
func parseNetwork(s string) (netip.Prefix, error) {
	addr, mask, _ := strings.Cut(s, "/")
	if strings.Contains(mask, ".") {
		a, err := netip.ParseAddr(strings.TrimSpace(addr))
		m, errM := netip.ParseAddr(strings.TrimSpace(mask))
		if err != nil || !a.Unmap().Is4() {
			return netip.Prefix{}, fmt.Errorf("bad network %q: a dotted netmask needs an IPv4 address before the '/'", s)
		}
		if errM != nil || !m.Is4() {
			return netip.Prefix{}, fmt.Errorf("bad network %q: %q is not a netmask such as 255.255.255.0", s, mask)
		}
		v := binary.BigEndian.Uint32(m.AsSlice())
		ones := bits.LeadingZeros32(^v)
		if ones < 32 && v<<ones != 0 {
			return netip.Prefix{}, fmt.Errorf("bad network %q: netmask %s is not contiguous; write the network in CIDR notation", s, mask)
		}
		return netip.PrefixFrom(a.Unmap(), ones).Masked(), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad network %q: %w", s, trimNetipErr(err))
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("bad network %q: an IPv4-mapped network needs at least /96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// isAddressLike reports whether s is made of digits, dots, '*' and '-' only
// and has a dot or a '*': an IPv4 wildcard or a mistyped one, never a name.
func isAddressLike(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c == '.' || c == '*' || c == '-') {
			return false
		}
	}
	return strings.ContainsAny(s, ".*")
}

// looksLikeIPv4 reports whether s, although it has a letter, is more
// likely a mistyped IPv4 wildcard than a host mask: at most four labels, all
// but one made of digits, '*' and '-', and one of them with a digit, as in
// 10.20.*.x. Such an item is reported as a bad address.
func looksLikeIPv4(s string) bool {
	labels := strings.Split(s, ".")
	if len(labels) > 4 {
		return false
	}
	other, digit := 0, false
	for _, l := range labels {
		if !isOctetLike(l) {
			other++
			continue
		}
		digit = digit || strings.ContainsAny(l, "0123456789")
	}
	return other <= 1 && digit && len(labels)-other >= 2
}

// isOctetLike reports whether a label is made of digits, '*' and '-' only,
// as an octet of a wildcard is.
func isOctetLike(l string) bool {
	if l == "" {
		return false
	}
	for _, c := range []byte(l) {
		if !(c >= '0' && c <= '9' || c == '*' || c == '-') {
			return false
		}
	}
	return true
}

// isHostLike reports whether s is made of the characters of host names and
// masks (letters, digits, '-', '_', '.', '*', '?') and has a letter.
func isHostLike(s string) bool {
	letter := false
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letter = true
		case c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '*' || c == '?':
		default:
			return false
		}
	}
	return letter
}

// parseHostMask validates a host name or mask such as mail.example.com,
// *.example.com, icewarp.* or mail?.example.com and returns it lower-cased
// without a trailing dot. '*' matches any run of characters (dots
// included) and '?' any one character.
func parseHostMask(s string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(s, "."))
	if len(h) > 253 {
		return "", fmt.Errorf("bad host mask %q: longer than a DNS name can be (253 characters)", s)
	}
	if !strings.Contains(h, ".") {
		return "", fmt.Errorf("bad host mask %q: a host name or mask needs a dot, such as host.example.com or *.example.com", s)
	}
	for i, label := range strings.Split(h, ".") {
		switch {
		case label == "":
			if i == 0 {
				return "", fmt.Errorf("bad host mask %q: it starts with a dot; for every host of a domain write *.domain", s)
			}
			return "", fmt.Errorf("bad host mask %q: empty label (\"..\")", s)
		case len(label) > 63 && !strings.ContainsAny(label, "*?"):
			return "", fmt.Errorf("bad host mask %q: label %q is longer than 63 characters", s, label)
		}
	}
	return h, nil
}

// expandWildcard turns an IceWarp per-octet pattern such as 192.168.*.* or
// 192-193.*.1-5.* into networks.
func expandWildcard(s string) ([]netip.Prefix, error) {
	var lo, hi [4]int
	what := "wildcard"
	if !strings.ContainsAny(s, "*-") {
		what = "item"
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return nil, fmt.Errorf("bad %s %q: an IPv4 address has four octets, this has %d", what, s, len(parts))
	}
	if n := len(parts); n < 4 {
		// IceWarp's short forms: 10.20.* is 10.20.*.*, 10.* is 10.*.*.*.
		if parts[n-1] != "*" {
			return nil, fmt.Errorf("bad %s %q: it has %d octets, not four; with fewer, the last must be '*', as in 10.20.*", what, s, n)
		}
		for len(parts) < 4 {
			parts = append(parts, "*")
		}
	}
	for i, p := range parts {
		var err error
		lo[i], hi[i], err = parseOctet(p)
		if err != nil {
			return nil, fmt.Errorf("bad %s %q: octet %d: %w", what, s, i+1, err)
		}
	}
	// Octets after the last partial one are whole (0-255) and become the
	// host part of the networks.
	last := -1
	for i := 3; i >= 0; i-- {
		if lo[i] != 0 || hi[i] != 255 {
			last = i
			break
		}
	}
	if last < 0 {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, nil
	}
	combos := 1
	for i := 0; i < last; i++ {
		combos *= hi[i] - lo[i] + 1
		if combos > maxWildcardPrefixes {
			break
		}
	}
	blocks := octetBlocks(lo[last], hi[last])
	if combos*len(blocks) > maxWildcardPrefixes {
		return nil, fmt.Errorf("bad wildcard %q: expands to more than %d networks; write it as CIDR networks", s, maxWildcardPrefixes)
	}
	out := make([]netip.Prefix, 0, combos*len(blocks))
	var cur [4]byte
	var walk func(i int)
	walk = func(i int) {
		if i == last {
			for _, b := range blocks {
				cur[i] = byte(b.start)
				out = append(out, netip.PrefixFrom(netip.AddrFrom4(cur), 8*i+b.bits))
			}
			return
		}
		for v := lo[i]; v <= hi[i]; v++ {
			cur[i] = byte(v)
			walk(i + 1)
		}
	}
	walk(0)
	return out, nil
}

func parseOctet(p string) (lo, hi int, err error) {
	if p == "*" {
		return 0, 255, nil
	}
	a, b, isRange := strings.Cut(p, "-")
	lo, err = parseOctetNum(a)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	hi, err = parseOctetNum(b)
	if err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("range %d-%d runs backwards", lo, hi)
	}
	return lo, hi, nil
}

func parseOctetNum(s string) (int, error) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
		}
		n = n*10 + int(c-'0')
	}
	if n > 255 {
		return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
	}
	return n, nil
}

type octetBlock struct{ start, bits int }

// octetBlocks splits lo..hi into aligned blocks; bits is the number of fixed
// bits of the octet (8 for a single value, 0 for the whole octet).
func octetBlocks(lo, hi int) []octetBlock {
	var out []octetBlock
	for lo <= hi {
		size := 1
		for size < 256 && lo%(size*2) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		bits := 8
		for s := size; s > 1; s /= 2 {
			bits--
		}
		out = append(out, octetBlock{lo, bits})
		lo += size
	}
	return out
}

// ValidName reports whether name is usable as a pattern name: letters,
// digits, '_', '-' and '.', at most 64 characters.
func ValidName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("bad pattern name %q: want 1 to 64 letters, digits, '_', '-' or '.'", name)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("bad pattern name %q: want 1 to 64 letters, digits, '_', '-' or '.'", name)
		}
	}
	return nil
}

func hasFoldPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isAlpha(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// trimNetipErr drops netip's repetition of the input from its error text.
func trimNetipErr(err error) error {
	msg := err.Error()
	if i := strings.LastIndex(msg, "): "); i >= 0 {
		return errors.New(msg[i+3:])
	}
	return err
}
