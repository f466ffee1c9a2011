// Command smtp benchmarks postern's SMTP gateway against the project's real
// Postfix + Dovecot harness (test/backends): message rate and byte rate
// through postern versus straight to Postfix, and memory per idle
// connection. See bench/README.md.
//
//	sudo GOTOOLCHAIN=local go run ./bench/smtp            # full run, a few minutes
//	sudo GOTOOLCHAIN=local go run ./bench/smtp -short     # CI smoke, under a minute
//
// It exits 1 on errors (a failed session, mail not delivered, a backend or
// postern that does not start) and 0 otherwise; a missed target is printed
// as "TARGET MISSED", not an exit status.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/procstat"
)

// Targets of the issue.
const (
	targetRatio   = 0.9  // through / direct, messages/s and bytes/s
	targetIdleKiB = 32.0 // KiB of postern RSS per idle connection (no TLS)
)

type options struct {
	dir, postern, profile, only string
	portBase                    int
	reuse, keep, short, floor   bool
	clients, size, perSession   int
	warmup, duration            time.Duration
	rounds                      int
	bigSize, bigClients, bigN   int
	idle                        int
	drainTimeout                time.Duration
}

func main() {
	child := flag.String("child-gateway", "", "internal: run the in-process gateway with this config")
	ctrl := flag.String("child-ctl", "", "internal: control address of the child gateway")
	var o options
	flag.StringVar(&o.dir, "dir", "/tmp/postern-bench", "harness DIR (at most 64 characters); its Maildirs are emptied between runs")
	flag.IntVar(&o.portBase, "port-base", 22000, "POSTERN_BACKENDS_PORT_BASE for backends this program starts")
	flag.BoolVar(&o.reuse, "reuse", false, "use the backends already running in -dir (read DIR/backends.env); never start or stop them")
	flag.BoolVar(&o.keep, "keep", false, "leave the backends (and the temporary folder) in place at the end")
	flag.BoolVar(&o.short, "short", false, "CI smoke: one round, short windows, fewer messages and idle connections (under ~60 s)")
	flag.StringVar(&o.postern, "postern", "", "postern binary to run (default: go build ./cmd/postern into the temporary folder)")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients for the small-message scenarios")
	flag.IntVar(&o.size, "size", 10240, "small message size in bytes")
	flag.IntVar(&o.perSession, "per-session", 10, "messages per session in the session-reuse scenario (0: skip it)")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "warm-up before each measured window")
	flag.BoolVar(&o.floor, "floor", true, "also run every scenario through a minimal in-process TCP relay (calibration: what any same-host proxy costs)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window of each small-message run")
	flag.IntVar(&o.rounds, "rounds", 2, "runs of each side per scenario, interleaved direct/through (the table shows the median)")
	flag.IntVar(&o.bigSize, "big-size", 10_000_000, "large message size in bytes (Postfix's limit here is 10485760)")
	flag.IntVar(&o.bigClients, "big-clients", 4, "concurrent clients for large messages")
	flag.IntVar(&o.bigN, "big-count", 32, "large messages per run (after one warm-up message per client)")
	flag.IntVar(&o.idle, "idle", 2000, "idle connections for the memory test")
	flag.StringVar(&o.profile, "profile", "", "also run the gateway in-process with profiling, writing CPU and heap profiles into this folder")
	flag.StringVar(&o.only, "only", "", "comma-separated subset of: small,reuse,big,idle")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Minute, "how long Postfix may take to deliver a run's mail")
	flag.Parse()
	if *child != "" {
		os.Exit(runChildGateway(*child, *ctrl))
	}
	if o.short {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { o.rounds = 1 })
		def("warmup", func() { o.warmup = time.Second })
		def("duration", func() { o.duration = 4 * time.Second })
		def("big-count", func() { o.bigN = 8 })
		def("idle", func() { o.idle = 500 })
		def("floor", func() { o.floor = false })
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/smtp: error:", err)
		os.Exit(1)
	}
}

// bench is the state of one benchmark run.
type bench struct {
	o       options
	ctx     context.Context
	root    string // the module root
	tmp     string
	bin     string // postern binary
	be      benchkit.Env
	maildir string
	queue   string
	procs   procSet
	reapMu  sync.Mutex
	reaped  int // messages delivered (and removed) since the last clean
	errs    []string
	out     *report
}

