package patterns

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/gaissmai/bart"

	"github.com/postern/postern/internal/diag"
)

// Resolver answers the country and autonomous-system questions of
// country:XX and asn:N items. *geoip.DB implements it.
type Resolver interface {
	CountryPrefixes(cc string) []netip.Prefix
	InCountry(addr netip.Addr, cc string) bool
	ASNPrefixes(asn uint32) []netip.Prefix
	HasASNData() bool
	InASN(addr netip.Addr, asn uint32) bool
}

// NameResolver finds the name host masks are matched against: the name
// that addr's PTR record gives, confirmed by a forward lookup of that name
// that returns addr. It returns an error saying why when there is no such
// name (no PTR record, not confirmed, timeout, DNS failure). It must bound
// the lookup itself (a timeout) as well as obey ctx, and be safe for
// concurrent use. *fcrdns.Resolver implements it.
type NameResolver interface {
	VerifiedName(ctx context.Context, addr netip.Addr) (string, error)
}

// ErrNoNameResolver is the reason given when a pattern with host masks has
// no NameResolver (a Union of patterns from different registries, or a
// Registry's Expr after Compile without one): its host masks match nothing.
var ErrNoNameResolver = errors.New("no DNS resolver is configured for host masks")

// Options control compilation.
type Options struct {
	// Geo resolves country: and asn: items. Without it they are errors.
	Geo Resolver
	// Names resolves the client names that host masks match. Without it
	// host masks are errors: a list compiled without a resolver (such as
	// the bypass file's) could never match them.
	Names NameResolver
	// ValidCountry reports whether a code is an assigned country code;
	// nil accepts any two letters.
	ValidCountry func(cc string) bool
	// MaxErrors stops reading after this many errors (0: 50).
	MaxErrors int
}

// Registry holds the named patterns of one configuration, compiled and
// immutable: it is safe for concurrent use.
type Registry struct {
	sets     map[string]*Set // by lower-case name
	geo      Resolver
	names    NameResolver
	valid    func(string) bool
	warnings []error

	filesMu sync.Mutex
	files   []string // include files read, in the order first read
}

// Set is a compiled pattern: a set of IP addresses (one longest-prefix-match
// table) and of mail addresses (masks), with the items it was made from.
// It is immutable and safe for concurrent use.
type Set struct {
	name  string
	pos   diag.Pos
	items []Item
	addrs *bart.Lite // the answer for a client without a verified name
	geo   Resolver

	// Host masks. A pattern without them (hasHost false) never looks a
	// name up. With them, namedPos and namedNeg hold the address items and
	// the referenced patterns without host masks, positive and excluded;
	// the referenced patterns with host masks are asked in turn.
	hasHost            bool
	monotone           bool // no host mask is excluded, at any depth: a name can only add
	hostPos, hostNeg   hostSet
	hostPosRefs        []*Set
	hostNegRefs        []*Set
	namedPos, namedNeg *bart.Lite
	names              NameResolver

	mailPos, mailNeg mailSet
	mailPosRefs      []*Set
	mailNegRefs      []*Set
	hasMail          bool
}

// builder accumulates one set while its items are read.
type builder struct {
	set      *Set
	pos, neg *bart.Lite
	refs     []int // indexes of KindRef items
	state    uint8 // 0 new, 1 resolving, 2 done
}

// Compile parses and compiles named pattern definitions. Every bad item,
// missing include, unknown reference and reference cycle is reported with
// its position; all errors found are returned together as a diag.List.
func Compile(srcs []Source, opts Options) (*Registry, error) {
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 50
	}
	reg := &Registry{sets: make(map[string]*Set, len(srcs)), geo: opts.Geo, names: opts.Names, valid: opts.ValidCountry}
	var errs diag.List
	builders := make(map[string]*builder, len(srcs))
	order := make([]*builder, 0, len(srcs))
	for _, src := range srcs {
		if err := ValidName(src.Name); err != nil {
			errs.Add(diag.Errorf(src.Pos, "%v", err))
			continue
		}
		key := strings.ToLower(src.Name)
		if prev, ok := builders[key]; ok {
			errs.Add(diag.Errorf(src.Pos, "pattern %q is already defined at %s (names are case-insensitive)", src.Name, prev.set.pos))
			continue
		}
		b := reg.read(src, &errs, opts.MaxErrors)
		builders[key] = b
		order = append(order, b)
	}
	for _, b := range order {
		reg.finish(b, builders, nil, &errs)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	for k, b := range builders {
		reg.sets[k] = b.set
	}
	return reg, nil
}

