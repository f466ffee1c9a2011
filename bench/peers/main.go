// Command peers benchmarks postern side by side with its peers — nginx
// (mail proxy with an auth_http server, and reverse proxy) and haproxy
// (TCP with send-proxy-v2, and HTTP) — and a direct connection, in one run
// against the project's real Dovecot and Postfix (test/backends): IMAP
// FETCH and logins, SMTP messages, HTTP keep-alive requests, their TLS
// variants, and memory per idle logged-in IMAP connection. It writes a
// markdown table and a gnuplot chart and, with -docs, puts them into
// docs/BENCHMARKS.md and README.md. See bench/README.md.
//
//	sudo GOTOOLCHAIN=local go run ./bench/peers          # full run
//	sudo GOTOOLCHAIN=local go run ./bench/peers -short   # CI smoke
//
// It exits 1 on errors (a failed session, a server that does not start)
// and 0 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
)

// The scenarios, in the order they run and appear in the table.
var allScenarios = []string{"fetch", "login", "smtp", "http", "httpdyn", "imaps-fetch", "imaps-login", "imaps-resume", "smtps", "https", "idle"}

type options struct {
	dir, postern, only, out string
	compare                 string // a second postern build run beside the first (-compare)
	portBase                int
	reuse, keep, short      bool
	docs                    bool
	bigSize, bigClients     int
	loginClients            int
	smtpClients, smtpSize   int
	httpConns, pageBytes    int
	dynamicWork             time.Duration
	warmup, duration        time.Duration
	rounds                  int
	idle                    int
	wrk                     string
	postQuantum             bool
	eventLoops              bool
	peerLogs                bool
	dovecotReuse            bool   // Dovecot's processes serve one client after another
	args                    string // the command line, for the report
}

