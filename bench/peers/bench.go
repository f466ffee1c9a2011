package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/procstat"
)

// bench is the state of one run.
type bench struct {
	o    options
	ctx  context.Context
	want func(string) bool
	root string // the module root
	tmp  string
	bin  string // postern
	be   benchkit.Env
	cert *certFiles
	a    addrs
	errs []string
	rep  *report

	// The processes whose CPU is counted (nil: not started).
	nginx, auth, haproxy, static, dynamic *benchkit.Proc
	ptMail, ptWeb, ptWebDyn, ptWebTLS     *benchkit.Proc
	dovecot, postfix                      int
	maildir, queue                        string
	wrkCPU                                float64 // CPU seconds of the wrk runs so far (measured windows)
	mu                                    sync.Mutex
	bigVsize                              int64
	abProcs                               []*benchkit.Proc // -compare's second postern build
	abRows                                []abRow          // -compare's results
}

func (b *bench) run() (err error) {
	if b.root, err = benchkit.ModuleRoot("go run ./bench/peers"); err != nil {
		return err
	}
	b.rep = newReport(b.o)
	b.rep.NoFile = raiseNoFile()
	if b.tmp, err = os.MkdirTemp("", "postern-bench-peers-"); err != nil {
		return err
	}
	if b.o.keep {
		benchkit.Logf("temporary folder: %s", b.tmp)
	} else {
		defer func() {
			if b.o.out == "" {
				benchkit.Logf("table, data and charts kept in %s", b.tmp)
				return
			}
			os.RemoveAll(b.tmp)
		}()
	}
	b.header()
	if b.o.dovecotReuse && !b.o.reuse {
		os.Setenv("POSTERN_BACKENDS_DOVECOT_REUSE", "1") // read by test/backends/start.sh
	}
	e, err := benchkit.StartBackends(b.ctx, b.root, b.o.dir, b.o.portBase, b.o.reuse)
	if err != nil {
		return err
	}
	if err := checkDovecotReuse(e, b.o.dovecotReuse, b.o.dir); err != nil {
		return err
	}
	if b.o.dovecotReuse {
		b.rep.Versions = strings.Replace(b.rep.Versions, ", Postfix", " (processes reused), Postfix", 1)
	}
	if !b.o.reuse && !b.o.keep {
		defer benchkit.StopBackends(b.root, b.o.dir)
	}
	b.be = e
	b.dovecot, b.postfix = e.Int("POSTERN_BACKENDS_DOVECOT_PID"), e.Int("POSTERN_BACKENDS_POSTFIX_PID")
	b.a.imapDirect, b.a.smtpDirect = e.Addr("POSTERN_BACKENDS_IMAP_PROXY_PORT"), e.Addr("POSTERN_BACKENDS_SMTP_PROXY_PORT")
	b.maildir = filepath.Join(e["POSTERN_BACKENDS_MAIL_ROOT"], "example.test", "alice", "Maildir")
	b.queue = filepath.Join(e["POSTERN_BACKENDS_DIR"], "postfix", "queue")
	if b.bin = b.o.postern; b.bin == "" {
		if b.bin, err = benchkit.BuildPostern(b.ctx, b.root, b.tmp); err != nil {
			return err
		}
	}
	if b.o.compare != "" {
		return b.compareAll()
	}
	if slices.ContainsFunc(allScenarios, func(s string) bool { return s != "idle" && b.want(s) }) {
		defer b.stopServers() // also those started before a failure
		if err := b.startServers(); err != nil {
			return err
		}
	}
	for _, sc := range allScenarios {
		if !b.want(sc) || b.ctx.Err() != nil || sc == "idle" {
			continue
		}
		if err := b.scenario(sc); err != nil {
			b.fail("%s: %v", sc, err)
		}
	}
	if b.want("idle") && b.o.idle > 0 && b.ctx.Err() == nil {
		b.stopServers() // the idle test runs its own proxies, with every descriptor free
		if err := b.idleTest(); err != nil {
			b.fail("idle: %v", err)
		}
	}
	return nil
}

// checkDovecotReuse reports an error when the backends (their
// backends.env, e) were started with Dovecot's processes reused and want
// is false, or the other way round: the figures would be labelled with the
// wrong setting.
func checkDovecotReuse(e benchkit.Env, want bool, dir string) error {
	v := cmp.Or(e["POSTERN_BACKENDS_DOVECOT_REUSE"], "0") // backends.env from before the knob: 0
	if (v == "1") == want {
		return nil
	}
	return fmt.Errorf("the backends in %s run with POSTERN_BACKENDS_DOVECOT_REUSE=%s, and -dovecot-reuse is %v: restart them (test/backends/stop.sh %s) or change the flag",
		dir, v, want, dir)
}

