package patterns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/safefile"
)

// fakeGeo is a Resolver over a fixed table of country and ASN networks.
type fakeGeo struct {
	countries map[string][]netip.Prefix
	asns      map[uint32][]netip.Prefix
}

func (g *fakeGeo) CountryPrefixes(cc string) []netip.Prefix { return g.countries[cc] }
func (g *fakeGeo) InCountry(a netip.Addr, cc string) bool   { return anyContains(g.countries[cc], a) }
func (g *fakeGeo) ASNPrefixes(n uint32) []netip.Prefix      { return g.asns[n] }
func (g *fakeGeo) HasASNData() bool                         { return len(g.asns) > 0 }
func (g *fakeGeo) InASN(a netip.Addr, n uint32) bool        { return anyContains(g.asns[n], a) }

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func testGeo() *fakeGeo {
	return &fakeGeo{
		countries: map[string][]netip.Prefix{
			"MY": {netip.MustParsePrefix("175.136.0.0/15"), netip.MustParsePrefix("2001:e68::/32")},
			"SG": {netip.MustParsePrefix("165.21.0.0/16")},
		},
		asns: map[uint32][]netip.Prefix{13335: {netip.MustParsePrefix("104.16.0.0/13")}},
	}
}

func validCC(cc string) bool { return cc == "MY" || cc == "SG" || cc == "TH" }

func compile(t *testing.T, defs map[string]string) (*Registry, error) {
	t.Helper()
	var srcs []Source
	line := 1
	for name, text := range defs {
		srcs = append(srcs, Source{Name: name, Text: text, Pos: diag.Pos{File: "cfg.yaml", Line: line, Col: 10}})
		line++
	}
	return Compile(srcs, Options{Geo: testGeo(), ValidCountry: validCC})
}

func mustCompile(t *testing.T, defs map[string]string) *Registry {
	t.Helper()
	reg, err := compile(t, defs)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return reg
}

func TestItemKinds(t *testing.T) {
	reg := mustCompile(t, map[string]string{
		"P": "203.0.113.7; 2001:db8::1; 198.51.100.0/24; 2001:db8:10::/48; 192.168.*.*; 10-11.*.*.*; " +
			"172.16.5.10-99; 100.64.0.10-100.64.0.20; 2001:db8:ff::1-2001:db8:ff::3; country:my; asn:13335; ::ffff:192.0.2.9",
	})
	p := reg.Lookup("p")
	in := []string{"203.0.113.7", "2001:db8::1", "198.51.100.255", "2001:db8:10:ffff::1", "192.168.200.1",
		"10.0.0.0", "11.255.255.255", "172.16.5.10", "172.16.5.99", "100.64.0.10", "100.64.0.20",
		"2001:db8:ff::3", "175.137.1.1", "2001:e68::5", "104.17.0.1", "192.0.2.9", "::ffff:203.0.113.7"}
	out := []string{"203.0.113.8", "2001:db8::2", "198.51.101.0", "192.169.0.0", "12.0.0.0", "9.255.255.255",
		"172.16.5.9", "172.16.5.100", "100.64.0.21", "2001:db8:ff::4", "165.21.1.1", "8.8.8.8"}
	for _, s := range in {
		if !p.Contains(netip.MustParseAddr(s)) {
			t.Errorf("%s: want in", s)
		}
	}
	for _, s := range out {
		if p.Contains(netip.MustParseAddr(s)) {
			t.Errorf("%s: want out", s)
		}
	}
	if p.Contains(netip.Addr{}) {
		t.Error("zero Addr must not be in a pattern")
	}
}

func TestWildcardExpansion(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"192.168.*.*", []string{"192.168.0.0/16"}},
		{"192-193.*.*.*", []string{"192.0.0.0/7"}},
		{"10.0.1-5.*", []string{"10.0.1.0/24", "10.0.2.0/23", "10.0.4.0/23"}},
		{"10.1-2.3.*", []string{"10.1.3.0/24", "10.2.3.0/24"}},
		{"*.*.*.*", []string{"0.0.0.0/0"}},
		{"10.0.0.0-255", []string{"10.0.0.0/24"}},
	}
	for _, c := range cases {
		got, err := expandWildcard(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		var gs []string
		for _, p := range got {
			gs = append(gs, p.String())
		}
		if strings.Join(gs, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s: got %v want %v", c.in, gs, c.want)
		}
	}
	if _, err := expandWildcard("1-200.1-200.1-200.5"); err == nil {
		t.Error("huge wildcard expansion must be refused")
	}
}