func run(o options) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the harness starts Postfix and Dovecot (sudo)")
	}
	b := &bench{o: o, ctx: ctx, out: &report{}}
	if b.root, err = benchkit.ModuleRoot("go run ./bench/smtp"); err != nil {
		return err
	}
	raiseNoFile()
	if b.tmp, err = os.MkdirTemp("", "postern-bench-"); err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(b.tmp)
	}
	if err := b.backends(); err != nil {
		return err
	}
	if !o.reuse && !o.keep {
		defer b.stopBackends()
	}
	if b.bin = o.postern; b.bin == "" {
		if err := b.buildPostern(); err != nil {
			return err
		}
	}
	b.header()
	want := benchkit.Only(o.only)

	if want("small") || want("reuse") || want("big") {
		pg, err := b.startPostern("through", b.be.Int("POSTERN_BACKENDS_SMTP_PROXY_PORT"), "")
		if err != nil {
			return err
		}
		b.procs.postern = pg.PID()
		b.out.posternNoFile = procstat.OpenFilesLimit(pg.PID())
		direct := target{name: "direct", addr: fmt.Sprintf("127.0.0.1:%d", b.be.Int("POSTERN_BACKENDS_SMTP_PROXY_PORT")), proxy: true}
		through := target{name: "through", addr: pg.addr}
		sides := []target{direct, through}
		if o.floor {
			// The relay floor runs in this process: its CPU is counted as
			// the generator's.
			mr, err := benchkit.StartRelay(direct.addr)
			if err != nil {
				return err
			}
			defer mr.Close()
			sides = append(sides, target{name: "relay", addr: mr.Addr()})
		}
		if want("small") {
			b.scenario(fmt.Sprintf("%d B, 1 msg/session, %d clients", o.size, o.clients), "msg", sides, b.timedRun(o.size, 1))
		}
		if want("reuse") && o.perSession > 0 {
			b.scenario(fmt.Sprintf("%d B, %d msg/session, %d clients", o.size, o.perSession, o.clients), "msg", sides, b.timedRun(o.size, o.perSession))
		}
		if want("big") {
			b.scenario(fmt.Sprintf("%d B, %d clients, %d msgs", o.bigSize, o.bigClients, o.bigN), "bytes", sides, b.countRun())
		}
		if err := pg.Stop(); err != nil {
			b.fail("postern (through): %v", err)
		}
		b.out.posternLog = pg.Tail()
		b.procs.postern = 0
	}
	if want("idle") {
		if err := b.idleTest(); err != nil {
			b.fail("idle test: %v", err)
		}
	}
	if o.profile != "" {
		if err := b.profileRun(want); err != nil {
			b.fail("profile: %v", err)
		}
	}
	b.out.print(os.Stdout, o)
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if len(b.errs) > 0 {
		return fmt.Errorf("%d error(s):\n  %s", len(b.errs), strings.Join(b.errs, "\n  "))
	}
	return nil
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.errs = append(b.errs, msg)
	fmt.Fprintln(os.Stderr, "ERROR:", msg)
}

// raiseNoFile lifts this process's open-file limit to its hard limit: the
// idle test holds two sockets per connection here (client and fake
// backend). Go does this at start-up too; it is repeated for clarity.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// backends starts the harness (or reads the running one with -reuse).
func (b *bench) backends() error {
	e, err := benchkit.StartBackends(b.ctx, b.root, b.o.dir, b.o.portBase, b.o.reuse)
	if err != nil {
		return err
	}
	b.be = e
	b.maildir = filepath.Join(e["POSTERN_BACKENDS_MAIL_ROOT"], "example.test", "alice", "Maildir")
	b.queue = filepath.Join(e["POSTERN_BACKENDS_DIR"], "postfix", "queue")
	b.procs.postfix = e.Int("POSTERN_BACKENDS_POSTFIX_PID")
	b.procs.dovecot = e.Int("POSTERN_BACKENDS_DOVECOT_PID")
	if b.procs.postfix == 0 || e.Int("POSTERN_BACKENDS_SMTP_PROXY_PORT") == 0 {
		return fmt.Errorf("%s: no Postfix PID or SMTP PROXY port", filepath.Join(b.o.dir, "backends.env"))
	}
	return nil
}

func (b *bench) stopBackends() { benchkit.StopBackends(b.root, b.o.dir) }

