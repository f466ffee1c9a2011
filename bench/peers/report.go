package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/postern/postern/bench/internal/benchkit"
)

// report is everything a run measured; it is also written as JSON.
type report struct {
	Date, Commit, CPU, Versions string
	LoadBefore, LoadAfter       string // /proc/loadavg
	Duration                    string
	Flags                       string
	NoFile                      int
	Scenarios                   []*scenarioResult
	Idle                        []idleResult
}

func newReport(o options) *report {
	return &report{Flags: o.args}
}

// scenarioResult is one scenario's runs.
type scenarioResult struct {
	Key, Title string
	Unit       string  // of the rate: MB/s, logins/s, messages/s, requests/s
	Op         string  // what CPU is counted per: MB, login, message, request
	CPUUnit    string  // ms or µs
	CPUScale   float64 // seconds to CPUUnit
	Runs       []runResult
}

// runResult is one measured window of one side.
type runResult struct {
	Side            string
	Ops             int   // operations in the window
	Bytes           int64 // FETCH bytes in the window
	Wall            float64
	Rate            float64            // in the scenario's Unit
	CPU             map[string]float64 // seconds per component in the window
	Resumed, Shakes int                // TLS handshakes in the window, and how many resumed
}

func newScenario(key string, o options) *scenarioResult {
	s := &scenarioResult{Key: key, CPUUnit: "ms", CPUScale: 1e3}
	mb := float64(o.bigSize) / 1e6
	switch key {
	case "fetch":
		s.Title, s.Unit, s.Op = fmt.Sprintf("IMAP FETCH %.0f MB, %d clients", mb, o.bigClients), "MB/s", "MB"
	case "imaps-fetch":
		s.Title, s.Unit, s.Op = fmt.Sprintf("IMAPS FETCH %.0f MB, %d clients", mb, o.bigClients), "MB/s", "MB"
	case "login":
		s.Title, s.Unit, s.Op = fmt.Sprintf("IMAP logins, one connection each, %d clients", o.loginClients), "logins/s", "login"
	case "imaps-login":
		s.Title, s.Unit, s.Op = fmt.Sprintf("IMAPS logins, full handshakes, %d clients", o.loginClients), "logins/s", "login"
	case "imaps-resume":
		s.Title, s.Unit, s.Op = fmt.Sprintf("IMAPS logins, resumed sessions, %d clients", o.loginClients), "logins/s", "login"
	case "smtp":
		s.Title, s.Unit, s.Op = fmt.Sprintf("SMTP %d kB messages, %d clients", o.smtpSize/1024, o.smtpClients), "messages/s", "message"
	case "smtps":
		s.Title, s.Unit, s.Op = fmt.Sprintf("SMTPS %d kB messages, %d clients", o.smtpSize/1024, o.smtpClients), "messages/s", "message"
	case "http":
		s.Title, s.Unit, s.Op = fmt.Sprintf("HTTP keep-alive, static %d B page, %d connections", o.pageBytes, o.httpConns), "requests/s", "request"
	case "httpdyn":
		s.Title, s.Unit, s.Op = fmt.Sprintf("HTTP keep-alive, dynamic page (%v of backend CPU), %d connections", o.dynamicWork, o.httpConns), "requests/s", "request"
	case "https":
		s.Title, s.Unit, s.Op = fmt.Sprintf("HTTPS keep-alive, static %d B page, %d connections", o.pageBytes, o.httpConns), "requests/s", "request"
	}
	if s.Op == "request" {
		s.CPUUnit, s.CPUScale = "µs", 1e6
	}
	return s
}

// add records one run.
func (s *scenarioResult) add(side string, res loadResult, cpu map[string]float64, wall float64) runResult {
	r := runResult{Side: side, Ops: res.ops, Bytes: res.bytes, Wall: res.elapsed.Seconds(), CPU: cpu, Resumed: res.resumed, Shakes: res.shakes}
	if r.Wall > 0 {
		if s.Op == "MB" {
			r.Rate = float64(res.bytes) / 1e6 / r.Wall
		} else {
			r.Rate = float64(res.ops) / r.Wall
		}
	}
	s.Runs = append(s.Runs, r)
	return r
}

