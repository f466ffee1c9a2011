//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"unsafe"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// The goroutine-own mode keeps a goroutine per connection (the relays of
// goroutine.go, unchanged) but takes the sockets away from the runtime's
// poller: each is a raw non-blocking descriptor in an epoll instance of the
// program's own, which is itself registered with the runtime's poller, as
// the event loop's is. One goroutine takes that instance's events and
// passes each on to the goroutine waiting on the socket (a channel send).
// Every call on a socket — accept, socket, connect, read, write, shutdown,
// close — is a raw system call, so none enters the runtime's bookkeeping
// for blocking calls, which postern's reads and writes already avoid
// (internal/sockio) but its accept, connect and close do not. It measures
// what is left of the goroutine model's cost once no system call wakes the
// runtime's monitor thread: the goroutine switches themselves, plus the
// hand-off from the dispatching goroutine, which Go's own poller does not
// need (docs/benchmarks/issue17-evloop.md: the monitor thread's share
// goes, thread wake-ups take most of it back).

// ownPoller is the epoll instance and the sockets registered in it.
type ownPoller struct {
	ep     int
	file   *os.File // ep, registered with the runtime's poller
	efd    int      // eventfd that wakes the dispatcher to stop
	mu     sync.Mutex
	socks  map[int32]*ownSock
	events []unix.EpollEvent
	stop   chan struct{} // closed when the poller stops: wakes every waiter
}

// ownSock is one socket. rd and wr hold a readiness token each (edge
// triggered: the dispatcher adds one on every edge; a waiter takes it and
// tries again).
type ownSock struct {
	fd     int32
	p      *ownPoller
	rd, wr chan struct{}
}

func newOwnPoller() (*ownPoller, error) {
	ep, file, efd, err := newParkedEpoll()
	if err != nil {
		return nil, err
	}
	return &ownPoller{ep: ep, file: file, efd: efd, socks: map[int32]*ownSock{}, events: make([]unix.EpollEvent, 256), stop: make(chan struct{})}, nil
}

// add registers fd (edge triggered, both directions).
func (p *ownPoller) add(fd int32) (*ownSock, error) {
	s := &ownSock{fd: fd, p: p, rd: make(chan struct{}, 1), wr: make(chan struct{}, 1)}
	p.mu.Lock()
	p.socks[fd] = s
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: fd}
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(p.ep), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0); e != 0 {
		s.Close()
		return nil, fmt.Errorf("epoll_ctl: %w", e)
	}
	return s, nil
}

// run passes events on until the poller is woken to stop, then wakes
// every waiter for good.
func (p *ownPoller) run() error {
	defer close(p.stop)
	return waitParked(p.file, p.ep, p.events, p.dispatch)
}

// dispatch gives each ready socket's waiters a token; it reports whether
// the poller was woken to stop.
func (p *ownPoller) dispatch(events []unix.EpollEvent) bool {
	stop := false
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range events {
		if ev.Fd == int32(p.efd) {
			stop = true
			continue
		}
		s := p.socks[ev.Fd]
		if s == nil {
			continue
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			select {
			case s.rd <- struct{}{}:
			default:
			}
		}
		if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			select {
			case s.wr <- struct{}{}:
			default:
			}
		}
	}
	return stop
}

func (p *ownPoller) wake() {
	var one = [8]byte{1}
	unix.Write(p.efd, one[:])
}

func (p *ownPoller) close() {
	unix.Close(p.efd)
	p.file.Close()
}

var errStopped = errors.New("poller stopped")

// wait takes a token from ch, or fails when the poller has stopped.
func (s *ownSock) wait(ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-s.p.stop:
		return errStopped
	}
}

// Read reads as a net.Conn does: io.EOF at end of stream.
func (s *ownSock) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, e := rawRead(s.fd, b)
		switch e {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		case unix.EINTR:
		case unix.EAGAIN:
			if err := s.wait(s.rd); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("read: %w", e)
		}
	}
}

// Write writes all of b or fails.
func (s *ownSock) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, e := rawWrite(s.fd, b[done:])
		switch e {
		case 0:
			done += n
		case unix.EINTR:
		case unix.EAGAIN:
			if err := s.wait(s.wr); err != nil {
				return done, err
			}
		default:
			return done, fmt.Errorf("write: %w", e)
		}
	}
	return done, nil
}

