//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// runLoops relays every service from n event loops, each with its own
// epoll instance and its own SO_REUSEPORT listener per service, so that
// the kernel spreads new connections over the loops and a connection
// stays on the loop that accepted it. It returns when ctx ends.
func runLoops(ctx context.Context, svcs []service, n int, blocking bool) error {
	var loops []*loop
	closeAll := func() {
		for _, l := range loops {
			l.close()
		}
	}
	lsvcs := svcs
	if costs.handoff.Load() {
		lsvcs = nil // the acceptors' (handoff) listeners instead
	}
	for range n {
		l, err := newLoop(lsvcs, blocking)
		if err != nil {
			closeAll()
			return err
		}
		loops = append(loops, l)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(loops))
	for i, l := range loops {
		wg.Go(func() { errs[i] = l.run() })
	}
	var acceptors []*os.File
	if costs.handoff.Load() {
		for i := range svcs {
			fd, err := listenReusePort(svcs[i].listen)
			if err != nil {
				for _, l := range loops {
					l.wake()
				}
				wg.Wait()
				closeAll()
				return fmt.Errorf("service %s: %w", svcs[i].name, err)
			}
			f := os.NewFile(uintptr(fd), "listener")
			acceptors = append(acceptors, f)
			wg.Go(func() { handoff(f, &svcs[i], loops) })
		}
	}
	ready()
	stop := context.AfterFunc(ctx, func() {
		for _, f := range acceptors {
			f.Close()
		}
		for _, l := range loops {
			l.wake()
		}
	})
	wg.Wait()
	stop()
	closeAll()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// handoff accepts ln's connections on a goroutine of its own and hands
// each to a loop in turn, as postern's listeners do (-costs handoff).
func handoff(ln *os.File, svc *service, loops []*loop) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return
	}
	next := 0
	for {
		err := rc.Read(func(lfd uintptr) bool {
			for {
				var rsa unix.RawSockaddrAny
				alen := uint32(unsafe.Sizeof(rsa))
				fd, e := accept4(int32(lfd), &rsa, &alen)
				if e == unix.EAGAIN {
					return false
				}
				if e != 0 {
					return true
				}
				l := loops[next%len(loops)]
				next++
				l.post(posted{int32(fd), addrPort(&rsa), svc})
			}
		})
		if err != nil {
			return // closed
		}
	}
}

// posted is a connection an acceptor handed to a loop.
type posted struct {
	fd  int32
	src netip.AddrPort
	svc *service
}

// post queues p for l and wakes it.
func (l *loop) post(p posted) {
	l.mu.Lock()
	l.posts = append(l.posts, p)
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.RawSyscall(unix.SYS_WRITE, uintptr(l.pfd), uintptr(unsafe.Pointer(&one[0])), 8)
}

// takePosts starts the connections handed to l.
func (l *loop) takePosts() {
	var buf [8]byte
	unix.RawSyscall(unix.SYS_READ, uintptr(l.pfd), uintptr(unsafe.Pointer(&buf[0])), 8)
	l.mu.Lock()
	ps := l.posts
	l.posts = nil
	l.mu.Unlock()
	for _, p := range ps {
		l.started(p.fd, p.src, p.svc)
	}
}

// sock is one socket of a relayed pair: the client's or the backend's.
type sock struct {
	fd         int32
	client     bool
	svc        *service
	peer       *sock  // nil: an HTTP client without a backend connection yet
	mask       uint32 // the events registered in epoll
	out        []byte // bytes waiting to be written to this socket
	connecting bool   // a backend whose connect has not completed
	eof        bool   // nothing more will be read from this socket

	// HTTP only.
	in     []byte // client: request bytes not relayed yet; backend: an answer head read in pieces
	busy   bool   // client: a request was relayed and its answer is not complete
	isHead bool   // client: that request is a HEAD
	inBody bool   // backend: the answer's head has been relayed
	body   body   // backend: where the answer's body ends

	// -login only (the client's socket): a checked session before it relays.
	chk *checked
}

// loop is one event loop. Only its own goroutine touches its sockets.
type loop struct {
	ep        int
	file      *os.File           // ep, registered with the runtime's poller
	blocking  bool               // wait in a blocking epoll_wait (see run)
	efd       int                // eventfd that wakes the loop to stop
	pfd       int                // eventfd that wakes the loop for posts (-costs handoff)
	listeners map[int32]*service // listening socket → its service
	socks     []*sock            // by descriptor
	buf       []byte             // every read lands here first
	events    []unix.EpollEvent
	scratch   []byte   // -login: answers built before they are sent
	logBuf    []byte   // -login: the batch's log lines
	wheel     wheel    // -login, -smtp-checks: the checked sessions' deadlines
	coros     coroPool // -costs stack: the checked sessions' coroutines
	coroNow   *coro    // the coroutine running now

	mu    sync.Mutex
	posts []posted // connections handed over by an acceptor (-costs handoff)
}

