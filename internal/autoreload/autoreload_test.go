package autoreload

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/geoupdate"
	"github.com/postern/postern/internal/snapshot"
)

// wait is how long a test waits for something that should happen at once.
const wait = 10 * time.Second

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes path the way careful tools do: a new file renamed over
// the old one.
func replace(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	write(t, tmp, body)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog polls the log until it holds want.
func waitLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// harness runs a Refresher and collects the reloads it asks for.
type harness struct {
	r       *Refresher
	reloads chan string
	synced  chan struct{}
	logs    *syncBuffer
}

func start(t *testing.T, s *snapshot.Snapshot, opts Options) *harness {
	t.Helper()
	h := &harness{reloads: make(chan string, 16), synced: make(chan struct{}, 16), logs: &syncBuffer{}}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.Debounce == 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	h.r = New(s, opts)
	h.r.synced = func() { h.synced <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.r.Run(ctx, func(why string) { h.reloads <- why })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(wait):
			t.Error("Run did not return")
		}
	})
	h.waitSynced(t)
	return h
}

func (h *harness) waitSynced(t *testing.T) {
	t.Helper()
	select {
	case <-h.synced:
	case <-time.After(wait):
		t.Fatal("the watch list was not built")
	}
}

// next returns the next reload asked for.
func (h *harness) next(t *testing.T) string {
	t.Helper()
	select {
	case why := <-h.reloads:
		return why
	case <-time.After(wait):
		t.Fatalf("no reload asked for; log:\n%s", h.logs.String())
		return ""
	}
}

func (h *harness) none(t *testing.T) {
	t.Helper()
	select {
	case why := <-h.reloads:
		t.Fatalf("unexpected reload: %s", why)
	default:
	}
}

// A change of a zone file, an include, the bypass file's include or a
// file the next snapshot adds asks for one reload once the writes have
// settled; files the snapshot was not read from, and the configuration
// file itself, do not.
func TestWatchAsksForReload(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	write(t, p("sg.zone"), "203.0.113.0/24\n")
	write(t, p("office.txt"), "198.51.100.0/24\n")
	write(t, p("bypass.txt"), "192.0.2.1\nf:sub/more.txt\n")
	if err := os.Mkdir(p("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, p("sub/more.txt"), "192.0.2.2\n")
	write(t, p("other.txt"), "192.0.2.3\n")
	cfg := p("postern.yaml")
	base := `geoip:
  databases:
    - path: sg.zone
patterns:
  Office: "{office.txt}"
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office];country:SG" }
intrusion_prevention:
  bypass_file: bypass.txt
`
	write(t, cfg, base)
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, s, Options{})

	// An include written in place, several times in a row: one reload.
	for i := range 5 {
		write(t, p("office.txt"), fmt.Sprintf("198.51.100.%d\n", i))
	}
	if why := h.next(t); why != "changed: "+p("office.txt") {
		t.Errorf("reload for the include: %q", why)
	}
	// A zone file replaced by a rename; an unrelated file and the
	// configuration file change at the same time and are not named.
	write(t, p("other.txt"), "192.0.2.4\n")
	write(t, cfg, base+"\n")
	replace(t, p("sg.zone"), "203.0.113.0/25\n")
	if why := h.next(t); why != "changed: "+p("sg.zone") {
		t.Errorf("reload for the zone file: %q (the burst above asked twice, or other files were named)", why)
	}
	// A file the bypass file pulls in, in another directory.
	write(t, p("sub/more.txt"), "192.0.2.5\n")
	if why := h.next(t); why != "changed: "+p("sub/more.txt") {
		t.Errorf("reload for the bypass include: %q", why)
	}

	// The next snapshot reads another include: it is watched from then on.
	write(t, p("admins.txt"), "192.0.2.9\n")
	write(t, cfg, strings.Replace(base, `Office: "{office.txt}"`, `Office: "{office.txt};{admins.txt}"`, 1))
	s2, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.r.Apply(s2)
	h.waitSynced(t)
	write(t, p("admins.txt"), "192.0.2.10\n")
	if why := h.next(t); why != "changed: "+p("admins.txt") {
		t.Errorf("reload for the new include: %q", why)
	}
	h.none(t)
}

// publisher serves one CSV file on 127.0.0.1 with an ETag.
type publisher struct {
	*httptest.Server
	mu   sync.Mutex
	body string
	tag  int
}

func newPublisher(t *testing.T, body string) *publisher {
	p := &publisher{body: body}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		body, etag := p.body, fmt.Sprintf(`"%d"`, p.tag)
		p.mu.Unlock()
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *publisher) publish(body string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.body = body
	p.tag++
}

// ranges returns a CSV range list of n networks.
func ranges(n int) string {
	var b strings.Builder
	for i := range n {
		cc := "MY"
		if i%2 == 1 {
			cc = "SG"
		}
		fmt.Fprintf(&b, "41.0.%d.0,41.0.%d.255,%s\n", i, i, cc)
	}
	return b.String()
}

// A database with a url is downloaded before the first snapshot when its
// file is missing; when due, a new good file asks for a reload, a bad one
// is logged, keeps the last good file and is tried again.
func TestDownloadsAskForReload(t *testing.T) {
	pub := newPublisher(t, ranges(20))
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "postern.yaml")
	data := filepath.Join(dir, "ranges.csv")
	write(t, cfgPath, fmt.Sprintf(`geoip:
  databases:
    - path: ranges.csv
      url: %s/ranges.csv
      max_drop: 10%%
patterns:
  MY: "country:MY"
  Office: "{office.txt}"
`, pub.URL))
	write(t, filepath.Join(dir, "office.txt"), "198.51.100.0/24\n")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	FetchMissing(context.Background(), cfg, nil, log)
	s, err := snapshot.Load(context.Background(), cfgPath, time.Now())
	if err != nil {
		t.Fatalf("the snapshot does not load after FetchMissing: %v\n%s", err, logs.String())
	}
	if n := len(s.GeoIP.CountryPrefixes("MY")); n != 10 {
		t.Fatalf("MY has %d networks", n)
	}

	// The clock stands past the refresh, so the database is due at once.
	later := func() time.Time { return time.Now().Add(25 * time.Hour) }
	pub.publish(ranges(8)) // shrunk by 60%: refused
	h := start(t, s, Options{Now: later, Retry: 20 * time.Millisecond})
	waitLog(t, h.logs, "geoip download failed; the last good file stays")
	h.none(t)
	if got, _ := os.ReadFile(data); string(got) != ranges(20) {
		t.Fatal("a refused file was put in place")
	}
	pub.publish(ranges(22))
	why := h.next(t)
	if why != "geoip database "+data+" updated" {
		t.Errorf("reload: %q", why)
	}
	if got, _ := os.ReadFile(data); string(got) != ranges(22) {
		t.Error("the new file is not in place")
	}
	st, ok := geoupdate.ReadState(data, pub.URL+"/ranges.csv")
	if !ok || st.Networks != 22 {
		t.Errorf("state: %+v %v", st, ok)
	}
	// The downloaded file is not watched as well: its own swap asked for
	// the one reload above, and the next one is for a watched file.
	write(t, filepath.Join(dir, "office.txt"), "198.51.100.0/25\n")
	if why := h.next(t); why != "changed: "+filepath.Join(dir, "office.txt") {
		t.Errorf("the downloaded file was watched too: %q", why)
	}
	h.none(t)
}

