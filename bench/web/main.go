// Command web benchmarks postern's web gateway: requests per second with
// wrk (Debian's package) straight to nginx and through `postern serve` in
// front of the same nginx, in one run, interleaved, with an nginx reverse
// proxy as a reference and a dynamic-page scenario. See docs/BENCHMARKS.md.
//
//	GOTOOLCHAIN=local go run ./bench/web          # full run, about 5 minutes
//	GOTOOLCHAIN=local go run ./bench/web -short   # CI smoke, about 40 s
//
// It exits 1 on errors (nginx or postern not starting, wrk failing or
// reporting errors) and 0 otherwise; a missed target is printed as
// "TARGET MISSED", not an exit status.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/procstat"
)

// targetRatio is the target: through postern / direct, keep-alive.
const targetRatio = 0.8

type options struct {
	postern, wrk     string
	old              string
	short, keep      bool
	duration, warmup time.Duration
	rounds           int
	threads, conns   int
	pageBytes        int
	scenarios        string
	floor            bool
	gogc             string
	dynamicWork      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.postern, "postern", "", "postern binary (default: go build ./cmd/postern into the temporary folder)")
	flag.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	flag.StringVar(&o.old, "compare", "", "a second postern binary (an older build) measured interleaved with the first, for before/after in one run")
	flag.BoolVar(&o.short, "short", false, "CI smoke: one round of 3 s windows")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (configurations, logs)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window of each wrk run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "warm-up run before each measured window")
	flag.IntVar(&o.rounds, "rounds", 3, "runs of each side per scenario, interleaved direct/through (the median counts)")
	flag.IntVar(&o.threads, "threads", 1, "wrk threads")
	flag.IntVar(&o.conns, "connections", 32, "wrk connections")
	flag.IntVar(&o.pageBytes, "page", 1024, "size of the static page in bytes")
	flag.StringVar(&o.scenarios, "scenarios", "keepalive,close,dynamic", "comma-separated: keepalive (the target: static page, keep-alive), close (a new connection per request), dynamic (a backend page costing -dynamic-work of CPU)")
	flag.DurationVar(&o.dynamicWork, "dynamic-work", 300*time.Microsecond, "CPU time the dynamic backend spends per page (a webmail page costs milliseconds)")
	flag.StringVar(&o.gogc, "gogc", "", "GOGC for postern (default: Go's 100)")
	flag.BoolVar(&o.floor, "reference", true, "also measure an nginx reverse proxy in front of the same nginx (what a mature same-host proxy costs)")
	flag.Parse()
	if o.short {
		o.duration, o.warmup, o.rounds = 3*time.Second, time.Second, 1
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/web:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if _, err := exec.LookPath(o.wrk); err != nil {
		return fmt.Errorf("wrk not found (apt-get install wrk): %w", err)
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		return fmt.Errorf("nginx not found (apt-get install nginx-light): %w", err)
	}
	dir, err := os.MkdirTemp("", "postern-bench-web-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("temporary folder:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.postern == "" {
		o.postern = filepath.Join(dir, "postern")
		cmd := exec.Command("go", "build", "-o", o.postern, "./cmd/postern")
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/postern (run from the module root): %v\n%s", err, out)
		}
	}
	ng, err := startNginx(dir, o.pageBytes)
	if err != nil {
		return err
	}
	defer ng.Stop()
	gw, err := startPostern(dir, o.postern, ng.addr, o.gogc)
	if err != nil {
		return err
	}
	defer gw.Stop()
	var gwOld *server
	if o.old != "" {
		sub := filepath.Join(dir, "compare")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		if gwOld, err = startPostern(sub, o.old, ng.addr, o.gogc); err != nil {
			return err
		}
		defer gwOld.Stop()
	}
	var floor *server
	if o.floor {
		if floor, err = startNginxProxy(dir, ng.addr); err != nil {
			return err
		}
		defer floor.Stop()
	}

	fmt.Printf("web gateway benchmark: wrk -t%d -c%d, %v windows, %d round(s), %d-byte static page from nginx (1 worker)\n",
		o.threads, o.conns, o.duration, o.rounds, o.pageBytes)
	fmt.Printf("postern: %s (web service with a /admin path rule and a login form)%s\n", o.postern, map[bool]string{true: ", GOGC=" + o.gogc}[o.gogc != ""])
	failed := false
	for _, sc := range strings.Split(o.scenarios, ",") {
		sc = strings.TrimSpace(sc)
		var extra []string
		direct := side{name: "nginx serving the page", addr: ng.addr, pid: ng.PID()}
		through := side{name: "postern proxying it", addr: gw.addr, pid: gw.PID()}
		sides := []*side{&direct, &through}
		var ref, old *side
		if gwOld != nil {
			old = &side{name: "postern (-compare binary)", addr: gwOld.addr, pid: gwOld.PID()}
		}
		switch sc {
		case "keepalive":
		case "close":
			extra = []string{"-H", "Connection: close"}
		case "dynamic":
			// A page that costs the backend CPU, as a webmail page does:
			// postern's share of the work shrinks accordingly.
			dyn, err := startDynamic(o.dynamicWork)
			if err != nil {
				return err
			}
			defer dyn.Close()
			sub := filepath.Join(dir, "dynamic")
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
			gw2, err := startPostern(sub, o.postern, dyn.Addr, o.gogc)
			if err != nil {
				return err
			}
			defer gw2.Stop()
			direct = side{name: "the Go backend (this process)", addr: dyn.Addr, pid: os.Getpid()}
			through = side{name: "postern proxying it", addr: gw2.addr, pid: gw2.PID()}
			if o.old != "" {
				sub := filepath.Join(dir, "dynamic-old")
				if err := os.MkdirAll(sub, 0o755); err != nil {
					return err
				}
				gw3, err := startPostern(sub, o.old, dyn.Addr, o.gogc)
				if err != nil {
					return err
				}
				defer gw3.Stop()
				old = &side{name: "postern (-compare binary)", addr: gw3.addr, pid: gw3.PID()}
			}
		default:
			return fmt.Errorf("unknown scenario %q", sc)
		}
		if floor != nil && sc != "dynamic" {
			ref = &side{name: "nginx proxying it", addr: floor.addr, pid: floor.PID()}
			sides = append(sides, ref)
		}
		if old != nil {
			sides = append(sides, old)
		}
		for r := 0; r < o.rounds; r++ {
			for _, sd := range sides {
				if err := sd.run(o, extra); err != nil {
					return err
				}
			}
		}
		d, t := benchkit.Median(direct.rps), benchkit.Median(through.rps)
		ratio := t / d
		verdict := "(no target)"
		if sc == "keepalive" {
			verdict = fmt.Sprintf("target ≥ %.2f: ok", targetRatio)
			if ratio < targetRatio {
				verdict = fmt.Sprintf("target ≥ %.2f: TARGET MISSED", targetRatio)
				failed = true
			}
		}
		fmt.Printf("%-10s direct %9.0f req/s  through postern %9.0f req/s  ratio %.2f  %s\n", sc, d, t, ratio, verdict)
		fmt.Printf("           best runs: direct %.0f, through %.0f, ratio %.2f; all runs: direct %v through %v\n",
			slices.Max(direct.rps), slices.Max(through.rps), slices.Max(through.rps)/slices.Max(direct.rps), rounded(direct.rps), rounded(through.rps))
		fmt.Printf("           CPU per request (median): %s %.1f µs, %s %.1f µs\n", direct.name, benchkit.Median(direct.cpu), through.name, benchkit.Median(through.cpu))
		fmt.Printf("           read+write system calls per request (median, /proc/PID/io): %s %.2f, %s %.2f\n", direct.name, benchkit.Median(direct.sys), through.name, benchkit.Median(through.sys))
		fmt.Printf("           context switches per request (median, /proc/PID/task/*/status): %s %.2f, %s %.2f; the whole machine's CPU per request: %.1f µs with %s, %.1f µs through postern\n",
			direct.name, benchkit.Median(direct.cs), through.name, benchkit.Median(through.cs), benchkit.Median(direct.machine), direct.name, benchkit.Median(through.machine))
		if old != nil {
			fmt.Printf("           %s: %.0f req/s, ratio %.2f, CPU per request %.1f µs, system calls per request %.2f, context switches per request %.2f, the machine's CPU per request %.1f µs; runs %v\n",
				old.name, benchkit.Median(old.rps), benchkit.Median(old.rps)/d, benchkit.Median(old.cpu), benchkit.Median(old.sys), benchkit.Median(old.cs), benchkit.Median(old.machine), rounded(old.rps))
		}
		if ref != nil {
			f := benchkit.Median(ref.rps)
			fmt.Printf("           reference, an nginx reverse proxy (1 worker, keep-alive upstream): %.0f req/s, ratio %.2f (best %.2f); postern / nginx proxy %.2f; its CPU per request %.1f µs, system calls per request %.2f, context switches per request %.2f, the machine's CPU per request %.1f µs; runs %v\n",
				f, f/d, slices.Max(ref.rps)/slices.Max(direct.rps), t/f, benchkit.Median(ref.cpu), benchkit.Median(ref.sys), benchkit.Median(ref.cs), benchkit.Median(ref.machine), rounded(ref.rps))
		}
	}
	if !gw.Running() {
		return errors.New("postern exited during the benchmark:\n" + gw.Tail())
	}
	if failed {
		fmt.Println("TARGET MISSED (see above)")
	}
	return nil
}

