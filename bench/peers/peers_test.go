package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/internal/testenv"
)

const wrkOutput = `Running 2s test @ http://127.0.0.1:41234/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  301.12us   7.95ms   80.12%
    Req/Sec    21.05k     1.02k   22.51k    70.00%
  41893 requests in 2.00s, 50.97MB read
Requests/sec:  20946.23
Transfer/sec:     25.48MB
`

func TestParseWrk(t *testing.T) {
	n, rps, err := parseWrk(wrkOutput)
	if err != nil || n != 41893 || rps != 20946.23 {
		t.Fatalf("parseWrk = %d, %v, %v; want 41893, 20946.23, nil", n, rps, err)
	}
	withErrors := strings.Replace(wrkOutput, "Requests/sec", "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec", 1)
	if _, _, err := parseWrk(withErrors); err == nil || !strings.Contains(err.Error(), "read 3") {
		t.Errorf("socket errors: err = %v, want the error line", err)
	}
	non2xx := strings.Replace(wrkOutput, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)
	if _, _, err := parseWrk(non2xx); err == nil {
		t.Error("non-2xx answers were not an error")
	}
	if _, _, err := parseWrk("wrk: connection refused\n"); err == nil {
		t.Error("output without counts was not an error")
	}
}

func TestReplaceMarked(t *testing.T) {
	doc := "# Title\n\nintro\n" + markBegin + "\nold table\n" + markEnd + "\ntail\n"
	got, err := replaceMarked(doc, "\nnew | table\n\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\nintro\n" + markBegin + "\nnew | table\n" + markEnd + "\ntail\n"
	if got != want {
		t.Errorf("replaceMarked:\n%q\nwant\n%q", got, want)
	}
	// Again: the result is stable.
	if again, _ := replaceMarked(got, "new | table"); again != want {
		t.Errorf("second replacement changed the document:\n%q", again)
	}
	for name, bad := range map[string]string{
		"no markers":   "text",
		"only begin":   markBegin + "\n",
		"twice":        markBegin + markEnd + markBegin + markEnd,
		"end first":    markEnd + "\n" + markBegin,
		"begin, begin": markBegin + markBegin + markEnd,
	} {
		if _, err := replaceMarked(bad, "x"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestUpdateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(path, []byte("a\n"+markBegin+"\n"+markEnd+"\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateFile(path, "| x |"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if want := "a\n" + markBegin + "\n| x |\n" + markEnd + "\nb\n"; string(b) != want {
		t.Errorf("file:\n%s\nwant\n%s", b, want)
	}
}

// fakeReport is a report of two scenarios with known figures.
func fakeReport() *report {
	o := defaultOptions()
	r := &report{Date: "2026-01-02 03:04 UTC", Commit: "abc1234", CPU: "2 × test CPU", Versions: "v", LoadBefore: "0.10 0.20 0.30", LoadAfter: "0.40 0.50 0.60", Duration: "1m0s", Flags: "-short", NoFile: 20000}
	login := newScenario("login", o)
	for _, v := range []struct {
		side string
		ops  int
		cpu  map[string]float64
	}{
		{"direct", 1000, map[string]float64{cOther: 0.1}},
		{"nginx", 1000, map[string]float64{cNginx: 0.6, cAuth: 1.0}},
		{"haproxy", 1100, map[string]float64{cHAProxy: 0.55}},
		{"postern", 900, map[string]float64{cPostern: 1.17, cOther: 5}},
		{"postern", 1000, map[string]float64{cPostern: 1.3}},
		{"postern", 950, map[string]float64{cPostern: 1.2}},
	} {
		login.add(v.side, loadResult{ops: v.ops, elapsed: 10 * time.Second}, v.cpu, 10)
	}
	fetch := newScenario("fetch", o)
	fetch.add("direct", loadResult{ops: 40, bytes: 9_200_000_000, elapsed: 10 * time.Second}, map[string]float64{}, 10)
	fetch.add("nginx", loadResult{ops: 41, bytes: 9_476_000_000, elapsed: 10 * time.Second}, map[string]float64{cNginx: 5.2, cAuth: 0.01}, 10)
	fetch.add("postern", loadResult{ops: 30, bytes: 6_716_000_000, elapsed: 10 * time.Second}, map[string]float64{cPostern: 6.716}, 10)
	r.Scenarios = []*scenarioResult{login, fetch}
	r.Idle = []idleResult{{Side: "postern", Asked: 10000, Held: 9900, RSS0: 20000, RSSN: 20000 + 9900*14, StoppedBy: "descriptor limit 20000: 2 per connection"}}
	return r
}

func TestStat(t *testing.T) {
	r := fakeReport()
	login := r.Scenarios[0]
	p := login.stat("postern")
	if p.runs != 3 || p.rate != 95 {
		t.Errorf("postern: %d runs, median rate %v; want 3, 95", p.runs, p.rate)
	}
	// CPU per login, medians: 1.17/900, 1.3/1000, 1.2/950 → 1.3 ms, 1.3 ms, 1.263 ms.
	if p.cpu < 1.26 || p.cpu > 1.31 {
		t.Errorf("postern CPU per login %v ms, want about 1.3", p.cpu)
	}
	if p.otherMax != 0.5 {
		t.Errorf("postern other %v cores, want 0.5 (5 s in a 10 s window)", p.otherMax)
	}
	n := login.stat("nginx")
	if n.cpu != 0.6 || n.auth != 1.0 {
		t.Errorf("nginx CPU %v + auth %v ms, want 0.6 + 1.0", n.cpu, n.auth)
	}
	f := r.Scenarios[1].stat("postern")
	if f.rate != 671.6 || f.cpu != 1 {
		t.Errorf("FETCH: %v MB/s, %v ms per MB; want 671.6, 1", f.rate, f.cpu)
	}
}

func TestMarkdown(t *testing.T) {
	md := fakeReport().markdown()
	for _, want := range []string{
		"at commit `abc1234`", "load average before 0.10 0.20 0.30, after 0.40 0.50 0.60", "`bench/peers.sh -short`",
		"| scenario | direct | nginx | haproxy | postern | machine |",
		"| IMAP logins, one connection each, 32 clients, logins/s | 1.00 (100) | 1.00 (100)<br>0.600 ms/login + 1.00 auth | 1.10 (110)<br>0.500 ms/login | 0.95 (95.0)<br>1.30 ms/login | **busy**: other up to 0.50 cores |",
		// FETCH: nginx's auth server works once per session, not per MB.
		"| IMAP FETCH 20 MB, 4 clients, MB/s | 1.00 (920) | 1.03 (948)<br>0.549 ms/MB | — | 0.73 (672)<br>1.00 ms/MB | other ≤ 0.00 cores |",
		"| memory per idle logged-in IMAP connection (RSS delta / N) | — | — | — | 14.0 KiB<br>9900 of 10000 held (descriptor limit 20000: 2 per connection) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the table lacks\n%s\nin\n%s", want, md)
		}
	}
}

func TestChartData(t *testing.T) {
	r := fakeReport()
	got := r.chartData()
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 3 {
		t.Fatalf("chart data:\n%s\nwant a header and 2 lines", got)
	}
	if want := `"IMAP login" 1.0000 1.1000 0.9500 1600.000 500.000 1300.000`; lines[1] != want {
		t.Errorf("login line %q, want %q", lines[1], want)
	}
	if r.maxRatio() != 1.1 {
		t.Errorf("maxRatio %v, want 1.1", r.maxRatio())
	}
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		t.Skip("gnuplot is not installed (apt-get install gnuplot-nox)")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "d.dat")
	os.WriteFile(data, []byte(got), 0o644)
	script := filepath.Join(dir, "c.gp")
	os.WriteFile(script, []byte(gnuplotScript(data, filepath.Join(dir, "r.png"), filepath.Join(dir, "c.png"), "test", 1.3)), 0o644)
	if out, err := exec.Command(gp, script).CombinedOutput(); err != nil {
		t.Fatalf("gnuplot: %v\n%s", err, out)
	}
	for _, f := range []string{"r.png", "c.png"} {
		checkPNG(t, filepath.Join(dir, f))
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 2000 {
		t.Errorf("%s: not a PNG chart (%d bytes)", path, len(b))
	}
}

func TestMessages(t *testing.T) {
	b := smtpBody(10_240)
	if !bytes.HasSuffix(b, []byte("\r\n.\r\n")) || bytes.Contains(b[:len(b)-3], []byte("\r\n.")) {
		t.Error("the SMTP body is not dot-terminated exactly once")
	}
	if n := len(b); n < 10_240 || n > 10_240+100 {
		t.Errorf("SMTP body of %d bytes, want about 10240", n)
	}
}

func TestScenarioTitles(t *testing.T) {
	o := defaultOptions()
	for _, k := range allScenarios {
		if k == "idle" {
			continue
		}
		s := newScenario(k, o)
		if s.Title == "" || s.Unit == "" || s.Op == "" || chartLabel[k] == "" {
			t.Errorf("scenario %s: title %q unit %q op %q label %q", k, s.Title, s.Unit, s.Op, chartLabel[k])
		}
	}
	o.applyShort(map[string]bool{"rounds": true})
	if o.rounds != 2 || o.duration != 2*time.Second || o.bigSize != 2_000_000 {
		t.Errorf("applyShort: rounds %d duration %v big %d", o.rounds, o.duration, o.bigSize)
	}
}

func TestConfigs(t *testing.T) {
	a := addrs{imapDirect: "127.0.0.1:1143", smtpDirect: "127.0.0.1:1025", static: "127.0.0.1:8080", dynamic: "127.0.0.1:8081", auth: "127.0.0.1:9000"}
	a.ngx = newFrontends(func() string { return "127.0.0.1:2000" })
	a.hap = a.ngx
	c := &certFiles{cert: "/c.pem", key: "/k.pem", combined: "/ck.pem"}
	ng := nginxProxyConf("/d", a, c, 20000, false)
	for _, want := range []string{"proxy_protocol on;", "xclient off;", "auth_http 127.0.0.1:9000/auth;", "ssl_session_tickets on;", "smtp_auth none;", "worker_connections 19900;", "keepalive 64;"} {
		if !strings.Contains(ng, want) {
			t.Errorf("nginx configuration lacks %q", want)
		}
	}
	hp := haproxyConf(a, c, 5000, false)
	for _, want := range []string{"server dovecot 127.0.0.1:1143 send-proxy-v2", "server postfix 127.0.0.1:1025 send-proxy-v2", "ssl crt /ck.pem", "mode http"} {
		if !strings.Contains(hp, want) {
			t.Errorf("haproxy configuration lacks %q", want)
		}
	}
	if strings.Contains(ng+hp, "{{") {
		t.Error("a placeholder is left in a configuration")
	}
	if strings.Contains(ng, "error_log /d/nginx-mail.log") || strings.Contains(hp, "tcplog") || strings.Contains(hp, "log stdout") {
		t.Error("a peer logs sessions without -peer-logs")
	}
	// -peer-logs: each peer logs its mail sessions, and only those.
	ng = nginxProxyConf("/d", a, c, 20000, true)
	if !strings.Contains(ng, "mail {\n  error_log /d/nginx-mail.log info;") {
		t.Errorf("nginx's mail block does not log at info with -peer-logs:\n%s", ng)
	}
	hp = haproxyConf(a, c, 5000, true)
	if !strings.Contains(hp, "global\n  log stdout format raw local0\n") {
		t.Errorf("haproxy has no log target with -peer-logs:\n%s", hp)
	}
	for _, fe := range []string{"imap", "imaps", "smtp", "smtps"} {
		i := strings.Index(hp, "frontend "+fe+"\n")
		j := strings.Index(hp[i+1:], "frontend ")
		if i < 0 || j < 0 || !strings.Contains(hp[i:i+1+j], "option tcplog") {
			t.Errorf("haproxy's %s frontend does not log its connections with -peer-logs", fe)
		}
	}
	if n := strings.Count(hp, "option tcplog"); n != 4 {
		t.Errorf("haproxy logs %d frontends with -peer-logs, want the 4 mail ones", n)
	}
	if strings.Contains(ng+hp, "{{") {
		t.Error("a placeholder is left in a -peer-logs configuration")
	}
}

// TestShortRun runs a few scenarios of every side against the test
// binary's own harness with tiny windows, writing to a temporary folder
// (never the documents), and checks the table, the data and the charts.
func TestShortRun(t *testing.T) {
	env := testenv.Backends(t)
	if testing.Short() {
		t.Skip("builds postern and runs load for ~40 s")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	o := defaultOptions()
	o.applyShort(map[string]bool{})
	o.dir, o.reuse, o.out = env.Dir, true, t.TempDir()
	o.only = "login,smtp,http,imaps-resume,idle"
	o.args = "-short -only " + o.only
	o.warmup, o.duration, o.idle, o.loginClients, o.smtpClients, o.httpConns = 300*time.Millisecond, time.Second, 200, 8, 8, 8
	if err := run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(o.out, "bench-peers.md"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", md)
	for _, want := range []string{"IMAP logins, one connection each, 8 clients", "SMTP 10 kB messages, 8 clients", "HTTP keep-alive, static 1024 B page", "IMAPS logins, resumed sessions", "memory per idle logged-in IMAP connection"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("the table lacks %q", want)
		}
	}
	js, err := os.ReadFile(filepath.Join(o.out, "bench-peers.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(js, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Scenarios) != 4 || len(r.Idle) != 3 {
		t.Fatalf("%d scenarios, %d idle results; want 4 and 3", len(r.Scenarios), len(r.Idle))
	}
	for _, s := range r.Scenarios {
		d := s.stat("direct")
		for _, side := range sideNames {
			st := s.stat(side)
			if st.runs != 1 || st.rate <= 0 {
				t.Errorf("%s, %s: %d runs, rate %v", s.Key, side, st.runs, st.rate)
				continue
			}
			if ratio := st.rate / d.rate; ratio < 0.02 || ratio > 20 {
				t.Errorf("%s, %s: ratio to direct %v", s.Key, side, ratio)
			}
		}
		if p := s.stat("postern"); p.cpu <= 0 {
			t.Errorf("%s: postern's CPU per %s is %v", s.Key, s.Op, p.cpu)
		}
		if s.Key == "imaps-resume" {
			for _, side := range sideNames[1:] {
				if st := s.stat(side); st.resumed < 0.5 {
					t.Errorf("imaps-resume, %s: %.0f%% of handshakes resumed", side, 100*st.resumed)
				}
			}
		}
	}
	for _, i := range r.Idle {
		if i.Held != 200 || i.perConn() <= 0 || i.perConn() > 200 {
			t.Errorf("idle %s: %d held, %.1f KiB per connection", i.Side, i.Held, i.perConn())
		}
	}
	checkPNG(t, filepath.Join(o.out, "bench-peers.png"))
	checkPNG(t, filepath.Join(o.out, "bench-peers-cpu.png"))
}

// TestShortCompare runs -compare against haproxy and against a second
// postern binary (the same build: the ratios stay near 1) with short
// windows.
func TestShortCompare(t *testing.T) {
	env := testenv.Backends(t)
	if testing.Short() {
		t.Skip("builds postern and runs load for ~30 s")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root, err := benchkit.ModuleRoot("go test ./bench/peers")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := benchkit.BuildPostern(context.Background(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		against, only string
		keys          []string
	}{
		{"haproxy", "login,smtp,https", []string{"login", "smtp", "https"}},
		{bin, "imaps-resume", []string{"imaps-resume"}},
	} {
		o := defaultOptions()
		o.applyShort(map[string]bool{})
		o.dir, o.reuse, o.out, o.postern, o.compare, o.only = env.Dir, true, t.TempDir(), bin, c.against, c.only
		// Against haproxy, the peers log their mail sessions (-peer-logs),
		// and the temporary folder is kept to read haproxy's log.
		o.peerLogs, o.keep = c.against == "haproxy", c.against == "haproxy"
		// 2 s windows: each side has four clients, and Dovecot's logins
		// (about 55 a second a side here) are the slowest operation.
		o.warmup, o.duration, o.rounds, o.loginClients, o.smtpClients, o.httpConns = 300*time.Millisecond, 2*time.Second, 2, 8, 8, 8
		b := &bench{o: o, ctx: context.Background(), want: benchkit.Only(o.only)}
		if err := b.run(); err != nil || len(b.errs) > 0 {
			t.Fatalf("-compare %s: %v %v", c.against, err, b.errs)
		}
		md, err := os.ReadFile(filepath.Join(o.out, "compare.md"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("-compare %s:\n%s", c.against, md)
		if len(b.abRows) != len(c.keys) {
			t.Fatalf("-compare %s: %d rows, want %d", c.against, len(b.abRows), len(c.keys))
		}
		for i, r := range b.abRows {
			if r.key != c.keys[i] || r.cpu < 0.05 || r.cpu > 20 || r.rate < 0.05 || r.rate > 20 {
				t.Errorf("-compare %s: row %+v, want %s with ratios in 0.05–20", c.against, r, c.keys[i])
			}
			for _, sh := range r.sysShare {
				if sh < 0 || sh > 1 {
					t.Errorf("-compare %s: row %+v: a side's system CPU is not a part of its CPU", c.against, r)
				}
			}
		}
		if !bytes.Contains(md, []byte("(system ")) {
			t.Errorf("-compare %s: the table does not give the system part of the CPU", c.against)
		}
		if o.peerLogs {
			t.Cleanup(func() { os.RemoveAll(b.tmp) })
			log, err := os.ReadFile(filepath.Join(b.tmp, "haproxy.log"))
			if err != nil {
				t.Fatal(err)
			}
			// option tcplog: "client [date] frontend backend/server timers bytes …"
			for _, fe := range []string{"] imap dovecot/dovecot ", "] smtp postfix/postfix "} {
				if !bytes.Contains(log, []byte(fe)) {
					t.Errorf("-peer-logs: haproxy logged no connection to %q; its log:\n%s", fe, log[max(0, len(log)-2000):])
				}
			}
		}
	}
}

// TestMain also serves the child modes: the bench re-runs its own binary
// (here the test binary) as nginx's auth server, the dynamic web backend
// and the idle test's IMAP backend.
func TestMain(m *testing.M) {
	if st, ok := runChild(os.Args[1:]); ok {
		os.Exit(st)
	}
	testenv.Main(m)
}

func TestPairRatios(t *testing.T) {
	// Rounds where either side measured nothing are left out; the
	// geometric mean of 2 and 0.5 is 1.
	ratios, med, geo := pairRatios([]float64{2, 1, 0, 3}, []float64{1, 2, 5, 1.5, 7})
	if want := []float64{2, 0.5, 2}; !slices.Equal(ratios, want) {
		t.Fatalf("ratios = %v, want %v", ratios, want)
	}
	if med != 2 {
		t.Errorf("median = %v, want 2", med)
	}
	if want := math.Cbrt(2); math.Abs(geo-want) > 1e-12 {
		t.Errorf("geometric mean = %v, want %v", geo, want)
	}
	if r, m, g := pairRatios(nil, []float64{1}); r != nil || m != 0 || g != 0 {
		t.Errorf("no rounds: %v, %v, %v; want nil, 0, 0", r, m, g)
	}
}

// TestGeoInterval: the interval is symmetric around the geometric mean on
// a log scale, narrows as rounds agree, and needs two rounds.
func TestGeoInterval(t *testing.T) {
	if _, _, ok := geoInterval([]float64{1.1}); ok {
		t.Error("an interval from one round")
	}
	// ln 1.1 and ln 1/1.1: mean 0, sample deviation ln(1.1)·√2, so the
	// half width is 12.706 · ln(1.1)·√2 / √2.
	lo, hi, ok := geoInterval([]float64{1.1, 1 / 1.1})
	want := math.Exp(12.706 * math.Log(1.1))
	if !ok || math.Abs(hi-want) > 1e-9 || math.Abs(lo-1/want) > 1e-9 {
		t.Errorf("interval of 1.1 and 1/1.1 = %v–%v, want %v–%v", lo, hi, 1/want, want)
	}
	lo, hi, _ = geoInterval([]float64{1.20, 1.21, 1.19, 1.20, 1.21, 1.19})
	if lo > 1.20 || hi < 1.20 || hi-lo > 0.03 {
		t.Errorf("six close rounds around 1.20: %v–%v", lo, hi)
	}
	lo, hi, _ = geoInterval([]float64{1, 1, 1})
	if lo != 1 || hi != 1 {
		t.Errorf("equal rounds: %v–%v, want 1–1", lo, hi)
	}
	if tQuantile975(6) != 2.447 || tQuantile975(100) != 1.96 {
		t.Errorf("t quantiles: %v for 6, %v for 100", tQuantile975(6), tQuantile975(100))
	}
}

func TestSourceAddrGroups(t *testing.T) {
	// The second side of -compare takes its clients' addresses from groups
	// of its own: Dovecot limits connections per user and address.
	a := sourceAddr(11+target{}.group, 3)
	b := sourceAddr(11+target{group: 100}.group, 3)
	if a == b || a.String() != "127.11.0.4" || b.String() != "127.111.0.4" {
		t.Errorf("addresses %v and %v, want 127.11.0.4 and 127.111.0.4", a, b)
	}
}

func TestStalledReport(t *testing.T) {
	// A window in which nothing completed names the slowest session of
	// the clients and the step it spent its time in.
	var fast, slow loadResult
	var c stepClock
	c.begin()
	c.mark("connect")
	fast.timed(&c)
	c.t0 = c.t0.Add(-3 * time.Second) // a session 3 s long
	c.took[0] += 3 * time.Second
	slow.timed(&c)
	var all loadResult
	all.add(fast)
	all.add(slow)
	all.add(loadResult{total: 2})
	got := all.stalled()
	for _, want := range []string{"nothing completed", "2 sessions before it", "the slowest took 3s", "connect 3"} {
		if !strings.Contains(got, want) {
			t.Errorf("stalled() = %q, want %q in it", got, want)
		}
	}
	if s := (&loadResult{}).stalled(); strings.Contains(s, "slowest") {
		t.Errorf("no session: %q", s)
	}
	var none stepClock
	none.begin()
	if s := none.String(); s != "not connected" {
		t.Errorf("a session that did not connect: %q", s)
	}
}

// TestCheckDovecotReuse: -dovecot-reuse must match how the running
// backends were started; a backends.env from before the knob counts as
// processes not reused.
func TestCheckDovecotReuse(t *testing.T) {
	for _, c := range []struct {
		env  string
		want bool
		ok   bool
	}{
		{"POSTERN_BACKENDS_DOVECOT_REUSE=1\n", true, true},
		{"POSTERN_BACKENDS_DOVECOT_REUSE=0\n", false, true},
		{"POSTERN_BACKENDS_DIR=/tmp/x\n", false, true},
		{"POSTERN_BACKENDS_DIR=/tmp/x\n", true, false},
		{"POSTERN_BACKENDS_DOVECOT_REUSE=1\n", false, false},
		{"POSTERN_BACKENDS_DOVECOT_REUSE=0\n", true, false},
	} {
		err := checkDovecotReuse(benchkit.ParseEnv(c.env), c.want, "/tmp/x")
		if (err == nil) != c.ok {
			t.Errorf("%q, -dovecot-reuse=%v: err %v, want ok %v", c.env, c.want, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "test/backends/stop.sh /tmp/x") {
			t.Errorf("error does not say how to restart: %v", err)
		}
	}
}