// Expr compiles an anonymous list such as a service's grant field, whose
// references resolve against the registry's patterns.
func (reg *Registry) Expr(src Source) (*Set, error) {
	var errs diag.List
	b := reg.read(src, &errs, 50)
	lookup := make(map[string]*builder)
	for _, i := range b.refs {
		name := strings.ToLower(b.set.items[i].Text[1 : len(b.set.items[i].Text)-1])
		if s, ok := reg.sets[name]; ok {
			lookup[name] = &builder{set: s, state: 2}
		}
	}
	reg.finish(b, lookup, nil, &errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return b.set, nil
}

// Lookup returns the pattern called name (case-insensitive), or nil.
func (reg *Registry) Lookup(name string) *Set {
	if reg == nil {
		return nil
	}
	return reg.sets[strings.ToLower(name)]
}

// Names returns the names of all patterns, sorted.
func (reg *Registry) Names() []string {
	names := make([]string, 0, len(reg.sets))
	for _, s := range reg.sets {
		names = append(names, s.name)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	return names
}

// Files returns every include file the registry's patterns, and the lists
// compiled with Expr so far, were read from, in the order first read.
func (reg *Registry) Files() []string {
	if reg == nil {
		return nil
	}
	reg.filesMu.Lock()
	defer reg.filesMu.Unlock()
	return slices.Clone(reg.files)
}

// opened notes an include file read.
func (reg *Registry) opened(path string) {
	reg.filesMu.Lock()
	defer reg.filesMu.Unlock()
	if !slices.Contains(reg.files, path) {
		reg.files = append(reg.files, path)
	}
}

// Warnings returns problems that do not stop the configuration from loading,
// such as a country for which the GeoIP data has no networks.
func (reg *Registry) Warnings() []error { return reg.warnings }

// read parses a source into a builder; references stay unresolved.
func (reg *Registry) read(src Source, errs *diag.List, maxErrs int) *builder {
	s := &Set{name: src.Name, pos: src.Pos, geo: reg.geo, names: reg.names}
	b := &builder{set: s, pos: new(bart.Lite), neg: new(bart.Lite)}
	r := &reader{errs: errs, maxErrs: maxErrs, opened: reg.opened}
	r.list(src, func(t term, it Item) {
		tbl := b.pos
		if t.neg {
			tbl = b.neg
		}
		switch t.kind {
		case KindAddress, KindCIDR, KindWildcard, KindRange:
			for _, p := range t.prefixes() {
				tbl.Insert(p)
			}
		case KindCountry:
			if !reg.checkCountry(t.country, it.Pos(), errs) {
				return
			}
			for _, p := range reg.geo.CountryPrefixes(t.country) {
				tbl.Insert(p)
			}
		case KindASN:
			if reg.geo == nil || !reg.geo.HasASNData() {
				errs.Add(diag.Errorf(it.Pos(), "asn:%d needs a GeoIP database with autonomous-system data (none is configured)", t.asn))
				return
			}
			pfxs := reg.geo.ASNPrefixes(t.asn)
			if len(pfxs) == 0 {
				reg.warnings = append(reg.warnings, diag.Errorf(it.Pos(), "asn:%d: the GeoIP data has no networks for this autonomous system", t.asn))
			}
			for _, p := range pfxs {
				tbl.Insert(p)
			}
		case KindHost:
			if reg.names == nil {
				errs.Add(diag.Errorf(it.Pos(), "host mask %q cannot be used here: no DNS resolver verifies client names for this list", it.String()))
				return
			}
			s.hasHost = true
			if t.neg {
				s.hostNeg.add(t.host)
			} else {
				s.hostPos.add(t.host)
			}
		case KindMail:
			s.hasMail = true
			if t.neg {
				s.mailNeg.add(t.mail)
			} else {
				s.mailPos.add(t.mail)
			}
		case KindRef:
			b.refs = append(b.refs, len(s.items))
		}
		s.items = append(s.items, it)
	})
	return b
}

func (reg *Registry) checkCountry(cc string, pos diag.Pos, errs *diag.List) bool {
	if reg.valid != nil && !reg.valid(cc) {
		errs.Add(diag.Errorf(pos, "unknown country code %q: want an ISO 3166-1 alpha-2 code such as MY or SG", cc))
		return false
	}
	if reg.geo == nil {
		errs.Add(diag.Errorf(pos, "country:%s needs a GeoIP database; add one under geoip.databases", cc))
		return false
	}
	if len(reg.geo.CountryPrefixes(cc)) == 0 {
		reg.warnings = append(reg.warnings, diag.Errorf(pos, "country:%s: the GeoIP data has no networks for this country", cc))
	}
	return true
}

// finish resolves a builder's references (depth first, reporting cycles)
// and computes its address table: the union of the positive items minus
// the union of the exclusions, independent of their order.
func (reg *Registry) finish(b *builder, all map[string]*builder, path []string, errs *diag.List) {
	switch b.state {
	case 2:
		return
	case 1:
		return // a cycle; reported by the caller that found it
	}
	b.state = 1
	path = append(path, b.set.name)
	s := b.set
	for _, i := range b.refs {
		it := &s.items[i]
		name := strings.ToLower(it.Text[1 : len(it.Text)-1])
		target, ok := all[name]
		if !ok {
			errs.Add(diag.Errorf(it.Pos(), "unknown pattern %s", it.Text))
			continue
		}
		if target.state == 1 {
			cycle := append(slices.Clone(path[indexFold(path, target.set.name):]), target.set.name)
			errs.Add(diag.Errorf(it.Pos(), "reference cycle: [%s]", strings.Join(cycle, "] → [")))
			continue
		}
		reg.finish(target, all, path, errs)
		if target.state != 2 {
			continue
		}
		t := target.set
		it.ref = t
		tbl := b.pos
		if it.Negate {
			tbl = b.neg
		}
		if t.addrs != nil && t.addrs.Size() > 0 && !(len(s.items) == 1 && !it.Negate) {
			tbl.Union(t.addrs)
		}
		switch {
		case t.hasHost && it.Negate:
			s.hasHost = true
			s.hostNegRefs = append(s.hostNegRefs, t)
		case t.hasHost:
			s.hasHost = true
			s.hostPosRefs = append(s.hostPosRefs, t)
		}
		if t.hasMail {
			s.hasMail = true
			if it.Negate {
				s.mailNegRefs = append(s.mailNegRefs, t)
			} else {
				s.mailPosRefs = append(s.mailPosRefs, t)
			}
		}
	}
	switch {
	case len(s.items) == 1 && s.items[0].Kind == KindRef && !s.items[0].Negate && s.items[0].ref != nil:
		s.addrs = s.items[0].ref.addrs // an alias: share the referenced table
	default:
		s.addrs = subtract(b.pos, b.neg)
		s.addrs.Aggregate()
	}
	if s.hasHost {
		reg.namedTables(s)
		s.monotone = s.hostNeg.empty() && len(s.hostNegRefs) == 0
		for _, r := range s.hostPosRefs {
			s.monotone = s.monotone && r.monotone
		}
	}
	b.pos, b.neg = nil, nil
	b.state = 2
}

// namedTables builds the address tables of a pattern with host masks:
// its address, country and ASN items and the referenced patterns without
// host masks, positive and excluded, each in its own table. They are built
// again from the items (rather than while reading) so that patterns without
// host masks, the large ones, pay nothing for them.
func (reg *Registry) namedTables(s *Set) {
	s.namedPos, s.namedNeg = new(bart.Lite), new(bart.Lite)
	for i := range s.items {
		it := &s.items[i]
		tbl := s.namedPos
		if it.Negate {
			tbl = s.namedNeg
		}
		if it.Kind == KindRef {
			if it.ref != nil && !it.ref.hasHost && it.ref.addrs != nil {
				tbl.Union(it.ref.addrs)
			}
			continue
		}
		t, err := parseTerm(it.Text)
		if err != nil {
			continue
		}
		var pfxs []netip.Prefix
		switch t.kind {
		case KindAddress, KindCIDR, KindWildcard, KindRange:
			pfxs = t.prefixes()
		case KindCountry:
			if reg.geo != nil {
				pfxs = reg.geo.CountryPrefixes(t.country)
			}
		case KindASN:
			if reg.geo != nil {
				pfxs = reg.geo.ASNPrefixes(t.asn)
			}
		}
		for _, p := range pfxs {
			tbl.Insert(p)
		}
	}
	s.namedPos.Aggregate()
	s.namedNeg.Aggregate()
}

func indexFold(path []string, name string) int {
	for i, p := range path {
		if strings.EqualFold(p, name) {
			return i
		}
	}
	return 0
}

// subtract returns pos minus neg as a table of networks. A network partly
// covered by exclusions is split in halves until every piece is wholly in
// or wholly out; the work is proportional to the exclusions, not to pos.
func subtract(pos, neg *bart.Lite) *bart.Lite {
	if neg.Size() == 0 {
		return pos
	}
	out := new(bart.Lite)
	var add func(p netip.Prefix)
	add = func(p netip.Prefix) {
		switch {
		case neg.LookupPrefix(p): // p lies inside an exclusion
		case !neg.OverlapsPrefix(p):
			out.Insert(p)
		default: // an exclusion lies inside p
			lo, hi := halves(p)
			add(lo)
			add(hi)
		}
	}
	for p := range pos.All() {
		add(p)
	}
	return out
}

// halves splits p into its two sub-networks one bit longer.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	a := p.Addr().As16()
	idx := (bits - 1) / 8
	if p.Addr().Is4() {
		a4 := p.Addr().As4()
		a4[idx] |= 0x80 >> ((bits - 1) % 8)
		return lo, netip.PrefixFrom(netip.AddrFrom4(a4), bits)
	}
	a[idx] |= 0x80 >> ((bits - 1) % 8)
	return lo, netip.PrefixFrom(netip.AddrFrom16(a), bits)
}

// Name returns the pattern's name ("" for an anonymous list).
func (s *Set) Name() string { return s.name }

// Pos returns where the pattern was defined.
func (s *Set) Pos() diag.Pos { return s.pos }

// Items returns the items the pattern was written with, includes expanded.
// The slice must not be modified.
func (s *Set) Items() []Item { return s.items }

// Networks returns the number of networks in the compiled address table.
func (s *Set) Networks() int {
	if s == nil || s.addrs == nil {
		return 0
	}
	return s.addrs.Size()
}

// HasHosts reports whether the pattern has host masks, itself or through
// references: only such a pattern looks client names up (ContainsClient).
func (s *Set) HasHosts() bool { return s != nil && s.hasHost }

// HasMail reports whether the pattern matches any mail addresses.
func (s *Set) HasMail() bool { return s != nil && s.hasMail }

// Contains reports whether addr is in the pattern for a client without a
// verified name: host masks match nothing. It is one table walk, does no
// DNS lookup and does not allocate. IPv4-mapped IPv6 addresses match as
// IPv4. For a pattern with host masks (HasHosts), ContainsClient gives the
// whole answer.
func (s *Set) Contains(addr netip.Addr) bool {
	if s == nil || s.addrs == nil || !addr.IsValid() {
		return false
	}
	return s.addrs.Contains(addr.Unmap())
}

// ContainsClient reports whether the client at addr is in the pattern,
// matching host masks against the client's verified name. A pattern
// without host masks answers as Contains does, without a lookup. With host
// masks, the name is looked up (through the pattern's NameResolver and its
// cache) only when the answer depends on it: not for an address an address
// item excludes, nor for one an address item holds when no host mask is
// excluded. A client whose name cannot be verified matches no host mask.
func (s *Set) ContainsClient(ctx context.Context, addr netip.Addr) bool {
	if s != nil && s.hasHost {
		return s.containsClient(ctx, addr)
	}
	return s.Contains(addr)
}

// containsClient is ContainsClient for a pattern with host masks.
func (s *Set) containsClient(ctx context.Context, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap()
	if s.namedNeg.Contains(addr) {
		return false
	}
	if s.monotone && s.addrs.Contains(addr) {
		return true
	}
	name, err := s.clientName(ctx, addr)
	if err != nil {
		return s.addrs.Contains(addr)
	}
	return s.containsNamed(addr, name)
}

// clientName returns addr's verified name through the pattern's resolver.
func (s *Set) clientName(ctx context.Context, addr netip.Addr) (string, error) {
	if s.names == nil {
		return "", ErrNoNameResolver
	}
	name, err := s.names.VerifiedName(ctx, addr)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("the resolver returned an empty name")
	}
	return normalizeHost(name), nil
}

