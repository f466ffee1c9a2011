package bypass

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/diag"
)

// writeFiles writes name → body under dir, making directories as needed.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func resolver(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "mx.partner.example" {
		return []netip.Addr{netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("::ffff:198.51.100.26")}, nil
	}
	return nil, errors.New("no such host")
}

// TestIncludeErrorsNameTheIncludedFile: an error in a file pulled in with
// f: is reported at that file's own line and column, not against the file
// that includes it; every error of every file is reported in one run.
func TestIncludeErrorsNameTheIncludedFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"bypass.txt": "# partners\n10.0.0.1\nf:sub/more.txt\ns:*@ok.example\n",
		"sub/more.txt": "192.0.2.1\n" +
			"  i:300.1.1.1   # a bad address item, indented\n" +
			"s:  notmail\n" +
			"r:postmaster@*\n" +
			"\ta:nowhere.example\n" +
			"w:bad zone\n" +
			"f:deeper.txt\n",
		"sub/deeper.txt": "\n\n  10.1.2.3/33\n",
	})
	outer := filepath.Join(dir, "bypass.txt")
	more := filepath.Join(dir, "sub", "more.txt")
	deeper := filepath.Join(dir, "sub", "deeper.txt")
	_, err := Load(context.Background(), outer, diag.Pos{}, resolver)
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		more + ":2:5: bad item \"300.1.1.1\"",
		more + ":3:5: bypass senders: \"notmail\" is not a mail mask",
		more + ":5:2: a:nowhere.example: the host name does not resolve",
		more + ":6:1: w:bad zone: want a DNS zone",
		deeper + ":3:3: bad network \"10.1.2.3/33\"",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
	// No error is reported against the outer file's lines.
	if strings.Contains(err.Error(), outer+":") {
		t.Errorf("an error names the outer file:\n%v", err)
	}
	var l diag.List
	if !errors.As(err, &l) || len(l) != 5 {
		t.Errorf("want 5 errors, got %d:\n%v", len(l), err)
	}
}

// TestIncludeOpenErrorNamesTheIncludeLine: a missing include is reported at
// the f: line naming it; the top file's own problems at the configuration
// position that names it.
func TestIncludeOpenErrorNamesTheIncludeLine(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"bypass.txt":   "10.0.0.1\nf:sub/more.txt\n",
		"sub/more.txt": "\n  f:missing.txt\n",
		"loop.txt":     "f:loop.txt\n",
	})
	_, err := Load(context.Background(), filepath.Join(dir, "bypass.txt"), diag.Pos{}, resolver)
	if want := filepath.Join(dir, "sub", "more.txt") + ":2:3: bypass file: open"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
	cfgPos := diag.Pos{File: "postern.yaml", Line: 14, Col: 38}
	_, err = Load(context.Background(), filepath.Join(dir, "none.txt"), cfgPos, resolver)
	if err == nil || !strings.HasPrefix(err.Error(), "postern.yaml:14:38: bypass file: open") {
		t.Errorf("error %v, want it at the configuration's position", err)
	}
	_, err = Load(context.Background(), filepath.Join(dir, "loop.txt"), diag.Pos{}, resolver)
	if want := filepath.Join(dir, "loop.txt") + ":1:1: bypass includes nested more than 8 deep"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

// TestItemsFromIncludes: items of every kind count wherever they are written.
func TestItemsFromIncludes(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"bypass.txt": "192.0.2.5\nF:sub/more.txt\n",
		"sub/more.txt": "i:2001:db8:1::/48\n2001:db8:9::1\ns:*@partner.example\nr:postmaster@*\n" +
			"a:mx.partner.example\nw:List.DNSWL.example.\nl:\nt:\n",
	})
	b, err := Load(context.Background(), filepath.Join(dir, "bypass.txt"), diag.Pos{}, resolver)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.5", "2001:db8:1:2::9", "2001:db8:9::1", "198.51.100.25", "198.51.100.26"} {
		if !b.Addr(netip.MustParseAddr(a)) {
			t.Errorf("%s is on the list", a)
		}
	}
	if b.Addr(netip.MustParseAddr("192.0.2.6")) || b.Addr(netip.MustParseAddr("2001:db8:2::1")) {
		t.Error("an address not on the list is bypassed")
	}
	if !b.Sender("bounce@partner.example") || b.Sender("bounce@other.example") {
		t.Error("s: sender mask")
	}
	if !b.Recipient("postmaster@anything.example") || b.Recipient("alice@anything.example") {
		t.Error("r: recipient mask")
	}
	if !b.LocalSenders() {
		t.Error("l: local senders")
	}
	if len(b.Zones) != 1 || b.Zones[0] != "list.dnswl.example" {
		t.Errorf("zones %q", b.Zones)
	}
	if len(b.Hosts) != 1 || b.Hosts[0] != "mx.partner.example" {
		t.Errorf("hosts %q", b.Hosts)
	}
	var none *List
	if none.Addr(netip.MustParseAddr("192.0.2.5")) || none.Sender("a@b") || none.Recipient("a@b") || none.LocalSenders() {
		t.Error("a nil list bypasses nothing")
	}
}

// A plain host name on the list gets the way to write it: a:NAME.
func TestHostNameSuggestsA(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"bypass.txt": "10.0.0.1\nmx.partner.example\n"})
	_, err := Load(context.Background(), filepath.Join(dir, "bypass.txt"), diag.Pos{}, resolver)
	if err == nil || !strings.Contains(err.Error(), `bypass.txt:2:1: `) || !strings.Contains(err.Error(), "write a:mx.partner.example") {
		t.Fatalf("error %v, want the a: suggestion at line 2", err)
	}
}

// ExplainAddr names the item that puts an address on the list, at its own
// file and line (an included file's, an a: line's), and agrees with Addr.
func TestExplainAddrNamesTheItem(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"bypass.txt":   "192.0.2.5\nf:sub/more.txt\n",
		"sub/more.txt": "# partners\ni:2001:db8:1::/48\n  a:mx.partner.example\n",
	})
	b, err := Load(context.Background(), filepath.Join(dir, "bypass.txt"), diag.Pos{}, resolver)
	if err != nil {
		t.Fatal(err)
	}
	more := filepath.Join(dir, "sub", "more.txt")
	for addr, want := range map[string]string{
		"192.0.2.5":       "192.0.2.5 at " + filepath.Join(dir, "bypass.txt") + ":1:1",
		"2001:db8:1:2::9": "2001:db8:1::/48 at " + more + ":2:3",
		"198.51.100.26":   "198.51.100.26 at " + more + ":3:5",
		"192.0.2.6":       "",
	} {
		a := netip.MustParseAddr(addr)
		m := b.ExplainAddr(a)
		if m.In != b.Addr(a) {
			t.Errorf("%s: ExplainAddr says %v, Addr %v", addr, m.In, b.Addr(a))
		}
		got := ""
		if st, ok := m.Decider(); ok {
			got = st.Item.String() + " at " + st.Item.Pos().String()
		}
		if got != want {
			t.Errorf("%s: decided by %q, want %q", addr, got, want)
		}
	}
	var none *List
	if m := none.ExplainAddr(netip.MustParseAddr("192.0.2.5")); m.In || len(m.Steps) != 0 {
		t.Errorf("a nil list explains %+v", m)
	}
}
