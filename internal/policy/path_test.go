package policy

import (
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/service"
)

// TestPathTricks: every spelling a backend could read as /admin meets the
// /admin rule.
func TestPathTricks(t *testing.T) {
	p, _ := build(t, cfgText)
	deep := "/%" + strings.Repeat("25", 12) + "61dmin" // 13 layers of encoding
	for _, tr := range []string{
		"/%61dmin", "//admin", "/x/../admin", "/ADMIN", "/admin%2f", "/%2e%2e/admin",
		"/%61dmin%zz", "/admin%2Fusers", "/%2F%2Fadmin", "/x/..%2fadmin", "/x%2f..%2fadmin",
		"/%252e%252e/admin", "/.%2e/admin", "/%5cadmin", "/x\\..\\admin", "/AdMiN/", "/admin/.",
		"/%41%44%4d%49%4e", "/;x/admin", "/admin;", "///admin", deep,
	} {
		if p.AllowPath(service.Web, tr, sg) {
			t.Errorf("%q slipped past the /admin rule", tr)
		}
		if !p.AllowPath(service.Web, tr, admin) {
			t.Errorf("%q refused for the admin address", tr)
		}
	}
	v, err := p.ExplainPath(service.Web, deep, sg)
	if err != nil || v.Allow || len(v.Rules) != 2 {
		t.Errorf("an unclean path must meet every rule: %+v %v", v, err)
	}
}

func TestCleanPathMore(t *testing.T) {
	for in, want := range map[string]string{
		"/admin%2f":        "/admin",
		"/%2e%2e/admin":    "/admin",
		"/%61dmin%zz":      "/admin%zz",
		"/a%":              "/a%",
		"/a%4":             "/a%4",
		"/a;b=1/c;d":       "/a/c",
		"/A/B":             "/A/B",
		"/a?b=/../c#d":     "/a",
		"/%252561":         "/a",
		"\\\\server\\x":    "/server/x",
		"/%00/admin":       "/\x00/admin",
		"/x/%2e/%2E%2e/y/": "/y",
	} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSimplePathAgrees(t *testing.T) {
	for _, in := range []string{"/", "/a", "/a/", "/webmail/inbox/message", "/a.b/c-d_e~f", "/x?y=/../admin"} {
		c, ok := simplePath(in)
		if !ok {
			t.Errorf("%q should take the fast path", in)
			continue
		}
		if path.Clean(c) != CleanPath(in) {
			t.Errorf("fast path %q disagrees with CleanPath %q", c, CleanPath(in))
		}
	}
	for _, in := range []string{"", "a", "//a", "/a//b", "/./a", "/a/..", "/%61", "/a;b", "/a\\b", "/é"} {
		if _, ok := simplePath(in); ok {
			t.Errorf("%q must not take the fast path", in)
		}
	}
}

// FuzzAllowPath: when a backend decoding the path once (as net/url and most
// servers do) and resolving dot segments would see /admin, the rule applies;
// and the fast path agrees with CleanPath.
func FuzzAllowPath(f *testing.F) {
	for _, s := range []string{"/admin", "/%61dmin", "//admin", "/x/../admin", "/ADMIN", "/admin%2f", "/%2e%2e/admin", "/webmail/", "/a;b/../admin"} {
		f.Add(s)
	}
	p, _ := buildF(f, cfgText)
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > 4096 {
			return
		}
		if c, ok := simplePath(in); ok && !strings.EqualFold(path.Clean(c), CleanPath(in)) {
			t.Fatalf("fast path %q vs CleanPath %q", c, CleanPath(in))
		}
		dec, err := url.PathUnescape(strings.ReplaceAll(in, "\\", "/"))
		if err != nil || strings.ContainsAny(in, "?#;") {
			return
		}
		seen := strings.ToLower(path.Clean("/" + dec))
		if (seen == "/admin" || strings.HasPrefix(seen, "/admin/")) && p.AllowPath(service.Web, in, sg) {
			t.Fatalf("%q reaches %q at the backend but passed the /admin rule", in, seen)
		}
	})
}

func BenchmarkAllowPathUnclean(b *testing.B) {
	p, _ := buildF(b, cfgText)
	b.ReportAllocs()
	for b.Loop() {
		p.AllowPath(service.Web, "/webmail//inbox/%6dessage;x=1?id=42", sg)
	}
}

func buildF(tb testing.TB, text string) (*Policy, []error) {
	tb.Helper()
	cfg, err := config.Parse("p.yaml", []byte(text))
	if err != nil {
		tb.Fatal(err)
	}
	var srcs []patterns.Source
	for _, p := range cfg.Patterns {
		srcs = append(srcs, patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos, Quoted: p.Text.Quoted})
	}
	reg, err := patterns.Compile(srcs, patterns.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	pol, warns, err := Build(cfg, reg)
	if err != nil {
		tb.Fatal(err)
	}
	return pol, warns
}
