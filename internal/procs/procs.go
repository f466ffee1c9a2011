// Package procs sizes the Go runtime's processors (GOMAXPROCS) to the
// process's load: as few as its CPU use needs, up to a ceiling.
//
// On a machine the gateway shares with the mail server, one processor is
// the cheaper way to serve a load that fits in one core: the scheduler
// then never wakes a second thread to run work the first would have run a
// moment later, and each such wake-up costs a context switch and, on a
// virtual machine, an inter-processor interrupt. A load that does not fit
// gets more processors within one sampling window, so the throughput is
// the same as with all of them.
package procs

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of Policy.
const (
	// DefaultWindow is how often the process's CPU use is sampled.
	DefaultWindow = 250 * time.Millisecond
	// DefaultRaise: when the last DefaultSmooth windows used this share
	// of the processors in use, on average, they are doubled (up to the
	// ceiling). Measured on a 2-core machine, one processor serving 0.4
	// cores of web requests spent 14 % less CPU a request than two and
	// answered as fast; at 0.7 cores it capped the rate a fifth below two
	// processors'.
	DefaultRaise = 0.6
	// DefaultBurst: one window that used this share of the processors in
	// use doubles them at once (they were all but saturated).
	DefaultBurst = 0.9
	// DefaultSmooth is how many windows DefaultRaise averages over (1 s
	// at DefaultWindow): a burst shorter than that, a client's TLS
	// handshakes or a collection, does not add processors for good.
	DefaultSmooth = 4
	// DefaultLower: while every window of DefaultHold uses less than this
	// share of one processor fewer, one is taken away. One processor does
	// the same work with less CPU than two (the 0.4 cores above were 0.47
	// on two), so a load just under this on two still sits below
	// DefaultRaise on one.
	DefaultLower = 0.55
	// DefaultHold is how many windows in a row must be light before a
	// processor is taken away (5 s at DefaultWindow).
	DefaultHold = 20
	// DefaultCeilingEvery is how many windows pass between two readings
	// of Controller.Ceiling (10 s at DefaultWindow).
	DefaultCeilingEvery = 40
	// DefaultQuiet: a window that used less than this share of one
	// processor, with the processors at the minimum, is quiet, and the
	// next one is twice as long (up to DefaultStretch windows). Each
	// sample wakes the process: measured on a 2-core virtual machine, an
	// idle postern spent 0.8 ms of CPU a second on four samples a second
	// and nothing without them.
	DefaultQuiet = 0.1
	// DefaultStretch bounds how many windows a quiet process waits
	// between two samples (1 s at DefaultWindow): a load that starts
	// then gets more processors within that and one window.
	DefaultStretch = 4
)

// Policy says when to add and remove processors. The zero value of a
// field takes its default; Max is required.
type Policy struct {
	Min, Max int           // the range of processors; Min ≥ 1 (default 1), Max ≥ Min
	Window   time.Duration // sampling period
	Raise    float64       // average share of the processors in use, over Smooth windows, that doubles them
	Burst    float64       // share in one window that doubles them at once
	Smooth   int           // windows Raise averages over
	Lower    float64       // share of one processor fewer under which one goes
	Hold     int           // light windows in a row before one goes
	Quiet    float64       // share of one processor under which a window at Min is quiet (negative: none is)
	Stretch  int           // the most windows between two samples while quiet (1: always one)
}

