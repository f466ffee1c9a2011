// Command imap benchmarks postern's IMAP and POP3 gateways against the
// project's real Dovecot harness (test/backends): bytes per second of a
// large FETCH (and POP3 RETR), logins per second, through postern versus
// straight to Dovecot's PROXY ports, and postern's memory per idle
// logged-in IMAP connection. See bench/README.md.
//
//	sudo GOTOOLCHAIN=local go run ./bench/imap            # full run, about 9 minutes
//	sudo GOTOOLCHAIN=local go run ./bench/imap -short     # CI smoke, under a minute
//
// It exits 1 on errors (a failed session, a wrong size or content, a
// backend or postern that does not start) and 0 otherwise; a missed target
// is printed as "TARGET MISSED", not an exit status.
package main

import (
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
	"syscall"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/procstat"
)

// Targets of issue 5.
const (
	targetBytes   = 0.95 // through / direct, bytes/s of a large FETCH (and RETR)
	targetLogins  = 0.80 // through / direct, logins/s
	targetIdleKiB = 16.0 // KiB of postern RSS per idle logged-in connection (no TLS)
)

// The harness users (test/backends/conf/users): alice logs in, bob's
// mailbox holds the big message.
var (
	loginUser = account{"alice@example.test", "alice-pass-1"}
	bigUser   = account{"bob@example.test", "bob-pass-2"}
)

type options struct {
	dir, postern, only, posternEnv string
	portBase                       int
	reuse, keep, short, floor      bool
	authPlain                      bool // IMAP logins with AUTHENTICATE PLAIN instead of LOGIN
	bigSize, bigClients            int
	loginClients                   int
	warmup, duration               time.Duration
	rounds                         int
	idle                           int
	noFile                         uint64   // RLIMIT_NOFILE to raise to
	stdout                         *os.File // where the report goes
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-child-relay" {
		os.Exit(runChildRelay(os.Args[2]))
	}
	o := defaultOptions()
	flag.StringVar(&o.dir, "dir", o.dir, "harness DIR (at most 64 characters); bob's Maildir there is replaced by the big message")
	flag.IntVar(&o.portBase, "port-base", o.portBase, "POSTERN_BACKENDS_PORT_BASE for backends this program starts")
	flag.BoolVar(&o.reuse, "reuse", false, "use the backends already running in -dir (read DIR/backends.env); never start or stop them")
	flag.BoolVar(&o.keep, "keep", false, "leave the backends (and the temporary folder) in place at the end")
	flag.BoolVar(&o.short, "short", false, "CI smoke: one round, short windows, a smaller message, 500 idle connections, no relay floor (under a minute)")
	flag.StringVar(&o.postern, "postern", "", "postern binary to run (default: go build ./cmd/postern into the temporary folder)")
	flag.IntVar(&o.bigSize, "big-size", o.bigSize, "size in bytes of the large message (as stored, LF line ends)")
	flag.IntVar(&o.bigClients, "big-clients", o.bigClients, "concurrent clients fetching the large message")
	flag.IntVar(&o.loginClients, "login-clients", o.loginClients, "concurrent clients in the login scenarios")
	flag.DurationVar(&o.warmup, "warmup", o.warmup, "warm-up before each measured window")
	flag.DurationVar(&o.duration, "duration", o.duration, "measured window of each run")
	flag.IntVar(&o.rounds, "rounds", o.rounds, "runs of each side per scenario, interleaved (the table shows the median)")
	flag.BoolVar(&o.floor, "floor", true, "also run every scenario through a minimal in-process TCP relay (calibration: what any same-host proxy costs)")
	flag.IntVar(&o.idle, "idle", o.idle, "idle logged-in IMAP connections for the memory test (0: skip)")
	flag.BoolVar(&o.authPlain, "auth-plain", false, "IMAP login scenario: log in with AUTHENTICATE PLAIN (SASL-IR), as postern replays logins, instead of LOGIN")
	flag.StringVar(&o.posternEnv, "postern-env", "", "extra environment of postern serve, comma-separated KEY=VALUE (e.g. GOMAXPROCS=1, GODEBUG=…), for experiments")
	flag.StringVar(&o.only, "only", "", "comma-separated subset of: fetch,retr,imaplogin,pop3login,idle")
	flag.Parse()
	if o.short {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.applyShort(set)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/imap: error:", err)
		os.Exit(1)
	}
}

func defaultOptions() options {
	return options{
		dir: "/tmp/postern-bench-imap", portBase: 24000, floor: true,
		bigSize: 20_000_000, bigClients: 4, loginClients: 32,
		warmup: 2 * time.Second, duration: 10 * time.Second, rounds: 2, idle: 10_000,
		noFile: 200_000, stdout: os.Stdout,
	}
}

