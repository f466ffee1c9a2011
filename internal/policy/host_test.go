package policy

import (
	"errors"
	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"github.com/postern/postern/internal/service"
	"net/netip"
	"strings"
	"testing"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/patterns"
)

func buildNames(t testing.TB, text string, names patterns.NameResolver) (*Policy, error) {
	t.Helper()
	cfg, err := config.Parse("p.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var srcs []patterns.Source
	for _, p := range cfg.Patterns {
		srcs = append(srcs, patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos, Quoted: p.Text.Quoted})
	}
	reg, err := patterns.Compile(srcs, patterns.Options{Names: names})
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := Build(cfg, reg)
	return pol, err
}

const hostCfg = `
patterns:
  Partners: "*.partner.example; icewarp.*"
services:
  imap: { listen: ":143", backend: "b:143", grant: "10.20.*; [Partners]", deny: "*.evil.example" }
  pop3: { listen: ":110", backend: "b:110", grant: "10.20.*" }
  web:
    listen: ":443"
    backend: "http://b"
    paths:
      - { prefix: /admin, grant: "admin?.partner.example" }
login_restrictions:
  - "ceo@example.com=*.office.example; 10.20.30.*"
`

var (
	partner   = netip.MustParseAddr("192.0.2.1")
	partner2  = netip.MustParseAddr("192.0.2.2")
	evil      = netip.MustParseAddr("10.20.1.1")
	nameless  = netip.MustParseAddr("192.0.2.99")
	lan       = netip.MustParseAddr("10.20.2.2")
	ceoOffice = netip.MustParseAddr("198.51.100.5")
)

func hostNames() *fcrdnstest.Names {
	return fcrdnstest.NewNames(map[netip.Addr]string{
		partner:   "admin1.partner.example",
		partner2:  "icewarp.co.uk",
		evil:      "box.evil.example",
		lan:       "pc.lan.example",
		ceoOffice: "ceo.office.example",
	})
}

func TestHostMasksInServiceAndLoginLists(t *testing.T) {
	names := hostNames()
	p, err := buildNames(t, hostCfg, names)
	if err != nil {
		t.Fatal(err)
	}
	if !p.HasHostMasks() {
		t.Fatal("HasHostMasks is false")
	}
	svc := []struct {
		svc  service.Service
		addr netip.Addr
		want bool
	}{
		{service.IMAP, partner, true},   // *.partner.example
		{service.IMAP, partner2, true},  // icewarp.*
		{service.IMAP, evil, false},     // in 10.20.*, but its name is denied
		{service.IMAP, lan, true},       // 10.20.*
		{service.IMAP, nameless, false}, // no name: only the addresses count
		{service.POP3, partner, false},
	}
	for _, c := range svc {
		if got := p.AllowService(c.svc, c.addr); got != c.want {
			t.Errorf("AllowService %s %s = %v, want %v", c.svc, c.addr, got, c.want)
		}
		v, _ := p.ExplainService(c.svc, c.addr)
		if v.Allow != c.want {
			t.Errorf("ExplainService %s %s = %v, want %v", c.svc, c.addr, v.Allow, c.want)
		}
	}
	if !p.AllowPath(service.Web, "/admin/x", partner) || p.AllowPath(service.Web, "/admin/x", partner2) {
		t.Error("path rule with a host mask")
	}
	for addr, want := range map[netip.Addr]bool{ceoOffice: true, netip.MustParseAddr("10.20.30.4"): true, partner: false, nameless: false} {
		if got := p.AllowLogin("CEO@example.com", addr); got != want {
			t.Errorf("AllowLogin ceo %s = %v, want %v", addr, got, want)
		}
		if v := p.ExplainLogin("ceo@example.com", addr); v.Allow != want {
			t.Errorf("ExplainLogin ceo %s = %v, want %v", addr, v.Allow, want)
		}
	}

	v, _ := p.ExplainService(service.IMAP, evil)
	deny := v.Rules[0]
	if d, ok := deny.Match.Decider(); deny.Effect != "denies" || !ok || d.Item.Text != "*.evil.example" ||
		deny.Match.Client == nil || deny.Match.Client.Name != "box.evil.example" {
		t.Errorf("deny explanation: %+v", deny)
	}
	v, _ = p.ExplainService(service.IMAP, nameless)
	if c := v.Rules[1].Match.Client; c == nil || !errors.Is(c.Err, fcrdnstest.ErrNoPTR) {
		t.Errorf("grant explanation for a client without a name: %+v", v.Rules[1])
	}
}

// A configuration without host masks never asks for a name, whatever is
// decided.
func TestNoHostMasksNoLookups(t *testing.T) {
	names := hostNames()
	p, err := buildNames(t, cfgText, names)
	if err != nil {
		t.Fatal(err)
	}
	if p.HasHostMasks() {
		t.Fatal("HasHostMasks is true")
	}
	for _, a := range []netip.Addr{my, myBad, sg, office, admin, other, partner, evil} {
		p.AllowService(service.IMAP, a)
		p.AllowService(service.Web, a)
		p.AllowPath(service.Web, "/admin", a)
		p.AllowLogin("ceo@example.com", a)
		p.AllowLogin("someone@else.example", a)
		_, _ = p.ExplainService(service.IMAP, a)
		p.ExplainLogin("ceo@example.com", a)
	}
	if names.Calls() != 0 {
		t.Fatalf("%d name lookups for a policy without host masks", names.Calls())
	}
}

func TestTrustedUpstreamsRefuseHostMasks(t *testing.T) {
	_, err := buildNames(t, "services:\n  smtp: { listen: \":25\", backend: \"b:25\" }\ntrusted_upstreams: \"10.0.0.5; lb.example.com\"\n", hostNames())
	if err == nil || !strings.Contains(err.Error(), "trusted_upstreams takes addresses and networks, not host masks") {
		t.Fatalf("error %v", err)
	}
}

// BenchmarkAllowServiceHostMask is AllowService on a grant list with a host
// mask, for a client whose name decides (the resolver answers at once, as
// from its cache).
func BenchmarkAllowServiceHostMask(b *testing.B) {
	p, err := buildNames(b, hostCfg, hostNames())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.AllowService(service.IMAP, partner)
	}
}
