package geoupdate

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"go4.org/netipx"

	"github.com/postern/postern/internal/geoip"
)

// nets returns n disjoint /24 networks of alternating countries (MY, SG),
// so no two neighbours merge and the loaders count exactly n.
func nets(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range n {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{41, byte(i >> 8), byte(i), 0}), 24)
	}
	return out
}

func country(i int) string {
	if i%2 == 0 {
		return "MY"
	}
	return "SG"
}

// mmdbOf builds an MMDB (ip-location-db layout) with n networks.
func mmdbOf(t testing.TB, n int) []byte {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "geoupdate-test", RecordSize: 24, BuildEpoch: 1781725900})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range nets(n) {
		if err := tree.Insert(netipx.PrefixIPNet(p), mmdbtype.Map{"country_code": mmdbtype.String(country(i))}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// csvOf builds a start,end,country range list with n networks.
func csvOf(n int) []byte {
	var b strings.Builder
	b.WriteString("start,end,country\n")
	for i, p := range nets(n) {
		r := netipx.RangeOfPrefix(p)
		fmt.Fprintf(&b, "%s,%s,%s\n", r.From(), r.To(), country(i))
	}
	return []byte(b.String())
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarOf builds a tar archive of name, content pairs.
func tarOf(t testing.TB, members ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for i := 0; i+1 < len(members); i += 2 {
		name, data := members[i].(string), members[i+1].([]byte)
		if strings.HasSuffix(name, "/") {
			if err := w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// server is a data publisher on 127.0.0.1 that answers conditional GETs.
type server struct {
	*httptest.Server
	mu          sync.Mutex
	body        []byte
	etag        string
	status      int  // when set, every request gets it
	hang        bool // hold every request until the client gives up
	gets        int
	conditional int // requests that carried If-None-Match
	full        int // 200 answers
}

func newServer(t *testing.T) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// publish makes data the file on offer, with a new ETag.
func (s *server) publish(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = data
	s.etag = fmt.Sprintf(`"v%d"`, s.gets+len(data))
	s.status = 0
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.gets++
	body, etag, status, hang := s.body, s.etag, s.status, s.hang
	inm := r.Header.Get("If-None-Match")
	if inm != "" {
		s.conditional++
	}
	s.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	if inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.mu.Lock()
	s.full++
	s.mu.Unlock()
	w.Header().Set("ETag", etag)
	w.Header().Set("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")
	w.Write(body)
}

func (s *server) counts() (gets, conditional, full int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets, s.conditional, s.full
}

// networks loads path as postern will and counts its networks.
func networks(t *testing.T, path string) int {
	t.Helper()
	db, err := geoip.Load(context.Background(), []geoip.Source{{Path: path}})
	if err != nil {
		t.Fatalf("the file in place does not load: %v", err)
	}
	return db.Sources()[0].Networks
}

// dirNames lists dir, to show nothing is left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// Only good files are put in place: after each bad answer the last good
// file is still there, byte for byte, and nothing is left in the
// directory but the file and its state.
func TestUpdateSwapsOnlyGoodFiles(t *testing.T) {
	srv := newServer(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "country.mmdb")
	src := Source{URL: srv.URL + "/country.mmdb", Path: path, MaxDrop: 20, MinNetworks: 10}
	u := New(Options{})
	ctx := context.Background()

	good := mmdbOf(t, 100)
	srv.publish(good)
	res, err := u.Update(ctx, src)
	if err != nil || !res.Changed || res.Networks != 100 || res.Previous != 0 {
		t.Fatalf("first download: %+v, %v", res, err)
	}
	if got := networks(t, path); got != 100 {
		t.Fatalf("file in place has %d networks", got)
	}

	// Unchanged upstream: a conditional GET, 304, nothing changes.
	res, err = u.Update(ctx, src)
	if err != nil || res.Changed || !res.NotModified || res.Networks != 100 {
		t.Fatalf("unchanged: %+v, %v", res, err)
	}
	if _, cond, _ := srv.counts(); cond != 1 {
		t.Errorf("conditional requests: %d, want 1", cond)
	}

	bad := []struct {
		name string
		body []byte
		want string
	}{
		{"corrupt", bytes.Repeat([]byte("not a database "), 100), "does not load"},
		{"truncated", good[:len(good)/2], "does not load"},
		{"corrupt gzip", gz(t, good)[:200], "receiving the file"},
		{"empty", nil, "does not load"},
		{"shrunken", mmdbOf(t, 70), "70 networks, 30.0% fewer than the 100 of the last good file (max_drop 20%)"},
		{"too few", mmdbOf(t, 9), "9 networks, fewer than the 10 required"},
		{"tar without database", gz(t, tarOf(t, "LICENSE.txt", []byte("x"), "README", []byte("y"))), "the archive has no .mmdb member (it has LICENSE.txt, README)"},
		{"tar with two databases", tarOf(t, "a.mmdb", good, "b.mmdb", good), "two databases, a.mmdb and b.mmdb"},
	}
	for _, b := range bad {
		srv.publish(b.body)
		res, err := u.Update(ctx, src)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: error %v, want %q", b.name, err, b.want)
		}
		if err != nil && !strings.Contains(err.Error(), "the last good file stays") {
			t.Errorf("%s: error does not say the last good file stays: %v", b.name, err)
		}
		if res.Changed || res.Networks != 100 {
			t.Errorf("%s: result %+v", b.name, res)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, good) {
			t.Fatalf("%s: the last good file was replaced", b.name)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"country.mmdb", "country.mmdb.download"}) {
			t.Errorf("%s: left in the directory: %v", b.name, names)
		}
	}

	// Server errors and a server that is gone keep the file too.
	srv.mu.Lock()
	srv.status = http.StatusServiceUnavailable
	srv.mu.Unlock()
	if _, err := u.Update(ctx, src); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("503: %v", err)
	}

	// A smaller file within max_drop is taken, and the count it is
	// measured against moves with it.
	srv.publish(mmdbOf(t, 85))
	res, err = u.Update(ctx, src)
	if err != nil || !res.Changed || res.Networks != 85 || res.Previous != 100 {
		t.Fatalf("within max_drop: %+v, %v", res, err)
	}
	srv.publish(mmdbOf(t, 70))
	if res, err = u.Update(ctx, src); err != nil || !res.Changed || res.Previous != 85 {
		t.Fatalf("70 after 85 is an 18%% drop: %+v, %v", res, err)
	}

	srv.Close()
	res, err = u.Update(ctx, src)
	if err == nil || res.Changed || res.Networks != 70 {
		t.Fatalf("server down: %+v, %v", res, err)
	}
	if got := networks(t, path); got != 70 {
		t.Errorf("after the server went down the file has %d networks, want the last good 70", got)
	}
}

// gzip and tar.gz answers are unpacked: the database member of an
// archive is picked out of the others, CSV as well as MMDB.
func TestUpdateUnpacks(t *testing.T) {
	srv := newServer(t)
	u := New(Options{})
	ctx := context.Background()
	mmdb, csv := mmdbOf(t, 40), csvOf(30)
	cases := []struct {
		name, file string
		body       []byte
		want       int
	}{
		{"plain csv", "ranges.csv", csv, 30},
		{"gzip mmdb", "country.mmdb", gz(t, mmdb), 40},
		{"gzip csv", "ranges.csv", gz(t, csv), 30},
		{"tar.gz as published by MaxMind", "country.mmdb", gz(t, tarOf(t,
			"GeoLite2-Country_20261201/", []byte(nil),
			"GeoLite2-Country_20261201/COPYRIGHT.txt", []byte("(c)"),
			"GeoLite2-Country_20261201/LICENSE.txt", []byte("license"),
			"GeoLite2-Country_20261201/GeoLite2-Country.mmdb", mmdb)), 40},
		{"tar.gz of a csv", "ranges.csv", gz(t, tarOf(t, "README.txt", []byte("r"), "data/ranges.csv", csv)), 30},
		{"plain tar", "country.mmdb", tarOf(t, "x/country.mmdb", mmdb), 40},
		{"zone file named for its country", "sg.zone", []byte("10.0.0.0/24\n10.0.2.0/24\n"), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.file)
			srv.publish(c.body)
			res, err := u.Update(ctx, Source{URL: srv.URL + "/db", Path: path, MinNetworks: 1, MaxDrop: 20})
			if err != nil || !res.Changed || res.Networks != c.want {
				t.Fatalf("%+v, %v", res, err)
			}
			if got := networks(t, path); got != c.want {
				t.Errorf("file in place has %d networks, want %d", got, c.want)
			}
		})
	}
}

// Size and time are bounded: a file over MaxSize (sent as is, or a small
// gzip that unpacks past it) and a server that never answers are
// refused, and the last good file stays.
func TestUpdateBounds(t *testing.T) {
	srv := newServer(t)
	path := filepath.Join(t.TempDir(), "ranges.csv")
	ctx := context.Background()
	good := csvOf(20)
	srv.publish(good)
	if _, err := New(Options{}).Update(ctx, Source{URL: srv.URL, Path: path}); err != nil {
		t.Fatal(err)
	}
	u := New(Options{MaxSize: 64 << 10, Timeout: 500 * time.Millisecond})
	big := csvOf(3000) // about 90 KiB
	for _, c := range []struct {
		name string
		body []byte
	}{{"large", big}, {"gzip bomb", gz(t, append(big, bytes.Repeat([]byte("#"), 1<<20)...))}} {
		srv.publish(c.body)
		if len(c.body) > 64<<10 && c.name != "large" {
			t.Fatalf("%s: the compressed test body is not small: %d", c.name, len(c.body))
		}
		_, err := u.Update(ctx, Source{URL: srv.URL, Path: path})
		if err == nil || !strings.Contains(err.Error(), "larger than 65536 bytes") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	srv.mu.Lock()
	srv.hang = true
	srv.mu.Unlock()
	start := time.Now()
	if _, err := u.Update(ctx, Source{URL: srv.URL, Path: path}); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("hanging server: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the timeout took %s", d)
	}
	srv.mu.Lock()
	srv.hang = false
	srv.mu.Unlock()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, good) {
		t.Error("the last good file was replaced")
	}
}