// ops returns the operations CPU is counted per (MB for FETCH).
func (s *scenarioResult) ops(r runResult) float64 {
	if s.Op == "MB" {
		return float64(r.Bytes) / 1e6
	}
	return float64(r.Ops)
}

// perOp returns CPU per operation of the components, in the scenario's
// CPU unit.
func (s *scenarioResult) perOp(r runResult, comps ...string) float64 {
	n := s.ops(r)
	if n == 0 {
		return 0
	}
	sum := 0.0
	for _, c := range comps {
		sum += r.CPU[c]
	}
	return sum / n * s.CPUScale
}

func (r runResult) summary(s *scenarioResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%10.1f %-10s", r.Rate, s.Unit)
	for _, c := range proxyComponents[r.Side] {
		if c == cAuth && (s.Op == "request" || s.Op == "MB") {
			continue
		}
		fmt.Fprintf(&b, " %s %.3f %s/%s", c, s.perOp(r, c), s.CPUUnit, s.Op)
	}
	if r.Shakes > 0 {
		fmt.Fprintf(&b, " resumed %d/%d", r.Resumed, r.Shakes)
	}
	if r.Wall > 0 {
		fmt.Fprintf(&b, "  (cores: dovecot %.2f postfix %.2f web %.2f gen %.2f other %.2f)",
			r.CPU[cDovecot]/r.Wall, r.CPU[cPostfix]/r.Wall, r.CPU[cWeb]/r.Wall, r.CPU[cGen]/r.Wall, r.CPU[cOther]/r.Wall)
	}
	return b.String()
}

// sideStat is a side's medians over its runs.
type sideStat struct {
	runs        int
	rate        float64
	cpu, auth   float64 // proxy CPU per op (nginx: workers and master; auth: its auth server)
	otherMax    float64 // the most cores the rest of the machine used in one window
	resumed     float64 // fraction of TLS handshakes resumed
	handshaking bool
}

func (s *scenarioResult) stat(side string) sideStat {
	var rates, cpus, auths, res []float64
	st := sideStat{}
	for _, r := range s.Runs {
		if r.Side != side {
			continue
		}
		st.runs++
		rates = append(rates, r.Rate)
		comps := proxyComponents[side]
		if side == "nginx" {
			cpus = append(cpus, s.perOp(r, cNginx))
			auths = append(auths, s.perOp(r, cAuth))
		} else if len(comps) > 0 {
			cpus = append(cpus, s.perOp(r, comps...))
		}
		if r.Wall > 0 {
			st.otherMax = max(st.otherMax, r.CPU[cOther]/r.Wall)
		}
		if r.Shakes > 0 {
			st.handshaking = true
			res = append(res, float64(r.Resumed)/float64(r.Shakes))
		}
	}
	st.rate, st.cpu, st.auth, st.resumed = benchkit.Median(rates), benchkit.Median(cpus), benchkit.Median(auths), benchkit.Median(res)
	return st
}

