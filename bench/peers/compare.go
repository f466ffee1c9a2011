package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/procstat"
)

// Comparing side by side at the same time (-compare): postern (A) and B —
// a second postern build, haproxy or nginx — run together, each with half
// of the load, and each one's CPU a operation is read over the same
// window. Whatever the machine does in that window (another guest's
// steal, a slower minute of Dovecot) falls on both alike, so the ratio of
// their CPU a operation is far steadier than the ratio of two runs taken
// one after the other. The same build on both sides measures what is
// left of the noise.

// abSide is one side of a comparison: its listeners and how to read its
// CPU seconds.
type abSide struct {
	name        string
	fe          frontends
	cpu         func(key string) cpuTimes // CPU seconds so far of the process(es) serving scenario key
	groupOffset byte                      // added to each scenario's source-address group
	cpu0, cpu1  cpuTimes
	t0, t1      time.Time
	res         loadResult
	runErr      error
	perOp, rate []float64 // a value per round
	sysPerOp    []float64 // the system (kernel) part of perOp, a value per round
	shakes      int
	resum       int
}

// cpuTimes are CPU seconds in user and in system (kernel) mode.
type cpuTimes struct{ user, system float64 }

func (c cpuTimes) total() float64 { return c.user + c.system }

// procTimes reads a process's cpuTimes (zeros for none).
func procTimes(p *benchkit.Proc) cpuTimes {
	if p == nil {
		return cpuTimes{}
	}
	u, s := procstat.ProcSplit(p.PID())
	return cpuTimes{u, s}
}

// cSystem is the key of a side's system CPU in a comparison's runs.
const cSystem = "system"

// abRow is a scenario's result in a comparison: postern's CPU a
// operation and rate over the other side's, medians of the rounds.
type abRow struct {
	key       string
	cpu, rate float64
	sysShare  [2]float64 // each side's system CPU over its CPU (medians a operation)
}

// abScenarios are the scenarios a comparison can run (not the idle test).
var abScenarios = []string{"fetch", "login", "smtp", "http", "httpdyn", "imaps-fetch", "imaps-login", "imaps-resume", "smtps", "https"}

// compareSides returns the two sides of -compare, starting B's postern
// processes when B is a binary (stopped by stopAB).
func (b *bench) compareSides() ([]*abSide, error) {
	posternCPU := func(mail, web, webDyn, webTLS *benchkit.Proc) func(string) cpuTimes {
		return func(key string) cpuTimes {
			switch key {
			case "http":
				return procTimes(web)
			case "httpdyn":
				return procTimes(webDyn)
			case "https":
				return procTimes(webTLS)
			}
			return procTimes(mail)
		}
	}
	a := &abSide{name: "postern", fe: b.a.pt, cpu: posternCPU(b.ptMail, b.ptWeb, b.ptWebDyn, b.ptWebTLS)}
	switch b.o.compare {
	case "haproxy":
		return []*abSide{a, {name: "haproxy", fe: b.a.hap, groupOffset: 100, cpu: func(string) cpuTimes { return procTimes(b.haproxy) }}}, nil
	case "nginx":
		return []*abSide{a, {name: "nginx", fe: b.a.ngx, groupOffset: 100, cpu: func(string) cpuTimes { u, s := procstat.TreeSplit(b.nginx.PID()); return cpuTimes{u, s} }}}, nil
	}
	free, err := freeAddrs(7)
	if err != nil {
		return nil, err
	}
	fe := newFrontends(func() string { f := free[0]; free = free[1:]; return f })
	ad := b.a
	ad.pt = fe
	dir := filepath.Join(b.tmp, "postern-B")
	benchkit.Logf("starting postern B: %s", b.o.compare)
	start := func(name, conf string, dir string, listen ...string) (*benchkit.Proc, error) {
		p, err := startPostern(name, dir, b.o.compare, conf, listen...)
		if err == nil {
			b.abProcs = append(b.abProcs, p)
		}
		return p, err
	}
	mail, err := start("postern-mail-B", posternMailConf(filepath.Join(dir, "mail"), ad, b.cert, b.o.eventLoops), filepath.Join(dir, "mail"), fe.imap, fe.imaps, fe.smtp, fe.smtps)
	if err != nil {
		return nil, err
	}
	web := func(name, listen, backend string, c *certFiles) (*benchkit.Proc, error) {
		d := filepath.Join(dir, name)
		return start("postern-"+name+"-B", posternWebConf(d, listen, backend, c), d, listen)
	}
	w, err := web("web", fe.web, b.a.static, nil)
	if err != nil {
		return nil, err
	}
	wd, err := web("webdyn", fe.webDyn, b.a.dynamic, nil)
	if err != nil {
		return nil, err
	}
	wt, err := web("webtls", fe.webTLS, b.a.static, b.cert)
	if err != nil {
		return nil, err
	}
	return []*abSide{a, {name: "B", fe: fe, groupOffset: 100, cpu: posternCPU(mail, w, wd, wt)}}, nil
}

