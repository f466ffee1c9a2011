package nftexport

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Families maps the family names of the configuration to nftables'.
var Families = map[string]nftables.TableFamily{
	"inet": nftables.TableFamilyINet,
	"ip":   nftables.TableFamilyIPv4,
	"ip6":  nftables.TableFamilyIPv6,
}

// Netlink is the Target of the kernel's nftables, through netlink.
type Netlink struct {
	cfg        Config
	fam        nftables.TableFamily
	conn       *nftables.Conn
	table      *nftables.Table
	set4, set6 *nftables.Set
}

// wrapNL adds what is wrong to a netlink error.
func wrapNL(what string, err error) error {
	// the library does not always wrap the errno: its text too
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		strings.Contains(err.Error(), unix.EPERM.Error()) {
		return fmt.Errorf("nftables export: %s: %w (%v)", what, ErrPermission, err)
	}
	return fmt.Errorf("nftables export: %s: %w", what, err)
}

// Open connects to netlink and finds the table and sets of c, creating
// them (and the chain) when c.Create is set; else it says which is missing
// or unfit. netns, when not 0, is a descriptor of another network
// namespace whose nftables to use.
func Open(c Config, netns int) (*Netlink, error) {
	fam, ok := Families[c.Family]
	if !ok {
		return nil, fmt.Errorf("nftables export: unknown family %q (inet, ip or ip6)", c.Family)
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, wrapNL("opening netlink", err)
	}
	n := &Netlink{cfg: c, fam: fam, conn: conn}
	if err := n.prepare(c, fam); err != nil {
		_ = conn.CloseLasting()
		return nil, err
	}
	return n, nil
}

// Close closes the netlink connection.
func (n *Netlink) Close() error { return n.conn.CloseLasting() }

func (n *Netlink) prepare(c Config, fam nftables.TableFamily) error {
	n.table, n.set4, n.set6 = nil, nil, nil
	where := fmt.Sprintf("table %s %s", c.Family, c.Table)
	tables, err := n.conn.ListTablesOfFamily(fam)
	if err != nil {
		return wrapNL("listing the tables", err)
	}
	for _, t := range tables {
		if t.Name == c.Table {
			n.table = t
		}
	}
	existed := n.table != nil
	if n.table == nil {
		if !c.Create {
			return fmt.Errorf("nftables export: %s does not exist (create it with `nft add table %s %s` and its sets, or set nftables.create: true)", where, c.Family, c.Table)
		}
		n.table = n.conn.AddTable(&nftables.Table{Family: fam, Name: c.Table})
	}
	var sets []*nftables.Set
	if existed {
		if sets, err = n.conn.GetSets(n.table); err != nil {
			return wrapNL("listing the sets of "+where, err)
		}
	}
	find := func(name string, kt nftables.SetDatatype, typ string) (*nftables.Set, error) {
		i := slices.IndexFunc(sets, func(s *nftables.Set) bool { return s.Name == name })
		if i < 0 {
			if !c.Create {
				return nil, fmt.Errorf("nftables export: %s has no set %s (create it with `nft add set %s %s %s '{ type %s; flags interval, timeout; }'`, or set nftables.create: true)", where, name, c.Family, c.Table, name, typ)
			}
			s := &nftables.Set{Table: n.table, Name: name, KeyType: kt, Interval: true, HasTimeout: true}
			if err := n.conn.AddSet(s, nil); err != nil {
				return nil, wrapNL("creating set "+name, err)
			}
			return s, nil
		}
		s := sets[i]
		var bad []string
		if s.KeyType.GetNFTMagic() != kt.GetNFTMagic() {
			bad = append(bad, "type "+typ)
		}
		if !s.Interval {
			bad = append(bad, "flags interval")
		}
		if !s.HasTimeout {
			bad = append(bad, "flags timeout")
		}
		if s.IsMap || s.Constant {
			bad = append(bad, "a plain set (not a map, not constant)")
		}
		if len(bad) > 0 {
			return nil, fmt.Errorf("nftables export: set %s of %s lacks %s (delete it, or set nftables.create: true after deleting it, to have it made)", name, where, strings.Join(bad, ", "))
		}
		s.Table = n.table
		return s, nil
	}
	if n.set4, err = find(c.Set4, nftables.TypeIPAddr, "ipv4_addr"); err != nil {
		return err
	}
	if n.set6, err = find(c.Set6, nftables.TypeIP6Addr, "ipv6_addr"); err != nil {
		return err
	}
	if c.Create && c.Chain != "" {
		n.dropChain(c.Chain, fam)
	}
	if err := n.conn.Flush(); err != nil {
		return wrapNL("creating "+where, err)
	}
	return nil
}

