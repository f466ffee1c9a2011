package geoip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"

	maxminddb "github.com/oschwald/maxminddb-golang/v2"
)

// mmdbRecord holds the fields of both record layouts the loader
// understands. Decoding skips every other field without allocating.
type mmdbRecord struct {
	// CountryCode is the flat layout of ip-location-db.
	CountryCode string `maxminddb:"country_code"`
	// Country and RegisteredCountry are the nested layout of
	// GeoLite2/GeoIP2 Country and City.
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
	// ASN is in GeoLite2-ASN and the ip-location-db asn databases.
	ASN uint32 `maxminddb:"autonomous_system_number"`
}

// code returns the country code of r: the flat field, else country, else
// registered_country.
func (r *mmdbRecord) code() string {
	switch {
	case r.CountryCode != "":
		return r.CountryCode
	case r.Country.ISOCode != "":
		return r.Country.ISOCode
	}
	return r.RegisteredCountry.ISOCode
}

// recordLabels is what one decoded record contributes.
type recordLabels struct {
	country    uint32
	hasCountry bool
	asn        uint32 // 0: none
	skip       bool   // unknown country code, or no data at all
}

// maxRecordCache bounds the cache of decoded records. A country database
// has a few hundred distinct records; an ASN database can have one per
// network, so the cache is reset when it grows this large.
const maxRecordCache = 1 << 16

// An mmdbLoader turns the networks of one MMDB file into tables.
type mmdbLoader struct {
	path    string
	reader  *maxminddb.Reader
	shape   treeShape
	cache   map[uintptr]recordLabels // by record offset
	country *builder
	asn     *builder
	info    Info
}

// loadMMDB loads a MaxMind DB file from data, which it does not retain.
// Every network is decoded once per distinct record (records are shared
// between networks), which makes loading about twice as fast as decoding
// each network.
func loadMMDB(ctx context.Context, path string, data []byte) (*source, error) {
	if len(data) == 0 {
		return nil, corruptMMDB(path, errors.New("the file is empty"))
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, corruptMMDB(path, err)
	}
	shape, err := checkTree(r.Metadata, data)
	if err != nil {
		return nil, corruptMMDB(path, err)
	}
	l := &mmdbLoader{
		path:    path,
		reader:  r,
		shape:   shape,
		cache:   make(map[uintptr]recordLabels),
		country: &builder{},
		asn:     &builder{},
		info: Info{
			Description: r.Metadata.DatabaseType,
			BuildTime:   r.Metadata.BuildTime(),
		},
	}
	if err := l.run(ctx); err != nil {
		return nil, err
	}
	return l.finish()
}

// corruptMMDB is the error for a file that is not a valid MaxMind DB.
func corruptMMDB(path string, err error) error {
	return dataErr(path, 0, "corrupt MMDB: %w; re-download the file", err)
}

// run reads every network.
func (l *mmdbLoader) run(ctx context.Context) error {
	for res := range l.reader.Networks() {
		if err := res.Err(); err != nil {
			return corruptMMDB(l.path, err)
		}
		l.info.Records++
		if l.info.Records%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return dataErr(l.path, 0, "loading interrupted: %w", err)
			}
		}
		labels, err := l.labels(res)
		if err != nil {
			return err
		}
		l.add(res.Prefix(), labels)
		if l.country.err != nil || l.asn.err != nil {
			return corruptMMDB(l.path, cmp.Or(l.country.err, l.asn.err))
		}
	}
	return nil
}

// labels decodes the record of res, consulting the cache first.
func (l *mmdbLoader) labels(res maxminddb.Result) (recordLabels, error) {
	off := res.Offset()
	if labels, ok := l.cache[off]; ok {
		return labels, nil
	}
	var rec mmdbRecord
	if err := res.Decode(&rec); err != nil {
		var typeErr maxminddb.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return recordLabels{}, dataErr(l.path, 0,
				"record for %s is not a country or ASN record: %w", res.Prefix(), err)
		}
		return recordLabels{}, corruptMMDB(l.path, fmt.Errorf("record for %s: %w", res.Prefix(), err))
	}
	labels := recordLabels{asn: rec.ASN}
	cc := rec.code()
	if cc != "" {
		labels.country, labels.hasCountry = dataCountryLabel([]byte(cc))
	}
	// Skipped: an unknown country code (even with an AS number, which is
	// still used), or no data at all.
	labels.skip = cc != "" && !labels.hasCountry || cc == "" && rec.ASN == 0
	if len(l.cache) >= maxRecordCache {
		clear(l.cache)
	}
	l.cache[off] = labels
	return labels, nil
}

