// Package benchkit holds the helpers the benchmark programs (bench/smtp,
// bench/imap, bench/web, bench/peers) share: starting and stopping the
// servers they measure (Start, StartNotify), the calibration relay, the
// postern build, the big message and its Maildir, progress logging, the
// module root, medians and a cancellable sleep.
package benchkit

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// Only returns whether the scenario named s is to run: those listed in
// list (comma-separated), or every one when list names none.
func Only(list string) func(s string) bool {
	only := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			only[s] = true
		}
	}
	return func(s string) bool { return len(only) == 0 || only[s] }
}

// Logf writes one progress line, with the time of day, to standard error.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// ModuleRoot returns the root of the postern module, looked for from the
// working directory up; cmd (such as "go run ./bench/imap") is named in the
// error when the program runs outside the module.
func ModuleRoot(cmd string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/postern/postern\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run from inside the postern module (%s)", cmd)
		}
		dir = parent
	}
}

// BuildPostern builds ./cmd/postern of the module at root into dir and
// returns the binary's path.
func BuildPostern(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "postern")
	Logf("building postern")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/postern")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/postern: %w\n%s", err, out)
	}
	return bin, nil
}

// LogTail returns the last n lines of the file at path ("" when it cannot
// be read).
func LogTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Median returns the median of v (the mean of the middle two for an even
// count; 0 for none). v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SleepCtx waits for d or until ctx is done, whichever comes first.
func SleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Relay is the calibration floor: the least a proxy on this machine can
// do — accept, dial the backend, send the PROXY v2 header, then copy bytes
// both ways (io.Copy between TCP sockets: splice(2) on Linux). The gap
// between direct and Relay is what any same-host proxy costs here (a second
// loopback connection per session, a second TCP path for every byte); the
// gap between Relay and postern is postern's own work.
type Relay struct {
	ln      net.Listener
	backend string
	wg      sync.WaitGroup
}

// relayDeadline bounds one relayed session.
const relayDeadline = 10 * time.Minute

// StartRelay listens on a loopback port and relays every connection to
// backend until Close.
func StartRelay(backend string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &Relay{ln: ln, backend: backend}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil { // closed
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
			}()
		}
	}()
	return r, nil
}

func (r *Relay) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(relayDeadline))
	b, err := net.DialTimeout("tcp", r.backend, 5*time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	b.SetDeadline(time.Now().Add(relayDeadline))
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := b.Write(testenv.ProxyV2Header(src, dst)); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(b, c); done <- struct{}{} }()
	go func() { io.Copy(c, b); done <- struct{}{} }()
	<-done // either side finished: the session is over
	c.Close()
	b.Close()
	<-done
}

// Addr returns the relay's listen address.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Close stops accepting and waits for the sessions in flight to end.
func (r *Relay) Close() {
	r.ln.Close()
	r.wg.Wait()
}

// Env is the test harness's DIR/backends.env: KEY=VALUE lines, values
// optionally in double quotes, '#' lines ignored.
type Env map[string]string

// ParseEnv reads the text of a backends.env.
func ParseEnv(text string) Env {
	e := Env{}
	for _, l := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		e[k] = strings.Trim(v, `"`)
	}
	return e
}

// Int returns the number under k (0 when absent or not a number).
func (e Env) Int(k string) int { n, _ := strconv.Atoi(e[k]); return n }

// Addr returns the loopback address of the port under k.
func (e Env) Addr(k string) string { return "127.0.0.1:" + e[k] }

// StartBackends starts the harness's real backends (test/backends/start.sh
// of the module at root) in dir with ports from portBase, unless reuse
// says they already run there, and reads their backends.env.
func StartBackends(ctx context.Context, root, dir string, portBase int, reuse bool) (Env, error) {
	if !reuse {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		Logf("starting the harness backends in %s (port base %d)", dir, portBase)
		cmd := exec.CommandContext(ctx, filepath.Join(root, "test/backends/start.sh"), dir, "--fresh")
		cmd.Env = append(os.Environ(), fmt.Sprintf("POSTERN_BACKENDS_PORT_BASE=%d", portBase))
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("test/backends/start.sh %s: %w\n%s(already running? use -reuse, or test/backends/stop.sh %s)", dir, err, out, dir)
		}
	}
	text, err := os.ReadFile(filepath.Join(dir, "backends.env"))
	if err != nil {
		return nil, fmt.Errorf("%w (start the backends, or drop -reuse)", err)
	}
	return ParseEnv(string(text)), nil
}

// StopBackends stops the harness backends StartBackends started in dir.
func StopBackends(root, dir string) {
	Logf("stopping the harness backends")
	cmd := exec.Command(filepath.Join(root, "test/backends/stop.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "stop.sh: %v\n%s", err, out)
	}
}

// The phases of a load window, in the order Window sets them.
const (
	Warming   int32 = iota // the warm-up: work done now does not count
	Measuring              // the measured window
	Stopping               // after it: workers finish their operation and return
)

// Window runs clients workers, work(i, phase, &results[i]), which loop
// until phase is Stopping or ctx is done: a warm-up, then the measured
// window of dur, with start and end called at its edges (CPU snapshots,
// profiles). Workers still busy at the end finish their current operation.
// It returns every worker's result and the measured window's length.
func Window[R any](ctx context.Context, clients int, warmup, dur time.Duration, start, end func(), work func(i int, phase *atomic.Int32, res *R)) ([]R, time.Duration) {
	return WindowUntil(ctx, clients, warmup, dur, 0, nil, start, end, work)
}

// windowPoll is how often WindowUntil asks whether its window has
// measured something once dur has passed.
const windowPoll = 10 * time.Millisecond

// WindowUntil is Window whose measured window, when measured reports
// false at its end (nothing completed in it yet: a backend held up for a
// moment), goes on until measured reports true or the window is limit
// long; the returned length is the window's real one, so a rate over it
// stays true. A limit of dur or less, or a nil measured, is Window.
func WindowUntil[R any](ctx context.Context, clients int, warmup, dur, limit time.Duration, measured func() bool, start, end func(), work func(i int, phase *atomic.Int32, res *R)) ([]R, time.Duration) {
	var phase atomic.Int32
	results := make([]R, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(i, &phase, &results[i])
		}()
	}
	SleepCtx(ctx, warmup)
	start()
	t0 := time.Now()
	phase.Store(Measuring)
	SleepCtx(ctx, dur)
	if measured != nil && limit > dur && !measured() {
		Logf("nothing completed in the %v window: it goes on until something does, %v at most", dur, limit)
		for ctx.Err() == nil && time.Since(t0) < limit && !measured() {
			SleepCtx(ctx, windowPoll)
		}
		Logf("window ended after %v", time.Since(t0).Round(time.Millisecond))
	}
	phase.Store(Stopping)
	elapsed := time.Since(t0)
	end()
	wg.Wait()
	return results, elapsed
}
