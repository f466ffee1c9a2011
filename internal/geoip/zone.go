package geoip

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"go4.org/netipx"
)

// zoneCountry returns the country label of a zone file: Source.Country,
// or else the file name when it is a country code, as in "sg.zone" or
// ipdeny's "sg-aggregated.zone".
func (src Source) zoneCountry() (uint32, error) {
	if src.Country != "" {
		l, ok := countryLabel(strings.ToUpper(src.Country))
		if !ok {
			return 0, src.configErr("invalid country code %q for a zone file", src.Country)
		}
		return l, nil
	}
	stem, _, _ := strings.Cut(filepath.Base(src.Path), ".")
	stem = strings.TrimSuffix(stem, "-aggregated")
	if l, ok := countryLabel(strings.ToUpper(stem)); ok {
		return l, nil
	}
	return 0, src.configErr("cannot tell the country of this zone file: name it after the country code (like sg.zone) or set its country")
}

// loadZone loads a file of CIDR prefixes or addresses, one a line, all in
// the country with the given label. Blank lines and text after # are
// ignored. Overlapping lines are merged.
func loadZone(ctx context.Context, path string, label uint32, r io.Reader) (*source, error) {
	lr := newLineReader(path, r)
	var prefixes []netip.Prefix
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		if err := lr.checkContext(ctx); err != nil {
			return nil, err
		}
		line, _, _ = bytes.Cut(line, []byte("#"))
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		p, err := parseZoneEntry(line)
		if err != nil {
			lr.errorf("%v", err)
			continue
		}
		prefixes = append(prefixes, p)
	}
	if err := lr.err(); err != nil {
		return nil, err
	}
	b := newBuilder(len(prefixes))
	for _, s := range mergePrefixes(prefixes) {
		b.addAddrs(s.first, s.last, label)
	}
	country, err := b.finish()
	if err != nil {
		return nil, dataErr(path, 0, "internal error: %w", err)
	}
	info := Info{Description: "zone file (" + countryCode(label) + ")", Records: len(prefixes)}
	return newSource(info, country, table{}), nil
}

// parseZoneEntry parses a CIDR prefix or a single address. A prefix with
// host bits set is masked, and an IPv4-mapped prefix becomes IPv4.
func parseZoneEntry(b []byte) (netip.Prefix, error) {
	var p netip.Prefix
	if bytes.IndexByte(b, '/') >= 0 {
		var err error
		if p, err = netip.ParsePrefix(string(b)); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := parseAddr(b)
		if err != nil {
			return netip.Prefix{}, err
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// An addrRange is an inclusive range of addresses of one family.
type addrRange struct{ first, last netip.Addr }

// mergePrefixes sorts prefixes and merges overlapping ones into disjoint
// ranges in ascending order.
func mergePrefixes(prefixes []netip.Prefix) []addrRange {
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		return a.Addr().Compare(b.Addr())
	})
	var out []addrRange
	for _, p := range prefixes {
		first, last := p.Addr(), netipx.PrefixLastIP(p)
		if n := len(out); n > 0 && !out[n-1].last.Less(first) {
			if out[n-1].last.Less(last) {
				out[n-1].last = last
			}
			continue
		}
		out = append(out, addrRange{first: first, last: last})
	}
	return out
}
