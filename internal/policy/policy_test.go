package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/service"
)

const cfgText = `
patterns:
  MY: "175.136.0.0/15"
  SG: "165.21.0.0/16"
  Office: "203.0.113.0/24"
  Admins: "198.51.100.7"
  Bad: "175.136.66.0/24"
services:
  smtp: { listen: ":25", backend: "b:25" }
  imap: { listen: ":143", backend: "b:143", grant: "[MY];[SG];[Office]", deny: "[Bad]" }
  web:
    listen: ":443"
    backend: "http://b"
    grant: "[MY];[SG]"
    paths:
      - { prefix: /admin, grant: "[Admins]" }
      - { prefix: /Webmail/Private/, deny: "[SG]" }
trusted_upstreams: "10.0.0.5; 10.0.0.6"
login_restrictions:
  - "*=[MY];[SG]"
  - "@example.com=[Office]"
  - "CEO@example.com=[Office];[Admins]"
`

func build(t *testing.T, text string) (*Policy, []error) {
	t.Helper()
	cfg, err := config.Parse("p.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var srcs []patterns.Source
	for _, p := range cfg.Patterns {
		srcs = append(srcs, patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos, Quoted: p.Text.Quoted})
	}
	reg, err := patterns.Compile(srcs, patterns.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol, warns, err := Build(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return pol, warns
}

var (
	my     = netip.MustParseAddr("175.137.1.1")
	myBad  = netip.MustParseAddr("175.136.66.6")
	sg     = netip.MustParseAddr("165.21.2.2")
	office = netip.MustParseAddr("203.0.113.9")
	admin  = netip.MustParseAddr("198.51.100.7")
	other  = netip.MustParseAddr("8.8.8.8")
)

func TestAllowService(t *testing.T) {
	p, _ := build(t, cfgText)
	cases := []struct {
		svc  service.Service
		addr netip.Addr
		want bool
	}{
		{service.IMAP, my, true}, {service.IMAP, sg, true}, {service.IMAP, office, true}, {service.IMAP, other, false},
		{service.IMAP, myBad, false}, // deny wins over grant
		{service.SMTP, other, true},  // no lists: open
		{service.POP3, my, false},    // not configured: closed
		{service.Web, sg, true}, {service.Web, office, false},
	}
	for _, c := range cases {
		if got := p.AllowService(c.svc, c.addr); got != c.want {
			t.Errorf("%s %s: got %v want %v", c.svc, c.addr, got, c.want)
		}
		if c.svc != service.POP3 {
			v, err := p.ExplainService(c.svc, c.addr)
			if err != nil || v.Allow != c.want {
				t.Errorf("explain %s %s: %+v %v", c.svc, c.addr, v, err)
			}
		}
	}
	v, _ := p.ExplainService(service.IMAP, myBad)
	if len(v.Rules) != 2 || v.Rules[0].Rule != "imap deny" || v.Rules[0].Effect != "denies" || v.Rules[0].Pos.Line != 10 {
		t.Errorf("deny explanation: %+v", v.Rules)
	}
	if _, err := p.ExplainService(service.POP3, my); err == nil {
		t.Error("explaining an unconfigured service must fail")
	}
}

func TestAllowPath(t *testing.T) {
	p, _ := build(t, cfgText)
	for _, path := range []string{"/admin", "/ADMIN/", "/admin/users", "/%61dmin", "//admin", "/x/../admin",
		"/admin;jsessionid=1", "/%2561dmin", "/./admin", "\\admin", "/admin?x=1", "/admin.php", "/x/%2e%2e/admin"} {
		if p.AllowPath(service.Web, path, sg) {
			t.Errorf("%q from a non-admin address must be refused", path)
		}
		if !p.AllowPath(service.Web, path, admin) {
			t.Errorf("%q from the admin address must be allowed", path)
		}
	}
	for _, path := range []string{"/", "/webmail/", "/adm", "/x/admin"} {
		if !p.AllowPath(service.Web, path, sg) {
			t.Errorf("%q must be allowed", path)
		}
	}
	if p.AllowPath(service.Web, "/webmail/private/inbox", sg) || !p.AllowPath(service.Web, "/webmail/private/inbox", my) {
		t.Error("deny path rule")
	}
	v, _ := p.ExplainPath(service.Web, "/%61dmin/x", sg)
	if v.Allow || len(v.Rules) != 1 || v.Rules[0].Effect != "does not grant" {
		t.Errorf("path explanation: %+v", v)
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "/",
		"/a//b/":           "/a/b",
		"/a/./b/../c":      "/a/c",
		"/%2e%2e/%2e%2e/a": "/a",
		"/%zz/admin":       "/%zz/admin",
		"/a%2fb":           "/a/b",
		"/../../etc":       "/etc",
	} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoginRestrictions(t *testing.T) {
	p, _ := build(t, cfgText)
	cases := []struct {
		account string
		addr    netip.Addr
		want    bool
	}{
		{"alice@other.test", my, true}, {"alice@other.test", other, false}, // *
		{"bob@example.com", office, true}, {"bob@example.com", my, false}, // @domain beats *
		{"ceo@example.com", admin, true}, {"CEO@Example.COM", office, true}, {"ceo@example.com", my, false}, // account beats domain
		{"bare-user", sg, true}, {"bare-user", other, false},
	}
	for _, c := range cases {
		if got := p.AllowLogin(c.account, c.addr); got != c.want {
			t.Errorf("%s from %s: got %v want %v", c.account, c.addr, got, c.want)
		}
		if v := p.ExplainLogin(c.account, c.addr); v.Allow != c.want || len(v.Rules) != 1 {
			t.Errorf("explain %s from %s: %+v", c.account, c.addr, v)
		}
	}
	if r := p.Logins().Rule("x@example.com"); r == nil || r.Subject != "@example.com" {
		t.Errorf("rule for domain: %+v", r)
	}
	noRules, _ := build(t, "services: {}\n")
	if !noRules.AllowLogin("anyone", other) {
		t.Error("no restrictions: every login allowed")
	}
}

func TestTrustedAndWarnings(t *testing.T) {
	p, warns := build(t, cfgText)
	if !p.TrustedUpstream(netip.MustParseAddr("10.0.0.6")) || p.TrustedUpstream(other) {
		t.Error("trusted upstreams")
	}
	if len(warns) != 0 {
		t.Errorf("unexpected warnings: %v", warns)
	}
	_, warns = build(t, "patterns: { A: 1.1.1.1 }\nservices:\n  smtp: { listen: \":25\", backend: \"b:25\", grant: \"[A]\" }\n")
	if len(warns) != 1 || !strings.Contains(warns[0].Error(), "p.yaml:3:50: smtp has a grant list") {
		t.Errorf("smtp grant warning: %v", warns)
	}
}

func TestBuildErrors(t *testing.T) {
	for text, want := range map[string]string{
		"login_restrictions: [ \"*=\" ]\n":                                            "lists no addresses",
		"login_restrictions: [ \"=1.1.1.1\" ]\n":                                      "want account=patterns",
		"login_restrictions: [ \"@=1.1.1.1\" ]\n":                                     "want @domain",
		"login_restrictions: [ \"a b=1.1.1.1\" ]\n":                                   "cannot be in one",
		"login_restrictions: [ \"*=1.1.1.1\", \"*=2.2.2.2\" ]\n":                      "second login restriction for *",
		"login_restrictions: [ \"*=[Nope]\" ]\n":                                      "p.yaml:1:26: unknown pattern [Nope]",
		"login_restrictions: [ \"*=x@y.z\" ]\n":                                       "not mail masks",
		"services:\n  imap: { listen: \":1\", backend: \"b:1\", grant: \"*@x.y\" }\n": "not mail masks",
		"services:\n  imap: { listen: \":1\", backend: \"b:1\", deny: \"1.2.3\" }\n":  `p.yaml:2:48: bad item "1.2.3"`,
	} {
		cfg, err := config.Parse("p.yaml", []byte(text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		reg, _ := patterns.Compile(nil, patterns.Options{})
		_, _, err = Build(cfg, reg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
}

func BenchmarkAllowService(b *testing.B) {
	cfg, _ := config.Parse("p.yaml", []byte(cfgText))
	var srcs []patterns.Source
	for _, p := range cfg.Patterns {
		srcs = append(srcs, patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos})
	}
	reg, _ := patterns.Compile(srcs, patterns.Options{})
	p, _, _ := Build(cfg, reg)
	b.ReportAllocs()
	for b.Loop() {
		p.AllowService(service.IMAP, my)
	}
}

func BenchmarkAllowPath(b *testing.B) {
	cfg, _ := config.Parse("p.yaml", []byte(cfgText))
	var srcs []patterns.Source
	for _, p := range cfg.Patterns {
		srcs = append(srcs, patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos})
	}
	reg, _ := patterns.Compile(srcs, patterns.Options{})
	p, _, _ := Build(cfg, reg)
	b.ReportAllocs()
	for b.Loop() {
		p.AllowPath(service.Web, "/webmail/inbox/message?id=42", sg)
	}
}

// Login names meet a restriction as the backend resolves them: case folded
// (ASCII as Dovecot's %Lu, Unicode as Roundcube's mb_strtolower or a
// case-insensitive user database), and a name without a domain in the
// default domain (Dovecot's auth_default_realm, Roundcube's
// username_domain).
func TestLoginNamesResolvedAsTheBackend(t *testing.T) {
	const restricted = `
patterns:
  Office: "203.0.113.0/24"
login_restrictions:
  - "bob@example.test=[Office]"
  - "@example.test=[Office]"
  - "straße@example.test=[Office]"
  - "Carol=[Office]"
`
	p, _ := build(t, restricted+"logins: { default_domain: Example.Test. }\n")
	for _, name := range []string{
		"bob@example.test", "BOB@EXAMPLE.TEST", "bob", "BOB", "Bob", " bob ", "BOB@Example.Test",
		"carol", "CAROL@example.test", // written without the domain in the configuration
		"STRASSE@example.test",                       // not the same account, but the domain rule holds
		"STRAßE@EXAMPLE.TEST", "ſtraße@example.test", // long s folds with s
		"alice",                  // the domain rule, through the default domain
		"\u212Aarl@example.test", // Kelvin sign folds with k
	} {
		if p.AllowLogin(name, other) {
			t.Errorf("%q logs in from anywhere; the restriction for its account or domain must apply", name)
		}
		if !p.AllowLogin(name, office) {
			t.Errorf("%q refused from the office", name)
		}
		if v := p.ExplainLogin(name, other); v.Allow || len(v.Rules) != 1 {
			t.Errorf("ExplainLogin(%q) = %+v", name, v)
		}
	}
	for name, rule := range map[string]string{
		"BOB":                  "login bob@example.test (BOB logs in as bob@example.test)",
		"bob@example.test":     "login bob@example.test",
		"Straße@Example.Test":  "login straße@example.test (Straße@Example.Test logs in as straße@example.test)",
		"alice":                "login @example.test (alice logs in as alice@example.test)",
		"CAROL":                "login carol@example.test (CAROL logs in as carol@example.test)",
		"someone@else.example": "",
	} {
		v := p.ExplainLogin(name, other)
		got := ""
		if len(v.Rules) > 0 {
			got = v.Rules[0].Rule
		}
		if got != rule {
			t.Errorf("ExplainLogin(%q) consults %q, want %q", name, got, rule)
		}
	}
	if p.Logins().Canon("BOB") != "bob@example.test" || p.Logins().Canon("x@Other.Test") != "x@other.test" {
		t.Error("Canon")
	}

	// Without a default domain a bare name is its own account.
	p, _ = build(t, restricted)
	if !p.AllowLogin("bob", other) || p.AllowLogin("BOB@example.test", other) || p.AllowLogin("CAROL", other) {
		t.Error("without default_domain: bob is not bob@example.test, BOB@example.test is, CAROL is carol")
	}

	// force_domain: any domain given is replaced.
	p, _ = build(t, restricted+"logins: { default_domain: example.test, force_domain: true }\n")
	if p.AllowLogin("bob@elsewhere.example", other) || p.Logins().Canon("Bob@Elsewhere.Example") != "bob@example.test" {
		t.Error("force_domain: bob@elsewhere.example is bob@example.test")
	}
	var nilPolicy *Policy
	if nilPolicy.Logins().Canon(" BOB ") != "bob" {
		t.Error("a nil policy folds case only")
	}
}

func TestLoginsConfigErrors(t *testing.T) {
	for text, want := range map[string]string{
		"logins: { default_domain: \"@example.test\" }\n": "write the domain without '@'",
		"logins: { default_domain: \"a b\" }\n":           "is not a domain name",
		"logins: { default_domain: \".example\" }\n":      "is not a domain name",
		"logins: { force_domain: true }\n":                "logins.force_domain needs logins.default_domain",
		"logins: { default: example.test }\n":             "unknown",
	} {
		_, err := config.Parse("p.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}
