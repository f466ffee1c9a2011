package netlisten

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// Backoff after a temporary accept error: doubling from minBackoff to
// maxBackoff.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// acceptLoop accepts sockets until the listener stops or fails.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		raw, err := l.accept()
		if err != nil {
			if l.stop.Err() != nil {
				return
			}
			if !temporary(err) {
				l.fail = fmt.Errorf("netlisten: accept on %s: %w", l.addr, err)
				l.log.Error("netlisten: listener failed", "listen", l.addr, "err", err)
				close(l.failed)
				return
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			l.log.Warn("netlisten: accept failed; retrying", "listen", l.addr, "err", err, "retry_in", delay)
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
		l.handle(raw)
	}
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
// own, others straight to dispatch.
func (l *Listener) handle(raw net.Conn) {
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
	l.dispatch(newConn(raw, base, peer, local, false, l.tls.Load()))
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
func (l *Listener) dispatch(c *Conn) {
	reason, ok := l.admit(c)
	if !ok {
		c.raw.Close()
		return
	}
	if reason != "" {
		l.refuse(c, reason)
		return
	}
	l.deliver(c)
}
