package geoip

import (
	"context"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/postern/postern/internal/diag"
)

// Format is the file format of a source.
type Format string

// The supported formats.
const (
	// FormatAuto detects the format: a .mmdb extension or the MMDB
	// metadata marker means MMDB, a .csv extension CSV, a .zone, .txt or
	// .cidr extension a zone file; other files are recognised by content
	// (see the package documentation).
	FormatAuto Format = ""
	// FormatMMDB is a MaxMind DB file with country or ASN records.
	FormatMMDB Format = "mmdb"
	// FormatCSV is a file of start,end,country ranges.
	FormatCSV Format = "csv"
	// FormatZone is a file of CIDRs or addresses of one country.
	FormatZone Format = "zone"
)

// Source describes one database to load.
type Source struct {
	// Path is the file path, already resolved relative to the
	// configuration file by the caller.
	Path string
	// Format is the file format; FormatAuto detects it.
	Format Format
	// Country is used by zone files only: the ISO code the file's CIDRs
	// belong to. If empty, it is taken from the file name when the name
	// is a valid two-letter code ("sg.zone" or ipdeny's
	// "sg-aggregated.zone" give SG); otherwise loading fails.
	Country string
	// Pos is where the source was configured, for error messages about the
	// source as a whole (missing file, unknown format). It may be zero.
	Pos diag.Pos
}

// Info describes a loaded source, for `postern explain` and logs.
type Info struct {
	Path   string
	Format string // "mmdb", "csv" or "zone"
	// Description is the MMDB database_type (e.g. "country ipvAll"),
	// "CSV ranges" or "zone file (SG)".
	Description string
	// BuildTime is the MMDB build epoch, or the file's modification time
	// for CSV and zone files.
	BuildTime time.Time
	// Networks is the number of prefixes loaded: country prefixes, or AS
	// prefixes for a database without country data. Adjacent networks of
	// the same country are merged before they are counted.
	Networks int
	// Countries is the number of distinct country codes.
	Countries int
	// HasASN reports whether the source has AS numbers.
	HasASN bool
	// ASNs is the number of distinct AS numbers.
	ASNs int
	// Records is the number of networks (MMDB) or data lines (CSV, zone)
	// read.
	Records int
	// Skipped is the number of MMDB networks whose record had an unknown
	// or invalid country code, or neither a country nor an AS number.
	Skipped int
}

// DB is an immutable set of loaded sources. It is safe for concurrent use.
// A nil *DB is empty: its query methods return nothing.
type DB struct {
	sources   []*source
	countries []string // sorted codes of every source
	hasASN    bool
}

// A source is one loaded database.
type source struct {
	info    Info
	country table // labels from countryLabel
	asn     table // labels are AS numbers
}

// newSource returns a source with the given tables, completing info with
// their counts.
func newSource(info Info, country, asn table) *source {
	info.Countries = len(country.labels)
	info.ASNs = len(asn.labels)
	info.HasASN = asn.len() > 0
	info.Networks = country.len()
	if info.Networks == 0 {
		info.Networks = asn.len()
	}
	return &source{info: info, country: country, asn: asn}
}

// Load reads sources, up to GOMAXPROCS at a time, and returns the
// database they make up. Errors are diag errors that name the file, and
// the line for CSV and zone files; when there are several they are
// returned as a diag.List, in the order of sources.
func Load(ctx context.Context, sources []Source) (*DB, error) {
	loaded := make([]*source, len(sources))
	errs := make([]error, len(sources))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			loaded[i], errs[i] = loadSource(ctx, src)
		})
	}
	wg.Wait()
	var list diag.List
	for _, err := range errs {
		list.Add(err)
	}
	switch len(list) {
	case 0:
		return newDB(loaded), nil
	case 1:
		return nil, list[0]
	default:
		return nil, list
	}
}

// newDB assembles a DB from loaded sources.
func newDB(sources []*source) *DB {
	db := &DB{sources: sources}
	seen := make(map[uint32]bool)
	for _, s := range sources {
		for _, l := range s.country.labels {
			seen[l] = true
		}
		db.hasASN = db.hasASN || s.info.HasASN
	}
	for l := range seen {
		db.countries = append(db.countries, countryCode(l))
	}
	slices.Sort(db.countries)
	return db
}

