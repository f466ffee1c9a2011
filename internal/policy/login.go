package policy

import (
	"net/netip"
	"strings"

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
// the account's, else its domain's, else "*".
type Logins struct {
	accounts map[string]*LoginRule
	domains  map[string]*LoginRule
	star     *LoginRule
}

func buildLogins(lines []config.Text, reg *patterns.Registry, errs *diag.List) Logins {
	l := Logins{accounts: make(map[string]*LoginRule), domains: make(map[string]*LoginRule)}
	for _, line := range lines {
		lhs, rhs, _ := strings.Cut(line.Value, "=")
		subject := strings.ToLower(strings.TrimSpace(lhs))
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

// Rule returns the login restriction that applies to account, or nil when
// none does. Accounts compare case-insensitively.
func (l *Logins) Rule(account string) *LoginRule {
	a := strings.ToLower(strings.TrimSpace(account))
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

// Logins returns the login restrictions.
func (p *Policy) Logins() *Logins { return &p.logins }

// AllowLogin reports whether account may log in from addr under the login
// IP restrictions. With no rule for the account, every address may.
func (p *Policy) AllowLogin(account string, addr netip.Addr) bool {
	r := p.logins.Rule(account)
	return r == nil || r.List.Set.Contains(addr)
}

// ExplainLogin explains AllowLogin.
func (p *Policy) ExplainLogin(account string, addr netip.Addr) Verdict {
	r := p.logins.Rule(account)
	if r == nil {
		return Verdict{Allow: true}
	}
	m := r.List.Set.Explain(addr)
	c := Consulted{Rule: "login " + r.Subject, Text: r.List.Text, Pos: r.List.Pos, Match: m, Effect: "allows"}
	if !m.In {
		c.Effect = "refuses"
	}
	return Verdict{Allow: m.In, Rules: []Consulted{c}}
}