// applyShort sets the CI smoke values of every option not set explicitly.
func (o *options) applyShort(set map[string]bool) {
	def := func(name string, apply func()) {
		if !set[name] {
			apply()
		}
	}
	def("rounds", func() { o.rounds = 1 })
	def("warmup", func() { o.warmup = time.Second })
	def("duration", func() { o.duration = 3 * time.Second })
	def("big-size", func() { o.bigSize = 5_000_000 })
	def("idle", func() { o.idle = 500 })
	def("floor", func() { o.floor = false })
}

// bench is the state of one benchmark run.
type bench struct {
	o     options
	ctx   context.Context
	root  string // the module root
	tmp   string
	bin   string // postern binary
	be    benchkit.Env
	procs procSet
	big   *bigMessage
	errs  []string
	out   *report
}

func run(ctx context.Context, o options) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the harness starts Dovecot, the Maildir belongs to vmail (sudo)")
	}
	b := &bench{o: o, ctx: ctx, out: &report{}}
	if b.root, err = benchkit.ModuleRoot("go run ./bench/imap"); err != nil {
		return err
	}
	b.out.noFile = raiseNoFile(o.noFile)
	if b.tmp, err = os.MkdirTemp("", "postern-bench-imap-"); err != nil {
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

	if want("fetch") || want("retr") || want("imaplogin") || want("pop3login") {
		if err := b.dovecotScenarios(want); err != nil {
			b.fail("%v", err)
		}
	}
	if want("idle") && o.idle > 0 && ctx.Err() == nil {
		if err := b.idleTest(); err != nil {
			b.fail("idle test: %v", err)
		}
	}
	b.out.print(o.stdout, o)
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if len(b.errs) > 0 {
		return fmt.Errorf("%d error(s):\n  %s", len(b.errs), strings.Join(b.errs, "\n  "))
	}
	return nil
}

// dovecotScenarios runs the FETCH, RETR and login scenarios against the
// harness's Dovecot, each side in turn.
func (b *bench) dovecotScenarios(want func(string) bool) error {
	o := b.o
	if want("fetch") || want("retr") {
		b.big = newBigMessage(o.bigSize)
		if err := b.storeBig(); err != nil {
			return fmt.Errorf("storing the big message: %w", err)
		}
	}
	imapDirect := b.be.Addr("POSTERN_BACKENDS_IMAP_PROXY_PORT")
	popDirect := b.be.Addr("POSTERN_BACKENDS_POP3_PROXY_PORT")
	g, err := b.startPostern("through", imapDirect, popDirect)
	if err != nil {
		return err
	}
	defer func() {
		if err := g.Stop(); err != nil {
			b.fail("postern (through): %v\n%s", err, g.Tail())
		}
	}()
	b.out.posternNoFile = procstat.OpenFilesLimit(g.PID())
	sides := func(direct, through string) ([]target, func()) {
		ts := []target{{name: "direct", addr: direct, proxy: true}, {name: "through", addr: through, pid: g.PID()}}
		if !o.floor {
			return ts, func() {}
		}
		cr, err := b.startChildRelay(direct)
		if err != nil {
			b.fail("min. relay: %v", err)
			return ts, func() {}
		}
		return append(ts, target{name: "relay", addr: cr.addr, pid: cr.cmd.Process.Pid}), cr.stop
	}
	imapSides, closeI := sides(imapDirect, g.imap)
	defer closeI()
	popSides, closeP := sides(popDirect, g.pop3)
	defer closeP()
	mb := float64(o.bigSize) / 1e6
	if want("fetch") {
		b.scenario(fmt.Sprintf("IMAP FETCH BODY.PEEK[] %.0f MB, %d clients", mb, o.bigClients), "bytes", targetBytes, imapSides,
			func(t target, h hooks) loadResult {
				return transferRun(b.ctx, "imap", t, bigUser, b.big, o.bigClients, o.warmup, o.duration, h)
			})
	}
	if want("retr") {
		b.scenario(fmt.Sprintf("POP3 RETR %.0f MB, %d clients", mb, o.bigClients), "bytes", targetBytes, popSides,
			func(t target, h hooks) loadResult {
				return transferRun(b.ctx, "pop3", t, bigUser, b.big, o.bigClients, o.warmup, o.duration, h)
			})
	}
	if want("imaplogin") {
		verb := "LOGIN"
		if o.authPlain {
			verb = "AUTH PLAIN"
		}
		b.scenario(fmt.Sprintf("IMAP connect+%s+LOGOUT, %d clients", verb, o.loginClients), "logins", targetLogins, imapSides,
			func(t target, h hooks) loadResult {
				return loginRun(b.ctx, "imap", t, loginUser, o.authPlain, o.loginClients, o.warmup, o.duration, h)
			})
	}
	if want("pop3login") {
		b.scenario(fmt.Sprintf("POP3 connect+USER+PASS+QUIT, %d clients", o.loginClients), "logins", targetLogins, popSides,
			func(t target, h hooks) loadResult {
				return loginRun(b.ctx, "pop3", t, loginUser, false, o.loginClients, o.warmup, o.duration, h)
			})
	}
	b.out.posternLog = g.Tail()
	return nil
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.errs = append(b.errs, msg)
	fmt.Fprintln(os.Stderr, "ERROR:", msg)
}

