package patterns

import (
	"context"
	"errors"
	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"net/netip"
	"strings"
	"testing"

	"github.com/postern/postern/internal/diag"
)

func testNames() *fcrdnstest.Names {
	return fcrdnstest.NewNames(map[netip.Addr]string{
		netip.MustParseAddr("192.0.2.1"):   "mail.example.com",
		netip.MustParseAddr("192.0.2.2"):   "a.b.example.com",
		netip.MustParseAddr("192.0.2.3"):   "example.com",
		netip.MustParseAddr("192.0.2.4"):   "icewarp.co.uk",
		netip.MustParseAddr("192.0.2.5"):   "mail7.example.com",
		netip.MustParseAddr("192.0.2.6"):   "guest.example.com",
		netip.MustParseAddr("192.0.2.7"):   "Mail.Example.COM.",
		netip.MustParseAddr("2001:db8::1"): "v6.example.com",
		netip.MustParseAddr("10.1.2.3"):    "inside.example.com",
	})
}

func compileNames(t *testing.T, names NameResolver, defs ...[2]string) *Registry {
	t.Helper()
	var srcs []Source
	for i, d := range defs {
		srcs = append(srcs, Source{Name: d[0], Text: d[1], Pos: diag.Pos{File: "cfg.yaml", Line: i + 1, Col: 10}})
	}
	reg, err := Compile(srcs, Options{Geo: testGeo(), ValidCountry: validCC, Names: names})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return reg
}

// TestIceWarpForms compiles every form an IceWarp access list or pattern
// file accepts for addresses and hosts, and checks what each one holds.
func TestIceWarpForms(t *testing.T) {
	cases := []struct {
		item    string
		kind    Kind
		in, out []string
	}{
		{"203.0.113.7", KindAddress, []string{"203.0.113.7"}, []string{"203.0.113.8"}},
		{"192.168.0.0/16", KindCIDR, []string{"192.168.255.1"}, []string{"192.169.0.0"}},
		{"192.168.0.0/255.255.0.0", KindCIDR, []string{"192.168.255.1"}, []string{"192.169.0.0"}},
		{"10.1.2.3/255.255.255.255", KindCIDR, []string{"10.1.2.3"}, []string{"10.1.2.4"}},
		{"0.0.0.0/0.0.0.0", KindCIDR, []string{"1.1.1.1"}, []string{"2001:db8::1"}},
		{"192.168.*.*", KindWildcard, []string{"192.168.7.7"}, []string{"192.167.0.1"}},
		{"10.20.*.*", KindWildcard, []string{"10.20.0.0", "10.20.255.255"}, []string{"10.21.0.0"}},
		{"10.20.30.*", KindWildcard, []string{"10.20.30.0", "10.20.30.255"}, []string{"10.20.31.0"}},
		{"10.20.*", KindWildcard, []string{"10.20.0.0", "10.20.255.255"}, []string{"10.21.0.0", "10.19.255.255"}},
		{"10.*", KindWildcard, []string{"10.0.0.0", "10.255.255.255"}, []string{"11.0.0.0"}},
		{"10-11.*", KindWildcard, []string{"10.0.0.0", "11.255.255.255"}, []string{"12.0.0.0"}},
		{"10.20-21.*", KindWildcard, []string{"10.20.0.1", "10.21.255.255"}, []string{"10.22.0.0"}},
		{"*.*", KindWildcard, []string{"1.2.3.4"}, []string{"2001:db8::1"}},
		{"*", KindWildcard, []string{"1.2.3.4", "2001:db8::1"}, nil},
		{"192-193.*.*.*", KindWildcard, []string{"193.1.1.1"}, []string{"194.0.0.0"}},
		{"10.0.0.1-99", KindWildcard, []string{"10.0.0.1", "10.0.0.99"}, []string{"10.0.0.100", "10.0.0.0"}},
		{"10.0.1-5.*", KindWildcard, []string{"10.0.3.9"}, []string{"10.0.6.0"}},
		{"10.0.0.1-10.0.0.99", KindRange, []string{"10.0.0.50"}, []string{"10.0.0.100"}},
		{"10.0.0.1 - 10.0.0.99", KindRange, []string{"10.0.0.50"}, []string{"10.0.0.100"}},
		{"2001:db8::1-2001:db8::ff", KindRange, []string{"2001:db8::80"}, []string{"2001:db8::100"}},
		{"*.example.com", KindHost, []string{"192.0.2.1", "192.0.2.2", "192.0.2.5", "192.0.2.7", "2001:db8::1"}, []string{"192.0.2.3", "192.0.2.4", "192.0.2.99"}},
		{"icewarp.*", KindHost, []string{"192.0.2.4"}, []string{"192.0.2.1", "192.0.2.3"}},
		{"example.com", KindHost, []string{"192.0.2.3"}, []string{"192.0.2.1"}},
		{"EXAMPLE.com.", KindHost, []string{"192.0.2.3"}, []string{"192.0.2.1"}},
		{"mail?.example.com", KindHost, []string{"192.0.2.5"}, []string{"192.0.2.1"}},
		{"mail*.example.com", KindHost, []string{"192.0.2.1", "192.0.2.5", "192.0.2.7"}, []string{"192.0.2.2"}},
		{"*.b.example.com", KindHost, []string{"192.0.2.2"}, []string{"192.0.2.1"}},
		{"*.*.com", KindHost, []string{"192.0.2.1", "192.0.2.2"}, []string{"192.0.2.4"}},
		{"mail_relay-1.example.com", KindHost, nil, []string{"192.0.2.1"}},
	}
	for _, c := range cases {
		names := testNames()
		reg := compileNames(t, names, [2]string{"P", c.item})
		p := reg.Lookup("P")
		if k := p.Items()[0].Kind; k != c.kind {
			t.Errorf("%q: kind %v, want %v", c.item, k, c.kind)
		}
		if (c.kind == KindHost) != p.HasHosts() {
			t.Errorf("%q: HasHosts %v", c.item, p.HasHosts())
		}
		for _, a := range c.in {
			if !p.ContainsClient(context.Background(), netip.MustParseAddr(a)) {
				t.Errorf("%q should hold %s", c.item, a)
			}
		}
		for _, a := range c.out {
			if p.ContainsClient(context.Background(), netip.MustParseAddr(a)) {
				t.Errorf("%q should not hold %s", c.item, a)
			}
		}
		if c.kind != KindHost && names.Calls() != 0 {
			t.Errorf("%q: the name resolver was asked %d times for a pattern without host masks", c.item, names.Calls())
		}
	}
}

