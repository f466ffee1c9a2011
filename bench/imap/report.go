package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
)

type scenarioResult struct {
	name, unit string
	target     float64 // through / direct at least
	runs       []measured
}

type report struct {
	rev, cpus, cpuModel, goVersion, dovecot, dir string
	dovecotLimits, noFile, posternNoFile         string
	posternLog                                   string
	scenarios                                    []*scenarioResult
	idle                                         *idleResult
}

// rateOf is a run's figure of merit: bytes/s or operations/s.
func (sc *scenarioResult) rateOf(m *measured) float64 {
	if sc.unit == "bytes" {
		return m.res.byteRate()
	}
	return m.res.rate()
}

// side returns the median rate of one side's runs.
func (sc *scenarioResult) side(side string) float64 {
	var all []float64
	for i := range sc.runs {
		if sc.runs[i].side == side {
			all = append(all, sc.rateOf(&sc.runs[i]))
		}
	}
	return benchkit.Median(all)
}

// verdict compares through with direct against the target.
func verdict(direct, through, target float64) (ratio float64, text string) {
	if direct <= 0 || through <= 0 {
		return 0, "no data"
	}
	ratio = through / direct
	if ratio < target {
		return ratio, fmt.Sprintf("≥ %.2f TARGET MISSED", target)
	}
	return ratio, fmt.Sprintf("≥ %.2f ok", target)
}

func fmtRate(unit string, v float64) string {
	if unit == "bytes" {
		return fmt.Sprintf("%.1f MB/s", v/1e6)
	}
	return fmt.Sprintf("%.1f /s", v)
}