// raiseNoFile lifts the open-file limit (soft and hard) as far as this
// machine allows: to 200,000 with CAP_SYS_RESOURCE, else the soft limit to
// the hard one. Children inherit it. It returns the hard limit in force.
func raiseNoFile() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Max < 200_000 {
		n := syscall.Rlimit{Cur: 200_000, Max: 200_000}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n) == nil {
			l = n
		}
	}
	l.Cur = l.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return int(l.Max)
}

func (b *bench) header() {
	r := b.rep
	if out, err := exec.Command("git", "-C", b.root, "describe", "--always", "--dirty").Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
	}
	r.Date = time.Now().UTC().Format("2006-01-02 15:04 UTC")
	r.LoadBefore = loadAverage()
	ver := func(re string, name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		if m := regexp.MustCompile(re).FindSubmatch(out); m != nil {
			return string(m[1])
		}
		return "?"
	}
	r.Versions = fmt.Sprintf("nginx %s, haproxy %s, Dovecot %s, Postfix %s, %s",
		ver(`nginx/(\S+)`, "nginx", "-v"), ver(`version (\S+)`, "haproxy", "-v"), ver(`^(\S+)`, "dovecot", "--version"),
		ver(`mail_version = (\S+)`, "postconf", "-d", "mail_version"), ver(`go version (\S+)`, "go", "version"))
	if bs, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := 0
		for _, l := range strings.Split(string(bs), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				r.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				n++
			}
		}
		r.CPU = fmt.Sprintf("%d × %s", n, r.CPU)
	}
}

// startServers starts every peer once: the web backends, nginx's auth
// server, nginx, haproxy and postern (one process for mail, one per web
// scenario: a web service has one backend).
func (b *bench) startServers() (err error) {
	if b.cert, err = makeCert(b.tmp); err != nil {
		return err
	}
	b.cert.postQuantum = b.o.postQuantum
	free, err := freeAddrs(3 + 3*7)
	if err != nil {
		return err
	}
	next := func() string { a := free[0]; free = free[1:]; return a }
	b.a.static, b.a.dynamic, b.a.auth = next(), next(), next()
	b.a.ngx, b.a.hap, b.a.pt = newFrontends(next), newFrontends(next), newFrontends(next)
	if err := writePage(b.tmp, b.o.pageBytes); err != nil {
		return err
	}
	benchkit.Logf("starting the web backends, nginx, haproxy and postern")
	if b.static, err = startNginx("nginx-static", b.tmp, nginxStaticConf(b.tmp, b.a.static), b.a.static); err != nil {
		return err
	}
	if b.dynamic, err = startChild(b.tmp, childDynamic, b.a.dynamic, b.o.dynamicWork.String()); err != nil {
		return err
	}
	if b.auth, err = startChild(b.tmp, childAuth, b.a.auth, port(b.a.imapDirect), port(b.a.smtpDirect)); err != nil {
		return err
	}
	n := b.a.ngx
	if b.nginx, err = startNginx("nginx", b.tmp, nginxProxyConf(b.tmp, b.a, b.cert, b.rep.NoFile, b.o.peerLogs), n.imap, n.imaps, n.smtp, n.smtps, n.web, n.webDyn, n.webTLS); err != nil {
		return err
	}
	h := b.a.hap
	if b.haproxy, err = startHAProxy(b.tmp, haproxyConf(b.a, b.cert, 5000, b.o.peerLogs), h.imap, h.imaps, h.smtp, h.smtps, h.web, h.webDyn, h.webTLS); err != nil {
		return err
	}
	p := b.a.pt
	if b.ptMail, err = startPostern("postern-mail", filepath.Join(b.tmp, "postern-mail"), b.bin, posternMailConf(filepath.Join(b.tmp, "postern-mail"), b.a, b.cert, b.o.eventLoops), p.imap, p.imaps, p.smtp, p.smtps); err != nil {
		return err
	}
	web := func(name, listen, backend string, c *certFiles) (*benchkit.Proc, error) {
		dir := filepath.Join(b.tmp, name)
		return startPostern(name, dir, b.bin, posternWebConf(dir, listen, backend, c), listen)
	}
	if b.ptWeb, err = web("postern-web", p.web, b.a.static, nil); err != nil {
		return err
	}
	if b.ptWebDyn, err = web("postern-webdyn", p.webDyn, b.a.dynamic, nil); err != nil {
		return err
	}
	if b.ptWebTLS, err = web("postern-webtls", p.webTLS, b.a.static, b.cert); err != nil {
		return err
	}
	return nil
}

