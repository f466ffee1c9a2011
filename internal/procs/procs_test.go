package procs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPolicyValidation(t *testing.T) {
	for _, p := range []Policy{
		{Max: 0},
		{Min: 3, Max: 2},
		{Min: -1, Max: 2},
		{Max: 2, Raise: 1.5},
		{Max: 2, Raise: 0.5, Lower: 0.5},
		{Max: 2, Raise: 0.8, Burst: 0.7},
		{Max: 2, Smooth: -1},
		{Max: 2, Lower: -0.1},
		{Max: 2, Window: -time.Second},
		{Max: 2, Hold: -1},
		{Max: 2, Stretch: -1},
		{Max: 2, Quiet: 0.55},
	} {
		if _, err := NewSizer(p, 1); err == nil || !strings.HasPrefix(err.Error(), "procs: ") {
			t.Errorf("NewSizer(%+v) = %v; want an error", p, err)
		}
	}
	s, err := NewSizer(Policy{Max: 4}, 9)
	if err != nil {
		t.Fatal(err)
	}
	if s.Current() != 4 {
		t.Errorf("a start above the ceiling: %d processors, want 4", s.Current())
	}
}

// TestSizerSteps walks a Sizer through the loads it must tell apart
// (the defaults: raise at 0.6 of the processors on average over 4
// windows, at once at 0.9 in one, lower below 0.55 of one fewer).
func TestSizerSteps(t *testing.T) {
	s, err := NewSizer(Policy{Max: 8, Hold: 3}, 8)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		cores float64
		want  int
		why   string
	}{
		{5.0, 8, "busy at the ceiling: stays"},
		{0.5, 8, "light 1 of 3"},
		{0.5, 8, "light 2 of 3"},
		{4.0, 8, "a window at or above 0.55 × 7 resets the count"},
		{0.5, 8, "light 1 of 3 again"},
		{0.5, 8, "light 2 of 3"},
		{0.5, 7, "light 3 of 3: one fewer"},
		{0.5, 7, "the count starts again"},
		{0.5, 7, ""},
		{0.5, 6, "another after three more"},
		{3.2, 6, "3.2 < 0.9 × 6, one window only: no raise; 3.2 ≥ 0.55 × 5: not light"},
		{5.5, 8, "5.5 ≥ 0.9 × 6: doubled at once, held at the ceiling"},
	}
	for i, st := range steps {
		if got := s.Observe(st.cores); got != st.want {
			t.Fatalf("step %d (%.1f cores, %s): %d processors, want %d", i, st.cores, st.why, got, st.want)
		}
	}
	// Down to one.
	for range 100 {
		s.Observe(0.1)
	}
	if s.Current() != 1 {
		t.Fatalf("after a long light spell: %d processors, want 1", s.Current())
	}
	// On one: 0.59 on average stays, 0.605 over four windows doubles.
	for i := range 4 {
		if got := s.Observe(0.59); got != 1 {
			t.Fatalf("0.59 cores (window %d) on one processor: %d, want 1", i, got)
		}
	}
	if got := s.Observe(0.65); got != 2 {
		t.Fatalf("0.605 cores on average over four windows on one processor: %d, want 2", got)
	}
	// On two, the windows from before do not count: three at 1.3 (under
	// 0.9 × 2) are not yet four.
	for i := range 3 {
		if got := s.Observe(1.3); got != 2 {
			t.Fatalf("1.3 cores on two (window %d after the change): %d, want 2", i, got)
		}
	}
	if got := s.Observe(1.3); got != 4 {
		t.Fatalf("1.3 cores on two over four windows: %d, want 4", got)
	}
	// A burst on one processor doubles at once.
	for range 100 {
		s.Observe(0)
	}
	if got := s.Observe(0.95); got != 2 {
		t.Fatalf("one window at 0.95 cores on one processor: %d, want 2", got)
	}
	// A single burst under 0.9 does not.
	for range 100 {
		s.Observe(0)
	}
	if got := s.Observe(0.8); got != 1 {
		t.Fatalf("one window at 0.8 cores after idle windows: %d, want 1", got)
	}
}

// TestSizerHysteresis: a load between the two thresholds keeps whatever
// it has, so the number does not swing.
func TestSizerHysteresis(t *testing.T) {
	for _, start := range []int{1, 2} {
		s, _ := NewSizer(Policy{Max: 2, Hold: 2}, start)
		for range 50 {
			s.Observe(0.58) // < 0.6 × 1, ≥ 0.55 × 1
		}
		if s.Current() != start {
			t.Errorf("0.58 cores from %d processors: %d", start, s.Current())
		}
	}
	s, _ := NewSizer(Policy{Min: 2, Max: 4, Hold: 1}, 4)
	for range 10 {
		s.Observe(0)
	}
	if s.Current() != 2 {
		t.Errorf("idle with a floor of 2: %d processors", s.Current())
	}
}