func newLoop(svcs []service, blocking bool) (*loop, error) {
	ep, file, efd, err := newParkedEpoll()
	if err != nil {
		return nil, err
	}
	l := &loop{ep: ep, file: file, efd: efd, pfd: -1, blocking: blocking, listeners: map[int32]*service{}, buf: make([]byte, 64<<10), events: make([]unix.EpollEvent, 256)}
	l.wheel.tfd = -1
	if checks.Load() != nil {
		if err := l.startWheel(); err != nil {
			l.close()
			return nil, fmt.Errorf("deadlines: %w", err)
		}
	}
	if costs.handoff.Load() {
		if l.pfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			l.close()
			return nil, fmt.Errorf("eventfd: %w", err)
		}
		if err := l.ctl(unix.EPOLL_CTL_ADD, int32(l.pfd), unix.EPOLLIN); err != nil {
			l.close()
			return nil, err
		}
	}
	for i := range svcs {
		fd, err := listenReusePort(svcs[i].listen)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("service %s: %w", svcs[i].name, err)
		}
		l.listeners[int32(fd)] = &svcs[i]
		if err := l.ctl(unix.EPOLL_CTL_ADD, int32(fd), unix.EPOLLIN); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

// newParkedEpoll makes an epoll instance that the runtime's poller watches
// (file: non-blocking, so that os.NewFile registers it there; waitParked
// waits on it) and an eventfd in it that wakes its waiter to stop.
func newParkedEpoll() (ep int, file *os.File, efd int, err error) {
	if ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return -1, nil, -1, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return -1, nil, -1, fmt.Errorf("epoll instance: %w", err)
	}
	file = os.NewFile(uintptr(ep), "epoll")
	if efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		file.Close()
		return -1, nil, -1, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(efd)
		file.Close()
		return -1, nil, -1, fmt.Errorf("epoll_ctl: %w", err)
	}
	return ep, file, efd, nil
}

// listenReusePort opens a non-blocking listening socket on ap with
// SO_REUSEPORT, so that every loop can have its own.
func listenReusePort(ap netip.AddrPort) (int, error) {
	sa, family := sockaddr(ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	for _, o := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", ap, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", ap, err)
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, unix.AF_INET6
}

func (l *loop) wake() {
	var one = [8]byte{1}
	unix.Write(l.efd, one[:])
}

// close closes the loop's epoll instance, its eventfd, its listeners and
// every socket it still relays.
func (l *loop) close() {
	for fd := range l.listeners {
		unix.Close(int(fd))
	}
	for _, s := range l.socks {
		if s != nil {
			unix.Close(int(s.fd))
		}
	}
	l.socks = nil
	if l.efd >= 0 {
		unix.Close(l.efd)
	}
	if l.pfd >= 0 {
		unix.Close(l.pfd)
	}
	if l.wheel.tfd >= 0 {
		unix.Close(l.wheel.tfd)
	}
	l.file.Close()
}

// The system calls of the loop's work go without the runtime's entry for
// blocking calls (every socket is non-blocking, so none blocks), as
// postern's own internal/sockio does; only the wait for events, which
// blocks, goes through it.

func rawRead(fd int32, p []byte) (int, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), e
}

func rawWrite(fd int32, p []byte) (int, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), e
}

func rawClose(fd int32) {
	if costs.close.Load() {
		unix.Syscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) // through the runtime's entry, as Go's net does
		return
	}
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// costs adds to the loop, one at a time, what postern's sessions on its
// event loops still pay and this loop does not (-costs): close(2) and
// accept4(2) through the runtime's entry for blocking system calls, and
// new connections accepted by a goroutine of their own that hands each to
// a loop.
// costs are the -costs switches; atomic, since a relay's goroutines may
// still be closing connections when a test sets them for the next one.
var costs struct{ close, accept, handoff, timer, tick, stack atomic.Bool }

// accept4 takes one connection from lfd.
func accept4(lfd int32, rsa *unix.RawSockaddrAny, alen *uint32) (uintptr, unix.Errno) {
	call := unix.RawSyscall6
	if costs.accept.Load() {
		call = unix.Syscall6
	}
	fd, _, e := call(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(alen)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	return fd, e
}

func rawShutWrite(fd int32) { unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0) }

