package netlisten

import (
	"context"
	"fmt"
	"net"

	"github.com/postern/postern/internal/evloop"
)

// ServeUntil calls start for every connection within the limits, its
// PROXY header (if any) already read, until stop is closed or the listener
// stops, and returns then what AcceptUntil would return. It is AcceptUntil
// without the hand-over between goroutines: start runs on the goroutine
// that accepted the connection (the accept loop, or a trusted peer's
// header reader), so it must not block; it typically starts the
// connection's handler with a go statement. When ServeUntil returns, no
// call of start is running or will be made.
//
// One ServeUntil serves a listener at a time; another waits for it to
// return (a gateway starts the next server before it hands the listener
// over). While none serves, connections wait for Accept or for the next
// ServeUntil.
func (l *Listener) ServeUntil(stop <-chan struct{}, start func(*Conn)) error {
	select {
	case <-stop:
		return fmt.Errorf("netlisten: accept on %s: handed over: %w", l.addr, net.ErrClosed)
	case <-l.stop.Done():
		return fmt.Errorf("netlisten: accept on %s: %w", l.addr, net.ErrClosed)
	default:
	}
	for {
		l.startMu.Lock()
		if l.start == nil {
			break
		}
		free := l.startFree
		l.startMu.Unlock()
		select {
		case <-free:
		case <-stop:
			return fmt.Errorf("netlisten: accept on %s: handed over: %w", l.addr, net.ErrClosed)
		case <-l.stop.Done():
			return fmt.Errorf("netlisten: accept on %s: %w", l.addr, net.ErrClosed)
		case <-l.failed:
			return l.fail
		}
	}
	l.start = start
	l.startFree = make(chan struct{})
	close(l.startSet)
	l.startMu.Unlock()
	defer func() {
		l.startMu.Lock()
		l.start = nil
		l.startSet = make(chan struct{})
		close(l.startFree)
		l.startMu.Unlock()
	}()
	select {
	case <-stop:
		return fmt.Errorf("netlisten: accept on %s: handed over: %w", l.addr, net.ErrClosed)
	case <-l.stop.Done():
		return fmt.Errorf("netlisten: accept on %s: %w", l.addr, net.ErrClosed)
	case <-l.failed:
		return l.fail
	}
}

// deliver gives c to the running ServeUntil, or to Accept, blocking until
// one of them takes it or the listener stops. ctx is the caller's: an
// accept loop on an event loop leaves it before it waits.
func (l *Listener) deliver(ctx context.Context, c *Conn) {
	for {
		l.startMu.Lock()
		if start := l.start; start != nil {
			start(c)
			l.startMu.Unlock()
			return
		}
		set := l.startSet
		l.startMu.Unlock()
		evloop.MayBlock(ctx)
		select {
		case l.ready <- c:
			return
		case <-set:
		case <-l.stop.Done():
			c.forceClose()
			return
		}
	}
}
