package gateway

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/service"
)

// waitProcessors polls the runtime's processors, and the event loops
// taking new sessions, until ok accepts them.
func waitProcessors(t *testing.T, g *Gateway, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := runtime.GOMAXPROCS(0)
		loops := n
		if grp := g.loops.group.Load(); grp != nil {
			loops = grp.Active()
		}
		if ok(n) && loops == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d processors and %d active loops after 20 s", what, n, loops)
		}
		time.Sleep(time.Millisecond)
	}
}

// runSized runs a gateway that sizes the processors (as `postern serve`
// does) on conf, and returns it and the function that stops it and
// checks the runtime's number is back to what it was.
func runSized(t *testing.T, cfg, conf string) (*Gateway, func()) {
	t.Helper()
	return runSizedWith(t, cfg, conf, Options{Log: new(syncBuffer)})
}

// runSizedWith is runSized with more options (the log's writer, the
// processor ceiling).
func runSizedWith(t *testing.T, cfg, conf string, opts Options) (*Gateway, func()) {
	t.Helper()
	before := runtime.GOMAXPROCS(0)
	writeConfig(t, cfg, conf)
	ctx, cancel := context.WithCancel(context.Background())
	opts.SizeProcessors, opts.ProcessorWindow = true, 5*time.Millisecond
	g, err := Start(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if n := runtime.GOMAXPROCS(0); n != before {
			runtime.GOMAXPROCS(before)
			t.Errorf("after Run: %d processors, want the %d from before", n, before)
		}
	}
	t.Cleanup(stop)
	return g, stop
}

// TestProcessorsFollowTheLoad: left adaptive, an idle gateway comes down
// to one processor, a busy process gets them back within a few windows,
// sessions work either way, and Run's end restores the runtime's number.
func TestProcessorsFollowTheLoad(t *testing.T) {
	ceiling := runtime.GOMAXPROCS(0)
	if ceiling < 2 {
		t.Skip("one processor here: nothing to size")
	}
	_, cfg, conf := loopsGateway(t)
	g, stop := runSized(t, cfg, conf(true))
	if grp := g.loops.group.Load(); grp != nil && grp.Len() != ceiling {
		t.Errorf("%d event loops, want one per processor of the ceiling (%d)", grp.Len(), ceiling)
	}
	waitProcessors(t, g, "idle", func(n int) bool { return n == 1 })
	c, r := dialFrom(t, "127.0.0.62", g.Addr(service.SMTP))
	mailSession(t, service.SMTP, c, r)
	c.Close()

	// A busy process: a goroutine spinning takes the one processor.
	stopSpin := spin()
	waitProcessors(t, g, "busy", func(n int) bool { return n >= 2 })
	stopSpin()
	waitProcessors(t, g, "idle again", func(n int) bool { return n == 1 })
	stop()
}

// spin keeps a goroutine busy until the returned function is called.
func spin() (stop func()) {
	quit := make(chan struct{})
	spun := make(chan int)
	go func() {
		x := 0
		for {
			select {
			case <-quit:
				spun <- x
				return
			default:
			}
			for i := range 100_000 {
				x += i
			}
		}
	}()
	return func() {
		close(quit)
		<-spun
	}
}

// TestProcessorsFollowTheCeiling: adaptive processors read the ceiling
// (in serve: the runtime's default, which follows the container's CPU
// limit) as it changes. Lowered to one, a busy process stays on one
// processor and one event loop; raised again, the load takes the
// processors back; each change is logged, and Run's end sets the
// ceiling of the time.
func TestProcessorsFollowTheCeiling(t *testing.T) {
	start := runtime.GOMAXPROCS(0)
	if start < 2 {
		t.Skip("one processor here: nothing to size")
	}
	var ceiling, reads atomic.Int32
	ceiling.Store(int32(start))
	readCeiling := func(cur int) int {
		reads.Add(1)
		return int(ceiling.Load())
	}
	logw := new(syncBuffer)
	_, cfg, conf := loopsGateway(t)
	g, stop := runSizedWith(t, cfg, conf(true), Options{Log: logw, ProcessorCeiling: readCeiling})
	if grp := g.loops.group.Load(); grp != nil && grp.Len() != max(start, runtime.NumCPU()) {
		t.Errorf("%d event loops, want one per CPU (%d) when the ceiling may rise", grp.Len(), max(start, runtime.NumCPU()))
	}
	waitReads := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for at := reads.Load(); reads.Load() < at+n; {
			if time.Now().After(deadline) {
				t.Fatalf("the ceiling was not read %d times in 20 s", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(logw.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log after 20 s:\n%s", want, logw.String())
			}
			time.Sleep(time.Millisecond)
		}
	}

	ceiling.Store(1)
	waitLog(fmt.Sprintf("processor ceiling changed\" from=%d to=1", start))
	c, r := dialFrom(t, "127.0.0.64", g.Addr(service.SMTP))
	mailSession(t, service.SMTP, c, r)
	c.Close()
	stopSpin := spin()
	waitReads(2) // at least 40 windows spinning: well over the one that would double the processors
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("busy under a ceiling of one: %d processors", n)
	}
	if grp := g.loops.group.Load(); grp != nil && grp.Active() != 1 {
		t.Errorf("busy under a ceiling of one: %d active loops", grp.Active())
	}

	ceiling.Store(int32(start))
	waitLog(fmt.Sprintf("processor ceiling changed\" from=1 to=%d", start))
	waitProcessors(t, g, "busy under the ceiling raised again", func(n int) bool { return n >= 2 })
	stopSpin()
	stop() // checks the runtime is back at the ceiling, the number from before
}

// TestProcessorsFixed: a number is set at start, the event loops are as
// many, and Run's end restores the runtime's number; all leaves them be.
func TestProcessorsFixed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops run on Linux")
	}
	before := runtime.GOMAXPROCS(0)
	_, cfg, conf := loopsGateway(t)
	g, stop := runSized(t, cfg, "processors: 1\n"+conf(true))
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("processors: 1 runs on %d", n)
	}
	c, r := dialFrom(t, "127.0.0.63", g.Addr(service.IMAP))
	mailSession(t, service.IMAP, c, r)
	c.Close()
	if grp := g.loops.group.Load(); grp == nil || grp.Len() != 1 {
		t.Fatalf("processors: 1: event loops %v, want 1", grp)
	}
	stop()

	g, stop = runSized(t, cfg, "processors: all\n"+conf(true))
	if n := runtime.GOMAXPROCS(0); n != before {
		t.Fatalf("processors: all runs on %d, want %d", n, before)
	}
	if grp := g.loops.group.Load(); grp != nil && grp.Len() != before {
		t.Fatalf("processors: all: %d event loops, want %d", grp.Len(), before)
	}
	stop()
}

// TestProcessorsKey: processors waits for a restart, and a bad value is
// refused with its position.
func TestProcessorsKey(t *testing.T) {
	if !needsRestart("processors") {
		t.Error("processors must be listed among the keys that wait for a restart")
	}
	_, cfg, conf := loopsGateway(t)
	for _, bad := range []string{"0", "-2", "many", "1.5", "1025"} {
		writeConfig(t, cfg, fmt.Sprintf("processors: %q\n", bad)+conf(true))
		_, err := Start(context.Background(), cfg, Options{Log: new(syncBuffer)})
		if err == nil || !strings.Contains(err.Error(), "bad processors") || !strings.Contains(err.Error(), ":1:") {
			t.Errorf("processors: %s: %v; want a positioned error", bad, err)
		}
	}
}