func rawNoDelay(fd int32) {
	one := int32(1)
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

func (l *loop) ctl(op int, fd int32, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: fd}
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(l.ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	if e != 0 {
		return fmt.Errorf("epoll_ctl: %w", e)
	}
	return nil
}

// run handles events until the loop is woken to stop.
//
// By default the loop's epoll instance is itself registered with the Go
// runtime's network poller: the goroutine parks there while nothing is
// ready and takes the ready events with a non-blocking epoll_wait. With
// blocking set it waits in a blocking epoll_wait instead, as event-loop
// libraries for Go do; that goes through the runtime's entry for blocking
// system calls, and while a goroutine sits in one the runtime's monitor
// thread wakes every 20 µs to take its processor back — on a gateway that
// waits for its backends most of the time, that costs more than everything
// else the loop does (docs/benchmarks/issue17-evloop.md).
func (l *loop) run() error {
	if l.blocking {
		for {
			n, err := unix.EpollWait(l.ep, l.events, -1)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				return fmt.Errorf("epoll_wait: %w", err)
			}
			if l.handle(l.events[:n]) {
				return nil
			}
		}
	}
	return waitParked(l.file, l.ep, l.events, l.handle)
}

// waitParked passes the ready events of the epoll instance ep, registered
// with the runtime's poller as file, to handle until handle reports that
// the loop was woken to stop. While nothing is ready the goroutine parks
// in the runtime's poller; the events are taken with a non-blocking
// epoll_pwait.
func waitParked(file *os.File, ep int, events []unix.EpollEvent, handle func([]unix.EpollEvent) bool) error {
	rc, err := file.SyscallConn()
	if err != nil {
		return fmt.Errorf("epoll instance: %w", err)
	}
	stop := false
	err = rc.Read(func(uintptr) bool {
		for !stop {
			n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
			if e == unix.EINTR {
				continue
			}
			if e != 0 || n == 0 {
				return false // nothing ready: park until the instance is readable
			}
			stop = handle(events[:n])
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("waiting for events: %w", err)
	}
	return nil
}

// handle acts on a batch of ready events; it reports whether the loop
// was woken to stop.
func (l *loop) handle(events []unix.EpollEvent) bool {
	for _, ev := range events {
		if ev.Fd == int32(l.efd) {
			return true
		}
		if ev.Fd == int32(l.pfd) {
			l.takePosts()
			continue
		}
		if ev.Fd == int32(l.wheel.tfd) {
			l.tick()
			continue
		}
		if svc := l.listeners[ev.Fd]; svc != nil {
			l.accept(ev.Fd, svc)
			continue
		}
		s := l.get(ev.Fd)
		if s == nil {
			continue // closed by an earlier event of this batch
		}
		if ev.Events&unix.EPOLLERR != 0 {
			l.closePair(s)
			continue
		}
		if ev.Events&unix.EPOLLOUT != 0 {
			l.writable(s)
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP) != 0 && l.get(ev.Fd) == s && !s.eof {
			l.readable(s)
		}
		if ev.Events&unix.EPOLLHUP != 0 && l.get(ev.Fd) == s && s.eof {
			l.hungUp(s)
		}
	}
	l.flushLog()
	return false
}

func (l *loop) get(fd int32) *sock {
	if int(fd) < len(l.socks) {
		return l.socks[fd]
	}
	return nil
}

func (l *loop) put(s *sock) {
	for int(s.fd) >= len(l.socks) {
		l.socks = append(l.socks, make([]*sock, len(l.socks)+1024)...)
	}
	l.socks[s.fd] = s
}

// add registers a new socket with events.
func (l *loop) add(s *sock, events uint32) bool {
	l.put(s)
	s.mask = events
	if l.ctl(unix.EPOLL_CTL_ADD, s.fd, events) != nil {
		l.closePair(s)
		return false
	}
	return true
}

// setMask changes the events registered for s.
func (l *loop) setMask(s *sock, m uint32) {
	if m != s.mask {
		s.mask = m
		l.ctl(unix.EPOLL_CTL_MOD, s.fd, m)
	}
}

// hungUp handles a socket closed both ways whose end has been read: epoll
// reports it on every wait until it is closed or removed. Nothing can be
// written to it; its peer may still have bytes to flush.
func (l *loop) hungUp(s *sock) {
	p := s.peer
	if p == nil || (!p.connecting && len(p.out) == 0) {
		l.closePair(s)
		return
	}
	l.ctl(unix.EPOLL_CTL_DEL, s.fd, 0)
	s.mask = 0
}

// closePair closes s and its peer.
func (l *loop) closePair(s *sock) {
	for _, x := range []*sock{s, s.peer} {
		if x != nil && x.client {
			l.endCoro(x.chk)
			endChecked(x)
		}
		if x != nil && l.get(x.fd) == x {
			l.socks[x.fd] = nil
			rawClose(x.fd)
		}
	}
}

// accept takes one new connection from a listening socket.
func (l *loop) accept(lfd int32, svc *service) {
	var rsa unix.RawSockaddrAny
	alen := uint32(unsafe.Sizeof(rsa))
	fd, e := accept4(lfd, &rsa, &alen)
	if e != 0 {
		return // EAGAIN: another loop took it; else the client is gone
	}
	l.started(int32(fd), addrPort(&rsa), svc)
}

// started relays a new client connection.
func (l *loop) started(fd int32, src netip.AddrPort, svc *service) {
	c := &sock{fd: fd, client: true, svc: svc}
	rawNoDelay(c.fd)
	if ck := checks.Load(); ck != nil && ck.checkedService(svc) {
		if l.add(c, 0) { // read once the backend has greeted
			l.startChecked(c, src, ck)
		}
		return
	}
	if !l.add(c, unix.EPOLLIN) || svc.http {
		return
	}
	b := l.dial(c)
	if b == nil {
		return
	}
	// The PROXY v2 header goes first, with the client's address.
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(svc.listen))
	hb, err := h.Format()
	if err != nil {
		l.closePair(c)
		return
	}
	b.out = append(b.out, hb...)
}

// rawSockaddr is ap as connect(2) takes it.
func rawSockaddr(ap netip.AddrPort) (rsa unix.RawSockaddrAny, alen uintptr, family int) {
	if ap.Addr().Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		sa.Addr = ap.Addr().As4()
		return rsa, unsafe.Sizeof(*sa), unix.AF_INET
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	sa.Addr = ap.Addr().As16()
	return rsa, unsafe.Sizeof(*sa), unix.AF_INET6
}

func addrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), binary.BigEndian.Uint16(p[:]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), binary.BigEndian.Uint16(p[:]))
	}
	return netip.AddrPort{}
}