func defaultOptions() options {
	return options{
		dir: "/tmp/postern-bench-peers", portBase: 29000,
		bigSize: 20_000_000, bigClients: 4, loginClients: 32,
		smtpClients: 32, smtpSize: 10_240, httpConns: 32, pageBytes: 1024,
		dynamicWork: 300 * time.Microsecond,
		warmup:      2 * time.Second, duration: 10 * time.Second, rounds: 2, idle: 10_000, wrk: "wrk",
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
	def("duration", func() { o.duration = 2 * time.Second })
	def("big-size", func() { o.bigSize = 2_000_000 })
	def("idle", func() { o.idle = 300 })
}

func main() {
	if st, ok := runChild(os.Args[1:]); ok {
		os.Exit(st)
	}
	o := defaultOptions()
	flag.StringVar(&o.dir, "dir", o.dir, "harness DIR (at most 64 characters); bob's Maildir there is replaced by the big message")
	flag.IntVar(&o.portBase, "port-base", o.portBase, "POSTERN_BACKENDS_PORT_BASE for the backends this program starts")
	flag.BoolVar(&o.reuse, "reuse", false, "use the backends already running in -dir (DIR/backends.env); never start or stop them")
	flag.BoolVar(&o.keep, "keep", false, "leave the backends and the temporary folder (configurations, logs) in place")
	flag.BoolVar(&o.short, "short", false, "CI smoke: one round, 2 s windows, a 2 MB message, 300 idle connections")
	flag.StringVar(&o.postern, "postern", "", "postern binary (default: go build ./cmd/postern into the temporary folder)")
	flag.StringVar(&o.compare, "compare", "", "instead of the table: run postern and B at the same time, each with half of the clients, and compare their CPU a operation over the same windows; B is haproxy, nginx or a second postern binary; writes compare.md (no idle test)")
	flag.StringVar(&o.only, "only", "", "comma-separated subset of: "+strings.Join(allScenarios, ","))
	flag.StringVar(&o.out, "out", "", "folder for the table (bench-peers.md), the data (JSON, gnuplot) and the charts (default: the temporary folder, kept)")
	flag.BoolVar(&o.docs, "docs", false, "write the table between the bench-peers markers of docs/BENCHMARKS.md and README.md, and the chart to docs/img/bench-peers.png")
	flag.IntVar(&o.bigSize, "big-size", o.bigSize, "size in bytes of the large message (as stored, LF line ends)")
	flag.IntVar(&o.bigClients, "big-clients", o.bigClients, "concurrent clients fetching the large message")
	flag.IntVar(&o.loginClients, "login-clients", o.loginClients, "concurrent clients in the login scenarios")
	flag.IntVar(&o.smtpClients, "smtp-clients", o.smtpClients, "concurrent SMTP clients")
	flag.IntVar(&o.smtpSize, "smtp-size", o.smtpSize, "SMTP message size in bytes")
	flag.IntVar(&o.httpConns, "connections", o.httpConns, "wrk connections (keep-alive)")
	flag.IntVar(&o.pageBytes, "page", o.pageBytes, "size of the static page in bytes")
	flag.DurationVar(&o.dynamicWork, "dynamic-work", o.dynamicWork, "CPU time the dynamic page costs its backend")
	flag.DurationVar(&o.warmup, "warmup", o.warmup, "warm-up before each measured window")
	flag.DurationVar(&o.duration, "duration", o.duration, "measured window of each run")
	flag.IntVar(&o.rounds, "rounds", o.rounds, "runs of each side per scenario, interleaved D N H P, P H N D (the table shows the median)")
	flag.IntVar(&o.idle, "idle", o.idle, "idle logged-in IMAP connections asked for in the memory test")
	flag.StringVar(&o.wrk, "wrk", o.wrk, "wrk binary (HTTP scenarios)")
	flag.BoolVar(&o.eventLoops, "event-loops", true, "postern with event_loops: true, its default (its IMAP, POP3 and SMTP sessions on event loops); -event-loops=false: on goroutines")
	flag.BoolVar(&o.peerLogs, "peer-logs", false, "let the peers log every mail session as postern logs every login and message: haproxy's mail frontends with option tcplog (one line a connection, to its standard output, a file), nginx's mail block with error_log at info (its session lines); without it neither peer logs a session")
	flag.BoolVar(&o.dovecotReuse, "dovecot-reuse", false, "start Dovecot with its login, IMAP and POP3 processes reused from one client to the next (test/backends' POSTERN_BACKENDS_DOVECOT_REUSE=1): about ten times the logins a second, a busy server's setting; with -reuse, the running backends must have been started so")
	flag.BoolVar(&o.postQuantum, "post-quantum", false, "let the Go TLS clients offer X25519MLKEM768 (postern then negotiates it; nginx and haproxy with OpenSSL 3.0 cannot): without it every side does an X25519 exchange")
	flag.Parse()
	if o.short {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.applyShort(set)
	}
	o.args = strings.Join(os.Args[1:], " ")
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/peers: error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the harness starts Dovecot and Postfix, the Maildir belongs to vmail (sudo)")
	}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" && !contains(allScenarios, s) {
			return fmt.Errorf("-only: unknown scenario %q (have %s)", s, strings.Join(allScenarios, ","))
		}
	}
	if o.compare != "" && o.compare != "haproxy" && o.compare != "nginx" {
		if st, err := os.Stat(o.compare); err != nil || st.IsDir() {
			return fmt.Errorf("-compare: %q is neither haproxy, nginx nor a postern binary", o.compare)
		}
	}
	b := &bench{o: o, ctx: ctx, want: benchkit.Only(o.only)}
	t0 := time.Now()
	err := b.run()
	if b.rep != nil && o.compare == "" {
		b.rep.Duration = time.Since(t0).Round(time.Second).String()
		if werr := b.write(); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if ctx.Err() != nil {
		return errors.Join(errors.New("interrupted"), err)
	}
	if err != nil {
		return err
	}
	if len(b.errs) > 0 {
		return fmt.Errorf("%d error(s):\n  %s", len(b.errs), strings.Join(b.errs, "\n  "))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.errs = append(b.errs, msg)
	fmt.Fprintln(os.Stderr, "ERROR:", msg)
}

// outDir returns the folder of the table, the data and the charts: -out,
// or the temporary folder (then kept).
func (b *bench) outDir() string {
	if b.o.out != "" {
		return b.o.out
	}
	return b.tmp
}