// stopAB stops B's postern processes.
func (b *bench) stopAB() {
	for _, p := range b.abProcs {
		if !p.Running() {
			b.fail("%s exited during the run (%v):\n%s", p.Name, p.Err(), p.Tail())
		}
		p.Stop()
	}
	b.abProcs = nil
}

// compareAll runs every wanted scenario with both sides at the same time
// and writes compare.md into the output folder.
func (b *bench) compareAll() error {
	defer b.stopServers()
	if err := b.startServers(); err != nil {
		return err
	}
	defer b.stopAB()
	sides, err := b.compareSides()
	if err != nil {
		return err
	}
	z := sides[1]
	bName := z.name
	if bName == "B" {
		bName = "B (`" + b.o.compare + "`)"
	}
	var out strings.Builder
	fmt.Fprintf(&out, "Measured %s at commit `%s`; %s; %s. Flags: `%s`.\n\n", b.rep.Date, b.rep.Commit, b.rep.CPU, b.rep.Versions, strings.TrimSpace("bench/peers.sh "+b.o.args))
	fmt.Fprintf(&out, "postern (`%s`) and %s ran at the same time, each with half of the clients; each one's CPU a operation over the same window", b.bin, bName)
	if z.name == "nginx" {
		out.WriteString(" (nginx: master and workers, not its auth server)")
	}
	fmt.Fprintf(&out, ". postern/%s: postern's CPU a operation (or rate) over the other's, in each round. In brackets, the part of the CPU a operation spent in the kernel (system time: the kernel samples it at each clock tick, so over a window it is within a few per cent).\n\n", z.name)
	fmt.Fprintf(&out, "| scenario | postern: rate, CPU a operation (medians) | %s | postern/%s CPU, each round | median (geometric mean; 95 %% interval) | postern/%s rate, median |\n|---|---|---|---|---|---|\n", z.name, z.name, z.name)
	for _, key := range abScenarios {
		if !b.want(key) || b.ctx.Err() != nil {
			continue
		}
		line, err := b.compareScenario(key, sides)
		if err != nil {
			b.fail("%s: %v", key, err)
			continue
		}
		out.WriteString(line)
	}
	table := out.String()
	fmt.Println(table)
	dir := b.outDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	benchkit.Logf("table in %s", filepath.Join(dir, "compare.md"))
	return os.WriteFile(filepath.Join(dir, "compare.md"), []byte(table), 0o644)
}