// dial starts a non-blocking connect to c's backend and pairs the new
// socket with c; bytes sent to it wait in its out until it connects.
func (l *loop) dial(c *sock) *sock {
	rsa, alen, family := rawSockaddr(c.svc.backend)
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		l.closePair(c)
		return nil
	}
	b := &sock{fd: int32(fd), svc: c.svc, peer: c, connecting: true}
	c.peer = b
	rawNoDelay(b.fd)
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&rsa)), alen)
	switch e {
	case 0:
		b.connecting = false
	case unix.EINPROGRESS:
	default:
		l.put(b)
		l.closePair(c)
		return nil
	}
	if !l.add(b, unix.EPOLLIN|unix.EPOLLOUT) {
		return nil
	}
	return b
}

// send writes p to t, or queues what the socket does not take now (then
// t's peer, the source, is not read until t has taken it all).
func (l *loop) send(t *sock, p []byte) bool {
	if !t.connecting && len(t.out) == 0 {
		n, e := rawWrite(t.fd, p)
		switch {
		case e == unix.EAGAIN:
			n = 0
		case e != 0:
			l.closePair(t)
			return false
		}
		p = p[n:]
	}
	if len(p) > 0 {
		t.out = append(t.out, p...)
		l.setMask(t, t.mask|unix.EPOLLOUT)
		if t.peer != nil {
			l.setMask(t.peer, t.peer.mask&^unix.EPOLLIN)
		}
	}
	return true
}

// writable flushes what waits for s; once it is all written, s's peer is
// read again, and a half-close that waited for the flush is passed on.
func (l *loop) writable(s *sock) {
	s.connecting = false
	if len(s.out) > 0 {
		n, e := rawWrite(s.fd, s.out)
		switch {
		case e == unix.EAGAIN:
			return
		case e != 0:
			l.closePair(s)
			return
		}
		s.out = s.out[:copy(s.out, s.out[n:])]
		if len(s.out) > 0 {
			return
		}
	}
	l.setMask(s, s.mask&^unix.EPOLLOUT)
	p := s.peer
	if p == nil {
		return
	}
	if !p.eof {
		l.setMask(p, p.mask|unix.EPOLLIN)
		return
	}
	// The peer's end was passed on as soon as its bytes were.
	rawShutWrite(s.fd)
	if s.eof {
		l.closePair(s)
	}
}