func (b *bench) buildPostern() (err error) {
	b.bin, err = benchkit.BuildPostern(b.ctx, b.root, b.tmp)
	return err
}

func (b *bench) header() {
	r := b.out
	r.cpus = strconvItoa(numCPU())
	r.goVersion = goVersion()
	if out, err := exec.Command("git", "-C", b.root, "describe", "--always", "--dirty").Output(); err == nil {
		r.rev = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("postconf", "-c", filepath.Join(b.be["POSTERN_BACKENDS_DIR"], "postfix/conf"), "-h", "mail_version").Output(); err == nil {
		r.postfix = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("dovecot", "--version").Output(); err == nil {
		r.dovecot = strings.Fields(string(out))[0]
	}
	r.dir = b.be["POSTERN_BACKENDS_DIR"]
	if out, err := exec.Command("postconf", "-c", filepath.Join(b.be["POSTERN_BACKENDS_DIR"], "postfix/conf"),
		"default_process_limit", "smtpd_client_connection_count_limit", "smtpd_client_connection_rate_limit",
		"smtpd_client_message_rate_limit", "smtpd_client_event_limit_exceptions", "in_flow_delay",
		"lmtp_destination_concurrency_limit", "message_size_limit").Output(); err == nil {
		r.postfixLimits = strings.TrimSpace(string(out))
	}
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor") + boolInt(strings.HasPrefix(string(b), "processor"))
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

func strconvItoa(n int) string { return strconv.Itoa(n) }

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// gateway is a running postern serve (or in-process child gateway).
type gateway struct {
	*benchkit.Proc
	addr string
	ctl  childCtl // the child's control server; zero for postern serve
}

// writeConfig writes a postern configuration with one smtp service on a
// free port relaying to backend with a PROXY v2 header. Intrusion
// prevention runs with every SMTP trigger on but the connection rate set
// beyond any load here (all clients are 127.0.0.1 to postern), and the
// per-address connection limit raised for the same reason.
func writeConfig(dir string, backend string) (cfgPath, addr string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	addr = ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf(`# written by bench/smtp
services:
  smtp:
    listen: %q
    backend: %q
    backend_proxy: v2
    hostname: postern.bench.invalid
    max_connections_per_address: 1000000
    # The load comes from one /24 (loopback): no per-network bound on
    # backend connections (the bench's Postfix is configured for it).
    max_backend_connections: 0
    max_backend_connections_per_network: 0
local_domains: "example.test; other.test"
intrusion_prevention:
  block_minutes: 240
  smtp: { connections_per_minute: 100000000, failed_logins: 5, unknown_recipients: 5, relay_denials: 5,
          rset_count: 20, message_size: 100MB }
store:
  path: %q
admin:
  listen: %q
  token_file: %q
log:
  level: info
`, addr, backend, filepath.Join(dir, "postern.db"), "unix:"+filepath.Join(dir, "admin.sock"), filepath.Join(dir, "admin.token"))
	cfgPath = filepath.Join(dir, "postern.yaml")
	return cfgPath, addr, os.WriteFile(cfgPath, []byte(cfg), 0o600)
}

// startPostern runs `postern serve` relaying to 127.0.0.1:backendPort (or
// to backendAddr when set).
func (b *bench) startPostern(name string, backendPort int, backendAddr string) (*gateway, error) {
	if backendAddr == "" {
		backendAddr = fmt.Sprintf("127.0.0.1:%d", backendPort)
	}
	dir := filepath.Join(b.tmp, name)
	cfg, addr, err := writeConfig(dir, backendAddr)
	if err != nil {
		return nil, err
	}
	p, err := benchkit.StartNotify("postern serve", filepath.Join(dir, "postern.log"), nil, b.bin, "serve", "-c", cfg)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(addr); err != nil {
		p.Stop()
		return nil, err
	}
	return &gateway{Proc: p, addr: addr}, nil
}

// startChild runs this program as the in-process gateway (profiling).
func (b *bench) startChild(name string, backendAddr string) (*gateway, error) {
	dir := filepath.Join(b.tmp, name)
	cfg, addr, err := writeConfig(dir, backendAddr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctl := ln.Addr().String()
	ln.Close()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := benchkit.Start("child gateway", filepath.Join(dir, "gateway.log"), nil, exe, "-child-gateway", cfg, "-child-ctl", ctl)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(addr, ctl); err != nil {
		p.Stop()
		return nil, err
	}
	return &gateway{Proc: p, addr: addr, ctl: childCtl{base: "http://" + ctl}}, nil
}

// ---- mailbox and queue ---------------------------------------------------------

func countFiles(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n += countFiles(filepath.Join(dir, e.Name()))
		} else {
			n++
		}
	}
	return n
}

func (b *bench) queued() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		n += countFiles(filepath.Join(b.queue, q))
	}
	return n
}

