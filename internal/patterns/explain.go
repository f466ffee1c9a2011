package patterns

import (
	"context"
	"net/netip"
	"strings"
)

// Step is one link of an explanation: an item of a pattern that matched.
type Step struct {
	Set  *Set
	Item *Item
}

// Match explains a membership answer. Steps run from the outermost pattern
// to the item that decided: for an address in the set, the positive item
// that holds it (through references); for an address excluded, the "!"
// item that removed it — also when the exclusion is inside a referenced
// pattern. Steps is empty when no item matched at all.
type Match struct {
	In    bool
	Steps []Step
	// Client is the name lookup made for host masks; nil when none was
	// made (the pattern has no host masks, or Explain was asked).
	Client *ClientName
}

// ClientName is the outcome of looking a client's name up for host masks.
type ClientName struct {
	// Name is the client's forward-confirmed name ("" when there is none).
	Name string
	// Err says why there is no name: no PTR record, not confirmed by the
	// forward lookup, timeout, DNS failure or no resolver configured.
	Err error
}

// Decider returns the innermost step, the item that decided, if any.
func (m Match) Decider() (Step, bool) {
	if len(m.Steps) == 0 {
		return Step{}, false
	}
	return m.Steps[len(m.Steps)-1], true
}

// Explain says why addr is or is not in the pattern for a client without
// a verified name. It agrees with Contains; it is meant for people and
// allocates.
func (s *Set) Explain(addr netip.Addr) Match {
	if s == nil || !addr.IsValid() {
		return Match{}
	}
	return s.explainNamed(addr.Unmap(), "")
}

// ExplainClient says why the client at addr is or is not in the pattern,
// as ContainsClient decides it. For a pattern with host masks it always
// looks the client's name up and reports the outcome in Match.Client.
func (s *Set) ExplainClient(ctx context.Context, addr netip.Addr) Match {
	if s == nil || !addr.IsValid() {
		return Match{}
	}
	addr = addr.Unmap()
	if !s.hasHost {
		return s.explainNamed(addr, "")
	}
	name, err := s.clientName(ctx, addr)
	m := s.explainNamed(addr, name)
	m.Client = &ClientName{Name: name, Err: err}
	return m
}

func (s *Set) explainNamed(addr netip.Addr, name string) Match {
	return s.explain(func(it *Item) (bool, *Set) {
		if it.Kind == KindRef {
			return it.ref.containsNamed(addr, name), it.ref
		}
		return s.itemHolds(it, addr, name), nil
	}, func(ref *Set) Match { return ref.explainNamed(addr, name) })
}

// ExplainMail says why a mail address is or is not in the pattern.
func (s *Set) ExplainMail(addr string) Match {
	if s == nil {
		return Match{}
	}
	a := NormalizeMail(addr)
	return s.explain(func(it *Item) (bool, *Set) {
		switch it.Kind {
		case KindRef:
			return it.ref.HasMail() && it.ref.matchMail(a), it.ref
		case KindMail:
			return globMatch(strings.ToLower(it.Text), a), nil
		}
		return false, nil
	}, func(ref *Set) Match { return ref.ExplainMail(addr) })
}

// explain checks exclusions first (they win whatever their order), then the
// positive items in the order written.
func (s *Set) explain(holds func(*Item) (bool, *Set), inner func(*Set) Match) Match {
	for _, neg := range []bool{true, false} {
		for i := range s.items {
			it := &s.items[i]
			if it.Negate != neg {
				continue
			}
			ok, ref := holds(it)
			if !ok {
				continue
			}
			m := Match{In: !neg, Steps: []Step{{Set: s, Item: it}}}
			if ref != nil {
				m.Steps = append(m.Steps, inner(ref).Steps...)
			}
			return m
		}
	}
	// Nothing holds addr. If a referenced pattern left it out only because
	// of one of its own exclusions, that exclusion is the reason to show.
	for i := range s.items {
		it := &s.items[i]
		if it.Negate || it.Kind != KindRef {
			continue
		}
		if sub := inner(it.ref); len(sub.Steps) > 0 {
			return Match{Steps: append([]Step{{Set: s, Item: it}}, sub.Steps...)}
		}
	}
	return Match{}
}

// itemHolds reports whether an address or host item holds the client at
// addr with the verified name ("" for none). The item's text was valid when
// compiled, so parsing it again cannot fail.
func (s *Set) itemHolds(it *Item, addr netip.Addr, name string) bool {
	t, err := parseTerm(it.Text)
	if err != nil {
		return false
	}
	switch t.kind {
	case KindAddress, KindCIDR, KindWildcard, KindRange:
		for _, p := range t.prefixes() {
			if p.Contains(addr) {
				return true
			}
		}
	case KindCountry:
		return s.geo != nil && s.geo.InCountry(addr, t.country)
	case KindASN:
		return s.geo != nil && s.geo.InASN(addr, t.asn)
	case KindHost:
		return name != "" && globMatch(t.host, name)
	}
	return false
}