// A file replaced by hand (the state no longer describes it) is counted
// afresh and the whole file is asked for; a URL's password never appears
// in an error.
func TestUpdateStateAndSecrets(t *testing.T) {
	srv := newServer(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "country.mmdb")
	srv.publish(mmdbOf(t, 50))
	u := New(Options{})
	ctx := context.Background()
	src := Source{URL: srv.URL + "/db", Path: path, MaxDrop: 10}
	if _, err := u.Update(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, mmdbOf(t, 200), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, fullBefore := srv.counts()
	res, err := u.Update(ctx, src)
	if err == nil || res.Previous != 200 || !strings.Contains(err.Error(), "than the 200 of the last good file") {
		t.Errorf("replaced file: %+v, %v", res, err)
	}
	if _, _, full := srv.counts(); full != fullBefore+1 {
		t.Errorf("the whole file was not asked for (full answers %d → %d)", fullBefore, full)
	}

	// Another URL does not inherit the validators.
	if _, ok := ReadState(path, srv.URL+"/other"); ok {
		t.Error("state of one URL read for another")
	}

	secret := strings.Replace(srv.URL, "http://", "http://account:s3cr3t-key@", 1)
	srv.Close()
	_, err = u.Update(ctx, Source{URL: secret + "/db", Path: path})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error with the password: %v", err)
	}
	data, _ := os.ReadFile(path + StateSuffix)
	if bytes.Contains(data, []byte("s3cr3t")) {
		t.Error("the password is in the state file")
	}
}

