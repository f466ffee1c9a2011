package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/postern/postern/internal/evloop"
)

// loopState is the event loops the mail gateways' sessions run on (IMAP
// and POP3 up to the login and the relay right after it, SMTP throughout),
// started with the first service that uses them.
type loopState struct {
	once sync.Once
	// group is the loops once started (nil before, or when they cannot
	// start); setActive reads it from another goroutine.
	group atomic.Pointer[evloop.Group]
	// active is how many loops take new sessions (the runtime's
	// processors under adaptive processors); 0: all.
	active atomic.Int32
}

// setActive has new sessions start on the first n loops only, now and
// when the loops start later.
func (s *loopState) setActive(n int) {
	s.active.Store(int32(n))
	if grp := s.group.Load(); grp != nil {
		grp.SetActive(n)
	}
}

// eventLoops returns the event loops when on (event_loops), nil when off
// or when they cannot start here (then sessions run on goroutines).
func (g *Gateway) eventLoops(on bool) *evloop.Group {
	if !on {
		return nil
	}
	g.loops.once.Do(func() {
		grp, err := evloop.Start(g.procs.loops, g.log)
		if err != nil {
			g.log.Warn("event loops unavailable; sessions run on goroutines", "err", err)
			return
		}
		g.loops.group.Store(grp)
		if n := g.loops.active.Load(); n > 0 {
			grp.SetActive(int(n))
		}
		g.log.Info("event loops started", "loops", grp.Len())
	})
	return g.loops.group.Load()
}

// closeLoops stops the event loops once every session has ended.
func (g *Gateway) closeLoops() {
	if grp := g.loops.group.Load(); grp != nil {
		grp.Close()
	}
}
