package patterns

import (
	"context"
	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/postern/postern/internal/diag"
)

var fuzzProbe = []netip.Addr{
	netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("175.137.1.1"),
	netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"),
}

// fuzzNames gives every probe address but one a name that host masks can
// match.
var fuzzNames = fcrdnstest.NewNames(map[netip.Addr]string{
	netip.MustParseAddr("10.0.0.1"):        "mail.example.com",
	netip.MustParseAddr("192.168.1.1"):     "guest.example.com",
	netip.MustParseAddr("175.137.1.1"):     "icewarp.co.uk",
	netip.MustParseAddr("2001:db8::1"):     "example.com",
	netip.MustParseAddr("255.255.255.255"): "mail7.example.com",
})

// FuzzCompile feeds arbitrary text as a pattern definition: it must compile
// or fail with an error, never panic, and Explain must agree with Contains
// and ExplainClient with ContainsClient.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"10.0.0.0/8; !10.1.0.0/16", "192.168.*.*", "192-193.*.*.*", "10.0.0.1-10.0.0.99", "10.0.0.5-9",
		"[B]; !asn:13335", "country:MY;country:sg", "*@example.com; info@*", "2001:db8::/32;!2001:db8::1",
		"!", "[", "{x}", "1.2.3.4\n5.6.7.8", "::ffff:1.2.3.4/120", "1.2.*", "a@b@c",
		"10.20.*", "10.*", "10.20.30.*", "*", "*.*", "10-11.*", "10.0.0.0/255.0.0.0", "10.0.0.0/255.0.255.0",
		"*.example.com; !guest.example.com", "icewarp.*", "example.com", "mail?.example.com", "10.20.*.x",
		"0.0.0.0/0; ![B]; !*.example.com", "[B]; mail*.example.com; !10.0.0.0/9", ".example.com", "a..b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		reg, err := Compile([]Source{
			{Name: "A", Text: text, Pos: diag.Pos{File: "f.yaml", Line: 1, Col: 1}},
			{Name: "B", Text: "10.0.0.0/8", Pos: diag.Pos{File: "f.yaml", Line: 2, Col: 1}},
		}, Options{Geo: testGeo(), ValidCountry: validCC, MaxErrors: 5, Names: fuzzNames})
		if err != nil {
			return
		}
		a := reg.Lookup("A")
		for _, addr := range fuzzProbe {
			if m := a.Explain(addr); m.In != a.Contains(addr) {
				t.Fatalf("%q %s: Explain %v, Contains %v", text, addr, m.In, a.Contains(addr))
			}
			in := a.ContainsClient(context.Background(), addr)
			if m := a.ExplainClient(context.Background(), addr); m.In != in {
				t.Fatalf("%q %s: ExplainClient %v, ContainsClient %v", text, addr, m.In, in)
			}
		}
		a.ContainsMail("x@example.com")
	})
}

// FuzzIncludeFile feeds arbitrary bytes as an included pattern file.
func FuzzIncludeFile(f *testing.F) {
	f.Add([]byte("# comment\n10.0.0.0/8\n\n1.2.3.4; 5.6.7.8 # two\n"))
	f.Add([]byte("\xef\xbb\xbf1.1.1.1\r\n"))
	f.Add([]byte("1.1.1.1\x00\n"))
	f.Add([]byte("{self.txt}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "self.txt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = Compile([]Source{{Name: "A", Text: "{self.txt}", Pos: diag.Pos{File: filepath.Join(dir, "c.yaml"), Line: 1, Col: 1}}},
			Options{Geo: testGeo(), ValidCountry: validCC, MaxErrors: 5})
	})
}