// containsNamed is membership for a client at addr whose verified name is
// name ("" when it has none).
func (s *Set) containsNamed(addr netip.Addr, name string) bool {
	if !s.hasHost || name == "" {
		return s.addrs != nil && s.addrs.Contains(addr)
	}
	in := s.namedPos.Contains(addr) || s.hostPos.match(name)
	for _, r := range s.hostPosRefs {
		if in {
			break
		}
		in = r.containsNamed(addr, name)
	}
	if !in || s.namedNeg.Contains(addr) || s.hostNeg.match(name) {
		return false
	}
	for _, r := range s.hostNegRefs {
		if r.containsNamed(addr, name) {
			return false
		}
	}
	return true
}

// ContainsMail reports whether the mail address is in the pattern. The
// address is compared case-insensitively; angle brackets are ignored.
func (s *Set) ContainsMail(addr string) bool {
	if s == nil || !s.hasMail {
		return false
	}
	return s.matchMail(NormalizeMail(addr))
}

func (s *Set) matchMail(a string) bool {
	in := s.mailPos.match(a)
	for _, r := range s.mailPosRefs {
		if in {
			break
		}
		in = r.matchMail(a)
	}
	if !in {
		return false
	}
	if s.mailNeg.match(a) {
		return false
	}
	for _, r := range s.mailNegRefs {
		if r.matchMail(a) {
			return false
		}
	}
	return true
}