// raiseNoFile lifts this process's open-file limit (soft and hard) to at
// least want: the idle test holds two sockets per connection here (client
// and in-process backend) and postern serve, which inherits the limit,
// holds two sockets and two splice pipes (four descriptors) per spliced
// connection. Raising the hard limit needs root (CAP_SYS_RESOURCE). It
// returns the limit now in force.
func raiseNoFile(want uint64) string {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return "?"
	}
	if n := l; raiseTo(&n.Cur, &n.Max, want) && syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n) == nil {
		l = n
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return fmt.Sprintf("%d soft / %d hard", l.Cur, l.Max)
}

// raiseTo sets a limit's soft and hard values to want when its hard one is
// below it, and reports whether it did. The fields are uint64 on Linux and
// int64 on the BSDs.
func raiseTo[T ~int64 | ~uint64](cur, max *T, want uint64) bool {
	if uint64(*max) >= want {
		return false
	}
	*cur, *max = T(want), T(want)
	return true
}

// backends starts the harness (or reads the running one with -reuse).
func (b *bench) backends() error {
	e, err := benchkit.StartBackends(b.ctx, b.root, b.o.dir, b.o.portBase, b.o.reuse)
	if err != nil {
		return err
	}
	b.be = e
	b.procs.dovecot = e.Int("POSTERN_BACKENDS_DOVECOT_PID")
	if b.procs.dovecot == 0 || e.Int("POSTERN_BACKENDS_IMAP_PROXY_PORT") == 0 || e.Int("POSTERN_BACKENDS_POP3_PROXY_PORT") == 0 {
		return fmt.Errorf("%s: no Dovecot PID or IMAP/POP3 PROXY port", filepath.Join(b.o.dir, "backends.env"))
	}
	return nil
}

func (b *bench) stopBackends() { benchkit.StopBackends(b.root, b.o.dir) }

func (b *bench) buildPostern() (err error) {
	b.bin, err = benchkit.BuildPostern(b.ctx, b.root, b.tmp)
	return err
}

// storeBig replaces bob's Maildir by one holding only the big message, as
// Dovecot's own delivery leaves it (benchkit.StoreMaildir); Dovecot
// indexes it at the first SELECT.
func (b *bench) storeBig() error {
	root := b.be["POSTERN_BACKENDS_MAIL_ROOT"]
	if root == "" {
		return errors.New("backends.env has no POSTERN_BACKENDS_MAIL_ROOT")
	}
	md, err := benchkit.StoreMaildir(filepath.Join(root, "example.test", "bob"), b.big.file, b.big.vsize, "vmail")
	if err != nil {
		return err
	}
	benchkit.Logf("stored a %d-byte message (%d with CRLF) in %s", len(b.big.file), b.big.vsize, md)
	return nil
}