var (
	rpsRe    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	errorsRe = regexp.MustCompile(`(Socket errors: .*|Non-2xx or 3xx responses: \d+)`)
)

// side is one target of a scenario and what was measured on it.
type side struct {
	name     string
	addr     string
	pid      int // the process whose CPU time per request is reported
	rps, cpu []float64
	sys      []float64 // read+write system calls per request
	cs       []float64 // the process's context switches per request (its threads going to sleep and waking)
	machine  []float64 // µs of CPU of the whole machine per request (load generator, backend, proxy, kernel)
}

// run does a warm-up and a measured wrk window.
func (sd *side) run(o options, extra []string) error {
	if _, err := wrk(o, sd.addr, o.warmup, extra); err != nil {
		return err
	}
	c0, s0, x0 := cpuSeconds(sd.pid), syscalls(sd.pid), procstat.ContextSwitches(sd.pid)
	m0, _ := procstat.MachineCPU()
	rps, err := wrk(o, sd.addr, o.duration, extra)
	if err != nil {
		return err
	}
	c1, s1, x1 := cpuSeconds(sd.pid), syscalls(sd.pid), procstat.ContextSwitches(sd.pid)
	m1, _ := procstat.MachineCPU()
	reqs := rps * o.duration.Seconds()
	sd.rps = append(sd.rps, rps)
	sd.cpu = append(sd.cpu, (c1-c0)/reqs*1e6)
	sd.sys = append(sd.sys, float64(s1-s0)/reqs)
	sd.cs = append(sd.cs, (x1-x0)/reqs)
	sd.machine = append(sd.machine, (m1-m0)/100/reqs*1e6) // jiffies of 1/100 s
	return nil
}