// fakeCPU is a process CPU clock the test scripts: each reading takes the
// next sample queued, and Now answers that sample's time, so that a tick
// and its sample pair up however the goroutines interleave.
type fakeCPU struct {
	mu      sync.Mutex
	queue   []sample
	last    sample
	nextCPU time.Duration
	nextAt  time.Time
}

type sample struct {
	cpu  time.Duration
	at   time.Time
	fail bool
}

func (f *fakeCPU) read() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) > 0 {
		f.last, f.queue = f.queue[0], f.queue[1:]
	}
	if f.last.fail {
		return 0, errors.New("no reading")
	}
	return f.last.cpu, nil
}

func (f *fakeCPU) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last.at
}

// window queues the sample after w more of wall time and cores × w more
// of CPU time.
func (f *fakeCPU) window(w time.Duration, cores float64, fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextAt = f.nextAt.Add(w)
	f.nextCPU += time.Duration(cores * float64(w))
	f.queue = append(f.queue, sample{cpu: f.nextCPU, at: f.nextAt, fail: fail})
}

// runController runs c.Run on its own goroutine with a tick channel the
// test drives; each wait Run asks for goes to waits (buffered: a test
// that does not look at them leaves them there). stop cancels it and
// checks it returned ctx's error.
func runController(t *testing.T, c *Controller) (tick chan time.Time, waits chan time.Duration, stop func()) {
	t.Helper()
	tick = make(chan time.Time)
	waits = make(chan time.Duration, 100)
	after := func(d time.Duration) <-chan time.Time {
		select {
		case waits <- d:
		default:
		}
		return tick
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, after) }()
	return tick, waits, func() {
		t.Helper()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v", err)
		}
	}
}