// busyThreshold is the `other` CPU (cores) above which a window is marked
// as taken on a busy machine.
const busyThreshold = 0.25

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// markdown renders the report's table.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s at commit `%s`, load average before %s, after %s; %s; %s. ",
		r.Date, r.Commit, r.LoadBefore, r.LoadAfter, r.CPU, r.Versions)
	fmt.Fprintf(&b, "Flags: `%s`; run time %s. Each cell: ratio to direct (rate), and the proxy's CPU per operation; medians of the runs. TLS: one ECDSA P-256 certificate for every side; the IMAPS and SMTPS clients (Go) offer X25519 and P-256, not X25519MLKEM768, unless the flags say `-post-quantum`, HTTPS is wrk (OpenSSL).\n\n",
		strings.TrimSpace("bench/peers.sh "+r.Flags), r.Duration)
	b.WriteString("| scenario | direct | nginx | haproxy | postern | machine |\n|---|---|---|---|---|---|\n")
	for _, s := range r.Scenarios {
		d := s.stat("direct")
		fmt.Fprintf(&b, "| %s, %s |", s.Title, s.Unit)
		busy := d.otherMax
		for _, side := range sideNames {
			st := s.stat(side)
			busy = max(busy, st.otherMax)
			if st.runs == 0 {
				b.WriteString(" — |")
				continue
			}
			ratio := "—"
			if d.rate > 0 {
				ratio = fmt.Sprintf("%.2f", st.rate/d.rate)
			}
			fmt.Fprintf(&b, " %s (%s)", ratio, fmtNum(st.rate))
			if side != "direct" {
				fmt.Fprintf(&b, "<br>%s %s/%s", fmtNum(st.cpu), s.CPUUnit, s.Op)
				if side == "nginx" && s.Op != "request" && s.Op != "MB" { // one auth request per session, not per MB
					fmt.Fprintf(&b, " + %s auth", fmtNum(st.auth))
				}
			}
			if st.handshaking && s.Key == "imaps-resume" {
				fmt.Fprintf(&b, "<br>%.0f%% resumed", 100*st.resumed)
			}
			b.WriteString(" |")
		}
		note := fmt.Sprintf("other ≤ %.2f cores", busy)
		if busy > busyThreshold {
			note = fmt.Sprintf("**busy**: other up to %.2f cores", busy)
		}
		fmt.Fprintf(&b, " %s |\n", note)
	}
	for _, i := range r.Idle {
		_ = i
	}
	if len(r.Idle) > 0 {
		b.WriteString("| memory per idle logged-in IMAP connection (RSS delta / N) | — |")
		for _, side := range sideNames[1:] {
			cell := " — |"
			for _, i := range r.Idle {
				if i.Side == side {
					cell = " " + i.cell() + " |"
				}
			}
			b.WriteString(cell)
		}
		fmt.Fprintf(&b, " descriptors: %d per process |\n", r.NoFile)
	}
	return b.String()
}

// ---- chart ---------------------------------------------------------------------

// chartLabel is a scenario's short name on the chart.
var chartLabel = map[string]string{
	"fetch": "IMAP FETCH", "login": "IMAP login", "smtp": "SMTP", "http": "HTTP static", "httpdyn": "HTTP dynamic",
	"imaps-fetch": "IMAPS FETCH", "imaps-login": "IMAPS login", "imaps-resume": "IMAPS resumed", "smtps": "SMTPS", "https": "HTTPS",
}

