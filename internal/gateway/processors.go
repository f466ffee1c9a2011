package gateway

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/procs"
)

// procState is how the gateway runs the Go runtime's processors.
type procState struct {
	// ceiling is the most processors postern runs on at start: the
	// runtime's number (every core, or GOMAXPROCS from the environment,
	// or the container's CPU limit), or the configuration's fixed
	// number. Adaptive processors with Options.ProcessorCeiling follow
	// it as it changes.
	ceiling int
	// loops is how many event loops to start: the ceiling, or, when the
	// ceiling may rise, every CPU the process may run on (runtime.NumCPU
	// at start): a loop with no sessions costs a parked goroutine and
	// three descriptors.
	loops int
	// adaptive: Run sizes the processors to the load up to ceiling.
	adaptive bool
	// before is the runtime's number at start, set again when Run ends.
	before int
}

// setProcessors reads the processors key at start (it waits for a
// restart): a fixed number is set now; adaptive is run by Run.
func (g *Gateway) setProcessors(cfg *config.File) {
	g.procs.ceiling = runtime.GOMAXPROCS(0)
	g.procs.before = g.procs.ceiling
	g.procs.loops = g.procs.ceiling
	if !g.opts.SizeProcessors {
		return
	}
	adaptive, fixed, err := cfg.ProcessorsSetting()
	switch {
	case err != nil: // the configuration was validated: not reached
	case fixed > 0:
		runtime.GOMAXPROCS(fixed)
		g.procs.ceiling, g.procs.loops = fixed, fixed
		g.log.Info("processors fixed", "processors", fixed)
	case adaptive && g.procs.ceiling > 1:
		g.procs.adaptive = true
		if g.opts.ProcessorCeiling != nil {
			g.procs.loops = max(g.procs.ceiling, runtime.NumCPU())
		}
	}
}

// runProcessors sizes the runtime's processors to the load while ctx
// lasts, when processors is adaptive; when ctx ends, the runtime's
// number from before Start is set again.
func (g *Gateway) runProcessors(ctx context.Context, wg *sync.WaitGroup) {
	if !g.opts.SizeProcessors {
		return
	}
	if !g.procs.adaptive {
		if runtime.GOMAXPROCS(0) != g.procs.before {
			wg.Go(func() {
				<-ctx.Done()
				runtime.GOMAXPROCS(g.procs.before)
			})
		}
		return
	}
	pol := procs.Policy{Max: g.procs.ceiling, Window: g.opts.ProcessorWindow}
	c, err := procs.NewController(pol, procs.ProcessCPU, func(n int) {
		runtime.GOMAXPROCS(n)
		g.loops.setActive(n)
	})
	if err != nil {
		g.log.Warn("processors stay at the ceiling", "processors", g.procs.ceiling, "err", err)
		return
	}
	c.Log = g.log
	c.Ceiling = g.opts.ProcessorCeiling
	g.log.Info("processors sized to the load", "max", g.procs.ceiling, "window", c.Window(), "follow_cpu_limit", c.Ceiling != nil)
	wg.Go(func() {
		t := time.NewTimer(c.Window())
		defer t.Stop()
		after := func(d time.Duration) <-chan time.Time {
			t.Reset(d) // fired or drained: Run waits on it each time
			return t.C
		}
		_ = c.Run(ctx, after) // returns ctx's error when the gateway stops
	})
}