func (b *bench) deferred() int { return countFiles(filepath.Join(b.queue, "deferred")) }

// reap removes the delivered messages from alice's Maildir and counts
// them. The Maildir is kept nearly empty during runs: Dovecot's maildir
// delivery slows down as new/ grows (it lists the folder to assign UIDs),
// which would make the delivery cost depend on each run's backlog, and the
// disk would fill with 10 MB messages.
func (b *bench) reap() int {
	b.reapMu.Lock()
	defer b.reapMu.Unlock()
	for _, sub := range []string{"new", "cur"} {
		d := filepath.Join(b.maildir, sub)
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Type().IsRegular() && os.Remove(filepath.Join(d, e.Name())) == nil {
				b.reaped++
			}
		}
	}
	return b.reaped
}

// clean empties the Maildir and restarts the count of delivered messages.
// It runs only when Postfix's queue is empty (Dovecot is not delivering),
// and also drops Dovecot's UID list and index files, which grow with every
// delivery even when the messages are gone and make each later delivery
// slower: every run starts from the same, empty mailbox.
func (b *bench) clean() {
	b.reap()
	b.reapMu.Lock()
	b.reaped = 0
	b.reapMu.Unlock()
	for _, f := range []string{"dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log", "dovecot.index.log.2"} {
		os.Remove(filepath.Join(b.maildir, f))
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

// drain waits until Postfix's queue is empty and, when want ≥ 0, exactly
// want messages were delivered since the last clean; it returns how long
// that took.
func (b *bench) drain(want int) (time.Duration, error) {
	t0 := time.Now()
	deadline := t0.Add(b.o.drainTimeout)
	for {
		q, d := b.queued(), b.reap()
		if q == 0 && d >= want {
			if want >= 0 && d > want {
				return time.Since(t0), fmt.Errorf("%d messages delivered, %d accepted: stray mail", d, want)
			}
			return time.Since(t0), nil
		}
		if n := b.deferred(); n > 0 {
			return time.Since(t0), fmt.Errorf("%d messages deferred by Postfix (see %s/log/postfix.log)", n, b.be["POSTERN_BACKENDS_DIR"])
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			return time.Since(t0), fmt.Errorf("after %v: %d delivered of %d, %d still queued", b.o.drainTimeout, d, want, q)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- scenarios -----------------------------------------------------------------

// runFunc runs one measured load against t.
type runFunc func(t target, h hooks) loadResult

func (b *bench) timedRun(size, perSession int) runFunc {
	m := newMessage(size)
	return func(t target, h hooks) loadResult {
		return runTimed(b.ctx, t, m, b.o.clients, perSession, b.o.warmup, b.o.duration, 60*time.Second, h)
	}
}

func (b *bench) countRun() runFunc {
	m := newMessage(b.o.bigSize)
	return func(t target, h hooks) loadResult {
		return runCount(b.ctx, t, m, b.o.bigClients, b.o.bigN, 5*time.Minute, h)
	}
}

// measured is one run's result with its CPU use.
type measured struct {
	side string
	res  loadResult
	cpu  cpuUse        // the measured window
	all  cpuUse        // from before the first connection to the end of the queue drain
	wait time.Duration // queue drain after the run
}

// perMsg returns all-in CPU milliseconds per accepted message (warm-up
// included): every message's SMTP work and its delivery, whenever it ran.
func (m *measured) perMsg(v func(u cpuUse) float64) float64 {
	if m.all.wall == 0 || m.res.accepted == 0 {
		return 0
	}
	return 1000 * v(m.all) / float64(m.res.accepted)
}

// scenario runs each side (direct, through, and the relay floor) rounds
// times, interleaved as D T R, R T D, D T R… so that slow drift (page
// cache, Postfix's process pool) falls on every side alike.
func (b *bench) scenario(name, unit string, sides []target, fn runFunc) {
	sc := &scenarioResult{name: name, unit: unit}
	b.out.scenarios = append(b.out.scenarios, sc)
	for r := 0; r < b.o.rounds && b.ctx.Err() == nil; r++ {
		order := slices.Clone(sides)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			if b.ctx.Err() != nil {
				return
			}
			m, err := b.measure(t, fn)
			if err != nil {
				b.fail("%s, %s, round %d: %v", name, t.name, r+1, err)
			}
			if m != nil {
				sc.runs = append(sc.runs, *m)
				benchkit.Logf("%-40s %-7s %s", name, t.name, m.summary(unit))
			}
		}
	}
}

func (b *bench) measure(t target, fn runFunc) (*measured, error) {
	if _, err := b.drain(-1); err != nil { // the queue must be empty before a run
		return nil, err
	}
	b.clean()
	procs := b.procs
	if t.name != "through" {
		procs.postern = 0
	}
	var s0, s1 cpuSnap
	begin := procs.snap()
	stopReaper := b.reaper()
	res := fn(t, hooks{start: func() { s0 = procs.snap() }, end: func() { s1 = procs.snap() }})
	stopReaper()
	m := &measured{side: t.name, res: res, cpu: diff(s0, s1)}
	if res.errors > 0 {
		return m, fmt.Errorf("%d failed sessions; first: %v", res.errors, res.firstErr)
	}
	if res.messages == 0 {
		return m, errors.New("no message accepted in the measured window")
	}
	wait, err := b.drain(res.accepted)
	m.wait = wait
	if err != nil {
		return m, fmt.Errorf("delivery check: %w", err)
	}
	m.all = diff(begin, procs.snap())
	b.clean()
	return m, nil
}

func (m *measured) summary(unit string) string {
	rate := fmt.Sprintf("%8.1f msg/s", m.res.rate())
	if unit == "bytes" {
		rate = fmt.Sprintf("%8.1f MB/s", m.res.byteRate()/1e6)
	}
	return fmt.Sprintf("%s  (%d msgs in %.1fs, p50 %v p99 %v, %d ≥ 1s; CPU cores: postern %.2f postfix %.2f dovecot %.2f gen %.2f other %.2f; all %d delivered, queue drained in %.1fs)",
		rate, m.res.messages, m.res.elapsed.Seconds(), m.res.percentile(0.5).Round(100*time.Microsecond), m.res.percentile(0.99).Round(100*time.Microsecond), m.res.slow(time.Second),
		m.cpu.postern/m.cpu.wall, m.cpu.postfix/m.cpu.wall, m.cpu.dove/m.cpu.wall, m.cpu.gen/m.cpu.wall, m.cpu.other(),
		m.res.accepted, m.wait.Seconds())
}

// ---- idle connections ------------------------------------------------------------

type idleResult struct {
	name                string
	n                   int
	rss0, rssHalf, rssN int64 // KiB
	anon0, anonN        int64
	threads             int64
	noFile              string
	heap0, heapN        map[string]float64 // child gateway only
}

func (r idleResult) perConn() float64 { return float64(r.rssN-r.rss0) / float64(r.n) }

func (r idleResult) marginal() float64 {
	return float64(r.rssN-r.rssHalf) / float64(r.n-r.n/2)
}

// idleTest measures postern serve's RSS with N idle connections that
// completed EHLO, relaying to the in-process fake backend.
func (b *bench) idleTest() error {
	fb, err := startFakeBackend()
	if err != nil {
		return err
	}
	defer fb.close()
	g, err := b.startPostern("idle", 0, fb.addr())
	if err != nil {
		return err
	}
	defer g.Stop()
	res, err := b.idle(g, fb, "postern serve")
	if err != nil {
		return err
	}
	b.out.idle = append(b.out.idle, res)
	return nil
}

func (b *bench) idle(g *gateway, fb *fakeBackend, name string) (idleResult, error) {
	n := b.o.idle
	r := idleResult{name: name, n: n, noFile: procstat.OpenFilesLimit(g.PID())}
	pid := g.PID()
	t := target{name: "idle", addr: g.addr}
	// One full session first, so that everything created lazily exists.
	if c, err := dial(b.ctx, t, time.Now().Add(10*time.Second)); err != nil {
		return r, err
	} else {
		c.cmd("EHLO idle.bench.invalid", 250)
		if err := c.quit(); err != nil {
			return r, err
		}
	}
	var ms map[string]float64
	if g.ctl.base != "" {
		ms, _ = g.ctl.memstats(true)
		r.heap0 = ms
	}
	r.rss0, r.anon0 = procstat.SettledRSS(pid), procstat.StatusKB(pid, "RssAnon")
	var mu sync.Mutex
	var conns []*client
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	open := func(k int) error {
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		var firstErr error
		for i := 0; i < k; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := dial(b.ctx, t, time.Now().Add(10*time.Minute))
				if err == nil {
					if err = c.cmd("EHLO idle.bench.invalid", 250); err != nil {
						c.c.Close()
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					return
				}
				conns = append(conns, c)
			}()
		}
		wg.Wait()
		return firstErr
	}
	benchkit.Logf("idle: opening %d connections to %s", n, name)
	if err := open(n / 2); err != nil {
		return r, err
	}
	r.rssHalf = procstat.SettledRSS(pid)
	if err := open(n - n/2); err != nil {
		return r, err
	}
	r.rssN, r.anonN = procstat.SettledRSS(pid), procstat.StatusKB(pid, "RssAnon")
	r.threads = procstat.StatusKB(pid, "Threads")
	if got := fb.live.Load(); got != int64(n) {
		return r, fmt.Errorf("the fake backend holds %d connections, want %d", got, n)
	}
	if g.ctl.base != "" {
		r.heapN, _ = g.ctl.memstats(true)
		if err := g.ctl.saveHeap(filepath.Join(b.o.profile, "heap-idle.pprof")); err != nil {
			return r, err
		}
	}
	benchkit.Logf("idle: %s RSS %d KiB -> %d KiB with %d connections: %.1f KiB each", name, r.rss0, r.rssN, n, r.perConn())
	return r, nil
}

// ---- profiling (in-process gateway) ----------------------------------------------

func (b *bench) profileRun(want func(string) bool) error {
	if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
		return err
	}
	g, err := b.startChild("child", fmt.Sprintf("127.0.0.1:%d", b.be.Int("POSTERN_BACKENDS_SMTP_PROXY_PORT")))
	if err != nil {
		return err
	}
	b.procs.postern = g.PID()
	t := target{name: "through", addr: g.addr}
	prof := func(file string, fn runFunc, name, unit string) {
		path := filepath.Join(b.o.profile, file)
		h := hooks{}
		var s0, s1 cpuSnap
		h.start = func() {
			s0 = b.procs.snap()
			if err := g.ctl.cpuStart(path); err != nil {
				b.fail("cpu profile: %v", err)
			}
		}
		h.end = func() {
			g.ctl.cpuStop()
			s1 = b.procs.snap()
		}
		if _, err := b.drain(-1); err != nil {
			b.fail("profile %s: %v", name, err)
			return
		}
		b.clean()
		stopReaper := b.reaper()
		res := fn(t, h)
		stopReaper()
		m := measured{side: "in-process", res: res, cpu: diff(s0, s1)}
		if res.errors > 0 {
			b.fail("profile %s: %d failed sessions; first: %v", name, res.errors, res.firstErr)
		}
		if m.wait, err = b.drain(res.accepted); err != nil {
			b.fail("profile %s: delivery check: %v", name, err)
		}
		b.clean()
		benchkit.Logf("%-40s %-7s %s", name, "in-proc", m.summary(unit))
		b.out.profiles = append(b.out.profiles, profileResult{name: name, unit: unit, m: m, file: path})
	}
	if want("small") {
		prof("cpu-small.pprof", b.timedRun(b.o.size, 1), fmt.Sprintf("%d B, 1 msg/session", b.o.size), "msg")
	}
	if want("big") {
		prof("cpu-big.pprof", b.countRun(), fmt.Sprintf("%d B messages", b.o.bigSize), "bytes")
	}
	g.Stop()
	b.procs.postern = 0
	if want("idle") {
		fb, err := startFakeBackend()
		if err != nil {
			return err
		}
		defer fb.close()
		gi, err := b.startChild("child-idle", fb.addr())
		if err != nil {
			return err
		}
		defer gi.Stop()
		res, err := b.idle(gi, fb, "in-process gateway")
		if err != nil {
			return err
		}
		b.out.idle = append(b.out.idle, res)
	}
	exe, _ := os.Executable()
	b.out.profileExe = exe
	return nil
}

// pprofTop returns `go tool pprof -top` of a profile.
func pprofTop(exe, file string, extra ...string) string {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=25"}, extra...)
	args = append(args, exe, file)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v\n%s", err, out)
	}
	// Drop pprof's preamble up to the column header.
	s := string(out)
	if i := strings.Index(s, "      flat  flat%"); i >= 0 {
		head := s[:i]
		lines := strings.Split(strings.TrimSpace(head), "\n")
		keep := ""
		for _, l := range lines {
			if strings.HasPrefix(l, "Duration") || strings.HasPrefix(l, "Showing nodes") || strings.HasPrefix(l, "Type") {
				keep += l + "\n"
			}
		}
		s = keep + s[i:]
	}
	return s
}

// ---- report ----------------------------------------------------------------------

type scenarioResult struct {
	name, unit string
	runs       []measured
}

type profileResult struct {
	name, unit, file string
	m                measured
}

type report struct {
	rev, cpus, goVersion, postfix, dovecot, dir string
	postfixLimits, posternNoFile, posternLog    string
	scenarios                                   []*scenarioResult
	idle                                        []idleResult
	profiles                                    []profileResult
	profileExe                                  string
}

func (sc *scenarioResult) side(side string, f func(m *measured) float64) (med float64, all []float64) {
	for i := range sc.runs {
		if sc.runs[i].side == side {
			all = append(all, f(&sc.runs[i]))
		}
	}
	return benchkit.Median(all), all
}

func fmtRate(unit string, v float64) string {
	if unit == "bytes" {
		return fmt.Sprintf("%.1f MB/s", v/1e6)
	}
	return fmt.Sprintf("%.1f msg/s", v)
}

func (r *report) print(w *os.File, o options) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	p("\npostern SMTP benchmark: postern %s, %s CPUs, %s, Postfix %s, Dovecot %s, backends %s\n", r.rev, r.cpus, r.goVersion, r.postfix, r.dovecot, r.dir)
	p("direct = load generator -> Postfix PROXY port (v2 header, source 127.0.0.1:port); through = generator -> postern serve -> same Postfix port;\n")
	p("min. relay = generator -> minimal in-process TCP relay (PROXY header + splice) -> same port: the cost of any same-host proxy.\n")
	p("Every accepted message was checked delivered to alice's Maildir via LMTP. Median of %d run(s) per side; rates in the measured window.\n\n", o.rounds)
	if len(r.scenarios) > 0 {
		p("%-40s %14s %14s %7s  %-22s %14s %7s\n", "scenario", "direct", "through", "ratio", "target", "min. relay", "ratio")
		for _, sc := range r.scenarios {
			rate := func(m *measured) float64 {
				if sc.unit == "bytes" {
					return m.res.byteRate()
				}
				return m.res.rate()
			}
			d, _ := sc.side("direct", rate)
			t, _ := sc.side("through", rate)
			ratio, verdict := 0.0, "no data"
			if d > 0 && t > 0 {
				ratio = t / d
				verdict = fmt.Sprintf("≥ %.2f ok", targetRatio)
				if ratio < targetRatio {
					verdict = fmt.Sprintf("≥ %.2f TARGET MISSED", targetRatio)
				}
			}
			fl, flr := "-", "-"
			if f, _ := sc.side("relay", rate); f > 0 && d > 0 {
				fl, flr = fmtRate(sc.unit, f), fmt.Sprintf("%.3f", f/d)
			}
			p("%-40s %14s %14s %7.3f  %-22s %14s %7s\n", sc.name, fmtRate(sc.unit, d), fmtRate(sc.unit, t), ratio, verdict, fl, flr)
		}
		p("\nPer run. CPU in cores (CPU seconds / wall seconds of the window): postern, Postfix (master and all its children), Dovecot (idem),\n")
		p("gen (this program: load generator, and the min. relay when side = relay), other (rest of the machine: other processes, kernel threads).\n")
		p("CPU ms per message, all-in (from before the first connection to the end of the queue drain, divided by every accepted message,\n")
		p("warm-up included, so each message's delivery counts wherever it ran): postern, Postfix, Dovecot, all four.\n")
		p("Postern's read/write syscalls per message (window). Queue drain after the window.\n")
		p("%-40s %-7s %12s %8s %8s %5s | %7s %7s %7s %5s %5s | %7s %7s %7s %7s | %7s %7s | %6s\n", "scenario", "side", "rate", "p50", "p99", "≥1s",
			"postern", "postfix", "dovecot", "gen", "other", "pt ms", "pf ms", "dv ms", "all ms", "rd/msg", "wr/msg", "drain")
		for _, sc := range r.scenarios {
			for _, m := range sc.runs {
				rate := m.res.rate()
				if sc.unit == "bytes" {
					rate = m.res.byteRate()
				}
				n := float64(m.res.messages)
				c := m.cpu
				pt, rd, wr := "-", "-", "-"
				if m.side == "through" {
					pt = fmt.Sprintf("%.3f", m.perMsg(func(u cpuUse) float64 { return u.postern }))
					rd, wr = fmt.Sprintf("%.1f", c.syscr/n), fmt.Sprintf("%.1f", c.syscw/n)
				}
				p("%-40s %-7s %12s %8v %8v %5d | %7.2f %7.2f %7.2f %5.2f %5.2f | %7s %7.3f %7.3f %7.3f | %7s %7s | %5.1fs\n", sc.name, m.side, fmtRate(sc.unit, rate),
					m.res.percentile(0.5).Round(100*time.Microsecond), m.res.percentile(0.99).Round(100*time.Microsecond), m.res.slow(time.Second),
					c.postern/c.wall, c.postfix/c.wall, c.dove/c.wall, c.gen/c.wall, c.other(),
					pt, m.perMsg(func(u cpuUse) float64 { return u.postfix }), m.perMsg(func(u cpuUse) float64 { return u.dove }),
					m.perMsg(func(u cpuUse) float64 { return u.postern + u.postfix + u.dove + u.gen }), rd, wr, m.wait.Seconds())
			}
		}
	}
	for _, id := range r.idle {
		verdict := fmt.Sprintf("≤ %.0f KiB ok", targetIdleKiB)
		if id.perConn() > targetIdleKiB {
			verdict = fmt.Sprintf("≤ %.0f KiB TARGET MISSED", targetIdleKiB)
		}
		p("\nIdle connections, %s -> in-process fake SMTP backend (not Postfix), no TLS, after EHLO:\n", id.name)
		p("  %d connections: VmRSS %.1f MiB -> %.1f MiB (%.1f MiB at %d); RssAnon %.1f -> %.1f MiB; %d threads; open files %s\n",
			id.n, float64(id.rss0)/1024, float64(id.rssN)/1024, float64(id.rssHalf)/1024, id.n/2, float64(id.anon0)/1024, float64(id.anonN)/1024, id.threads, id.noFile)
		p("  %.1f KiB per connection (marginal over the second half: %.1f KiB)   target %s\n", id.perConn(), id.marginal(), verdict)
		if id.heapN != nil {
			per := func(k string) float64 { return (id.heapN[k] - id.heap0[k]) / 1024 / float64(id.n) }
			p("  Go runtime after GC: heap in use %.1f KiB/conn, stacks %.1f KiB/conn, goroutines %.0f -> %.0f\n",
				per("HeapInuse"), per("StackInuse"), id.heap0["Goroutines"], id.heapN["Goroutines"])
		}
	}
	if len(r.profiles) > 0 {
		p("\nIn-process gateway (this program re-run as the gateway, wired as postern serve wires it) with the CPU profiler on:\n")
		for _, pr := range r.profiles {
			p("  %-36s %s\n", pr.name, pr.m.summary(pr.unit))
		}
		for _, pr := range r.profiles {
			p("\n---- CPU profile, %s (%s) ----\n%s", pr.name, pr.file, pprofTop(r.profileExe, pr.file))
		}
		if len(r.idle) > 1 {
			p("\n---- heap in use with %d idle connections (%s) ----\n%s", r.idle[len(r.idle)-1].n, filepath.Join(o.profile, "heap-idle.pprof"),
				pprofTop(r.profileExe, filepath.Join(o.profile, "heap-idle.pprof"), "-sample_index=inuse_space"))
		}
	}
	p("\nPostfix limits in force (harness main.cf; the bench changes none):\n  %s\n", strings.ReplaceAll(r.postfixLimits, "\n", "\n  "))
	if r.posternNoFile != "" {
		p("postern serve: open files %s\n", r.posternNoFile)
	}
}