func TestExclusionsAreOrderIndependent(t *testing.T) {
	for _, text := range []string{
		"10.0.0.0/8; !10.1.0.0/16; !10.2.3.4",
		"!10.1.0.0/16; !10.2.3.4; 10.0.0.0/8",
		"!10.2.3.4; 10.0.0.0/8; !10.1.0.0/16; 10.1.2.0/24", // a positive inside an exclusion stays out
	} {
		p := mustCompile(t, map[string]string{"X": text}).Lookup("x")
		for addr, want := range map[string]bool{
			"10.0.0.1": true, "10.1.0.1": false, "10.1.2.3": false, "10.2.3.4": false,
			"10.2.3.5": true, "10.2.3.3": true, "10.255.255.255": true, "11.0.0.0": false,
		} {
			a := netip.MustParseAddr(addr)
			if got := p.Contains(a); got != want {
				t.Errorf("%q %s: got %v want %v", text, addr, got, want)
			}
			if m := p.Explain(a); m.In != want {
				t.Errorf("%q %s: explain says %v, want %v", text, addr, m.In, want)
			}
		}
	}
}

func TestReferencesAndExplain(t *testing.T) {
	reg := mustCompile(t, map[string]string{
		"GeoIP_MY":    "country:MY",
		"GeoIP_SG":    "country:SG",
		"Office":      "203.0.113.0/24",
		"Asia":        "[GeoIP_MY];[geoip_sg];[Office];![Blocked]",
		"Blocked":     "175.136.66.0/24",
		"AsiaAlias":   "[ASIA]",
		"NotMY":       "0.0.0.0/0; ![GeoIP_MY]",
		"DoubleAlias": "[AsiaAlias]",
	})
	asia := reg.Lookup("asia")
	m := asia.Explain(netip.MustParseAddr("175.137.1.1"))
	if !m.In || len(m.Steps) != 2 || m.Steps[0].Item.Text != "[GeoIP_MY]" || m.Steps[1].Item.Text != "country:MY" {
		t.Fatalf("explain MY: %+v", m)
	}
	if m.Steps[1].Set.Name() != "GeoIP_MY" {
		t.Errorf("inner set: %s", m.Steps[1].Set.Name())
	}
	m = asia.Explain(netip.MustParseAddr("175.136.66.1"))
	if m.In || m.Steps[0].Item.Text != "[Blocked]" || !m.Steps[0].Item.Negate || m.Steps[1].Item.Text != "175.136.66.0/24" {
		t.Fatalf("explain excluded: %+v", m)
	}
	if m := asia.Explain(netip.MustParseAddr("8.8.8.8")); m.In || len(m.Steps) != 0 {
		t.Fatalf("explain outside: %+v", m)
	}
	// Excluded inside a referenced pattern: the inner "!" item is the reason.
	outer, err := reg.Expr(Source{Text: "[Asia]", Pos: diag.Pos{File: "c", Line: 9, Col: 1}})
	if err != nil {
		t.Fatal(err)
	}
	m = outer.Explain(netip.MustParseAddr("175.136.66.1"))
	if m.In || len(m.Steps) != 3 || m.Steps[0].Item.Text != "[Asia]" || !m.Steps[1].Item.Negate || m.Steps[2].Item.Text != "175.136.66.0/24" {
		t.Fatalf("explain nested exclusion: %+v", m)
	}
	for _, a := range []string{"175.137.1.1", "165.21.3.3", "203.0.113.9", "175.136.66.1", "8.8.8.8"} {
		addr := netip.MustParseAddr(a)
		want := asia.Contains(addr)
		for _, n := range []string{"AsiaAlias", "DoubleAlias"} {
			if reg.Lookup(n).Contains(addr) != want {
				t.Errorf("%s %s differs from [Asia]", n, a)
			}
		}
	}
	notMY := reg.Lookup("NotMY")
	if notMY.Contains(netip.MustParseAddr("175.136.1.1")) || !notMY.Contains(netip.MustParseAddr("1.2.3.4")) {
		t.Error("[NotMY] wrong")
	}
	if notMY.Contains(netip.MustParseAddr("2001:e68::1")) {
		t.Error("[NotMY] holds no IPv6 at all")
	}
}

