package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"unicode"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/patterns"
)

// LoginRule is one login IP restriction line: Subject is an account
// ("ceo@example.com"), a domain ("@example.com") or "*".
type LoginRule struct {
	Subject string
	List    List
}

// Logins holds the login IP restrictions; the most specific rule applies:
// the account's, else its domain's, else "*". Names are compared as the
// backend resolves them (see Canon).
type Logins struct {
	accounts map[string]*LoginRule
	domains  map[string]*LoginRule
	star     *LoginRule
	names    LoginNames
}

// LoginNames is how the backend resolves a login name to its account.
type LoginNames struct {
	// DefaultDomain (lower case, no '@') is appended to a name without '@',
	// as Dovecot's auth_default_realm and Roundcube's username_domain do.
	DefaultDomain string
	// ForceDomain replaces the domain of every name with DefaultDomain, as
	// Roundcube's username_domain_forced does.
	ForceDomain bool
}

// Canon returns the account that the login name resolves to: white space
// around it trimmed, the default domain applied, and case folded.
//
// Case folding is Unicode simple case folding, so it covers both Dovecot's
// ASCII lower-casing (auth_username_format %Lu; its default
// auth_username_chars admits ASCII only) and Roundcube's mb_strtolower
// (login_lc), and also a case-insensitive user database: "BOB", "Bob" and
// "bob" are one account, as are "ſ" and "s" or "K" (Kelvin) and "k". A name
// that folds together with a restricted account therefore meets that
// account's restriction; folding more than a backend does can only make a
// restriction apply to more names, never fewer.
func (n LoginNames) Canon(name string) string {
	name = strings.TrimSpace(name)
	if n.DefaultDomain != "" {
		if at := strings.IndexByte(name, '@'); at < 0 {
			name += "@" + n.DefaultDomain
		} else if n.ForceDomain {
			name = name[:at] + "@" + n.DefaultDomain
		}
	}
	return foldCase(name)
}

// foldCase maps every character to one representative of its case (the
// lower case of the smallest member of the simple case-folding orbit of its
// upper case, so that also 'ı' and 'İ', which fold with nothing, meet 'i'):
// ASCII is lower-cased.
func foldCase(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			var b strings.Builder
			b.Grow(len(s))
			for _, r := range s {
				b.WriteRune(foldRune(r))
			}
			return b.String()
		}
	}
	return strings.ToLower(s)
}

func foldRune(r rune) rune {
	r = unicode.ToLower(unicode.ToUpper(r))
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return unicode.ToLower(m)
}

func buildLogins(lines []config.Text, names LoginNames, reg *patterns.Registry, errs *diag.List) Logins {
	l := Logins{accounts: make(map[string]*LoginRule), domains: make(map[string]*LoginRule), names: names}
	for _, line := range lines {
		lhs, rhs, _ := strings.Cut(line.Value, "=")
		subject := foldCase(strings.TrimSpace(lhs))
		if err := checkSubject(subject); err != "" {
			errs.Add(diag.Errorf(line.Pos, "bad login restriction %q: %s", line.Value, err))
			continue
		}
		if strings.TrimSpace(rhs) == "" {
			errs.Add(diag.Errorf(line.Pos, "login restriction for %s lists no addresses; it would refuse every login", subject))
			continue
		}
		pos := line.Pos
		if pos.Col > 0 {
			pos.Col += len(lhs) + 1
		}
		set, err := reg.Expr(patterns.Source{Text: rhs, Pos: pos, Quoted: line.Quoted})
		if err != nil {
			errs.Add(err)
			continue
		}
		if hasMailItems(set) {
			errs.Add(diag.Errorf(line.Pos, "login restriction for %s: list IP addresses, networks, countries or [patterns], not mail masks", subject))
			continue
		}
		rule := &LoginRule{Subject: subject, List: List{Text: strings.TrimSpace(rhs), Pos: line.Pos, Set: set}}
		var prev *LoginRule
		switch {
		case subject == "*":
			prev, l.star = l.star, rule
		case subject[0] == '@':
			prev = l.domains[subject[1:]]
			l.domains[subject[1:]] = rule
		default:
			// An account is written as the backend resolves it: "bob"
			// with a default domain is bob@ that domain.
			subject = names.Canon(subject)
			rule.Subject = subject
			prev = l.accounts[subject]
			l.accounts[subject] = rule
		}
		if prev != nil {
			errs.Add(diag.Errorf(line.Pos, "second login restriction for %s (the first is at %s); put all its entries on one line", subject, prev.List.Pos))
		}
	}
	return l
}