// stopServers stops every server startServers started, each by its PID.
func (b *bench) stopServers() {
	for _, p := range []**benchkit.Proc{&b.ptMail, &b.ptWeb, &b.ptWebDyn, &b.ptWebTLS, &b.nginx, &b.haproxy, &b.auth, &b.dynamic, &b.static} {
		if *p != nil {
			if !(*p).Running() {
				b.fail("%s exited during the run (%v):\n%s", (*p).Name, (*p).Err(), (*p).Tail())
			}
			(*p).Stop()
			*p = nil
		}
	}
}

// ---- CPU accounting -------------------------------------------------------------

// The CPU components of a run.
const (
	cNginx   = "nginx"      // master and workers
	cAuth    = "nginx auth" // its auth_http server
	cHAProxy = "haproxy"
	cPostern = "postern"
	cDovecot = "dovecot"
	cPostfix = "postfix"
	cWeb     = "web backend"
	cGen     = "gen" // this program and wrk
	cOther   = "other"
)

// snap is a reading of every CPU counter, in seconds.
type snap struct {
	at          time.Time
	cpu         map[string]float64
	busy, total float64
}

func pcpu(p *benchkit.Proc) float64 {
	if p == nil {
		return 0
	}
	return procstat.ProcCPU(p.PID())
}

// snapshot reads every counter; post is the postern process of the
// scenario, web its web backend.
func (b *bench) snapshot(post, web *benchkit.Proc) snap {
	s := snap{at: time.Now(), cpu: map[string]float64{}}
	if b.nginx != nil {
		s.cpu[cNginx] = procstat.TreeCPU(b.nginx.PID())
	}
	s.cpu[cAuth] = pcpu(b.auth)
	s.cpu[cHAProxy] = pcpu(b.haproxy)
	s.cpu[cPostern] = pcpu(post)
	s.cpu[cDovecot] = procstat.TreeCPU(b.dovecot)
	s.cpu[cPostfix] = procstat.TreeCPU(b.postfix)
	s.cpu[cWeb] = pcpu(web)
	b.mu.Lock()
	s.cpu[cGen] = procstat.SelfCPU() + b.wrkCPU
	b.mu.Unlock()
	s.busy, s.total = procstat.MachineCPU()
	return s
}

// use is what happened between two snapshots: CPU seconds per component
// (cOther: the rest of the machine) and the window's length.
func use(a, z snap) (map[string]float64, float64) {
	u := map[string]float64{}
	sum := 0.0
	for k, v := range z.cpu {
		u[k] = v - a.cpu[k]
		sum += u[k]
	}
	u[cOther] = max(0, (z.busy-a.busy)/procstat.ClockTicks-sum)
	return u, z.at.Sub(a.at).Seconds()
}

// ---- scenarios --------------------------------------------------------------------

// sideNames are the sides in their first-round order.
var sideNames = []string{"direct", "nginx", "haproxy", "postern"}

// proxyComponents names the CPU components of each side's proxy.
var proxyComponents = map[string][]string{"direct": nil, "nginx": {cNginx, cAuth}, "haproxy": {cHAProxy}, "postern": {cPostern}}