func (p Policy) withDefaults() (Policy, error) {
	if p.Min == 0 {
		p.Min = 1
	}
	if p.Window == 0 {
		p.Window = DefaultWindow
	}
	if p.Raise == 0 {
		p.Raise = DefaultRaise
	}
	if p.Burst == 0 {
		p.Burst = max(DefaultBurst, p.Raise)
	}
	if p.Smooth == 0 {
		p.Smooth = DefaultSmooth
	}
	if p.Lower == 0 {
		p.Lower = min(DefaultLower, p.Raise*0.9)
	}
	if p.Hold == 0 {
		p.Hold = DefaultHold
	}
	if p.Quiet == 0 {
		p.Quiet = DefaultQuiet
	}
	if p.Stretch == 0 {
		p.Stretch = DefaultStretch
	}
	switch {
	case p.Min < 1 || p.Max < p.Min:
		return p, fmt.Errorf("procs: processors %d–%d: want 1 ≤ min ≤ max", p.Min, p.Max)
	case p.Window < 0 || p.Hold < 0 || p.Smooth < 0 || p.Stretch < 0:
		return p, fmt.Errorf("procs: window %v, hold %d, smooth %d and stretch %d must be positive", p.Window, p.Hold, p.Smooth, p.Stretch)
	case p.Quiet >= p.Lower:
		return p, fmt.Errorf("procs: quiet %.2f: want below lower %.2f", p.Quiet, p.Lower)
	case !(p.Lower > 0 && p.Lower < p.Raise && p.Raise <= p.Burst && p.Burst <= 1):
		return p, fmt.Errorf("procs: lower %.2f, raise %.2f, burst %.2f: want 0 < lower < raise ≤ burst ≤ 1", p.Lower, p.Raise, p.Burst)
	}
	return p, nil
}

// Sizer decides the number of processors from one window's CPU use at a
// time. It holds no clock and sets nothing: Controller feeds it.
type Sizer struct {
	p       Policy
	cur     int
	light   int       // light windows in a row
	recent  []float64 // the last windows' use at cur processors, up to Smooth
	stretch int       // windows until the next sample (1, or more while quiet)
}

// NewSizer returns a Sizer at cur processors (clamped to the policy's
// range).
func NewSizer(p Policy, cur int) (*Sizer, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Sizer{p: p, cur: min(max(cur, p.Min), p.Max), recent: make([]float64, 0, p.Smooth), stretch: 1}, nil
}

// Next returns how long to wait before the next sample: one window, or,
// after quiet windows in a row at the minimum, twice as long as the wait
// before, up to Stretch windows. Any other window brings it back to one.
func (s *Sizer) Next() time.Duration { return time.Duration(s.stretch) * s.p.Window }

// Current returns the number of processors the Sizer last decided.
func (s *Sizer) Current() int { return s.cur }

// Observe takes one window's CPU use, in cores (CPU time over wall time),
// and returns the number of processors for the next window.
//
// The processors double when one window uses Burst × the processors in
// use, or the last Smooth windows Raise × on average: a saturated window
// shows only what the processors could give, not what was asked, so the
// step is large. One processor goes only after Hold windows in a row
// below Lower × (processors − 1), so that the load would still fit with
// one fewer, below the point that adds it back. Windows before a change
// do not count after it.
func (s *Sizer) Observe(cores float64) int {
	if len(s.recent) == s.p.Smooth {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:len(s.recent)-1]
	}
	s.recent = append(s.recent, cores)
	if s.cur == s.p.Min && cores < s.p.Quiet {
		s.stretch = min(s.stretch*2, max(s.p.Stretch, 1))
	} else {
		s.stretch = 1
	}
	var sum float64
	for _, c := range s.recent {
		sum += c
	}
	n := float64(s.cur)
	busy := cores >= s.p.Burst*n || (len(s.recent) == s.p.Smooth && sum/float64(len(s.recent)) >= s.p.Raise*n)
	switch {
	case busy && s.cur < s.p.Max:
		s.set(min(s.cur*2, s.p.Max))
	case s.cur > s.p.Min && cores < s.p.Lower*float64(s.cur-1):
		s.light++
		if s.light >= s.p.Hold {
			s.set(s.cur - 1)
		}
	default:
		s.light = 0
	}
	return s.cur
}

// Max returns the most processors the Sizer decides.
func (s *Sizer) Max() int { return s.p.Max }

// SetMax changes the most processors (at least the policy's Min) and
// returns the number for the next window: the current one, or the new
// maximum when that is lower. A raised maximum is reached the way any
// other is, by the load.
func (s *Sizer) SetMax(n int) int {
	s.p.Max = max(n, s.p.Min)
	if s.cur > s.p.Max {
		s.set(s.p.Max)
	}
	return s.cur
}