// CloseWrite half-closes the socket.
func (s *ownSock) CloseWrite() error { rawShutWrite(s.fd); return nil }

// Close forgets the socket and closes its descriptor (which also takes it
// out of the epoll instance).
func (s *ownSock) Close() error {
	s.p.mu.Lock()
	if s.p.socks[s.fd] == s {
		delete(s.p.socks, s.fd)
	}
	s.p.mu.Unlock()
	rawClose(s.fd)
	return nil
}

// runOwn relays every service with a goroutine per connection on the
// program's own poller. It returns when ctx ends.
func runOwn(ctx context.Context, svcs []service) error {
	p, err := newOwnPoller()
	if err != nil {
		return err
	}
	var lns []*ownSock
	for i := range svcs {
		fd, err := listenReusePort(svcs[i].listen)
		if err != nil {
			err = fmt.Errorf("service %s: %w", svcs[i].name, err)
		} else {
			var ln *ownSock
			if ln, err = p.add(int32(fd)); err == nil {
				lns = append(lns, ln)
			}
		}
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			p.close()
			return err
		}
	}
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = p.run() })
	for i, ln := range lns {
		wg.Go(func() { serveOwn(ln, svcs[i]) })
	}
	ready()
	stop := context.AfterFunc(ctx, p.wake)
	wg.Wait()
	stop()
	for _, ln := range lns {
		ln.Close()
	}
	p.close()
	if runErr != nil {
		return runErr
	}
	return ctx.Err()
}

// serveOwn accepts until the poller stops.
func serveOwn(ln *ownSock, svc service) {
	for {
		var rsa unix.RawSockaddrAny
		alen := uint32(unsafe.Sizeof(rsa))
		fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(ln.fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&alen)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
		case unix.EAGAIN, unix.EINTR:
			if ln.wait(ln.rd) != nil {
				return
			}
			continue
		default:
			continue // the client went away before it was accepted
		}
		rawNoDelay(int32(fd))
		c, err := ln.p.add(int32(fd))
		if err != nil {
			continue
		}
		dial := func() (conn, error) {
			b, err := ln.p.dial(svc)
			if err != nil {
				return nil, err
			}
			return b, nil
		}
		if svc.http {
			go relayHTTP(c, dial)
		} else {
			go relayOwnTCP(c, addrPort(&rsa), svc, ln.p)
		}
	}
}

// dial connects to svc's backend.
func (p *ownPoller) dial(svc service) (*ownSock, error) {
	rsa, alen, family := rawSockaddr(svc.backend)
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return nil, fmt.Errorf("socket: %w", e)
	}
	rawNoDelay(int32(fd))
	s, err := p.add(int32(fd))
	if err != nil {
		return nil, err
	}
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&rsa)), alen)
	if e == unix.EINPROGRESS {
		if err := s.wait(s.wr); err != nil {
			s.Close()
			return nil, err
		}
		var soerr int32
		l := uint32(4)
		if _, _, e2 := unix.RawSyscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&soerr)), uintptr(unsafe.Pointer(&l)), 0); e2 != 0 {
			e = e2
		} else {
			e = unix.Errno(soerr)
		}
	}
	if e != 0 {
		s.Close()
		return nil, fmt.Errorf("connect %s: %w", svc.backend, e)
	}
	return s, nil
}

var ownBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// relayOwnTCP is relayTCP on the program's own sockets: the copies go
// through a buffer (read, write) instead of splice.
func relayOwnTCP(c *ownSock, src netip.AddrPort, svc service, p *ownPoller) {
	defer c.Close()
	b, err := p.dial(svc)
	if err != nil {
		return
	}
	defer b.Close()
	h, err := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(svc.listen)).Format()
	if err != nil {
		return
	}
	if _, err := b.Write(h); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		ownCopy(b, c)
		b.CloseWrite()
		close(done)
	}()
	ownCopy(c, b)
	c.CloseWrite()
	<-done
}

func ownCopy(dst, src *ownSock) {
	bp := ownBufs.Get().(*[]byte)
	defer ownBufs.Put(bp)
	for {
		n, err := src.Read(*bp)
		if n > 0 {
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
