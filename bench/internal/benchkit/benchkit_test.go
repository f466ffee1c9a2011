package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want float64
	}{{nil, 0}, {[]float64{7}, 7}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1}, 2.5}, {[]float64{9, 1, 5, 3}, 4}} {
		in := append([]float64(nil), c.v...)
		if m := Median(c.v); m != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.v, m, c.want)
		}
		if !slices.Equal(in, c.v) {
			t.Errorf("Median changed its argument: %v", c.v)
		}
	}
}

func TestModuleRootAndLogTail(t *testing.T) {
	root, err := ModuleRoot("go test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "postern")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	p := filepath.Join(t.TempDir(), "log")
	var b bytes.Buffer
	for i := range 20 {
		b.WriteString(string(rune('a'+i)) + "\n")
	}
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := LogTail(p, 3); got != "r\ns\nt" {
		t.Errorf("LogTail = %q", got)
	}
	if got := LogTail(filepath.Join(t.TempDir(), "none"), 3); got != "" {
		t.Errorf("LogTail of no file = %q", got)
	}
}

func TestSleepCtxEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	SleepCtx(ctx, time.Hour)
	if time.Since(start) > 10*time.Second {
		t.Fatal("SleepCtx did not end with its context")
	}
	start = time.Now()
	SleepCtx(context.Background(), time.Millisecond)
	if time.Since(start) < time.Millisecond {
		t.Fatal("SleepCtx returned early")
	}
}

// TestRelay: the relay sends the PROXY v2 header announcing the client's
// address, then relays both ways; Close waits for the session to end.
func TestRelay(t *testing.T) {
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := be.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		hdr := make([]byte, 28) // PROXY v2 for two IPv4 address pairs
		if _, err := io.ReadFull(r, hdr); err != nil {
			got <- nil
			return
		}
		got <- hdr
		line, _ := r.ReadString('\n')
		io.WriteString(c, "echo "+line)
	}()
	r, err := StartRelay(be.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hello\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || reply != "echo hello\n" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	want := testenv.ProxyV2Header(c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort())
	if h := <-got; !bytes.Equal(h, want) {
		t.Errorf("PROXY header %x, want %x", h, want)
	}
	c.Close()
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the session ended")
	}
}

func TestOnlyAndEnv(t *testing.T) {
	all := Only(" , ")
	if !all("fetch") || !all("anything") {
		t.Error("an empty list runs every scenario")
	}
	some := Only("fetch, retr")
	if !some("fetch") || !some("retr") || some("imaplogin") {
		t.Error("a list runs exactly its scenarios")
	}
	e := ParseEnv("# POSTERN_X=1\nPOSTERN_BACKENDS_DIR=/tmp/x\n  POSTERN_BACKENDS_USERS=\"a:b c:d\"\nPOSTERN_BACKENDS_IMAP_PROXY_PORT=24143\nnot a pair\n")
	if len(e) != 3 || e["POSTERN_BACKENDS_DIR"] != "/tmp/x" || e["POSTERN_BACKENDS_USERS"] != "a:b c:d" {
		t.Errorf("ParseEnv: %q", e)
	}
	if e.Int("POSTERN_BACKENDS_IMAP_PROXY_PORT") != 24143 || e.Int("POSTERN_BACKENDS_DIR") != 0 || e.Addr("POSTERN_BACKENDS_IMAP_PROXY_PORT") != "127.0.0.1:24143" {
		t.Errorf("Int/Addr: %d %d %s", e.Int("POSTERN_BACKENDS_IMAP_PROXY_PORT"), e.Int("POSTERN_BACKENDS_DIR"), e.Addr("POSTERN_BACKENDS_IMAP_PROXY_PORT"))
	}
}

// TestWindow: work runs in every worker through the three phases; start
// and end mark the measured window, which lasts about dur; only work done
// while measuring counts.
func TestWindow(t *testing.T) {
	var started, ended atomic.Bool
	results, elapsed := Window(context.Background(), 3, 20*time.Millisecond, 50*time.Millisecond,
		func() { started.Store(true) }, func() { ended.Store(true) },
		func(i int, phase *atomic.Int32, res *[2]int) {
			res[0] = i
			for p := phase.Load(); p != Stopping; p = phase.Load() {
				if p == Measuring {
					res[1]++
				}
				time.Sleep(time.Millisecond)
			}
		})
	if !started.Load() || !ended.Load() {
		t.Error("start and end must run")
	}
	if elapsed < 50*time.Millisecond {
		t.Errorf("window of %v, want at least 50ms", elapsed)
	}
	if len(results) != 3 {
		t.Fatalf("%d results", len(results))
	}
	for i, r := range results {
		if r[0] != i || r[1] == 0 {
			t.Errorf("worker %d: %v", i, r)
		}
	}
	// A cancelled context ends the window at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	Window(ctx, 2, time.Hour, time.Hour, func() {}, func() {}, func(i int, phase *atomic.Int32, res *int) {
		for phase.Load() != Stopping && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	})
	if time.Since(start) > 10*time.Second {
		t.Error("a cancelled window must end at once")
	}
}

// TestWindowUntil: a window in which nothing was measured at its end goes
// on until something is, up to its limit, and reports its real length; a
// window that measured something ends at dur.
func TestWindowUntil(t *testing.T) {
	// Workers that complete their first operation 150 ms into the window
	// (a backend held up), with a 20 ms window and a 5 s limit: the
	// window goes on to that operation.
	var done atomic.Int64
	_, elapsed := WindowUntil(context.Background(), 2, 0, 20*time.Millisecond, 5*time.Second, func() bool { return done.Load() > 0 },
		func() {}, func() {},
		func(i int, phase *atomic.Int32, res *int) {
			for phase.Load() == Warming {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(150 * time.Millisecond)
			if phase.Load() == Measuring {
				*res++
				done.Add(1)
			}
			for phase.Load() != Stopping {
				time.Sleep(time.Millisecond)
			}
		})
	if elapsed < 150*time.Millisecond || elapsed >= 5*time.Second {
		t.Errorf("held-up window: %v, want from 150ms to its first operation, under the 5s limit", elapsed)
	}
	if done.Load() == 0 {
		t.Error("held-up window: ended before its first operation")
	}
	// Nothing ever completes: the window ends at its limit.
	_, elapsed = WindowUntil(context.Background(), 1, 0, 20*time.Millisecond, 200*time.Millisecond, func() bool { return false },
		func() {}, func() {},
		func(i int, phase *atomic.Int32, res *int) {
			for phase.Load() != Stopping {
				time.Sleep(time.Millisecond)
			}
		})
	if elapsed < 200*time.Millisecond {
		t.Errorf("stalled window: %v, want its 200ms limit", elapsed)
	}
	// Measured at dur: no longer than a plain Window.
	_, elapsed = WindowUntil(context.Background(), 1, 0, 50*time.Millisecond, time.Hour, func() bool { return true },
		func() {}, func() {},
		func(i int, phase *atomic.Int32, res *int) {
			for phase.Load() != Stopping {
				time.Sleep(time.Millisecond)
			}
		})
	if elapsed < 50*time.Millisecond || elapsed > 10*time.Second {
		t.Errorf("measured window: %v, want its 50ms", elapsed)
	}
}