// expectOn waits for the next value on ch (a number of processors, a
// wait) and fails unless it is want.
func expectOn[T comparable](t *testing.T, ch chan T, want T, what string) {
	t.Helper()
	select {
	case n := <-ch:
		if n != want {
			t.Fatalf("%s: %v, want %v", what, n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing, want %v", what, want)
	}
}

// fakeController returns a Controller for p that reads f's CPU time and
// clock (its first reading, the one Run starts from, queued) and sends
// every number of processors it sets to sets.
func fakeController(t *testing.T, p Policy) (c *Controller, f *fakeCPU, sets chan int) {
	t.Helper()
	f = &fakeCPU{nextAt: time.Unix(1e9, 0)}
	f.window(0, 0, false) // the reading Run starts from
	sets = make(chan int, 100)
	c, err := NewController(p, f.read, func(n int) { sets <- n })
	if err != nil {
		t.Fatal(err)
	}
	c.Now = f.clock
	return c, f, sets
}

func TestControllerRun(t *testing.T) {
	c, f, sets := fakeController(t, Policy{Max: 2, Hold: 2})
	tick, _, stop := runController(t, c)
	expect := func(want int, what string) {
		t.Helper()
		expectOn(t, sets, want, what)
	}
	expectNone := func(what string) {
		t.Helper()
		select {
		case n := <-sets:
			t.Fatalf("%s: set %d, want nothing", what, n)
		default:
		}
	}
	step := func(cores float64, fail bool) {
		f.window(c.Window(), cores, fail)
		tick <- time.Time{}
	}
	expect(2, "the start")
	step(0.2, false)
	expectNone("one light window of two")
	step(0.2, false)
	expect(1, "two light windows")
	step(0.3, true) // a failed reading: skipped, and the next window is measured from the one after
	step(0.9, false)
	expectNone("the window after a failed reading")
	step(0.9, false)
	expect(2, "0.9 cores on one processor")
	step(0.1, false)
	step(0.1, false)
	expect(1, "two light windows again")
	stop()
	expect(2, "the ceiling set again on the way out")
}

// TestControllerQuiet: at the minimum, each window that used less than
// Quiet of a processor doubles the wait before the next sample, up to
// Stretch windows; above the minimum or under load the wait is one window
// again, and a load that starts during a long wait gets its processors at
// the end of it.
func TestControllerQuiet(t *testing.T) {
	c, f, sets := fakeController(t, Policy{Max: 2, Hold: 1})
	tick, waits, stop := runController(t, c)
	w := c.Window()
	// step checks the wait Run asked for, then ends it with cores used.
	step := func(wantWait time.Duration, cores float64, what string) {
		t.Helper()
		expectOn(t, waits, wantWait, what+": the wait Run asks for")
		f.window(wantWait, cores, false)
		tick <- time.Time{}
	}
	expectOn(t, sets, 2, "the start")
	step(w, 0.01, "two processors, nearly idle")
	expectOn(t, sets, 1, "one light window (hold 1)")
	step(w, 0.01, "the first window at the minimum: not stretched before it")
	step(2*w, 0.01, "one quiet window at the minimum")
	step(4*w, 0.01, "two quiet windows")
	step(4*w, 0.2, "at most four windows")
	step(w, 0.01, "a window that was not quiet")
	step(2*w, 0.95, "quiet again, then a load")
	expectOn(t, sets, 2, "the load's processors at the end of the long wait")
	step(w, 0.01, "above the minimum: one window, however idle")
	expectOn(t, sets, 1, "idle again")
	stop()
	expectOn(t, sets, 2, "the ceiling set on the way out")
}

// TestSizerQuietOff: a negative Quiet or a Stretch of 1 keeps every wait
// at one window.
func TestSizerQuietOff(t *testing.T) {
	for _, p := range []Policy{{Max: 1, Quiet: -1}, {Max: 1, Stretch: 1}} {
		s, err := NewSizer(p, 1)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			s.Observe(0)
			if s.Next() != DefaultWindow {
				t.Fatalf("%+v: next wait %v, want %v", p, s.Next(), DefaultWindow)
			}
		}
	}
	if _, err := NewSizer(Policy{Max: 1, Quiet: 0.6}, 1); err == nil {
		t.Error("a Quiet share above Lower was taken")
	}
}

// TestSizerSetMax: a lowered maximum takes the processors down at once
// and caps the load's doubling; a raised one is reached by the load.
func TestSizerSetMax(t *testing.T) {
	s, err := NewSizer(Policy{Max: 4}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.SetMax(2); n != 2 || s.Max() != 2 {
		t.Fatalf("SetMax(2) from 4: %d processors, max %d", n, s.Max())
	}
	if n := s.Observe(2); n != 2 {
		t.Fatalf("saturated under a maximum of 2: %d", n)
	}
	if n := s.SetMax(4); n != 2 {
		t.Fatalf("SetMax(4): %d processors, want the 2 in use until the load asks", n)
	}
	if n := s.Observe(1.9); n != 4 {
		t.Fatalf("saturated under a maximum of 4 again: %d", n)
	}
	if n := s.SetMax(0); n != 1 || s.Max() != 1 {
		t.Fatalf("SetMax(0): %d processors, max %d; want the policy's minimum, 1", n, s.Max())
	}
}

// TestControllerCeiling: the ceiling is read every CeilingEvery windows
// with the processors in use; a lower one is set at once, a higher one
// when the load asks, each change is logged, and Run's end sets the
// ceiling of the time.
func TestControllerCeiling(t *testing.T) {
	c, f, sets := fakeController(t, Policy{Max: 4})
	var logs strings.Builder
	var mu sync.Mutex
	c.Log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	asked := make(chan int, 10)
	ceilings := []int{2, 2, 4}
	c.Ceiling = func(cur int) int {
		asked <- cur
		n := ceilings[0]
		if len(ceilings) > 1 {
			ceilings = ceilings[1:]
		}
		return n
	}
	c.CeilingEvery = 2
	tick, _, stop := runController(t, c)
	step := func() {
		f.window(c.Window(), 3, false) // three cores' worth: saturated below 4
		tick <- time.Time{}
	}
	expectOn(t, sets, 4, "the start")
	step()
	step()
	expectOn(t, asked, 4, "the ceiling read in the second window, with the processors in use")
	expectOn(t, sets, 2, "a ceiling of 2")
	step()
	step()
	expectOn(t, asked, 2, "the ceiling read again")
	step()
	step()
	expectOn(t, asked, 2, "the third reading")
	expectOn(t, sets, 4, "a ceiling of 4 again, under a saturating load")
	stop()
	expectOn(t, sets, 4, "the ceiling set on the way out")
	mu.Lock()
	got := logs.String()
	mu.Unlock()
	for _, want := range []string{"processor ceiling changed\" from=4 to=2 processors=2", "processor ceiling changed\" from=2 to=4 processors=2"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in the log:\n%s", want, got)
		}
	}
	if strings.Count(got, "processor ceiling changed") != 2 {
		t.Errorf("a ceiling that did not change was logged:\n%s", got)
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestProcessCPU reads the real process's CPU time, which grows while
// the test spins.
func TestProcessCPU(t *testing.T) {
	a, err := ProcessCPU()
	if err != nil {
		t.Skip(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for {
		for i := range 1_000_000 {
			x += i
		}
		b, err := ProcessCPU()
		if err != nil {
			t.Fatal(err)
		}
		if b > a {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time did not grow in 5 s of spinning (%v, %d)", a, x)
		}
	}
}