// String returns the pattern's name in brackets, or "(list)" when anonymous.
func (s *Set) String() string {
	if s.name == "" {
		return "(list at " + s.pos.String() + ")"
	}
	return "[" + s.name + "]"
}

// Union returns a pattern holding every address and mail address of sets.
// Each set becomes one reference item of the union, so explanations name the
// set's own items and positions. Nil sets are skipped; with none left it
// returns nil.
func Union(name string, sets []*Set) *Set {
	u := &Set{name: name, addrs: new(bart.Lite)}
	for _, s := range sets {
		if s == nil {
			continue
		}
		texts := make([]string, len(s.items))
		for i := range s.items {
			texts[i] = s.items[i].String()
		}
		pos := s.pos
		if len(s.items) > 0 {
			pos = s.items[0].Pos()
		}
		file := pos.File
		u.items = append(u.items, Item{Text: strings.Join(texts, "; "), Kind: KindRef, ref: s,
			file: &file, line: int32(pos.Line), col: int32(pos.Col)})
		if u.geo == nil {
			u.geo = s.geo
		}
		if s.addrs != nil {
			u.addrs.Union(s.addrs)
		}
		if s.hasHost {
			u.hasHost = true
			u.hostPosRefs = append(u.hostPosRefs, s)
			if u.names == nil {
				u.names = s.names
			}
		}
		if s.hasMail {
			u.hasMail = true
			u.mailPosRefs = append(u.mailPosRefs, s)
		}
	}
	if len(u.items) == 0 {
		return nil
	}
	u.addrs.Aggregate()
	if u.hasHost {
		u.namedPos, u.namedNeg = new(bart.Lite), new(bart.Lite)
		for _, s := range sets {
			if s != nil && !s.hasHost && s.addrs != nil {
				u.namedPos.Union(s.addrs)
			}
		}
		u.monotone = true
		for _, r := range u.hostPosRefs {
			u.monotone = u.monotone && r.monotone
		}
	}
	return u
}