func TestHostMasksInPatterns(t *testing.T) {
	names := testNames()
	reg := compileNames(t, names,
		[2]string{"Hosts", "*.example.com; !guest.example.com"},
		[2]string{"Grant", "10.0.0.0/8; [Hosts]"},
		[2]string{"NoGuests", "0.0.0.0/0; ![Hosts]"},
		[2]string{"Plain", "10.0.0.0/8; !10.1.0.0/16"},
		[2]string{"Mono", "10.0.0.0/8; *.example.com; !10.9.0.0/16"},
		[2]string{"Alias", "[Hosts]"},
	)
	ctx := context.Background()
	check := func(set, addr string, want bool) {
		t.Helper()
		s := reg.Lookup(set)
		a := netip.MustParseAddr(addr)
		if got := s.ContainsClient(ctx, a); got != want {
			t.Errorf("[%s] %s: ContainsClient %v, want %v", set, addr, got, want)
		}
		if m := s.ExplainClient(ctx, a); m.In != want {
			t.Errorf("[%s] %s: ExplainClient %v, want %v", set, addr, m.In, want)
		}
	}
	check("Hosts", "192.0.2.1", true)
	check("Hosts", "192.0.2.6", false) // excluded by name
	check("Grant", "192.0.2.2", true)
	check("Grant", "192.0.2.6", false)
	check("Grant", "10.200.0.1", true)
	check("Grant", "192.0.2.99", false) // no PTR
	check("NoGuests", "192.0.2.1", false)
	check("NoGuests", "192.0.2.6", true) // excluded from [Hosts], so not excluded here
	check("NoGuests", "192.0.2.99", true)
	check("Alias", "192.0.2.5", true)
	check("Alias", "192.0.2.6", false)
	check("Mono", "10.9.1.1", false)
	check("Mono", "10.1.2.3", true)
	check("Mono", "192.0.2.1", true)

	// Contains is the answer for a client without a name: host masks match nothing.
	if reg.Lookup("Hosts").Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("Contains matched a host mask")
	}
	if !reg.Lookup("NoGuests").Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Error("Contains: an excluded host mask removed a nameless client")
	}

	// A pattern without host masks never asks; one with them asks only
	// when the answer depends on the name.
	names.Reset()
	reg.Lookup("Plain").ContainsClient(ctx, netip.MustParseAddr("10.2.0.1"))
	reg.Lookup("Plain").ContainsClient(ctx, netip.MustParseAddr("192.0.2.1"))
	if names.Calls() != 0 {
		t.Fatalf("a pattern without host masks looked a name up %d times", names.Calls())
	}
	reg.Lookup("Mono").ContainsClient(ctx, netip.MustParseAddr("10.1.2.3")) // held by 10.0.0.0/8
	reg.Lookup("Mono").ContainsClient(ctx, netip.MustParseAddr("10.9.1.1")) // excluded by address
	if names.Calls() != 0 {
		t.Fatalf("lookups whose answer did not depend on the name: %d", names.Calls())
	}
	reg.Lookup("Mono").ContainsClient(ctx, netip.MustParseAddr("192.0.2.1"))
	if names.Calls() != 1 {
		t.Fatalf("a host-mask decision made %d lookups, want 1", names.Calls())
	}
}

