package metrics_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// engine returns an engine with the metrics as its observer and n active
// blocks of reason L (and one manual block).
func engine(tb testing.TB, m *metrics.Metrics, n int) *guard.Engine {
	tb.Helper()
	dir := tb.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfg, []byte(`services:
  imap: { listen: ":143", backend: "b:1" }
intrusion_prevention:
  imap_pop3: { connections_per_minute: 1000000000, failed_logins: 1000000000 }
`), 0o600); err != nil {
		tb.Fatal(err)
	}
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	e, err := guard.New(context.Background(), s.Guard, guard.Options{Observer: m})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	if n > 0 {
		now := time.Now()
		r := rand.New(rand.NewPCG(1, 2))
		seen := map[netip.Prefix]bool{}
		var blocks []store.Block
		for len(blocks) < n {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), 32)
			if seen[p] {
				continue
			}
			seen[p] = true
			blocks = append(blocks, store.Block{Prefix: p, Reason: reason.Login, FirstSeen: now, LastSeen: now, Expires: now.Add(time.Hour)})
		}
		if _, err := e.Import(context.Background(), blocks, "test"); err != nil {
			tb.Fatal(err)
		}
	}
	m.SetState(state{e})
	return e
}

type state struct{ e *guard.Engine }

func (s state) LiveSessionsByService() [service.Count]int        { return s.e.LiveSessionsByService() }
func (s state) ActiveBlocksByReason(fn func(reason.Code, int))   { s.e.ActiveBlocksByReason(fn) }
func (s state) Certificates(fn func(service.Service, time.Time)) {}
func (s state) GeoIPBuilds(fn func(string, time.Time))           {}

func scrape(tb testing.TB, h http.Handler) string {
	tb.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.RemoteAddr = "127.0.0.1:1234"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		tb.Fatalf("scrape: %d %s", rec.Code, rec.Body.String())
	}
	return rec.Body.String()
}

// Every metric follows the Prometheus naming rules (promlint: units,
// _total on counters, help text) and carries postern_'s prefix.
func TestNamingRules(t *testing.T) {
	m := metrics.New()
	e := engine(t, m, 10)
	gs, _ := e.Accept(netip.MustParseAddr("192.0.2.1"), service.IMAP, nil)
	gs.LoginFailed("a@example.com", 1)
	gs.Close()
	m.BackendDial(service.IMAP, "127.0.0.1:143", time.Millisecond, nil)
	m.DNSBL(metrics.ListBlock, "zen.example", time.Millisecond)
	m.SpamScan(metrics.SpamHam, time.Millisecond)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "postern_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "postern_") {
			n++
		} else if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s outside postern_, go_, process_", name)
		}
	}
	if n < 20 {
		t.Errorf("only %d postern_ metrics", n)
	}
}