// With the publisher down, a database whose file is there starts with
// that last good file; one whose file is missing makes the snapshot say
// so.
func TestStartWithPublisherDown(t *testing.T) {
	pub := newPublisher(t, ranges(4))
	url := pub.URL
	pub.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "postern.yaml")
	write(t, cfgPath, fmt.Sprintf("geoip:\n  databases:\n    - { path: ranges.csv, url: %q }\n", url+"/r.csv"))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	FetchMissing(context.Background(), cfg, nil, log)
	if !strings.Contains(logs.String(), "geoip download failed") {
		t.Errorf("log: %s", logs.String())
	}
	if _, err := snapshot.Load(context.Background(), cfgPath, time.Now()); err == nil || !strings.Contains(err.Error(), "is not downloaded yet") {
		t.Errorf("snapshot without the file: %v", err)
	}

	write(t, filepath.Join(dir, "ranges.csv"), ranges(4))
	FetchMissing(context.Background(), cfg, nil, log)
	if strings.Count(logs.String(), "geoip download failed") != 1 {
		t.Errorf("a database with its last good file was asked for before the start: %s", logs.String())
	}
	if _, err := snapshot.Load(context.Background(), cfgPath, time.Now()); err != nil {
		t.Errorf("the last good file does not start: %v", err)
	}
}

// A file named through a symbolic link is watched at its target too: a
// change written to the target asks for a reload naming the file as
// configured.
func TestWatchFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(data, "office-v1.txt")
	write(t, target, "198.51.100.0/24\n")
	link := filepath.Join(dir, "office.txt")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, "patterns:\n  Office: \"{office.txt}\"\n")
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, s, Options{})
	write(t, target, "198.51.100.0/25\n")
	if why := h.next(t); why != "changed: "+link {
		t.Errorf("reload: %q", why)
	}
}

// A database given a url by the next snapshot is checked at once (it has
// no download state yet), and a new file asks for a reload.
func TestApplyStartsDownloads(t *testing.T) {
	pub := newPublisher(t, ranges(6))
	dir := t.TempDir()
	data := filepath.Join(dir, "ranges.csv")
	write(t, data, ranges(5))
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, "geoip:\n  databases:\n    - path: ranges.csv\n")
	s1, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, s1, Options{})
	write(t, cfg, fmt.Sprintf("geoip:\n  databases:\n    - { path: ranges.csv, url: %q }\n", pub.URL+"/r.csv"))
	s2, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.r.Apply(s2)
	if why := h.next(t); why != "geoip database "+data+" updated" {
		t.Errorf("reload: %q", why)
	}
	if got, _ := os.ReadFile(data); string(got) != ranges(6) {
		t.Error("the downloaded file is not in place")
	}
}