func (s *Sizer) set(n int) {
	s.cur, s.light, s.recent = n, 0, s.recent[:0]
}

// Controller samples the process's CPU use every window and sets the
// runtime's processors as its Sizer decides.
type Controller struct {
	// CPU returns the process's CPU time so far (user and system, all
	// threads).
	CPU func() (time.Duration, error)
	// Set sets the number of processors (runtime.GOMAXPROCS).
	Set func(n int)
	// Now returns the current time (time.Now).
	Now func() time.Time
	// Log receives a debug line for every change, and an info line when
	// the ceiling changes; nil: none.
	Log *slog.Logger
	// Ceiling, when set, returns the most processors the process may have
	// now, read every CeilingEvery windows' time: RuntimeDefault follows the
	// machine's CPUs and the container's CPU limit. It is given the
	// processors in use and leaves the runtime with them. Nil: the
	// policy's Max for good.
	Ceiling func(cur int) int
	// CeilingEvery is how many windows' time passes between two
	// readings of Ceiling; 0: DefaultCeilingEvery.
	CeilingEvery int

	sizer  *Sizer
	window time.Duration
}

// NewController returns a Controller for policy p, starting at the
// policy's Max processors, reading the process's CPU time with cpu and
// setting processors with set.
func NewController(p Policy, cpu func() (time.Duration, error), set func(int)) (*Controller, error) {
	s, err := NewSizer(p, p.Max)
	if err != nil {
		return nil, err
	}
	return &Controller{CPU: cpu, Set: set, Now: time.Now, sizer: s, window: s.p.Window}, nil
}

// Window returns the sampling period (while the process is not quiet).
func (c *Controller) Window() time.Duration { return c.window }

// Current returns the processors last set (or the starting number).
func (c *Controller) Current() int { return c.sizer.Current() }

// Run sets the starting number of processors, then samples whenever the
// channel after returns for the Sizer's next wait fires (time.After, or a
// reused timer) until ctx is done, and sets the ceiling before it
// returns. A failed CPU reading skips its window. Run returns ctx's
// error.
func (c *Controller) Run(ctx context.Context, after func(time.Duration) <-chan time.Time) error {
	c.Set(c.sizer.Current())
	defer func() { c.Set(c.sizer.Max()) }()
	every := c.CeilingEvery
	if every <= 0 {
		every = DefaultCeilingEvery
	}
	lastCPU, err := c.CPU()
	lastAt := c.Now()
	ok := err == nil
	var waited time.Duration // since the ceiling was last read
	for {
		d := c.sizer.Next()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-after(d):
		}
		if waited += d; c.Ceiling != nil && waited >= time.Duration(every)*c.window {
			waited = 0
			c.readCeiling()
		}
		cpu, err := c.CPU()
		at := c.Now()
		if err != nil {
			ok = false
			continue
		}
		if ok && at.After(lastAt) {
			cores := float64(cpu-lastCPU) / float64(at.Sub(lastAt))
			before := c.sizer.Current()
			if n := c.sizer.Observe(cores); n != before {
				c.Set(n)
				if c.Log != nil {
					c.Log.Debug("processors", "from", before, "to", n, "cpu_cores", fmt.Sprintf("%.2f", cores))
				}
			}
		}
		lastCPU, lastAt, ok = cpu, at, true
	}
}

// readCeiling asks Ceiling for the most processors and applies a change.
func (c *Controller) readCeiling() {
	before, cur := c.sizer.Max(), c.sizer.Current()
	n := c.Ceiling(cur)
	if n < 1 || n == before {
		return
	}
	if next := c.sizer.SetMax(n); next != cur {
		c.Set(next)
	}
	if c.Log != nil {
		c.Log.Info("processor ceiling changed", "from", before, "to", c.sizer.Max(), "processors", c.sizer.Current())
	}
}