func (b *bench) header() {
	r := b.out
	r.cpus = strconv.Itoa(numCPU())
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		r.goVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", b.root, "describe", "--always", "--dirty").Output(); err == nil {
		r.rev = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("dovecot", "--version").Output(); err == nil && len(strings.Fields(string(out))) > 0 {
		r.dovecot = strings.Fields(string(out))[0]
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				r.cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	r.dir = b.be["POSTERN_BACKENDS_DIR"]
	conf := filepath.Join(r.dir, "dovecot", "dovecot.conf")
	if out, err := exec.Command("doveconf", "-c", conf, "-h", "mail_max_userip_connections").Output(); err == nil {
		r.dovecotLimits = "mail_max_userip_connections = " + strings.TrimSpace(string(out))
	}
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	n := strings.Count(string(b), "\nprocessor")
	if strings.HasPrefix(string(b), "processor") {
		n++
	}
	return n
}

// ---- postern serve ----------------------------------------------------------------

// gateway is a running postern serve.
type gateway struct {
	*benchkit.Proc
	imap, pop3 string // listen addresses ("" when not configured)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// configText is postern's configuration: an imap service relaying to
// imapBackend and, when popBackend is set, a pop3 service relaying to it,
// both with a PROXY v2 header; plaintext logins allowed from loopback (no
// TLS here, as the target says); intrusion prevention on with its IMAP/POP3
// triggers, the connection rate set beyond any load here and the
// per-address limit raised (the idle test puts thousands of connections
// on each source address).
func configText(dir, imapListen, imapBackend, popListen, popBackend string) string {
	var s strings.Builder
	s.WriteString("# written by bench/imap\nservices:\n")
	svc := func(name, listen, backend string) {
		fmt.Fprintf(&s, "  %s:\n    listen: %q\n    backend: %q\n    backend_proxy: v2\n"+
			"    plaintext_login: \"127.0.0.0/8\"\n    max_connections_per_address: 1000000\n", name, listen, backend)
	}
	svc("imap", imapListen, imapBackend)
	if popBackend != "" {
		svc("pop3", popListen, popBackend)
	}
	fmt.Fprintf(&s, `intrusion_prevention:
  block_minutes: 240
  imap_pop3: { connections_per_minute: 100000000, failed_logins: 5 }
store:
  path: %q
admin:
  listen: %q
  token_file: %q
log:
  level: info
`, filepath.Join(dir, "postern.db"), "unix:"+filepath.Join(dir, "admin.sock"), filepath.Join(dir, "admin.token"))
	return s.String()
}

// startPostern runs `postern serve` with an imap service in front of
// imapBackend and, when popBackend is set, a pop3 service in front of it.
func (b *bench) startPostern(name, imapBackend, popBackend string) (*gateway, error) {
	dir, err := os.MkdirTemp(b.tmp, name+"-")
	if err != nil {
		return nil, err
	}
	g := new(gateway)
	if g.imap, err = freeAddr(); err != nil {
		return nil, err
	}
	if popBackend != "" {
		if g.pop3, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfg, []byte(configText(dir, g.imap, imapBackend, g.pop3, popBackend)), 0o600); err != nil {
		return nil, err
	}
	var env []string
	if b.o.posternEnv != "" {
		env = strings.Split(b.o.posternEnv, ",")
	}
	if g.Proc, err = benchkit.StartNotify("postern serve", filepath.Join(dir, "postern.log"), env, b.bin, "serve", "-c", cfg); err != nil {
		return nil, err
	}
	addrs := []string{g.imap}
	if g.pop3 != "" {
		addrs = append(addrs, g.pop3)
	}
	if err := g.WaitPorts(addrs...); err != nil {
		g.Stop()
		return nil, err
	}
	return g, nil
}

// ---- scenarios ------------------------------------------------------------------

// runFunc runs one measured load against t.
type runFunc func(t target, h hooks) loadResult

// measured is one run's result with its CPU use in the window.
type measured struct {
	side string
	res  loadResult
	cpu  cpuUse
}

// perOp returns CPU milliseconds per operation in the window.
func (m *measured) perOp(v float64) float64 {
	if m.res.ops == 0 {
		return 0
	}
	return 1000 * v / float64(m.res.ops)
}

// scenario runs each side rounds times, interleaved as D T R, R T D, …
// so that slow drift falls on every side alike.
func (b *bench) scenario(name, unit string, target float64, sides []target, fn runFunc) {
	sc := &scenarioResult{name: name, unit: unit, target: target}
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
			procs := b.procs
			procs.postern = t.pid // postern, or the relay process, or none
			var s0, s1 cpuSnap
			res := fn(t, hooks{start: func() { s0 = procs.snap() }, end: func() { s1 = procs.snap() }})
			m := measured{side: t.name, res: res, cpu: diff(s0, s1)}
			sc.runs = append(sc.runs, m)
			benchkit.Logf("%-44s %-7s %s", name, t.name, m.summary(unit))
			if res.errors > 0 {
				b.fail("%s, %s, round %d: %d failed sessions; first: %v", name, t.name, r+1, res.errors, res.firstErr)
			} else if res.ops == 0 {
				b.fail("%s, %s, round %d: nothing completed in the measured window", name, t.name, r+1)
			}
		}
	}
}

func (m *measured) summary(unit string) string {
	rate := fmt.Sprintf("%8.1f logins/s", m.res.rate())
	if unit == "bytes" {
		rate = fmt.Sprintf("%8.1f MB/s", m.res.byteRate()/1e6)
	}
	c := m.cpu
	return fmt.Sprintf("%s  (%d ops in %.1fs, p50 %v p99 %v; CPU cores: proxy %.2f dovecot %.2f gen %.2f other %.2f)",
		rate, m.res.ops, m.res.elapsed.Seconds(), m.res.percentile(0.5).Round(100*time.Microsecond), m.res.percentile(0.99).Round(100*time.Microsecond),
		c.postern/c.wall, c.dove/c.wall, c.gen/c.wall, c.other())
}