// readable reads what s has for its peer.
func (l *loop) readable(s *sock) {
	if s.svc.http {
		l.readableHTTP(s)
		return
	}
	if k := s.checked(); k != nil && k.state != stRelay {
		l.readableChecked(s, k)
		return
	}
	n, e := rawRead(s.fd, l.buf)
	switch {
	case e == unix.EAGAIN:
		return
	case e != 0:
		l.closePair(s)
		return
	case n == 0:
		s.eof = true
		l.setMask(s, s.mask&^unix.EPOLLIN)
		p := s.peer
		if p.connecting || len(p.out) > 0 {
			return // writable passes the end on after the bytes
		}
		rawShutWrite(p.fd)
		if p.eof {
			l.closePair(s)
		}
		return
	}
	l.send(s.peer, l.buf[:n])
}

// readableHTTP reads a client's requests or a backend's answer.
func (l *loop) readableHTTP(s *sock) {
	if s.client && len(s.in) >= 4*maxHead {
		l.setMask(s, s.mask&^unix.EPOLLIN) // requests pipelined far ahead: read on when they are relayed
		return
	}
	n, e := rawRead(s.fd, l.buf)
	switch {
	case e == unix.EAGAIN:
		return
	case e != 0:
		l.closePair(s)
		return
	case n == 0:
		if !s.client && !s.peer.busy {
			// An idle backend connection closed: the next request opens another.
			c := s.peer
			c.peer = nil
			l.socks[s.fd] = nil
			rawClose(s.fd)
			return
		}
		l.closePair(s)
		return
	}
	p := l.buf[:n]
	if s.client {
		s.in = append(s.in, p...)
		if !s.busy {
			l.nextRequest(s)
		}
		return
	}
	l.answer(s, p)
}

// nextRequest relays the request at the start of c.in, if it is whole.
func (l *loop) nextRequest(c *sock) {
	hl := headLen(c.in)
	if hl == 0 {
		if len(c.in) > maxHead {
			l.closePair(c)
		}
		return
	}
	isHead, err := checkRequest(c.in[:hl])
	if err != nil {
		l.closePair(c)
		return
	}
	b := c.peer
	if b == nil {
		if b = l.dial(c); b == nil {
			return
		}
	}
	c.busy, c.isHead = true, isHead
	if !l.send(b, c.in[:hl]) {
		return
	}
	c.in = c.in[:copy(c.in, c.in[hl:])]
}

// answer relays p, bytes of the answer the backend b sends to its client.
func (l *loop) answer(b *sock, p []byte) {
	c := b.peer
	if !c.busy {
		l.closePair(b) // bytes no request asked for
		return
	}
	var done bool
	var err error
	if !b.inBody {
		if len(b.in) > 0 || headLen(p) == 0 {
			b.in = append(b.in, p...)
			if headLen(b.in) == 0 {
				if len(b.in) > maxHead {
					l.closePair(b)
				}
				return
			}
			p = b.in
		}
		hl := headLen(p)
		if b.body, err = newBody(p[:hl], c.isHead); err == nil {
			b.inBody = true
			done, err = b.body.take(p[hl:])
		}
	} else {
		done, err = b.body.take(p)
	}
	if err != nil {
		l.closePair(b) // not relayed
		return
	}
	if !l.send(c, p) {
		return
	}
	b.in = b.in[:0]
	if done {
		b.inBody = false
		c.busy = false
		l.setMask(c, c.mask|unix.EPOLLIN) // if pipelined requests had stopped its reading
		if len(c.in) > 0 {
			l.nextRequest(c)
		}
	}
}

// setCosts reads -costs.
func setCosts(list string) error {
	for c := range strings.SplitSeq(list, ",") {
		switch strings.TrimSpace(c) {
		case "":
		case "close":
			costs.close.Store(true)
		case "accept":
			costs.accept.Store(true)
		case "handoff":
			costs.handoff.Store(true)
		case "timer":
			costs.timer.Store(true)
		case "tick":
			costs.tick.Store(true)
		case "stack":
			costs.stack.Store(true)
		default:
			return fmt.Errorf("-costs: unknown cost %q (close, accept, handoff, timer, tick, stack)", c)
		}
	}
	return nil
}

// costTimers starts what the timer and tick costs add: a runtime timer
// always pending an hour ahead (the runtime's poller then sleeps with a
// timeout), and a ticker every 20 ms (a wake-up 50 times a second).
func costTimers(ctx context.Context) {
	if costs.timer.Load() {
		t := time.NewTimer(time.Hour)
		context.AfterFunc(ctx, func() { t.Stop() })
	}
	if costs.tick.Load() {
		go func() {
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
}