// compareScenario runs one scenario's rounds and returns its table row.
func (b *bench) compareScenario(key string, sides []*abSide) (string, error) {
	b.settle()
	sc := newScenario(key, b.o)
	o := b.o
	for _, s := range sides {
		s.perOp, s.sysPerOp, s.rate, s.shakes, s.resum = nil, nil, nil, 0, 0
	}
	// pick returns the process measured and the load of one side, with
	// its half of the clients.
	var pick func(s *abSide) func(ctx context.Context, h hooks) (loadResult, error)
	mail := func(plain, tlsAddr func(f frontends) string, resume, useTLS bool, run func(ctx context.Context, t target, h hooks) loadResult) {
		pick = func(s *abSide) func(ctx context.Context, h hooks) (loadResult, error) {
			t := target{side: s.name, addr: plain(s.fe), group: s.groupOffset}
			if useTLS {
				t.addr, t.tls = tlsAddr(s.fe), b.cert.clientTLS(resume)
			}
			return func(ctx context.Context, h hooks) (loadResult, error) { return run(ctx, t, h), nil }
		}
	}
	half := func(n int) int { return max(1, n/2) }
	switch key {
	case "fetch", "imaps-fetch":
		if err := b.storeBig(); err != nil {
			return "", fmt.Errorf("storing the big message: %w", err)
		}
		mail(func(f frontends) string { return f.imap }, func(f frontends) string { return f.imaps }, true, key == "imaps-fetch",
			func(ctx context.Context, t target, h hooks) loadResult {
				return fetchRun(ctx, t, b.bigVsize, half(o.bigClients), o.warmup, o.duration, h)
			})
	case "login", "imaps-login", "imaps-resume":
		mail(func(f frontends) string { return f.imap }, func(f frontends) string { return f.imaps }, key == "imaps-resume", key != "login",
			func(ctx context.Context, t target, h hooks) loadResult {
				return loginRun(ctx, t, half(o.loginClients), o.warmup, o.duration, h)
			})
	case "smtp", "smtps":
		body := smtpBody(o.smtpSize)
		mail(func(f frontends) string { return f.smtp }, func(f frontends) string { return f.smtps }, true, key == "smtps",
			func(ctx context.Context, t target, h hooks) loadResult {
				return smtpRun(ctx, t, body, half(o.smtpClients), o.warmup, o.duration, h)
			})
	case "http", "httpdyn", "https":
		pick = func(s *abSide) func(ctx context.Context, h hooks) (loadResult, error) {
			url := "http://" + s.fe.web + "/"
			switch key {
			case "httpdyn":
				url = "http://" + s.fe.webDyn + "/"
			case "https":
				url = "https://" + s.fe.webTLS + "/"
			}
			return func(_ context.Context, h hooks) (loadResult, error) { return b.wrkRunConns(url, half(o.httpConns), h) }
		}
	default:
		return "", fmt.Errorf("unknown scenario %q", key)
	}
	for r := 0; r < o.rounds && b.ctx.Err() == nil; r++ {
		if key == "smtp" || key == "smtps" {
			if err := b.drain(); err != nil {
				return "", err
			}
		}
		stop := func() {}
		if key == "smtp" || key == "smtps" {
			stop = b.reaper()
		}
		var wg sync.WaitGroup
		for _, s := range sides {
			load := pick(s)
			wg.Go(func() {
				s.res, s.runErr = load(b.ctx, hooks{
					start: func() { s.t0, s.cpu0 = time.Now(), s.cpu(key) },
					end:   func() { s.t1, s.cpu1 = time.Now(), s.cpu(key) },
				})
			})
		}
		wg.Wait()
		stop()
		var parts []string
		for _, s := range sides {
			if s.runErr != nil {
				return "", fmt.Errorf("%s, round %d: %w", s.name, r+1, s.runErr)
			}
			if s.res.errors > 0 {
				return "", fmt.Errorf("%s, round %d: %d failed sessions; first: %v", s.name, r+1, s.res.errors, s.res.firstErr)
			}
			run := sc.add("postern", s.res, map[string]float64{cPostern: s.cpu1.total() - s.cpu0.total(), cSystem: s.cpu1.system - s.cpu0.system}, s.t1.Sub(s.t0).Seconds())
			if sc.ops(run) == 0 {
				return "", fmt.Errorf("%s, round %d: %s", s.name, r+1, s.res.stalled())
			}
			s.perOp = append(s.perOp, sc.perOp(run, cPostern))
			s.sysPerOp = append(s.sysPerOp, sc.perOp(run, cSystem))
			s.rate = append(s.rate, run.Rate)
			s.shakes += s.res.shakes
			s.resum += s.res.resumed
			parts = append(parts, fmt.Sprintf("%s %.1f %s %.3f %s/%s (system %.3f)", s.name, run.Rate, sc.Unit, s.perOp[r], sc.CPUUnit, sc.Op, s.sysPerOp[r]))
		}
		benchkit.Logf("%-13s round %d: %s  postern/%s CPU %.3f", key, r+1, strings.Join(parts, ", "), sides[1].name, sides[0].perOp[r]/sides[1].perOp[r])
	}
	a, z := sides[0], sides[1]
	cpuRatios, cpuMed, cpuGeo := pairRatios(a.perOp, z.perOp)
	_, rateMed, _ := pairRatios(a.rate, z.rate)
	if len(cpuRatios) == 0 {
		return "", fmt.Errorf("no round completed")
	}
	share := func(s *abSide) float64 {
		if t := benchkit.Median(s.perOp); t > 0 {
			return benchkit.Median(s.sysPerOp) / t
		}
		return 0
	}
	b.abRows = append(b.abRows, abRow{key, cpuMed, rateMed, [2]float64{share(a), share(z)}})
	each := make([]string, len(cpuRatios))
	for i, r := range cpuRatios {
		each[i] = fmt.Sprintf("%.3f", r)
	}
	cell := func(s *abSide) string {
		c := fmt.Sprintf("%s %s, %s %s/%s (system %s)", fmtNum(benchkit.Median(s.rate)), sc.Unit, fmtNum(benchkit.Median(s.perOp)), sc.CPUUnit, sc.Op, fmtNum(benchkit.Median(s.sysPerOp)))
		if key == "imaps-resume" && s.shakes > 0 {
			c += fmt.Sprintf(", %.0f%% resumed", 100*float64(s.resum)/float64(s.shakes))
		}
		return c
	}
	geo := fmt.Sprintf("%.3f", cpuGeo)
	if lo, hi, ok := geoInterval(cpuRatios); ok {
		geo += fmt.Sprintf("; %.3f–%.3f", lo, hi)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | **%.3f** (%s) | %.3f |\n", sc.Title, cell(a), cell(z), strings.Join(each, ", "),
		cpuMed, geo, rateMed), nil
}