func TestMailMasks(t *testing.T) {
	reg := mustCompile(t, map[string]string{
		"Traps":  "trap@example.com; *@honeypot.example.com; info@*; a?c*@x.org; ![Safe]",
		"Safe":   "info@example.net",
		"Mixed":  "[Traps]; 10.0.0.1",
		"Exempt": "*@*; !*@example.com",
	})
	tr := reg.Lookup("traps")
	for addr, want := range map[string]bool{
		"trap@example.com": true, "<TRAP@Example.COM>": true, "x@honeypot.example.com": true,
		"x@sub.honeypot.example.com": false, "info@anything.test": true, "info@example.net": false,
		"abc@x.org": true, "abcdef@x.org": true, "ac@x.org": false, "nobody@example.com": false,
	} {
		if got := tr.ContainsMail(addr); got != want {
			t.Errorf("[Traps] %s: got %v want %v", addr, got, want)
		}
		if got := tr.ExplainMail(addr).In; got != want {
			t.Errorf("[Traps] explain %s: got %v want %v", addr, got, want)
		}
	}
	if !reg.Lookup("mixed").ContainsMail("trap@example.com") || !reg.Lookup("mixed").Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("[Mixed] must hold both kinds")
	}
	if reg.Lookup("exempt").ContainsMail("a@example.com") || !reg.Lookup("exempt").ContainsMail("a@example.org") {
		t.Error("[Exempt] wrong")
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		mask, s string
		want    bool
	}{
		{"*", "", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false}, {"?", "", false},
		{"*@*.example.com", "x@a.b.example.com", true}, {"**a", "bbba", true}, {"a", "ab", false},
	} {
		if got := globMatch(c.mask, c.s); got != c.want {
			t.Errorf("glob(%q,%q)=%v", c.mask, c.s, got)
		}
	}
}