// wrk runs one wrk window against addr and returns requests per second.
func wrk(o options, addr string, d time.Duration, extra []string) (float64, error) {
	args := append([]string{"-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns), "-d", fmt.Sprintf("%ds", int(d.Seconds()))}, extra...)
	args = append(args, "http://"+addr+"/")
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, o.wrk, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk %v: %v\n%s", args, err, out)
	}
	m := rpsRe.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk %v: no Requests/sec in\n%s", args, out)
	}
	if e := errorsRe.Find(out); e != nil && !strings.Contains(string(e), "Socket errors: connect 0, read 0, write 0, timeout 0") {
		return 0, fmt.Errorf("wrk %v reported errors: %s\n%s", args, e, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}

type server struct {
	*benchkit.Proc
	addr string
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {{DIR}}/tmp/body;
  proxy_temp_path {{DIR}}/tmp/proxy;
  fastcgi_temp_path {{DIR}}/tmp/fastcgi;
  uwsgi_temp_path {{DIR}}/tmp/uwsgi;
  scgi_temp_path {{DIR}}/tmp/scgi;
  default_type text/html;
  keepalive_requests 1000000;
  server {
    listen {{ADDR}} backlog=4096;
    root {{DIR}}/www;
  }
}
`

func startNginx(dir string, page int) (*server, error) {
	for _, d := range []string{"www", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	body := "<html><body>" + strings.Repeat("x", max(0, page-28)) + "</body></html>\n"
	if err := os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte(body), 0o644); err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(strings.NewReplacer("{{DIR}}", dir, "{{ADDR}}", addr).Replace(nginxConf)), 0o644); err != nil {
		return nil, err
	}
	p, err := benchkit.Start("nginx", filepath.Join(dir, "nginx.out"), nil, "nginx", "-p", dir, "-e", filepath.Join(dir, "nginx-error.log"), "-c", conf)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(addr); err != nil {
		p.Stop()
		return nil, err
	}
	return &server{p, addr}, nil
}

func startPostern(dir, bin, backend, gogc string) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`patterns:
  Admins: "192.0.2.7"
services:
  web:
    listen: %q
    backend: "http://%s"
    max_connections_per_address: 1000
    paths:
      - { prefix: /admin, grant: "[Admins]" }
      - { prefix: /webmail/settings, deny: "198.51.100.0/24" }
    login_forms:
      - { path: "/?_task=login", user_field: _user, password_field: _pass, fail_status: 401 }
intrusion_prevention:
  web: { connections_per_minute: 0, failed_logins: 10 }
store: { path: %q }
admin: { listen: "unix:%s/admin.sock", token_file: %q }
log: { level: warn }
`, addr, backend, filepath.Join(dir, "postern.db"), dir, filepath.Join(dir, "admin.token"))
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	var env []string
	if gogc != "" {
		env = append(env, "GOGC="+gogc)
	}
	p, err := benchkit.StartNotify("postern", filepath.Join(dir, "postern.log"), env, bin, "serve", "-c", path)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(addr); err != nil {
		p.Stop()
		return nil, err
	}
	return &server{p, addr}, nil
}

const nginxProxyConf = `daemon off;
master_process off;
worker_processes 1;
pid {{DIR}}/nginx-proxy.pid;
error_log {{DIR}}/nginx-proxy-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {{DIR}}/tmp/pbody;
  proxy_temp_path {{DIR}}/tmp/pproxy;
  fastcgi_temp_path {{DIR}}/tmp/pfastcgi;
  uwsgi_temp_path {{DIR}}/tmp/puwsgi;
  scgi_temp_path {{DIR}}/tmp/pscgi;
  keepalive_requests 1000000;
  upstream backend { server {{BACKEND}}; keepalive 64; keepalive_requests 1000000; }
  server {
    listen {{ADDR}} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`

// startNginxProxy starts the reference: nginx as a reverse proxy in front
// of the static nginx.
func startNginxProxy(dir, backend string) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx-proxy.conf")
	text := strings.NewReplacer("{{DIR}}", dir, "{{ADDR}}", addr, "{{BACKEND}}", backend).Replace(nginxProxyConf)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	p, err := benchkit.Start("nginx proxy", filepath.Join(dir, "nginx-proxy.out"), nil, "nginx", "-p", dir, "-e", filepath.Join(dir, "nginx-proxy-error.log"), "-c", conf)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(addr); err != nil {
		p.Stop()
		return nil, err
	}
	return &server{p, addr}, nil
}

// syscalls returns the read and write system calls of a process so far
// (syscr + syscw of /proc/PID/io: every read, write, recv and send family
// call, whatever it moved).
func syscalls(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && (k == "syscr" || k == "syscw") {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
	}
	return n
}

// cpuSeconds returns the user+system CPU time of a process so far, from
// /proc/PID/stat (clock ticks of 1/100 s on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100
}

// dynamic is an in-process backend whose every page costs CPU time, as a
// webmail page does (PHP rendering, IMAP round trips).
type dynamic struct {
	Addr string
	srv  *http.Server
	done chan struct{}
}

func startDynamic(work time.Duration) (*dynamic, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	page := []byte("<html><body>" + strings.Repeat("webmail ", 2000) + "</body></html>\n")
	d := &dynamic{Addr: ln.Addr().String(), done: make(chan struct{})}
	d.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		burn(work)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})}
	go func() { defer close(d.done); d.srv.Serve(ln) }()
	return d, nil
}

// Close stops the backend.
func (d *dynamic) Close() {
	d.srv.Close()
	<-d.done
}

// burn spends about d of CPU time hashing.
func burn(d time.Duration) {
	var buf [1024]byte
	sum := sha256.Sum256(buf[:])
	for end := time.Now().Add(d); time.Now().Before(end); {
		for range 8 {
			sum = sha256.Sum256(append(buf[:0:0], sum[:]...))
		}
	}
	_ = sum
}