// geoInterval returns the 95 % confidence interval of the geometric mean
// of ratios (Student's t on their logarithms: the rounds taken as
// independent draws of one side's cost over the other's); false with
// fewer than two. A build that changes nothing lands on 1 within it; an
// interval that leaves out 1 is a difference the rounds resolve.
func geoInterval(ratios []float64) (lo, hi float64, ok bool) {
	n := len(ratios)
	if n < 2 {
		return 0, 0, false
	}
	var sum, sq float64
	for _, r := range ratios {
		sum += math.Log(r)
	}
	mean := sum / float64(n)
	for _, r := range ratios {
		d := math.Log(r) - mean
		sq += d * d
	}
	half := tQuantile975(n-1) * math.Sqrt(sq/float64(n-1)/float64(n))
	return math.Exp(mean - half), math.Exp(mean + half), true
}

// tQuantile975 is the 97.5th percentile of Student's t distribution with
// df degrees of freedom (df ≥ 1), from the usual table; for df above 30
// the normal's 1.96 is within 4 %.
func tQuantile975(df int) float64 {
	table := [...]float64{12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
		2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
		2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}
	if df >= 1 && df <= len(table) {
		return table[df-1]
	}
	return 1.96
}

// pairRatios returns a[i]/z[i] for every round both have a value for,
// their median and their geometric mean (0 when there is none).
func pairRatios(a, z []float64) (ratios []float64, median, geomean float64) {
	n := min(len(a), len(z))
	logSum := 0.0
	for i := range n {
		if a[i] <= 0 || z[i] <= 0 {
			continue
		}
		ratios = append(ratios, a[i]/z[i])
		logSum += math.Log(a[i] / z[i])
	}
	if len(ratios) == 0 {
		return nil, 0, 0
	}
	return ratios, benchkit.Median(ratios), math.Exp(logSum / float64(len(ratios)))
}