// add files prefix p under its labels. Networks in ::ffff:0:0/96 are
// skipped: an MMDB keeps IPv4 data in its IPv4 subtree (::/96), and
// lookups unmap IPv4-mapped addresses, so they could never match.
func (l *mmdbLoader) add(p netip.Prefix, labels recordLabels) {
	if labels.skip || p.Addr().Is4In6() {
		l.info.Skipped++
	}
	if p.Addr().Is4In6() {
		return
	}
	if labels.hasCountry {
		l.addPrefix(l.country, p, labels.country)
	}
	if labels.asn != 0 {
		l.addPrefix(l.asn, p, labels.asn)
	}
}

// addPrefix adds p to b. The reader reports the networks of the IPv4
// subtree as IPv4 prefixes. When the path of ::/96 instead ends in a
// record for ::/n, n < 96, that record covers all of IPv4 as well, and
// 0.0.0.0/0 is added with it. It comes first in address order, as ::/n is
// the first network of the tree.
func (l *mmdbLoader) addPrefix(b *builder, p netip.Prefix, label uint32) {
	if cap(b.spans) == 0 {
		// Every network is a leaf; +1 for the extra 0.0.0.0/0.
		b.spans = make([]span, 0, l.shape.leaves+1)
	}
	if l.shape.ipv4Depth < 96 && p == netip.PrefixFrom(netip.IPv6Unspecified(), l.shape.ipv4Depth) {
		b.addPrefix(netip.PrefixFrom(netip.IPv4Unspecified(), 0), label)
	}
	b.addPrefix(p, label)
}

// finish builds the source.
func (l *mmdbLoader) finish() (*source, error) {
	country, err := l.country.finish()
	if err != nil {
		return nil, corruptMMDB(l.path, err)
	}
	asn, err := l.asn.finish()
	if err != nil {
		return nil, corruptMMDB(l.path, err)
	}
	return newSource(l.info, country, asn), nil
}

// treeShape is what checkTree learns about a search tree.
type treeShape struct {
	// ipv4Depth is the depth at which the path of ::/96 ends: 96 when the
	// tree has an IPv4 subtree, less when a record covers all of IPv4.
	ipv4Depth int
	// leaves is the number of records that point to data.
	leaves int
}

// checkTree verifies that the search tree of an MMDB is a tree, so that
// walking its networks takes time proportional to its size, and counts its
// leaves: no node may
// point back to the root and no node may have two parents, except the
// root of the IPv4 subtree, which an IPv6 database aliases from
// ::ffff:0:0/96 and other places. A corrupt file could otherwise make the
// walk visit an exponential number of paths.
func checkTree(md maxminddb.Metadata, data []byte) (treeShape, error) {
	n, rs := md.NodeCount, md.RecordSize
	if rs != 24 && rs != 28 && rs != 32 {
		return treeShape{}, fmt.Errorf("unsupported record size %d", rs)
	}
	if md.IPVersion != 4 && md.IPVersion != 6 {
		return treeShape{}, fmt.Errorf("unsupported IP version %d", md.IPVersion)
	}
	if n == 0 || n > uint(len(data))/(rs/4) {
		return treeShape{}, fmt.Errorf("node count %d does not fit the file", n)
	}
	node := func(i uint) (left, right uint) { return readNode(data, i, rs) }
	shape, v4root := treeShape{ipv4Depth: 96}, n
	if md.IPVersion == 6 {
		shape.ipv4Depth, v4root = ipv4Subtree(n, node)
	}
	seen := make([]bool, n)
	for i := range n {
		left, right := node(i)
		for _, p := range [2]uint{left, right} {
			switch {
			case p > n:
				shape.leaves++
			case p == n || p == v4root:
			case p == 0:
				return treeShape{}, fmt.Errorf("search tree node %d points to the root", i)
			case seen[p]:
				return treeShape{}, fmt.Errorf("search tree node %d has two parents", p)
			default:
				seen[p] = true
			}
		}
	}
	return shape, nil
}

// ipv4Subtree follows ::/96 from the root and returns how deep it got and
// the node it reached (n when it reached a record instead).
func ipv4Subtree(n uint, node func(uint) (uint, uint)) (depth int, root uint) {
	p := uint(0)
	for depth = 0; depth < 96 && p < n; depth++ {
		p, _ = node(p)
	}
	if p >= n {
		return depth, n
	}
	return depth, p
}

// readNode returns the two records of node i of an MMDB search tree with
// record size rs. The caller has checked that the node is in data.
func readNode(data []byte, i, rs uint) (left, right uint) {
	b := data[i*rs/4 : (i+1)*rs/4]
	switch rs {
	case 24:
		left = uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2])
		right = uint(b[3])<<16 | uint(b[4])<<8 | uint(b[5])
	case 28:
		left = uint(b[3]&0xf0)<<20 | uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2])
		right = uint(b[3]&0x0f)<<24 | uint(b[4])<<16 | uint(b[5])<<8 | uint(b[6])
	default:
		left = uint(b[0])<<24 | uint(b[1])<<16 | uint(b[2])<<8 | uint(b[3])
		right = uint(b[4])<<24 | uint(b[5])<<16 | uint(b[6])<<8 | uint(b[7])
	}
	return left, right
}