func TestIncludes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("zones/sg.zone", "\xef\xbb\xbf# Singapore\n165.21.0.0/16\n\n  116.12.0.0/16 # SingNet\r\n{more.txt}\n")
	write("zones/more.txt", "1.2.3.4; 5.6.7.8\n!165.21.9.0/24\n")
	cfg := filepath.Join(dir, "postern.yaml")
	reg, err := Compile([]Source{{Name: "SG", Text: "{zones/sg.zone}", Pos: diag.Pos{File: cfg, Line: 3, Col: 7}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sg := reg.Lookup("sg")
	for addr, want := range map[string]bool{"165.21.1.1": true, "116.12.0.1": true, "5.6.7.8": true, "165.21.9.1": false, "8.8.8.8": false} {
		if sg.Contains(netip.MustParseAddr(addr)) != want {
			t.Errorf("%s: want %v", addr, want)
		}
	}
	m := sg.Explain(netip.MustParseAddr("116.12.0.1"))
	pos := m.Steps[0].Item.Pos()
	if pos.File != filepath.Join(dir, "zones/sg.zone") || pos.Line != 4 || pos.Col != 3 {
		t.Errorf("position of included item: %v", pos)
	}
	m = sg.Explain(netip.MustParseAddr("5.6.7.8"))
	if pos := m.Steps[0].Item.Pos(); pos.File != filepath.Join(dir, "zones/more.txt") || pos.Line != 1 || pos.Col != 10 {
		t.Errorf("position of item in nested include: %v", pos)
	}

	write("a.txt", "{b.txt}\n")
	write("b.txt", "1.1.1.1\n{a.txt}\n")
	_, err = Compile([]Source{{Name: "A", Text: "{a.txt}", Pos: diag.Pos{File: cfg, Line: 1, Col: 1}}}, Options{})
	wantErr(t, err, filepath.Join(dir, "b.txt")+":2:1: include cycle:")

	_, err = Compile([]Source{{Name: "M", Text: "{missing.txt}", Pos: diag.Pos{File: cfg, Line: 9, Col: 5}}}, Options{})
	wantErr(t, err, cfg+":9:5: include {"+filepath.Join(dir, "missing.txt")+"}: ")

	write("bad.txt", "1.2.3.4\n\n300.1.1.1\n")
	_, err = Compile([]Source{{Name: "B", Text: "{bad.txt}", Pos: diag.Pos{File: cfg, Line: 1, Col: 1}}}, Options{})
	wantErr(t, err, filepath.Join(dir, "bad.txt")+":3:1: bad item \"300.1.1.1\"")
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

func TestErrorsNamePositions(t *testing.T) {
	cases := []struct {
		text, want string
	}{
		{"1.2.3.4; 1.2.3", `cfg.yaml:1:19: bad item "1.2.3": it has 3 octets, not four`},
		{"10.0.0.0/33", `cfg.yaml:1:10: bad network "10.0.0.0/33"`},
		{"10.0.0.9-10.0.0.1", "the start is after the end"},
		{"10.0.0.1-2001:db8::1", "different address families"},
		{"1.2.3.256", `cfg.yaml:1:10: bad item "1.2.3.256": octet 4: "256" is not a number`},
		{"1.2.*.x", `octet 4: "x" is not a number`},
		{"1.2.9-3.*", "runs backwards"},
		{"[Nope]", "cfg.yaml:1:10: unknown pattern [Nope]"},
		{"[bad name]", "bad pattern name"},
		{"[Self]", "reference cycle: [X] → [Self] → [X]"},
		{"country:XY", `unknown country code "XY"`},
		{"country:MYS", "bad country"},
		{"asn:abc", "bad autonomous system"},
		{"a@b@c", "more than one '@'"},
		{"@example.com", "want local@domain"},
		{"!!1.2.3.4", "double exclusion"},
		{"!", `empty item after "!"`},
		{"{unterminated", "bad include"},
		{"!{x.txt}", "an include cannot be excluded"},
		{"fe80::1%eth0", "zones (%) are not allowed"},
		{"10.0.0.0/8 garbage", "bad network"},
		// IceWarp forms that stay invalid, each with its position.
		{"10.0.0.1; 10.20", `cfg.yaml:1:20: bad item "10.20": it has 2 octets`},
		{"10.20.*.*.*", `cfg.yaml:1:10: bad wildcard "10.20.*.*.*": an IPv4 address has four octets, this has 5`},
		{"10.*.5", "the last must be '*'"},
		{"10.300.*", `cfg.yaml:1:10: bad wildcard "10.300.*": octet 2: "300" is not a number`},
		{"10..*", `octet 2: "" is not a number`},
		{"010.1.*", `octet 1: "010" is not a number`},
		{"10.20-5.*", "runs backwards"},
		{"10.0.0.0/255.0.255.0", "netmask 255.0.255.0 is not contiguous"},
		{"10.0.0.0/255.255.0", "is not a netmask"},
		{"2001:db8::/255.0.0.0", "a dotted netmask needs an IPv4 address"},
		{"2001:db8::*", `bad item "2001:db8::*"`},
		{"1.2.3.4;  localhost", `cfg.yaml:1:20: bad host mask "localhost": a host name or mask needs a dot`},
		{".example.com", "it starts with a dot; for every host of a domain write *.domain"},
		{"mail..example.com", `empty label ("..")`},
		{"x" + strings.Repeat("a", 63) + ".example.com", "longer than 63 characters"},
		{strings.Repeat("abcdefghi.", 26) + "com", "longer than a DNS name can be"},
		{"mail.exämple.com", `bad item "mail.exämple.com"`},
		{"mail_host!.example.com", "bad item"},
		{"10.20.*.x", `bad wildcard "10.20.*.x": octet 4: "x" is not a number`},
		{"1.2.x", "the last must be '*'"},
		{"MY", `bad host mask "MY": a host name or mask needs a dot`},
	}
	for _, c := range cases {
		_, err := Compile([]Source{
			{Name: "X", Text: c.text, Pos: diag.Pos{File: "cfg.yaml", Line: 1, Col: 10}},
			{Name: "Self", Text: "[X]", Pos: diag.Pos{File: "cfg.yaml", Line: 2, Col: 10}},
		}, Options{Geo: testGeo(), ValidCountry: validCC})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.text, err, c.want)
		}
		var de *diag.Error
		if err != nil && !errors.As(err, &de) {
			t.Errorf("%q: error is not a diag.Error", c.text)
		}
	}
}

func TestDuplicateNamesAndMissingGeo(t *testing.T) {
	_, err := Compile([]Source{
		{Name: "Office", Text: "1.1.1.1", Pos: diag.Pos{File: "c", Line: 1}},
		{Name: "OFFICE", Text: "1.1.1.2", Pos: diag.Pos{File: "c", Line: 2}},
	}, Options{})
	wantErr(t, err, `c:2: pattern "OFFICE" is already defined at c:1`)
	_, err = Compile([]Source{{Name: "MY", Text: "country:MY", Pos: diag.Pos{File: "c", Line: 1}}}, Options{})
	wantErr(t, err, "country:MY needs a GeoIP database")
	_, err = Compile([]Source{{Name: "A", Text: "asn:1", Pos: diag.Pos{File: "c", Line: 1}}}, Options{})
	wantErr(t, err, "asn:1 needs a GeoIP database")
	reg, err := Compile([]Source{{Name: "TH", Text: "country:TH", Pos: diag.Pos{File: "c", Line: 1}}}, Options{Geo: testGeo(), ValidCountry: validCC})
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Warnings()) != 1 || !strings.Contains(reg.Warnings()[0].Error(), "no networks for this country") {
		t.Errorf("warnings: %v", reg.Warnings())
	}
}