func checkSubject(s string) string {
	switch {
	case s == "":
		return "want account=patterns, @domain=patterns or *=patterns"
	case s == "*":
		return ""
	case strings.ContainsAny(s, " \t*?;[]{}"):
		return "the account or domain has a character that cannot be in one"
	case s[0] == '@' && (len(s) == 1 || strings.Contains(s[1:], "@")):
		return "want @domain"
	}
	return ""
}

// Canon returns the account a login name resolves to (LoginNames.Canon). A
// nil Logins folds case only.
func (l *Logins) Canon(name string) string {
	if l == nil {
		return LoginNames{}.Canon(name)
	}
	return l.names.Canon(name)
}

// Rule returns the login restriction that applies to the login name, or nil
// when none does. Names are compared as Canon resolves them.
func (l *Logins) Rule(account string) *LoginRule {
	a := l.Canon(account)
	if r := l.accounts[a]; r != nil {
		return r
	}
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		if r := l.domains[a[i+1:]]; r != nil {
			return r
		}
	}
	return l.star
}

// Logins returns the login restrictions (nil for a nil Policy).
func (p *Policy) Logins() *Logins {
	if p == nil {
		return nil
	}
	return &p.logins
}

// AllowLogin reports whether account may log in from addr under the login
// IP restrictions. With no rule for the account, every address may. A rule
// with host masks may look the client's verified name up.
func (p *Policy) AllowLogin(account string, addr netip.Addr) bool {
	r := p.logins.Rule(account)
	return r == nil || r.List.Set.ContainsClient(context.Background(), addr)
}

// ExplainLogin explains AllowLogin.
func (p *Policy) ExplainLogin(account string, addr netip.Addr) Verdict {
	r := p.logins.Rule(account)
	if r == nil {
		return Verdict{Allow: true}
	}
	m := r.List.Set.ExplainClient(context.Background(), addr)
	c := Consulted{Rule: "login " + r.Subject, Text: r.List.Text, Pos: r.List.Pos, Match: m, Effect: "allows"}
	if a := p.logins.Canon(account); a != account {
		c.Rule += " (" + account + " logs in as " + a + ")"
	}
	if !m.In {
		c.Effect = "refuses"
	}
	return Verdict{Allow: m.In, Rules: []Consulted{c}}
}

// CompileLoginList compiles an extra login list, such as a travel pass's,
// as a login restriction's right-hand side is compiled: addresses,
// networks, countries and [patterns] of this configuration, no mail masks.
func (p *Policy) CompileLoginList(text string) (*patterns.Set, error) {
	if p == nil || p.reg == nil {
		return nil, errors.New("no configuration to compile the list against")
	}
	// Expr records doubts (a country the GeoIP data has no networks for)
	// as the registry's warnings: one compilation at a time, and a list
	// that would draw one is refused, since it would allow nothing.
	p.compileMu.Lock()
	n := len(p.reg.Warnings())
	set, err := p.reg.Expr(patterns.Source{Text: text})
	warns := p.reg.Warnings()[n:]
	p.compileMu.Unlock()
	if err != nil {
		return nil, err
	}
	if len(warns) > 0 {
		return nil, errors.Join(warns...)
	}
	if hasMailItems(set) {
		return nil, errors.New("list IP addresses, networks, countries or [patterns], not mail masks")
	}
	return set, nil
}

// Restricted reports whether a login restriction applies to the account
// (or, for "@domain", to the domain's accounts): a travel pass only
// matters where one does.
func (p *Policy) Restricted(account string) bool {
	if p == nil {
		return false
	}
	if strings.HasPrefix(account, "@") {
		return p.logins.domains[foldCase(account[1:])] != nil || p.logins.star != nil || p.logins.anyAccountIn(foldCase(account[1:]))
	}
	return p.logins.Rule(account) != nil
}

func (l *Logins) anyAccountIn(domain string) bool {
	for a := range l.accounts {
		if strings.HasSuffix(a, "@"+domain) {
			return true
		}
	}
	return false
}