// Without a resolver a host mask could never match: it is an error at its
// position (the bypass file's lists are compiled so).
func TestHostMasksWithoutResolverAreErrors(t *testing.T) {
	_, err := Compile([]Source{{Name: "H", Text: "10.0.0.0/8; *.example.com", Pos: diag.Pos{File: "b.txt", Line: 2, Col: 1}}}, Options{})
	if err == nil || !strings.Contains(err.Error(), `b.txt:2:13: host mask "*.example.com" cannot be used here: no DNS resolver`) {
		t.Fatalf("error %v", err)
	}
}

func TestExplainClientNamesItemAndName(t *testing.T) {
	names := testNames()
	reg := compileNames(t, names,
		[2]string{"Hosts", "10.0.0.0/8; *.example.com; !guest.example.com"},
		[2]string{"Outer", "[Hosts]"},
	)
	ctx := context.Background()
	m := reg.Lookup("Outer").ExplainClient(ctx, netip.MustParseAddr("192.0.2.1"))
	d, ok := m.Decider()
	if !m.In || !ok || d.Item.Text != "*.example.com" || d.Item.Kind != KindHost || d.Item.Pos().Line != 1 {
		t.Fatalf("in via host mask: %+v", m)
	}
	if m.Client == nil || m.Client.Name != "mail.example.com" || m.Client.Err != nil {
		t.Fatalf("client name: %+v", m.Client)
	}
	m = reg.Lookup("Outer").ExplainClient(ctx, netip.MustParseAddr("192.0.2.6"))
	if d, ok := m.Decider(); m.In || !ok || d.Item.String() != "!guest.example.com" {
		t.Fatalf("excluded by host mask: %+v", m)
	}
	m = reg.Lookup("Outer").ExplainClient(ctx, netip.MustParseAddr("192.0.2.99"))
	if m.In || len(m.Steps) != 0 || m.Client == nil || !errors.Is(m.Client.Err, fcrdnstest.ErrNoPTR) {
		t.Fatalf("no PTR: %+v", m)
	}
}

func TestHostMaskUnion(t *testing.T) {
	names := testNames()
	reg := compileNames(t, names, [2]string{"A", "*.example.com"}, [2]string{"B", "10.0.0.0/8"})
	u := Union("U", []*Set{reg.Lookup("A"), reg.Lookup("B")})
	if !u.HasHosts() || !u.ContainsClient(context.Background(), netip.MustParseAddr("192.0.2.1")) ||
		!u.ContainsClient(context.Background(), netip.MustParseAddr("10.0.0.1")) ||
		u.ContainsClient(context.Background(), netip.MustParseAddr("192.0.2.4")) {
		t.Fatal("union of a host-mask pattern and an address pattern")
	}
}

func TestHostMaskErrorsHavePositions(t *testing.T) {
	_, err := Compile([]Source{{Name: "X", Text: "*.example.com\nbad..example.com", Pos: diag.Pos{File: "c.yaml", Line: 4, Col: 3}}}, Options{Names: testNames()})
	if err == nil || !strings.Contains(err.Error(), `c.yaml:5:3: bad host mask "bad..example.com"`) {
		t.Fatalf("error %v", err)
	}
}

// A pattern with host masks keeps its country, ASN and address items, and
// its exclusions still win over a matching name.
func TestHostMasksWithGeoItems(t *testing.T) {
	names := testNames()
	names.Set(netip.MustParseAddr("175.136.66.1"), "mail.example.com")
	names.Set(netip.MustParseAddr("104.16.0.9"), "cdn.elsewhere.example")
	reg := compileNames(t, names,
		[2]string{"Excl", "175.136.66.0/24"},
		[2]string{"G", "country:MY; asn:13335; *.example.com; ![Excl]; !cdn.elsewhere.example"},
	)
	g := reg.Lookup("G")
	for addr, want := range map[string]bool{
		"175.137.1.1": true, "2001:e68::5": true, "192.0.2.1": true,
		"175.136.66.1": false, "104.16.0.9": false, "104.17.0.1": true, "8.8.8.8": false,
	} {
		a := netip.MustParseAddr(addr)
		if got := g.ContainsClient(context.Background(), a); got != want {
			t.Errorf("%s: ContainsClient %v, want %v", addr, got, want)
		}
		if m := g.ExplainClient(context.Background(), a); m.In != want {
			t.Errorf("%s: ExplainClient %v, want %v", addr, m.In, want)
		}
	}
}