func TestExprAndColumns(t *testing.T) {
	reg := mustCompile(t, map[string]string{"GeoIP_MY": "country:MY", "Office": "203.0.113.0/24"})
	g, err := reg.Expr(Source{Text: "[GeoIP_MY];[Office]; 10.0.0.1", Pos: diag.Pos{File: "c", Line: 7, Col: 12}, Quoted: true})
	if err != nil {
		t.Fatal(err)
	}
	m := g.Explain(netip.MustParseAddr("10.0.0.1"))
	if p := m.Steps[0].Item.Pos(); p.Line != 7 || p.Col != 34 {
		t.Errorf("column: %v", p)
	}
	if _, err := reg.Expr(Source{Text: "[Nope]", Pos: diag.Pos{File: "c", Line: 1}}); err == nil {
		t.Error("unknown ref in expression must fail")
	}
	one, _ := reg.Expr(Source{Text: "[GeoIP_MY]"})
	if one.addrs != reg.Lookup("geoip_my").addrs {
		t.Error("a single reference should share the referenced table")
	}
}

func TestHalves(t *testing.T) {
	for _, c := range [][3]string{
		{"10.0.0.0/8", "10.0.0.0/9", "10.128.0.0/9"},
		{"0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1"},
		{"10.0.0.6/31", "10.0.0.6/32", "10.0.0.7/32"},
		{"2001:db8::/32", "2001:db8::/33", "2001:db8:8000::/33"},
	} {
		lo, hi := halves(netip.MustParsePrefix(c[0]))
		if lo.String() != c[1] || hi.String() != c[2] {
			t.Errorf("%s: %s %s", c[0], lo, hi)
		}
	}
}

func TestUnion(t *testing.T) {
	reg := mustCompile(t, map[string]string{})
	a, _ := reg.Expr(Source{Text: "10.0.0.0/8; !10.1.0.0/16", Pos: diag.Pos{File: "b.txt", Line: 1, Col: 1}})
	b, _ := reg.Expr(Source{Text: "*@partner.example", Pos: diag.Pos{File: "b.txt", Line: 2, Col: 1}})
	c, _ := reg.Expr(Source{Text: "192.0.2.1", Pos: diag.Pos{File: "b.txt", Line: 3, Col: 1}})
	u := Union("bypass", []*Set{a, nil, b, c})
	for addr, want := range map[string]bool{"10.2.0.1": true, "10.1.0.1": false, "192.0.2.1": true, "192.0.2.2": false} {
		a := netip.MustParseAddr(addr)
		if u.Contains(a) != want || u.Explain(a).In != want {
			t.Errorf("%s: want %v", addr, want)
		}
	}
	if !u.ContainsMail("x@partner.example") || u.ContainsMail("x@other.example") {
		t.Error("union mail")
	}
	m := u.Explain(netip.MustParseAddr("192.0.2.1"))
	if d, _ := m.Decider(); d.Item.Pos().Line != 3 {
		t.Errorf("decider position: %+v", m)
	}
	if Union("none", nil) != nil {
		t.Error("empty union must be nil")
	}
}

// An include must be a regular file under the size limit: a device, a
// FIFO (which must not hang the read) or an oversized file is an error at
// the item that names it.
func TestIncludeOnlyRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, []byte("192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, safefile.MaxText+1); err != nil { // sparse
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/dev/zero":    "not a regular file: it is a character device",
		"/dev/urandom": "not a regular file: it is a character device",
		fifo:           "not a regular file: it is a FIFO",
		dir:            "not a regular file: it is a directory",
		big:            fmt.Sprintf("file too large: %d bytes, more than the %d allowed", safefile.MaxText+1, safefile.MaxText),
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Compile([]Source{{Name: "P", Text: "192.0.2.9; {" + path + "}", Pos: diag.Pos{File: "cfg.yaml", Line: 4, Col: 10}}}, Options{})
			done <- err
		}()
		select {
		case err := <-done:
			wantErr(t, err, "cfg.yaml:4:21: include {"+path+"}: "+want)
		case <-time.After(10 * time.Second):
			t.Fatalf("include of %s hangs", path)
		}
	}
}
