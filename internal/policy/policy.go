// Package policy is postern's access control: which addresses may use
// which service, which may reach a web path, and from where each account may
// log in. A Policy is compiled from the configuration and immutable; its
// Allow methods are allocation-free for the accept path, and its Explain
// methods say which rule decided, with file and line, for people.
package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/service"
)

// Policy is the compiled access policy of one configuration.
type Policy struct {
	services [service.Count]*Service // nil: not configured
	logins   Logins
	trusted  *patterns.Set
	reg      *patterns.Registry // compiles travel passes' lists
	// compileMu serializes CompileLoginList: the registry appends its
	// warnings as it compiles.
	compileMu sync.Mutex
	hostMasks bool // HasHostMasks, found once when built
}

// List is a grant or deny list as written and compiled.
type List struct {
	Text string
	Pos  diag.Pos
	Set  *patterns.Set
}

// Service holds the rules of one service.
type Service struct {
	Name  service.Service
	Grant *List // nil: every address may connect
	Deny  *List // nil: no address is denied
	Paths []PathRule
}

// PathRule restricts requests whose cleaned path starts with Prefix
// (compared case-insensitively) to its own lists.
type PathRule struct {
	Prefix string
	Pos    diag.Pos
	Grant  *List
	Deny   *List
}

// Build compiles the access rules of cfg against the compiled patterns.
// It returns warnings for legal but doubtful settings.
func Build(cfg *config.File, reg *patterns.Registry) (*Policy, []error, error) {
	p := &Policy{reg: reg}
	var errs diag.List
	var warns []error
	list := func(t config.Text) *List {
		if !t.IsSet() {
			return nil
		}
		set, err := reg.Expr(patterns.Source{Text: t.Value, Pos: t.Pos, Quoted: t.Quoted})
		if err != nil {
			errs.Add(err)
			return nil
		}
		if hasMailItems(set) {
			errs.Add(diag.Errorf(t.Pos, "this list takes IP addresses, networks and countries, not mail masks"))
			return nil
		}
		return &List{Text: t.Value, Pos: t.Pos, Set: set}
	}
	for name, sc := range cfg.Services {
		s := &Service{Name: name, Grant: list(sc.Grant), Deny: list(sc.Deny)}
		for _, pr := range sc.PathRules() {
			s.Paths = append(s.Paths, PathRule{
				Prefix: strings.ToLower(CleanPath(pr.Prefix.Value)), Pos: pr.Prefix.Pos,
				Grant: list(pr.Grant), Deny: list(pr.Deny),
			})
		}
		if name == service.SMTP && s.Grant != nil {
			warns = append(warns, diag.Errorf(s.Grant.Pos, "smtp has a grant list: port 25 must take mail from any address on the Internet; restrict where accounts log in from with login_restrictions instead"))
		}
		p.services[name] = s
	}
	if l := list(cfg.TrustedUpstreams); l != nil {
		if l.Set.HasHosts() {
			errs.Add(diag.Errorf(l.Pos, "trusted_upstreams takes addresses and networks, not host masks: trust in PROXY headers must not rest on DNS"))
		} else {
			p.trusted = l.Set
		}
	}
	names := LoginNames{DefaultDomain: cfg.Logins.DefaultDomain.Value, ForceDomain: cfg.Logins.ForceDomain}
	p.logins = buildLogins(cfg.LoginRestrictions, names, reg, &errs)
	if err := errs.Err(); err != nil {
		return nil, nil, err
	}
	p.hostMasks = p.findHostMasks()
	return p, warns, nil
}

func hasMailItems(s *patterns.Set) bool {
	for _, it := range s.Items() {
		if it.Kind == patterns.KindMail {
			return true
		}
	}
	return false
}

// HasHostMasks reports whether any grant, deny or login restriction list
// has host masks, which need client names from DNS.
func (p *Policy) HasHostMasks() bool { return p.hostMasks }