// The directory of a database is created for its first download, and
// what an update cut short left there is cleared by the next one.
func TestUpdateCreatesDirectoryAndClearsLeftovers(t *testing.T) {
	srv := newServer(t)
	srv.publish(csvOf(3))
	dir := filepath.Join(t.TempDir(), "geoip")
	path := filepath.Join(dir, "ranges.csv")
	u := New(Options{})
	if _, err := u.Update(context.Background(), Source{URL: srv.URL, Path: path}); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".ranges.csv.new-123"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".ranges.csv.new-123/ranges.csv")
	write(".ranges.csv.download.new-456")
	write("keep.txt")
	srv.publish(csvOf(4))
	if _, err := u.Update(context.Background(), Source{URL: srv.URL, Path: path}); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"keep.txt", "ranges.csv", "ranges.csv.download"}) {
		t.Errorf("directory: %v", names)
	}
}

// FuzzUnpack feeds unpack what a server might send: it never panics and
// never gives more than the limit.
func FuzzUnpack(f *testing.F) {
	csv := csvOf(3)
	f.Add(csv)
	f.Add(gz(f, csv))
	f.Add(tarOf(f, "a/ranges.csv", csv, "LICENSE.txt", []byte("l")))
	f.Add(gz(f, tarOf(f, "x.csv", csv, "y.csv", csv)))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		r, err := unpack(bytes.NewReader(data), Source{Path: "ranges.csv"}, limit)
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, r)
		if n > limit+1 {
			t.Fatalf("unpacked %d bytes past the limit %d", n, limit)
		}
		_ = r.finish()
	})
}

// An https URL is never followed to plain http.
func TestUpdateRefusesDowngradeRedirect(t *testing.T) {
	plain := newServer(t)
	plain.publish(csvOf(3))
	tlsSrv := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/ranges.csv", http.StatusFound))
	t.Cleanup(tlsSrv.Close)
	u := New(Options{})
	u.client.Transport = tlsSrv.Client().Transport // trusts the test certificate
	path := filepath.Join(t.TempDir(), "ranges.csv")
	_, err := u.Update(context.Background(), Source{URL: tlsSrv.URL + "/db", Path: path})
	if err == nil || !strings.Contains(err.Error(), "refusing a redirect from https to http://127.0.0.1") {
		t.Errorf("redirect to http: %v", err)
	}
	if gets, _, _ := plain.counts(); gets != 0 {
		t.Errorf("the plain http server was asked %d times", gets)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("a file was put in place")
	}
}