// dropChain queues the chain c of the table, hooked on input, flushed and
// filled with one rule per set dropping its source addresses.
func (n *Netlink) dropChain(name string, fam nftables.TableFamily) {
	policy := nftables.ChainPolicyAccept
	ch := n.conn.AddChain(&nftables.Chain{
		Name: name, Table: n.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(-10), Policy: &policy,
	})
	n.conn.FlushChain(ch)
	rule := func(s *nftables.Set, nfproto byte, off, size uint32) {
		var e []expr.Any
		if fam == nftables.TableFamilyINet {
			e = append(e,
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}})
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop})
		n.conn.AddRule(&nftables.Rule{Table: n.table, Chain: ch, Exprs: e})
	}
	if fam != nftables.TableFamilyIPv6 {
		rule(n.set4, unix.NFPROTO_IPV4, 12, 4)
	}
	if fam != nftables.TableFamilyIPv4 {
		rule(n.set6, unix.NFPROTO_IPV6, 8, 16)
	}
}

// List implements Target. With Create, a table or set deleted by hand
// is made again (and the chain rewritten).
func (n *Netlink) List() ([]Elem, error) {
	out, err := n.list()
	if err != nil && n.cfg.Create {
		if perr := n.prepare(n.cfg, n.fam); perr != nil {
			return nil, fmt.Errorf("%w (and making the sets again: %v)", err, perr)
		}
		return n.list()
	}
	return out, err
}

func (n *Netlink) list() ([]Elem, error) {
	var out []Elem
	for _, s := range []*nftables.Set{n.set4, n.set6} {
		els, err := n.conn.GetSetElements(s)
		if err != nil {
			return nil, wrapNL("listing set "+s.Name, err)
		}
		out = append(out, ranges(els)...)
	}
	return out, nil
}

// ranges pairs the start and end elements of an interval set.
func ranges(els []nftables.SetElement) []Elem {
	type pt struct {
		a   netip.Addr
		end bool
		t   nftables.SetElement
	}
	pts := make([]pt, 0, len(els))
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		pts = append(pts, pt{a: a, end: e.IntervalEnd, t: e})
	}
	// by address; at one address the end of a range comes before the
	// start of the next
	slices.SortFunc(pts, func(x, y pt) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		if x.end == y.end {
			return 0
		}
		if x.end {
			return -1
		}
		return 1
	})
	var out []Elem
	var open *pt
	for i := range pts {
		p := &pts[i]
		switch {
		case !p.end:
			if open != nil { // a start without end: up to the next start
				out = append(out, Elem{Range: Range{open.a, p.a.Prev()}, Timeout: left(open.t)})
			}
			open = p
		case open != nil:
			out = append(out, Elem{Range: Range{open.a, p.a.Prev()}, Timeout: left(open.t)})
			open = nil
		}
	}
	if open != nil {
		out = append(out, Elem{Range: Range{open.a, lastAddr(netip.PrefixFrom(open.a, 0))}, Timeout: left(open.t)})
	}
	return out
}

// left is the time an element has left (zero: no timeout).
func left(e nftables.SetElement) (d time.Duration) {
	if e.Timeout == 0 {
		return 0
	}
	if e.Expires == 0 {
		return e.Timeout
	}
	return e.Expires
}

// elems writes r as the start and (unless r ends at the last address)
// end elements of an interval set.
func elems(r Range, t time.Duration) []nftables.SetElement {
	out := []nftables.SetElement{{Key: r.From.AsSlice(), Timeout: t}}
	if next := r.To.Next(); next.IsValid() {
		out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
	}
	return out
}

// Apply implements Target: one netlink batch, applied whole or not at all.
func (n *Netlink) Apply(del []Range, add []Elem) error {
	var d4, d6, a4, a6 []nftables.SetElement
	for _, r := range del {
		if r.From.Is4() {
			d4 = append(d4, elems(r, 0)...)
		} else {
			d6 = append(d6, elems(r, 0)...)
		}
	}
	for _, e := range add {
		if e.From.Is4() {
			a4 = append(a4, elems(e.Range, e.Timeout)...)
		} else {
			a6 = append(a6, elems(e.Range, e.Timeout)...)
		}
	}
	for _, op := range []struct {
		f   func(*nftables.Set, []nftables.SetElement) error
		s   *nftables.Set
		els []nftables.SetElement
	}{{n.conn.SetDeleteElements, n.set4, d4}, {n.conn.SetDeleteElements, n.set6, d6}, {n.conn.SetAddElements, n.set4, a4}, {n.conn.SetAddElements, n.set6, a6}} {
		if len(op.els) == 0 {
			continue
		}
		if err := op.f(op.s, op.els); err != nil {
			return wrapNL("queueing elements of "+op.s.Name, err)
		}
	}
	if err := n.conn.Flush(); err != nil {
		return wrapNL("writing the sets", err)
	}
	return nil
}