func (p *Policy) findHostMasks() bool {
	has := func(l *List) bool { return l != nil && l.Set.HasHosts() }
	for _, s := range p.services {
		if s == nil {
			continue
		}
		if has(s.Grant) || has(s.Deny) {
			return true
		}
		for i := range s.Paths {
			if has(s.Paths[i].Grant) || has(s.Paths[i].Deny) {
				return true
			}
		}
	}
	for _, r := range p.logins.accounts {
		if has(&r.List) {
			return true
		}
	}
	for _, r := range p.logins.domains {
		if has(&r.List) {
			return true
		}
	}
	return p.logins.star != nil && has(&p.logins.star.List)
}

// Service returns the rules of a configured service, or nil.
func (p *Policy) Service(svc service.Service) *Service {
	if int(svc) >= len(p.services) {
		return nil
	}
	return p.services[svc]
}

// AllowService reports whether addr may connect to the service: not in its
// deny list and, when it has a grant list, in that. An unconfigured service
// allows no one. Lists without host masks are one table walk each, without
// allocation; a list with host masks may look the client's verified name up
// (cached, bounded by the resolver's timeout; see patterns.Set.ContainsClient).
func (p *Policy) AllowService(svc service.Service, addr netip.Addr) bool {
	s := p.Service(svc)
	if s == nil {
		return false
	}
	return allowed(s.Grant, s.Deny, addr)
}

func allowed(grant, deny *List, addr netip.Addr) bool {
	if deny != nil && deny.Set.ContainsClient(context.Background(), addr) {
		return false
	}
	return grant == nil || grant.Set.ContainsClient(context.Background(), addr)
}

// AllowPath reports whether addr may request path on a web service: every
// path rule whose prefix the cleaned path starts with must allow it. The
// service's own lists are not consulted; see AllowService.
func (p *Policy) AllowPath(svc service.Service, path string, addr netip.Addr) bool {
	s := p.Service(svc)
	if s == nil {
		return false
	}
	return s.pathAllowed(path, addr)
}

// TrustedUpstream reports whether addr is a trusted upstream (a load
// balancer that may send PROXY headers).
func (p *Policy) TrustedUpstream(addr netip.Addr) bool { return p.trusted.Contains(addr) }

// Verdict is an explained decision.
type Verdict struct {
	Allow bool
	Rules []Consulted
}

// Consulted is one rule looked at while deciding.
type Consulted struct {
	Rule   string   // e.g. "imap deny", "imap grant", "web path /admin grant", "login *"
	Text   string   // the list as written
	Pos    diag.Pos // where the rule is written
	Match  patterns.Match
	Effect string // what the rule did: "denies", "grants", "does not grant", "no match"
}

// ExplainService explains AllowService.
func (p *Policy) ExplainService(svc service.Service, addr netip.Addr) (Verdict, error) {
	s := p.Service(svc)
	if s == nil {
		return Verdict{}, fmt.Errorf("service %q is not configured", svc)
	}
	v := Verdict{Allow: true}
	explainLists(&v, svc.String(), s.Grant, s.Deny, addr)
	return v, nil
}

// ExplainPath explains AllowPath.
func (p *Policy) ExplainPath(svc service.Service, path string, addr netip.Addr) (Verdict, error) {
	s := p.Service(svc)
	if s == nil {
		return Verdict{}, fmt.Errorf("service %q is not configured", svc)
	}
	v := Verdict{Allow: true}
	clean, all := pathKey(path)
	for i := range s.Paths {
		r := &s.Paths[i]
		if all || hasFoldPrefix(clean, r.Prefix) {
			explainLists(&v, svc.String()+" path "+r.Prefix, r.Grant, r.Deny, addr)
		}
	}
	return v, nil
}

func explainLists(v *Verdict, what string, grant, deny *List, addr netip.Addr) {
	if deny != nil {
		m := deny.Set.ExplainClient(context.Background(), addr)
		c := Consulted{Rule: what + " deny", Text: deny.Text, Pos: deny.Pos, Match: m, Effect: "no match"}
		if m.In {
			c.Effect = "denies"
			v.Allow = false
		}
		v.Rules = append(v.Rules, c)
	}
	if grant != nil {
		m := grant.Set.ExplainClient(context.Background(), addr)
		c := Consulted{Rule: what + " grant", Text: grant.Text, Pos: grant.Pos, Match: m, Effect: "grants"}
		if !m.In {
			c.Effect = "does not grant"
			v.Allow = false
		}
		v.Rules = append(v.Rules, c)
	}
}
