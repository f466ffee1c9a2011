package preflight

import (
	"net/netip"
	"strings"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/service"
)

// logins reports services through which no client can ever log in: IMAP
// and POP3 take passwords only over TLS (or from plaintext_login
// addresses), SMTP AUTH only after STARTTLS (or with allow_insecure_auth);
// without either, IMAP announces LOGINDISABLED, POP3 refuses USER and an
// SMTP service that requires AUTH answers 530 without offering it. Also
// grant lists that admit no address at all.
func (c *checker) logins() {
	f := c.s.Config
	sev := Error
	if c.o.Mode == ModeServe {
		sev = Warning // serve runs what it can; check says it is useless
	}
	for _, sv := range service.All {
		svc := f.Services[sv]
		if svc == nil {
			continue
		}
		name := sv.String()
		switch {
		case svc.Mail != nil && svc.TLS == nil && !svc.Mail.PlaintextLogin.IsSet():
			shows := "announces LOGINDISABLED"
			if strings.HasPrefix(name, "pop3") {
				shows = "offers neither USER nor SASL"
			}
			c.add("", sev, svc.Pos(),
				"service %s: no client can ever log in: it has no tls: (so no STARTTLS) and no plaintext_login, so it %s and refuses every login; give it tls: { cert, key } (postern init writes a self-signed pair), or plaintext_login for networks you trust",
				name, shows)
		case svc.SMTP != nil && svc.SMTP.RequireAuth && svc.TLS == nil && !svc.SMTP.AllowInsecureAuth:
			c.add("", sev, svc.Pos(),
				"service %s: no client can ever send mail: it requires AUTH, but AUTH is offered only after STARTTLS and it has no tls:, so every MAIL gets 530 without AUTH being offered; give it tls: { cert, key }, or allow_insecure_auth: true on a network you trust",
				name)
		}
		if ps := c.s.Policy.Service(sv); ps != nil && ps.Grant != nil {
			if set := ps.Grant.Set; set.Networks() == 0 && !set.HasHosts() {
				c.add("", Warning, ps.Grant.Pos, "service %s: the grant list admits no address, so no client can connect", name)
			}
		}
	}
}

// list is an anonymous list of the configuration to compile for a check.
type list struct {
	what string // "trusted_upstreams", "services.imap.grant", …
	text config.Text
}

// lists returns every anonymous address list of the configuration: grant
// and deny lists, path rules, plaintext_login, trusted_upstreams,
// admin.grant, metrics.grant and the right-hand sides of login restrictions.
func (c *checker) lists() []list {
	f := c.s.Config
	var out []list
	for _, sv := range service.All {
		svc := f.Services[sv]
		if svc == nil {
			continue
		}
		name := sv.String()
		out = append(out, list{"services." + name + ".grant", svc.Grant}, list{"services." + name + ".deny", svc.Deny})
		for _, pr := range svc.PathRules() {
			out = append(out, list{"services." + name + ".paths", pr.Grant}, list{"services." + name + ".paths", pr.Deny})
		}
		if svc.Mail != nil {
			out = append(out, list{"services." + name + ".plaintext_login", svc.Mail.PlaintextLogin})
		}
	}
	out = append(out, list{"trusted_upstreams", f.TrustedUpstreams}, list{"admin.grant", f.Admin.Grant}, list{"metrics.grant", f.Metrics.Grant})
	for _, lr := range f.LoginRestrictions {
		subject, items, ok := strings.Cut(lr.Value, "=")
		if !ok || strings.Contains(subject, "\n") {
			continue
		}
		t := config.Text{Value: items, Pos: lr.Pos}
		t.Pos.Col += len(subject) + 1
		if lr.Quoted {
			t.Pos.Col++
		}
		out = append(out, list{"login_restrictions", t})
	}
	return out
}

// compile compiles an anonymous list against the configuration's
// patterns; nil when unset or when it does not compile (loading already
// said why).
func (c *checker) compile(t config.Text) *patterns.Set {
	if !t.IsSet() {
		return nil
	}
	set, err := c.s.Patterns.Expr(patterns.Source{Text: t.Value, Pos: t.Pos, Quoted: t.Quoted})
	if err != nil {
		return nil
	}
	return set
}