// scenario runs one scenario: every side rounds times, interleaved D N H P,
// P H N D, …
func (b *bench) scenario(key string) error {
	b.settle()
	sc := newScenario(key, b.o)
	b.rep.Scenarios = append(b.rep.Scenarios, sc)
	o := b.o
	var run func(side string, h hooks) (loadResult, error)
	var post, web *benchkit.Proc
	tlsFor := func(resume bool) *tls.Config { return b.cert.clientTLS(resume) }
	mailTarget := func(side string, plain, tlsAddr func(f frontends) string, direct string, tc *tls.Config) target {
		switch side {
		case "direct":
			return target{side: side, addr: direct, proxy: true}
		case "nginx":
			if tc != nil {
				return target{side: side, addr: tlsAddr(b.a.ngx), tls: tc}
			}
			return target{side: side, addr: plain(b.a.ngx)}
		case "haproxy":
			if tc != nil {
				return target{side: side, addr: tlsAddr(b.a.hap), tls: tc}
			}
			return target{side: side, addr: plain(b.a.hap)}
		}
		if tc != nil {
			return target{side: side, addr: tlsAddr(b.a.pt), tls: tc}
		}
		return target{side: side, addr: plain(b.a.pt)}
	}
	imapF := func(f frontends) string { return f.imap }
	imapsF := func(f frontends) string { return f.imaps }
	smtpF := func(f frontends) string { return f.smtp }
	smtpsF := func(f frontends) string { return f.smtps }
	switch key {
	case "fetch", "imaps-fetch":
		if err := b.storeBig(); err != nil {
			return fmt.Errorf("storing the big message: %w", err)
		}
		post = b.ptMail
		run = func(side string, h hooks) (loadResult, error) {
			var tc *tls.Config
			if key == "imaps-fetch" {
				tc = tlsFor(true)
			}
			return fetchRun(b.ctx, mailTarget(side, imapF, imapsF, b.a.imapDirect, tc), b.bigVsize, o.bigClients, o.warmup, o.duration, h), nil
		}
	case "login", "imaps-login", "imaps-resume":
		post = b.ptMail
		run = func(side string, h hooks) (loadResult, error) {
			var tc *tls.Config
			if key != "login" {
				tc = tlsFor(key == "imaps-resume")
			}
			return loginRun(b.ctx, mailTarget(side, imapF, imapsF, b.a.imapDirect, tc), o.loginClients, o.warmup, o.duration, h), nil
		}
	case "smtp", "smtps":
		post = b.ptMail
		body := smtpBody(o.smtpSize)
		run = func(side string, h hooks) (loadResult, error) {
			if err := b.drain(); err != nil {
				return loadResult{}, err
			}
			stop := b.reaper()
			defer stop()
			var tc *tls.Config
			if key == "smtps" {
				tc = tlsFor(true)
			}
			return smtpRun(b.ctx, mailTarget(side, smtpF, smtpsF, b.a.smtpDirect, tc), body, o.smtpClients, o.warmup, o.duration, h), nil
		}
	case "http", "httpdyn", "https":
		web = b.static
		direct, scheme := b.a.static, "http"
		pick := func(f frontends) string { return f.web }
		post = b.ptWeb
		switch key {
		case "httpdyn":
			web, direct, post = b.dynamic, b.a.dynamic, b.ptWebDyn
			pick = func(f frontends) string { return f.webDyn }
		case "https":
			post, scheme = b.ptWebTLS, "https"
			pick = func(f frontends) string { return f.webTLS }
		}
		run = func(side string, h hooks) (loadResult, error) {
			url := "http://" + direct + "/"
			switch side {
			case "nginx":
				url = scheme + "://" + pick(b.a.ngx) + "/"
			case "haproxy":
				url = scheme + "://" + pick(b.a.hap) + "/"
			case "postern":
				url = scheme + "://" + pick(b.a.pt) + "/"
			}
			return b.wrkRun(url, h)
		}
	default:
		return fmt.Errorf("unknown scenario %q", key)
	}
	for r := 0; r < o.rounds && b.ctx.Err() == nil; r++ {
		order := slices.Clone(sideNames)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, side := range order {
			if b.ctx.Err() != nil {
				return nil
			}
			var s0, s1 snap
			res, err := run(side, hooks{start: func() { s0 = b.snapshot(post, web) }, end: func() { s1 = b.snapshot(post, web) }})
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", side, r+1, err)
			}
			cpu, wall := use(s0, s1)
			m := sc.add(side, res, cpu, wall)
			benchkit.Logf("%-13s %-8s %s", key, side, m.summary(sc))
			if res.errors > 0 {
				b.fail("%s, %s, round %d: %d failed sessions; first: %v", key, side, r+1, res.errors, res.firstErr)
			} else if res.ops == 0 {
				b.fail("%s, %s, round %d: %s", key, side, r+1, res.stalled())
			}
		}
	}
	return nil
}

// ---- HTTP: wrk --------------------------------------------------------------------

