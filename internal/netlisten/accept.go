package netlisten

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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

// acceptLoop is the listener's accept loop, started on a goroutine of its
// own: it accepts until the listener stops or fails, or until it moves to
// an event loop.
func (l *Listener) acceptLoop() {
	if !l.acceptUntilMoved(context.Background(), nil, false) {
		l.wg.Done()
	}
}

// acceptUntilMoved accepts sockets until the listener stops or fails
// (false), or until the accept loop moves to an event loop (true: the
// handler started there goes on, and calls wg.Done when it ends). acc is
// the Acceptor bound to the loop that runs the code (nil: a goroutine);
// stay keeps it where it is.
//
// On a goroutine, the loop moves to an event loop when the listener
// accepts owned sockets and has a runner (SetAcceptOnLoop): its waits for
// the listening socket then go to the loop, and each connection starts on
// a loop without waking a goroutine first. On a loop, it leaves for a
// goroutine of its own (evloop.MayBlock) before anything that would block
// the loop: Go's own accept (owned sockets turned off), another
// Acceptor, the back-off after an error, and a connection that waits for
// the next server (a reload's hand-over).
func (l *Listener) acceptUntilMoved(ctx context.Context, acc *sockio.Acceptor, stay bool) bool {
	var delay time.Duration
	for {
		owned := l.owned.Load()
		if acc != nil && (owned != acc || l.loopRun.Load() == nil || !evloop.OnLoop(ctx)) {
			acc.SetWaiter(nil)
			evloop.MayBlock(ctx)
			acc = nil
		}
		if acc == nil && !stay && owned != nil && !evloop.OnLoop(ctx) && l.stop.Err() == nil {
			if run := l.loopRun.Load(); run != nil {
				(*run)(func(ctx context.Context) { l.acceptOnLoop(ctx, owned) })
				return true
			}
		}
		raw, err := l.accept()
		if err != nil {
			if l.stop.Err() != nil {
				return false
			}
			if !temporary(err) {
				l.fail = fmt.Errorf("netlisten: accept on %s: %w", l.addr, err)
				l.log.Error("netlisten: listener failed", "listen", l.addr, "err", err)
				close(l.failed)
				return false
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			l.log.Warn("netlisten: accept failed; retrying", "listen", l.addr, "err", err, "retry_in", delay)
			if acc != nil {
				acc.SetWaiter(nil)
				evloop.MayBlock(ctx)
				acc = nil
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.stop.Done():
				t.Stop()
				return false
			}
			continue
		}
		delay = 0
		l.handle(ctx, raw)
	}
}

// acceptOnLoop is the accept loop as a handler on an event loop, its
// Acceptor acc bound to the loop; it ends as acceptLoop does.
func (l *Listener) acceptOnLoop(ctx context.Context, acc *sockio.Acceptor) {
	// Close wakes it; a Close before this is seen by the first accept,
	// which tries the socket under a reference.
	l.loopAcc.Store(acc)
	stay := !evloop.Bind(ctx, acc)
	if stay {
		acc = nil // not on a loop after all: accept here, as a goroutine
	}
	moved := false
	defer func() {
		if v := recover(); v != nil {
			// As a permanent accept error: the listener's server learns
			// it has failed.
			l.fail = fmt.Errorf("netlisten: accept on %s: the accept loop panicked: %v", l.addr, v)
			l.log.Error("netlisten: listener failed", "listen", l.addr, "err", l.fail)
			close(l.failed)
		}
		if !moved {
			l.wg.Done()
		}
	}()
	moved = l.acceptUntilMoved(ctx, acc, stay)
}

// accept takes the next connection: a socket of the program's own
// (sockio.Socket) when SetOwnedSockets is on and the system has them,
// else Go's.
func (l *Listener) accept() (net.Conn, error) {
	if a := l.owned.Load(); a != nil {
		s, err := a.Accept()
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return l.ln.Accept()
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
// own, others straight to dispatch. ctx is the accept loop's.
func (l *Listener) handle(ctx context.Context, raw net.Conn) {
	peer, local, ok := endpoints(raw)
	if !ok {
		l.log.Warn("netlisten: closing connection with no TCP peer address", "listen", l.addr, "peer", raw.RemoteAddr())
		raw.Close()
		return
	}
	if l.cfg.Trusted != nil && l.cfg.Trusted(peer.Addr()) {
		l.wg.Add(1)
		go l.serveTrusted(raw, peer, local)
		return
	}
	var base net.Conn // nil: an owned socket's Conn, kept in the connection
	if _, owned := raw.(*sockio.Socket); !owned {
		base = sockio.Wrap(raw)
	}
	l.dispatch(ctx, newConn(raw, base, peer, local, false, l.tls.Load()))
}

// endpoints returns a new connection's peer and local addresses,
// unmapped; ok is false when the peer has no TCP address. A socket of the
// program's own gives them without making net.Addr values.
func endpoints(raw net.Conn) (peer, local netip.AddrPort, ok bool) {
	// A concrete type: the assertion compares one word, where one to an
	// interface looks the pair up in the runtime's table (1.3 µs a
	// connection live, its cache lines cold).
	if s, isOwned := raw.(*sockio.Socket); isOwned {
		peer, local = unmap(s.RemoteAddrPort()), unmap(s.LocalAddrPort())
		return peer, local, peer.Addr().IsValid()
	}
	peer, ok = tcpAddrPort(raw.RemoteAddr())
	local, _ = tcpAddrPort(raw.LocalAddr())
	return peer, local, ok
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