// hostBits reports networks written with host bits set
// (198.51.100.7/24): postern, like IceWarp, reads them as the whole
// network, which is rarely what was meant — an administrator's address
// with a mask opens /admin to the neighbours. Each item once, wherever it
// is referenced from.
func (c *checker) hostBits() {
	check := func(s *patterns.Set) {
		if s == nil {
			return
		}
		for i := range s.Items() {
			it := &s.Items()[i]
			if it.Kind != patterns.KindCIDR {
				continue
			}
			p, err := netip.ParsePrefix(strings.TrimSpace(it.Text))
			if err != nil {
				continue // a dotted netmask: masked as IceWarp does
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			if m := p.Masked(); m != p {
				pos := it.Pos()
				c.add("hostbits "+pos.String()+" "+it.Text, Error, pos,
					"%s has host bits set: it means the whole network %s, not the address %s; write %s for the network or %s for the one address",
					it.Text, m, p.Addr(), m, p.Addr())
			}
		}
	}
	for _, name := range c.s.Patterns.Names() {
		check(c.s.Patterns.Lookup(name))
	}
	for _, l := range c.lists() {
		check(c.compile(l.text))
	}
}

// prefixes returns the networks of a set's plain address and CIDR items,
// following references; exclusions are left out.
func prefixes(s *patterns.Set, depth int) []itemPrefix {
	if s == nil || depth > 32 {
		return nil
	}
	var out []itemPrefix
	for i := range s.Items() {
		it := &s.Items()[i]
		if it.Negate {
			continue
		}
		switch it.Kind {
		case patterns.KindRef:
			out = append(out, prefixes(it.Ref(), depth+1)...)
		case patterns.KindAddress:
			if a, err := netip.ParseAddr(strings.TrimSpace(it.Text)); err == nil {
				a = a.Unmap()
				out = append(out, itemPrefix{netip.PrefixFrom(a, a.BitLen()), it})
			}
		case patterns.KindCIDR:
			if p, err := netip.ParsePrefix(strings.TrimSpace(it.Text)); err == nil && !p.Addr().Is4In6() {
				out = append(out, itemPrefix{p.Masked(), it})
			}
		}
	}
	return out
}

type itemPrefix struct {
	p  netip.Prefix
	it *patterns.Item
}

// trusted reports trusted upstreams that take in ordinary clients: a
// trusted peer must start every connection with a PROXY header, and one
// that does not is held for 5 s and dropped. Loopback there catches every
// client on this machine (a webmail, a monitoring check, swaks); a
// trusted network overlapping a grant list catches the clients the grant
// list is for — while explain, which reads the grant list, says allow.
func (c *checker) trusted() {
	f := c.s.Config
	t := c.compile(f.TrustedUpstreams)
	if t == nil {
		return
	}
	var loop []string
	for _, a := range []string{"127.0.0.1", "::1"} {
		if t.Contains(netip.MustParseAddr(a)) {
			loop = append(loop, a)
		}
	}
	if len(loop) > 0 {
		c.add("", Warning, f.TrustedUpstreams.Pos,
			"trusted_upstreams includes %s (loopback): every connection from this machine must then start with a PROXY header, and a local client without one (a webmail on this host, a monitoring check, swaks) waits 5s and is dropped; keep loopback here only for a load balancer on this host that sends PROXY headers",
			joinAnd(loop))
	}
	tp := prefixes(t, 0)
	for _, sv := range service.All {
		name := sv.String()
		ps := c.s.Policy.Service(sv)
		if ps == nil || ps.Grant == nil {
			continue
		}
		g := ps.Grant.Set
		hit := func(tr itemPrefix, gr *patterns.Item) {
			if tr.p.Addr().IsLoopback() {
				return // said above
			}
			where := ""
			if gr != nil {
				where = " (" + gr.Text + " at " + gr.Pos().String() + ")"
			}
			c.add("trusted "+tr.it.Pos().String()+" "+name, Warning, tr.it.Pos(),
				"trusted_upstreams item %s overlaps the addresses service %s grants%s: a client there connecting directly must start with a PROXY header, else it waits 5s and is dropped, while explain says allow; list only the load balancers' own addresses",
				tr.it.Text, name, where)
		}
		// A trusted network inside or around the grant list: one
		// trusted address (a load balancer inside a granted network) is
		// fine.
		for _, tr := range tp {
			if !tr.p.IsSingleIP() && g.Contains(tr.p.Addr()) {
				hit(tr, nil)
			}
		}
		for _, gr := range prefixes(g, 0) {
			if t.Contains(gr.p.Addr()) {
				for _, tr := range tp {
					if tr.p.Overlaps(gr.p) && !(tr.p.IsSingleIP() && !gr.p.IsSingleIP()) {
						hit(tr, gr.it)
					}
				}
			}
		}
	}
}