// The engine's events reach the metrics: connections by outcome, events
// and blocks by reason, active blocks read at scrape time.
func TestEngineObserved(t *testing.T) {
	m := metrics.New()
	e := engine(t, m, 3)
	a := netip.MustParseAddr("192.0.2.7")
	gs, v := e.Accept(a, service.IMAP, nil)
	if v.Action != guard.Allow {
		t.Fatal(v)
	}
	gs.LoginFailed("x@example.com", 7)
	gs.Close()
	if _, err := e.BlockManual(context.Background(), netip.PrefixFrom(a, 32), time.Hour, "", "test"); err != nil {
		t.Fatal(err)
	}
	if _, v := e.Accept(a, service.IMAP, nil); v.Action != guard.Refuse {
		t.Fatalf("blocked address: %v", v)
	}
	open, v := e.Accept(netip.MustParseAddr("198.51.100.9"), service.IMAP, nil)
	if v.Action != guard.Allow {
		t.Fatal(v)
	}
	defer open.Close()
	body := scrape(t, m.Handler(metrics.ServerOptions{}))
	for _, want := range []string{
		`postern_connections_accepted_total{service="imap"} 2`, // with the open session
		`postern_connections_refused_total{service="imap",why="block"} 1`,
		`postern_trigger_events_total{group="imap_pop3",reason="L"} 1`,
		`postern_trigger_events_total{group="imap_pop3",reason="I"} 2`,
		`postern_blocks_total{reason="U"} 1`,
		`postern_blocks_active{reason="L"} 3`,
		`postern_blocks_active{reason="U"} 1`,
		`postern_blocks_active{reason="D"} 0`,
		`postern_sessions_active{service="imap"} 1`,
		`postern_sessions_active{service="web"} 0`,
		`postern_sessions_active{service="console"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// The observer's methods on the accept and event paths do not allocate.
func TestObserverAllocs(t *testing.T) {
	m := metrics.New()
	var o guard.Observer = m
	n := testing.AllocsPerRun(1000, func() {
		o.Connection(service.IMAP, guard.ConnAccepted)
		o.Connection(service.SMTP, guard.ConnRefusedBlock)
		o.AdmitLatency(50 * time.Nanosecond)
		o.Event(guard.GroupMail, reason.Login)
		o.Blocked(reason.Login)
		o.Login(service.IMAP, guard.LoginFailed)
		o.StoreCommit(time.Millisecond, nil)
		m.Refused(service.SMTP, metrics.WhyLimit)
		m.HandshakeFailed(service.IMAPS)
		m.Relayed(service.IMAP, metrics.DirToClient, 100)
		m.SMTPMessage(service.SMTP, true, 1000)
	})
	if n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// Out-of-range values are ignored, never a panic or a new series.
func TestBadValuesIgnored(t *testing.T) {
	m := metrics.New()
	m.Connection(service.Service(0), guard.ConnAccepted)
	m.Connection(service.Service(200), guard.ConnAccepted)
	m.Event(guard.Group(9), reason.Login)
	m.Event(guard.GroupSMTP, reason.Code('z'))
	m.Blocked(reason.Code('z'))
	m.Login(service.Service(99), guard.LoginOK)
	m.Refused(service.IMAP, metrics.Why(77))
	m.SMTPMessage(service.IMAP, true, 10) // not an SMTP service
	body := scrape(t, m.Handler(metrics.ServerOptions{}))
	if strings.Contains(body, `reason="z"`) || strings.Contains(body, `postern_smtp_messages_total{result="relayed",service="imap"}`) {
		t.Error("a bad value made a series")
	}
}

// A non-granted address gets 403; the default grant is loopback.
func TestGrant(t *testing.T) {
	m := metrics.New()
	for _, c := range []struct {
		grant func(netip.Addr) bool
		from  string
		code  int
	}{
		{nil, "127.0.0.1:1", 200},
		{nil, "[::1]:1", 200},
		{nil, "192.0.2.1:1", 403},
		{func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.1") }, "192.0.2.1:1", 200},
		{func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.1") }, "[::ffff:192.0.2.1]:1", 200},
		{func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.1") }, "127.0.0.1:1", 403},
		{nil, "garbage", 403},
	} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.RemoteAddr = c.from
		rec := httptest.NewRecorder()
		m.Handler(metrics.ServerOptions{Grant: c.grant}).ServeHTTP(rec, req)
		if rec.Code != c.code {
			t.Errorf("from %s: %d, want %d", c.from, rec.Code, c.code)
		}
	}
}

// The server binds, serves, and stops with its context.
func TestServer(t *testing.T) {
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := m.Listen(ctx, "127.0.0.1:0", metrics.ServerOptions{Ready: func() error { return io.EOF }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	resp, err := http.Get("http://" + srv.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "EOF") {
		t.Errorf("/readyz not ready: %d %q", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// BenchmarkScrape100kBlocks: one whole scrape (the text format, Go and
// process collectors included) with 100,000 active blocks, which the
// blocks-active collector counts at scrape time.
func BenchmarkScrape100kBlocks(b *testing.B) {
	m := metrics.New()
	engine(b, m, 100_000)
	h := m.Handler(metrics.ServerOptions{})
	if !strings.Contains(scrape(b, h), `postern_blocks_active{reason="L"} 100000`) {
		b.Fatal("the scrape does not count the blocks")
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		scrape(b, h)
	}
	// CPU time as well as wall time: on a loaded machine the wall time
	// includes waiting for a core.
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/scrape")
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1e3/float64(b.N), "cpu-ms/scrape")
}

// BenchmarkAcceptObserved is guard's BenchmarkAccept with the metrics as
// the engine's observer: what the metrics add to a connection.
func BenchmarkAcceptObserved(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var m *metrics.Metrics
			if on {
				m = metrics.New()
			}
			e := engineWith(b, m)
			addrs := make([]netip.Addr, 1<<12)
			for i := range addrs {
				addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				gs, v := e.Accept(addrs[i&(len(addrs)-1)], service.IMAP, nil)
				if v.Action != guard.Allow {
					b.Fatal("a clean address was not allowed")
				}
				gs.Close()
				i++
			}
		})
	}
}

// BenchmarkEventsObserved is guard's BenchmarkEvents (failed logins
// counted cross-session over 65,536 addresses) with and without the
// metrics as observer.
func BenchmarkEventsObserved(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var m *metrics.Metrics
			if on {
				m = metrics.New()
			}
			e := engineWith(b, m)
			sessions := make([]*guard.Session, 1<<16)
			for i := range sessions {
				sessions[i], _ = e.Open(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), service.IMAP, nil)
			}
			var next atomicCounter
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := next.add(1 << 20)
				for pb.Next() {
					sessions[i&(1<<16-1)].LoginFailed("user@example.com", i|1)
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// engineWith is engine without blocks, with m as observer when not nil.
func engineWith(b *testing.B, m *metrics.Metrics) *guard.Engine {
	if m == nil {
		return engineNoObserver(b)
	}
	return engine(b, m, 0)
}

// BenchmarkObserverCalls: what the engine's observer costs per call (one
// counter increment, resolved in advance), next to the events it counts.
func BenchmarkObserverCalls(b *testing.B) {
	m := metrics.New()
	var o guard.Observer = m
	b.Run("Event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.Event(guard.GroupMail, reason.Login)
		}
	})
	b.Run("Connection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.Connection(service.IMAP, guard.ConnAccepted)
		}
	})
	b.Run("AdmitLatency", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.AdmitLatency(60 * time.Nanosecond)
		}
	})
}

// docs/ADMIN.md documents every postern_ metric.
func TestEveryMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/ADMIN.md")
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	engine(t, m, 1)
	m.BackendDial(service.IMAP, "b:1", time.Millisecond, nil)
	m.BackendDial(service.IMAP, "b:1", time.Millisecond, io.EOF)
	m.DNSBL(metrics.ListBlock, "zone.example", time.Millisecond)
	m.SpamScan(metrics.SpamHam, time.Millisecond)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if name := mf.GetName(); strings.HasPrefix(name, "postern_") {
			n++
			if !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("docs/ADMIN.md does not document %s", name)
			}
		}
	}
	if n < 23 {
		t.Errorf("only %d postern_ metrics gathered", n)
	}
}

// The Grafana dashboard and the alert rules use only metrics that exist.
func TestExamplesUseRealMetrics(t *testing.T) {
	m := metrics.New()
	engine(t, m, 1)
	m.BackendDial(service.IMAP, "b:1", time.Millisecond, nil)
	m.BackendDial(service.IMAP, "b:1", time.Millisecond, io.EOF)
	m.DNSBL(metrics.ListBlock, "zone.example", time.Millisecond)
	m.SpamScan(metrics.SpamHam, time.Millisecond)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{
		// read from the gateway's state, absent with the test's stub
		"postern_certificate_expiry_timestamp_seconds": true,
		"postern_geoip_build_timestamp_seconds":        true,
	}
	for _, mf := range mfs {
		known[mf.GetName()] = true
	}
	name := regexp.MustCompile(`postern_[a-z_]+`)
	for _, f := range []string{"../../examples/grafana/postern-dashboard.json", "../../examples/prometheus/postern-alerts.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		used := 0
		for _, n := range name.FindAllString(string(b), -1) {
			base := n
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				if s, ok := strings.CutSuffix(n, suf); ok && known[s] {
					base = s
				}
			}
			if !known[base] {
				t.Errorf("%s uses %s, which postern does not export", f, n)
			}
			used++
		}
		if used < 5 {
			t.Errorf("%s: only %d metric references", f, used)
		}
	}
}
