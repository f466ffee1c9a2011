package netlisten

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/sockio"
)

// Backoff after a temporary accept error: doubling from minBackoff to
// maxBackoff.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// acceptLoop accepts sockets until the listener stops or fails; ctx is
// the listener's, or a loop's handler context derived from it when it
// runs on an event loop (AcceptOn).
func (l *Listener) acceptLoop(ctx context.Context) {
	defer l.wg.Done()
	var delay time.Duration
	for {
		if l.moveLoop(ctx) {
			return
		}
		raw, err := l.accept(ctx)
		if err != nil {
			if l.stop.Err() != nil {
				return
			}
			if errors.Is(err, errMoved) {
				continue
			}
			if !temporary(err) {
				l.fail = fmt.Errorf("netlisten: accept on %s: %w", l.addr, err)
				l.log.Error("netlisten: listener failed", "listen", l.addr, "err", err)
				close(l.failed)
				return
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			l.log.Warn("netlisten: accept failed; retrying", "listen", l.addr, "err", err, "retry_in", delay)
			if on, _ := evloop.WaitAny(ctx, evloop.Ready{FD: -1}, evloop.Ready{FD: -1}, time.Now().Add(delay)); on {
				continue // on a loop: Close wakes the wait
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.stop.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		l.handle(ctx, raw)
	}
}

// errMoved ends an accept that AcceptOn interrupted, to move the
// accepting.
var errMoved = errors.New("netlisten: accepting moves")

// maxAcceptBatch is how many connections an event loop accepts in a row
// before it lets the loop's other handlers run.
const maxAcceptBatch = 16

// accept takes the next connection: a socket of the program's own
// (sockio.Socket) when SetOwnedSockets is on and the system has them,
// else Go's. On an event loop, the loop waits for the listener.
func (l *Listener) accept(ctx context.Context) (net.Conn, error) {
	rc := l.owned.Load()
	if evloop.OnLoop(ctx) {
		if rc == nil || l.loops.Load() == nil {
			return nil, errMoved // off the loop first
		}
		return l.acceptOnLoop(ctx, *rc)
	}
	if rc == nil {
		c, err := l.ln.Accept()
		if err != nil && l.moved() {
			return nil, errMoved
		}
		return c, err
	}
	s, err := sockio.Accept(*rc)
	if err != nil {
		if l.moved() {
			return nil, errMoved
		}
		return nil, err
	}
	return s, nil
}

// acceptOnLoop is accept on an event loop.
func (l *Listener) acceptOnLoop(ctx context.Context, rc syscall.RawConn) (net.Conn, error) {
	if l.batch++; l.batch > maxAcceptBatch {
		l.batch = 0
		evloop.Yield(ctx)
	}
	for {
		s, fd, err := sockio.TryAccept(rc)
		if err != nil {
			return nil, err
		}
		if s != nil {
			return s, nil
		}
		l.batch = 0
		if l.stop.Err() != nil {
			return nil, net.ErrClosed
		}
		if l.loops.Load() == nil || l.owned.Load() == nil {
			return nil, errMoved
		}
		if _, err := evloop.WaitAny(ctx, evloop.Ready{FD: fd, Read: true}, evloop.Ready{FD: -1}, time.Time{}); err != nil {
			return nil, err
		}
	}
}

// moved reports whether the accepting is to move between an event loop
// and a goroutine of its own (AcceptOn), clearing the listening socket's
// deadline that AcceptOn set to interrupt a wait.
func (l *Listener) moved() bool {
	if !l.moving.Swap(false) {
		return false
	}
	l.setAcceptDeadline(time.Time{})
	return true
}

// moveLoop moves the accepting to where AcceptOn says: onto one of the
// loops (true: the caller returns, a handler on a loop goes on), or off
// the loop it runs on.
func (l *Listener) moveLoop(ctx context.Context) bool {
	g := l.loops.Load()
	on := evloop.OnLoop(ctx)
	switch {
	case g != nil && !on && l.owned.Load() != nil:
		w := new(loopWaker)
		l.waker.Store(w)
		l.wg.Add(1)
		g.GoAt(evloop.Place{}, l.stop, w, l.acceptLoop)
		return true
	case on && (g == nil || l.owned.Load() == nil):
		evloop.MayBlock(ctx)
	}
	return false
}

// temporary reports whether an accept error is worth retrying: the
// process or system is out of descriptors or memory, or one pending
// connection failed before it was accepted.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
		syscall.EPROTO, syscall.EPERM,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handle routes a new socket: trusted peers to a header reader of their
// own, others straight to dispatch.
func (l *Listener) handle(ctx context.Context, raw net.Conn) {
	peer, ok := tcpAddrPort(raw.RemoteAddr())
	if !ok {
		l.log.Warn("netlisten: closing connection with no TCP peer address", "listen", l.addr, "peer", raw.RemoteAddr())
		raw.Close()
		return
	}
	local, _ := tcpAddrPort(raw.LocalAddr())
	if l.cfg.Trusted != nil && l.cfg.Trusted(peer.Addr()) {
		l.wg.Add(1)
		go l.serveTrusted(raw, peer, local)
		return
	}
	c := newConn(raw, sockio.Wrap(raw), peer, local, false, l.tls.Load())
	c.place = evloop.PlaceOf(ctx)
	l.dispatch(ctx, c)
}

// dispatch takes a slot for c and hands it to ServeUntil or Accept, or
// refuses it. It blocks until Accept takes c (ServeUntil takes it at once)
// or the listener stops: for direct clients this runs in the accept loop,
// so an application that stops calling Accept leaves new connections in
// the kernel's backlog.
func (l *Listener) dispatch(ctx context.Context, c *Conn) {
	reason, ok := l.admit(c)
	if !ok {
		c.raw.Close()
		return
	}
	if reason != "" {
		l.refuse(c, reason)
		return
	}
	l.deliver(ctx, c)
}
