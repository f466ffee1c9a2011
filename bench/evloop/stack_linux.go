package main

import (
	"iter"
	"sync/atomic"
)

// The stack cost (-costs stack) runs each checked session's reads before
// it relays (-login, -smtp-checks) on a coroutine of its own, as postern
// runs a session on a coroutine of its loop (internal/evloop): the loop
// resumes the session's coroutine for each read, the read is handled at
// the bottom of stackDepth calls, and before it waits again the
// coroutine returns up through them and calls down again, as postern's
// sessions return from a read to their command loop and call down to
// their next wait. Each call has stackFrame bytes of its own that it
// writes on the way down and reads on the way up. It measures what a
// session's own stack costs when many sessions take turns on a loop and
// each finds its stack out of the caches.
const (
	stackDepth = 16
	stackFrame = 160
)

// coro is a session's coroutine.
type coro struct {
	next func() (struct{}, bool)
	stop func()
	// The read to handle when resumed.
	l *loop
	s *sock
	k *checked
	// ended: the session ended during the read it runs; the coroutine
	// goes back to the pool once it waits again.
	ended bool
}

// coroReads counts the reads handled on sessions' coroutines.
var coroReads atomic.Int64

// coroPool is a loop's idle coroutines, reused last in first out as
// internal/evloop reuses its workers.
type coroPool struct{ idle []*coro }

// maxIdleCoros is internal/evloop's maxIdleWorkers.
const maxIdleCoros = 64

func (p *coroPool) get() *coro {
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		return c
	}
	c := &coro{}
	c.next, c.stop = iter.Pull(func(yield func(struct{}) bool) {
		for dive(stackDepth, c, yield) {
		}
	})
	c.next() // down to its first wait
	return c
}

func (p *coroPool) put(c *coro) {
	c.l, c.s, c.k = nil, nil, nil
	if len(p.idle) < maxIdleCoros {
		p.idle = append(p.idle, c)
		return
	}
	c.stop()
}

// dive calls itself d deep, each call touching stackFrame bytes of its
// own on the way down and up, waits at the bottom for the loop to resume
// it, handles the read it was given there and returns; false when the
// coroutine is stopped.
//
//go:noinline
func dive(d int, c *coro, yield func(struct{}) bool) bool {
	var frame [stackFrame]byte
	touch(&frame)
	if d > 0 {
		ok := dive(d-1, c, yield)
		touch(&frame)
		return ok
	}
	if !yield(struct{}{}) {
		return false
	}
	c.l.readableCheckedNow(c.s, c.k)
	return true
}

// touch writes a frame's first, middle and last bytes: a call the
// compiler cannot see through, so the frame is there and touched.
//
//go:noinline
func touch(f *[stackFrame]byte) {
	f[0]++
	f[stackFrame/2]++
	f[stackFrame-1]++
}

// onCoro handles a checked session's read on the session's coroutine.
func (l *loop) onCoro(s *sock, k *checked) {
	if k.co == nil {
		k.co = l.coros.get()
	}
	c := k.co
	c.l, c.s, c.k = l, s, k
	l.coroNow = c
	coroReads.Add(1)
	c.next()
	l.coroNow = nil
	if c.ended {
		c.ended = false
		l.coros.put(c)
	}
}

// endCoro gives a session's coroutine back to its loop: once it has
// waited again, when the session ends on it.
func (l *loop) endCoro(k *checked) {
	if k == nil || k.co == nil {
		return
	}
	if k.co == l.coroNow {
		k.co.ended = true
	} else {
		l.coros.put(k.co)
	}
	k.co = nil
}