// Sources describes the loaded sources in configured order.
func (db *DB) Sources() []Info {
	if db == nil {
		return nil
	}
	infos := make([]Info, len(db.sources))
	for i, s := range db.sources {
		infos[i] = s.info
	}
	return infos
}

// CountryPrefixes returns the prefixes of country cc, an upper-case code.
// Within one source the prefixes are disjoint and sorted, and an address
// belongs to the country of the most specific range that contains it. If
// several sources have the country, the result is the concatenation of
// their prefixes in source order and may overlap. The slice must not be
// modified. It returns nil when no source has the country.
func (db *DB) CountryPrefixes(cc string) []netip.Prefix {
	l, ok := countryLabel(cc)
	if db == nil || !ok {
		return nil
	}
	return db.concat(func(s *source) []netip.Prefix { return s.country.group(l) })
}

// HasCountry reports whether some source has prefixes for cc.
func (db *DB) HasCountry(cc string) bool {
	if db == nil {
		return false
	}
	_, found := slices.BinarySearch(db.countries, cc)
	return found
}

// Countries returns the sorted country codes present in some source.
func (db *DB) Countries() []string {
	if db == nil {
		return nil
	}
	return slices.Clone(db.countries)
}

// ASNPrefixes returns the prefixes of autonomous system asn, in the same
// way as CountryPrefixes. The slice must not be modified.
func (db *DB) ASNPrefixes(asn uint32) []netip.Prefix {
	if db == nil {
		return nil
	}
	return db.concat(func(s *source) []netip.Prefix { return s.asn.group(asn) })
}

// HasASNData reports whether some source has AS numbers.
func (db *DB) HasASNData() bool {
	return db != nil && db.hasASN
}

// Country returns the country of addr according to the first source, in
// configured order, whose data covers addr, and that source. An
// IPv4-mapped IPv6 address is looked up as IPv4.
func (db *DB) Country(addr netip.Addr) (cc string, src Info, ok bool) {
	if db == nil {
		return "", Info{}, false
	}
	addr = addr.Unmap()
	for _, s := range db.sources {
		if l, found := s.country.lookup(addr); found {
			return countryCode(l), s.info, true
		}
	}
	return "", Info{}, false
}

// InCountry reports whether addr is in CountryPrefixes(cc). An IPv4-mapped
// IPv6 address is looked up as IPv4. Unlike Country it consults every
// source, so when sources disagree an address can be in several countries.
func (db *DB) InCountry(addr netip.Addr, cc string) bool {
	l, ok := countryLabel(cc)
	if db == nil || !ok {
		return false
	}
	return db.contains(addr, func(s *source) []netip.Prefix { return s.country.group(l) })
}

// ASN returns the AS number of addr according to the first source, in
// configured order, whose AS data covers addr.
func (db *DB) ASN(addr netip.Addr) (uint32, bool) {
	if db == nil {
		return 0, false
	}
	addr = addr.Unmap()
	for _, s := range db.sources {
		if asn, found := s.asn.lookup(addr); found {
			return asn, true
		}
	}
	return 0, false
}

// InASN reports whether addr is in ASNPrefixes(asn).
func (db *DB) InASN(addr netip.Addr, asn uint32) bool {
	if db == nil {
		return false
	}
	return db.contains(addr, func(s *source) []netip.Prefix { return s.asn.group(asn) })
}

// concat returns the concatenation of pick over all sources. It shares the
// source's slice when only one source contributes and allocates otherwise.
func (db *DB) concat(pick func(*source) []netip.Prefix) []netip.Prefix {
	var first []netip.Prefix
	total, parts := 0, 0
	for _, s := range db.sources {
		if ps := pick(s); len(ps) > 0 {
			if parts == 0 {
				first = ps
			}
			total += len(ps)
			parts++
		}
	}
	if parts <= 1 {
		return first
	}
	out := make([]netip.Prefix, 0, total)
	for _, s := range db.sources {
		out = append(out, pick(s)...)
	}
	return out
}

// contains reports whether addr is in pick(s) for some source s.
func (db *DB) contains(addr netip.Addr, pick func(*source) []netip.Prefix) bool {
	addr = addr.Unmap()
	for _, s := range db.sources {
		if prefixesContain(pick(s), addr) {
			return true
		}
	}
	return false
}