func (r *report) print(w io.Writer, o options) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	p("\npostern IMAP/POP3 benchmark: postern %s, %s CPUs (%s), %s, Dovecot %s, backends %s\n", r.rev, r.cpus, r.cpuModel, r.goVersion, r.dovecot, r.dir)
	p("direct = load generator -> Dovecot's PROXY port (v2 header, source = the connection's own 127.x address);\n")
	p("through = generator -> postern serve (imap/pop3 service, no TLS) -> the same Dovecot port;\n")
	p("min. relay = generator -> minimal TCP relay in a child process (PROXY header + splice) -> the same port: what any same-host proxy costs.\n")
	if o.posternEnv != "" {
		p("postern serve ran with the extra environment %s.\n", o.posternEnv)
	}
	p("Median of %d run(s) per side, %v warm-up + %v window each; every load client has its own 127.10.0.x / 127.11.0.x address.\n\n", o.rounds, o.warmup, o.duration)
	if len(r.scenarios) > 0 {
		p("%-44s %13s %13s %7s  %-22s %13s %7s\n", "scenario", "direct", "through", "ratio", "target", "min. relay", "ratio")
		for _, sc := range r.scenarios {
			d, t := sc.side("direct"), sc.side("through")
			ratio, v := verdict(d, t, sc.target)
			fl, flr := "-", "-"
			if f := sc.side("relay"); f > 0 && d > 0 {
				fl, flr = fmtRate(sc.unit, f), fmt.Sprintf("%.3f", f/d)
			}
			p("%-44s %13s %13s %7.3f  %-22s %13s %7s\n", sc.name, fmtRate(sc.unit, d), fmtRate(sc.unit, t), ratio, v, fl, flr)
		}
		p("\nPer run. CPU in cores (CPU seconds / wall seconds of the window): proxy (postern serve on side through, the relay child\n")
		p("process on side relay), Dovecot (master and every child: imap-login, imap, pop3-login, pop3, auth…), gen (this program: the\n")
		p("load generator), other (the rest of the machine: other processes, kernel threads; large = the machine was not quiet, re-run).\n")
		p("ms/op: CPU milliseconds per operation (a fetch or retrieval of the message, or one login session) of the proxy, Dovecot,\n")
		p("and all three. rd/op, wr/op: the proxy's read and write system calls per operation (/proc/PID/io; splice(2) is neither).\n")
		p("%-44s %-7s %13s %9s %9s | %7s %7s %5s %5s | %7s %7s %7s | %7s %7s\n", "scenario", "side", "rate", "p50", "p99",
			"proxy", "dovecot", "gen", "other", "px ms", "dv ms", "all ms", "rd/op", "wr/op")
		for _, sc := range r.scenarios {
			for i := range sc.runs {
				m := &sc.runs[i]
				c := m.cpu
				pt, rd, wr := "-", "-", "-"
				if m.side != "direct" && m.res.ops > 0 {
					pt = fmt.Sprintf("%.3f", m.perOp(c.postern))
					rd, wr = fmt.Sprintf("%.1f", c.syscr/float64(m.res.ops)), fmt.Sprintf("%.1f", c.syscw/float64(m.res.ops))
				}
				wall := c.wall
				if wall <= 0 {
					wall = 1
				}
				p("%-44s %-7s %13s %9v %9v | %7.2f %7.2f %5.2f %5.2f | %7s %7.3f %7.3f | %7s %7s\n", sc.name, m.side, fmtRate(sc.unit, sc.rateOf(m)),
					m.res.percentile(0.5).Round(100*time.Microsecond), m.res.percentile(0.99).Round(100*time.Microsecond),
					c.postern/wall, c.dove/wall, c.gen/wall, c.other(),
					pt, m.perOp(c.dove), m.perOp(c.postern+c.dove+c.gen), rd, wr)
			}
		}
	}
	if id := r.idle; id != nil {
		v := fmt.Sprintf("≤ %.0f KiB ok", targetIdleKiB)
		if id.perConn() > targetIdleKiB {
			v = fmt.Sprintf("≤ %.0f KiB TARGET MISSED", targetIdleKiB)
		}
		p("\nIdle logged-in IMAP connections, no TLS: postern serve -> the IN-PROCESS IMAP backend of this program (go-imap v2\n")
		p("imapmemserver behind a PROXY listener), NOT Dovecot, which would need one imap process per connection. Each connection\n")
		p("logged in (LOGIN replayed by postern, then spliced) and sits idle; a NOOP on a sample of 50 afterwards checks they are alive.\n")
		if id.requested > 0 {
			p("  %d connections asked for, %d held: %d NOT CHECKED here. postern needs %.1f descriptors per spliced connection\n"+
				"  (limit %s) and this program 2 (client and in-process backend; limit %s); this sandbox cannot raise\n"+
				"  the hard limits (no CAP_SYS_RESOURCE).\n",
				id.requested, id.n, id.requested, id.fdPerConn, id.noFile, r.noFile)
		}
		p("  %d connections (opened in %.1fs): VmRSS %.1f MiB -> %.1f MiB (%.1f MiB at %d); RssAnon %.1f -> %.1f MiB;\n",
			id.n, id.open.Seconds(), float64(id.rss0)/1024, float64(id.rssN)/1024, float64(id.rssHalf)/1024, id.n/2, float64(id.anon0)/1024, float64(id.anonN)/1024)
		what := "client and backend sockets"
		if per := float64(id.fdN-id.fd0) / float64(id.n); per > 2.5 {
			what += ", and splice pipes held while idle"
		}
		p("  %d threads; open files %d -> %d (%.1f per connection: %s); limit %s\n",
			id.threads, id.fd0, id.fdN, float64(id.fdN-id.fd0)/float64(id.n), what, id.noFile)
		p("  %.1f KiB per connection (marginal over the second half: %.1f KiB)   target %s\n", id.perConn(), id.marginal(), v)
	}
	p("\nDovecot limits in force (harness dovecot.conf; the bench changes none): %s\n", r.dovecotLimits)
	p("open files: this program %s", r.noFile)
	if r.posternNoFile != "" {
		p("; postern serve %s", r.posternNoFile)
	}
	p("\n")
	if strings.Contains(r.posternLog, "level=ERROR") {
		p("\npostern serve's log ends with (errors logged):\n%s\n", r.posternLog)
	}
}