var (
	rpsRe    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	totalRe  = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(ms|s|m)`)
	wrkErrRe = regexp.MustCompile(`(Socket errors: .*|Non-2xx or 3xx responses: \d+)`)
)

// parseWrk reads wrk's output: requests in the window and requests per
// second; an error when wrk reports socket errors or non-2xx answers.
func parseWrk(out string) (reqs int, rps float64, err error) {
	m := rpsRe.FindStringSubmatch(out)
	t := totalRe.FindStringSubmatch(out)
	if m == nil || t == nil {
		return 0, 0, fmt.Errorf("no request count in wrk's output:\n%s", out)
	}
	if e := wrkErrRe.FindString(out); e != "" {
		return 0, 0, fmt.Errorf("wrk reported %s", e)
	}
	reqs, _ = strconv.Atoi(t[1])
	rps, err = strconv.ParseFloat(m[1], 64)
	return reqs, rps, err
}

// wrkRun runs a wrk warm-up and a measured window against url (one wrk
// thread, keep-alive connections).
func (b *bench) wrkRun(url string, h hooks) (loadResult, error) {
	return b.wrkRunConns(url, b.o.httpConns, h)
}

// wrkRunConns is wrkRun with conns connections.
func (b *bench) wrkRunConns(url string, conns int, h hooks) (loadResult, error) {
	one := func(d time.Duration, measured bool) (loadResult, error) {
		args := []string{"-t", "1", "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", max(1, int(d.Round(time.Second).Seconds()))), url}
		ctx, cancel := context.WithTimeout(b.ctx, d+30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, b.o.wrk, args...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if measured {
			h.start()
		}
		t0 := time.Now()
		err := cmd.Run()
		el := time.Since(t0)
		if cmd.ProcessState != nil {
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				b.mu.Lock()
				b.wrkCPU += time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
				b.mu.Unlock()
			}
		}
		if measured {
			h.end()
		}
		if err != nil {
			return loadResult{}, fmt.Errorf("wrk %v: %w\n%s", args, err, out.String())
		}
		n, _, err := parseWrk(out.String())
		if err != nil {
			return loadResult{}, fmt.Errorf("wrk %v: %w", args, err)
		}
		return loadResult{ops: n, total: n, elapsed: el}, nil
	}
	if _, err := one(b.o.warmup, false); err != nil {
		return loadResult{}, err
	}
	return one(b.o.duration, true)
}

// ---- mailboxes --------------------------------------------------------------------

// storeBig replaces bob's Maildir by one holding only the big message, as
// Dovecot's own delivery leaves it (benchkit.StoreMaildir); Dovecot
// indexes it at the first SELECT (in the warm-up).
func (b *bench) storeBig() error {
	if b.bigVsize > 0 {
		return nil
	}
	root := b.be["POSTERN_BACKENDS_MAIL_ROOT"]
	if root == "" {
		return errors.New("backends.env has no POSTERN_BACKENDS_MAIL_ROOT")
	}
	file, vsize := benchkit.BigMessage("postern peers benchmark", b.o.bigSize)
	if _, err := benchkit.StoreMaildir(filepath.Join(root, "example.test", "bob"), file, vsize, "vmail"); err != nil {
		return err
	}
	b.bigVsize = vsize
	return nil
}

// queued counts the messages in Postfix's queue.
func (b *bench) queued() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		filepath.WalkDir(filepath.Join(b.queue, q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// reap removes delivered messages from alice's Maildir: Dovecot's
// delivery slows down as the folder grows.
func (b *bench) reap() {
	for _, sub := range []string{"new", "cur"} {
		d := filepath.Join(b.maildir, sub)
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Type().IsRegular() {
				os.Remove(filepath.Join(d, e.Name()))
			}
		}
	}
}

// reaper reaps every 100 ms until the returned function is called.
func (b *bench) reaper() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				b.reap()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// settle waits (1 minute at most) until Postfix and Dovecot are idle (under
// 0.05 cores over half a second), so that no scenario's first run pays for
// work a previous scenario left behind (deliveries, index updates).
func (b *bench) settle() {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && b.ctx.Err() == nil {
		before := procstat.TreeCPU(b.dovecot) + procstat.TreeCPU(b.postfix)
		benchkit.SleepCtx(b.ctx, 500*time.Millisecond)
		if procstat.TreeCPU(b.dovecot)+procstat.TreeCPU(b.postfix)-before < 0.025 {
			return
		}
	}
}

// drain waits (2 minutes at most) until Postfix's queue is empty, then
// empties alice's Maildir and drops Dovecot's index files of it, so that
// every SMTP run starts from the same empty mailbox and no run pays for
// the previous one's deliveries.
func (b *bench) drain() error {
	deadline := time.Now().Add(2 * time.Minute)
	for b.queued() > 0 {
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			return fmt.Errorf("after 2 minutes, %d messages are still in Postfix's queue", b.queued())
		}
		b.reap()
		benchkit.SleepCtx(b.ctx, 100*time.Millisecond)
	}
	b.reap()
	for _, f := range []string{"dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log", "dovecot.index.log.2"} {
		os.Remove(filepath.Join(b.maildir, f))
	}
	return nil
}