// chartData returns gnuplot data: one line per scenario, the ratio to
// direct of nginx, haproxy and postern, then their CPU per operation in µs.
func (r *report) chartData() string {
	var b strings.Builder
	b.WriteString("# scenario nginx haproxy postern cpu_nginx_us cpu_haproxy_us cpu_postern_us\n")
	for _, s := range r.Scenarios {
		d := s.stat("direct")
		if d.rate == 0 {
			continue
		}
		fmt.Fprintf(&b, "%q", chartLabel[s.Key])
		for _, side := range sideNames[1:] {
			fmt.Fprintf(&b, " %.4f", s.stat(side).rate/d.rate)
		}
		for _, side := range sideNames[1:] {
			st := s.stat(side)
			fmt.Fprintf(&b, " %.3f", (st.cpu+st.auth)/s.CPUScale*1e6)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// maxRatio returns the highest ratio to direct in the report (at least 1).
func (r *report) maxRatio() float64 {
	m := 1.0
	for _, s := range r.Scenarios {
		d := s.stat("direct")
		for _, side := range sideNames[1:] {
			if d.rate > 0 {
				m = max(m, s.stat(side).rate/d.rate)
			}
		}
	}
	return m
}

// gnuplotScript draws the ratio chart (and the CPU chart) from data.
func gnuplotScript(data, ratioPNG, cpuPNG, title string, top float64) string {
	return fmt.Sprintf(`set terminal pngcairo size 1100,480 noenhanced font "sans,10"
set datafile separator whitespace
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set grid ytics
set xtics rotate by -30 scale 0
set yrange [0:%.2f]
set output %q
set title %q
set ylabel "rate / direct (higher is better)"
plot %q using 2:xtic(1) title "nginx" lc rgb "#4e79a7", '' using 3 title "haproxy" lc rgb "#f28e2b", '' using 4 title "postern" lc rgb "#59a14f", 1 with lines dt 2 lc rgb "black" title "direct"
set output %q
set title "proxy CPU per operation (nginx: with its auth server; FETCH: per MB)"
set ylabel "µs (log scale, lower is better)"
set logscale y
set yrange [*:*]
plot %q using 5:xtic(1) title "nginx" lc rgb "#4e79a7", '' using 6 title "haproxy" lc rgb "#f28e2b", '' using 7 title "postern" lc rgb "#59a14f"
`, top, ratioPNG, title, data, cpuPNG, data)
}

// ---- output ----------------------------------------------------------------------

// The markers of the generated section in docs/BENCHMARKS.md and README.md.
const (
	markBegin = "<!-- bench-peers:begin -->"
	markEnd   = "<!-- bench-peers:end -->"
)

// replaceMarked replaces what is between the markers in text by body; the
// markers must each appear exactly once, begin before end.
func replaceMarked(text, body string) (string, error) {
	if strings.Count(text, markBegin) != 1 || strings.Count(text, markEnd) != 1 {
		return "", fmt.Errorf("want exactly one %s and one %s", markBegin, markEnd)
	}
	i := strings.Index(text, markBegin) + len(markBegin)
	j := strings.Index(text, markEnd)
	if j < i {
		return "", errors.New("the end marker comes before the begin marker")
	}
	return text[:i] + "\n" + strings.TrimSpace(body) + "\n" + text[j:], nil
}

func updateFile(path, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := replaceMarked(string(b), body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

// write writes the table, the JSON, the chart and, with -docs, the
// documents.
func (b *bench) write() error {
	r := b.rep
	r.LoadAfter = loadAverage()
	dir := b.outDir()
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	table := r.markdown()
	fmt.Println(table)
	js, _ := json.MarshalIndent(r, "", " ")
	files := map[string][]byte{"bench-peers.json": js, "bench-peers.dat": []byte(r.chartData()), "bench-peers.md": []byte(table)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	ratio, cpu := filepath.Join(dir, "bench-peers.png"), filepath.Join(dir, "bench-peers-cpu.png")
	script := gnuplotScript(filepath.Join(dir, "bench-peers.dat"), ratio, cpu, fmt.Sprintf("rate relative to a direct connection, %s, commit %s", r.Date, r.Commit), r.maxRatio()*1.15)
	if err := os.WriteFile(filepath.Join(dir, "bench-peers.gp"), []byte(script), 0o644); err != nil {
		return err
	}
	if strings.Count(r.chartData(), "\n") < 2 {
		benchkit.Logf("no scenario with a direct rate: no chart")
		return nil
	}
	if out, err := exec.Command("gnuplot", filepath.Join(dir, "bench-peers.gp")).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w\n%s", err, out)
	}
	benchkit.Logf("table, data and charts in %s", dir)
	if !b.o.docs {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(b.root, "docs", "img"), 0o755); err != nil {
		return err
	}
	for _, f := range []string{"bench-peers.png", "bench-peers-cpu.png"} {
		png, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(b.root, "docs", "img", f), png, 0o644); err != nil {
			return err
		}
	}
	cmd := "`sudo make bench-peers`"
	doc := table + "\n![ratio to direct per scenario](img/bench-peers.png)\n\n![proxy CPU per operation](img/bench-peers-cpu.png)\n\nWritten by " + cmd + ".\n"
	readme := table + "\n![postern, nginx and haproxy: rate relative to a direct connection](docs/img/bench-peers.png)\n\nWritten by " + cmd + "; details in [docs/BENCHMARKS.md](docs/BENCHMARKS.md).\n"
	if err := updateFile(filepath.Join(b.root, "docs", "BENCHMARKS.md"), doc); err != nil {
		return err
	}
	return updateFile(filepath.Join(b.root, "README.md"), readme)
}
