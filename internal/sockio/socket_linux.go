package sockio

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is a connected TCP socket whose descriptor the program owns
// rather than Go's net package: every system call on it is raw, closing it
// included, and it is not registered with the runtime's poller until code
// has to wait for it there. An event loop that accepts, connects and
// closes its sockets itself uses it: Go's net package closes and accepts
// through the runtime's entry for blocking system calls, whose first call
// after the program went idle wakes the runtime's monitor thread, and it
// registers every socket with the runtime's poller
// (docs/benchmarks/issue17-round12.md).
//
// A Socket is safe for concurrent use as a net.Conn is. Each system call
// holds a reference to the descriptor, and Close closes it only once no
// call holds one, so that its number cannot be reused under a call in
// progress. Reads and writes that must wait and have no Waiter (NewOwned's
// Conn waits on its loop's) hand the descriptor to the runtime's poller
// (os.NewFile) the first time; from then on it waits, closes and keeps its
// deadlines there, as any os.File.
type Socket struct {
	mu      sync.Mutex
	fd      int         // the descriptor; its number is valid while refs > 0 or !closing
	gone    atomic.Bool // fd has been let go of: closed, or handed to file
	guard   *ownedFD    // with the leak guard built in (leakguard_on.go), else nil
	refs    int         // system calls in progress on the raw descriptor
	closing bool
	file    *os.File        // set once the runtime's poller waits for the socket
	frc     syscall.RawConn // file's
	rdl     time.Time       // deadlines, for the file when there is one
	wdl     time.Time

	rdlNs, wdlNs   atomic.Int64 // the deadlines on the monotonic clock (Mono; 0: none), read without the lock
	local, remote  netip.AddrPort
	laddr, raddr   atomic.Pointer[net.TCPAddr] // made at the first LocalAddr, RemoteAddr
	rawConn        socketRawConn
	readF, writeF  func(fd uintptr) bool
	rn, wn         int
	rerrno, werrno syscall.Errno
	rbuf, wbuf     []byte
	rmu, wmu       sync.Mutex
}

// ownedFD is the leak guard's copy of a Socket's descriptor and whether
// it has been let go of: its cleanup closes a descriptor that was not,
// when its Socket is garbage collected without Close (leakguard_on.go).
type ownedFD struct {
	n    int
	gone atomic.Bool
}

// NewSocket takes ownership of fd, a connected non-blocking TCP socket
// between local and remote: the Socket closes it. It returns an error, and
// leaves fd open, when fd is not a non-blocking descriptor.
func NewSocket(fd int, local, remote netip.AddrPort) (*Socket, error) {
	fl, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETFL, 0)
	if e != 0 {
		return nil, fmt.Errorf("sockio: socket %d: %w", fd, e)
	}
	if fl&unix.O_NONBLOCK == 0 {
		return nil, fmt.Errorf("sockio: socket %d is blocking", fd)
	}
	return OwnNonblocking(fd, local, remote), nil
}

// OwnNonblocking is NewSocket for a descriptor the caller made
// non-blocking when it made it (socket(2) or accept4(2) with
// SOCK_NONBLOCK): it does not ask the system (one fcntl(2) less a socket).
func OwnNonblocking(fd int, local, remote netip.AddrPort) *Socket {
	// The addresses as net.Addr, and the steps of Read and Write (which a
	// Socket under a Conn never calls), are made at their first use: each
	// is an allocation.
	s := &Socket{fd: fd, local: local, remote: remote}
	s.rawConn.s = s
	if leakGuard {
		s.guard = &ownedFD{n: fd}
		runtime.AddCleanup(s, closeLeaked, s.guard)
	}
	return s
}

// leaked counts the sockets the leak guard closed (LeakedSockets).
var leaked atomic.Int64

// closeLeaked is the leak guard's cleanup: it closes a descriptor its
// Socket never let go of.
func closeLeaked(o *ownedFD) {
	if !o.gone.Swap(true) {
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(o.n), 0, 0)
		leaked.Add(1)
	}
}

// LeakedSockets returns how many Sockets were garbage collected without
// Close, their descriptors closed by the leak guard; always 0 in a
// release build, which has no guard (leakguard_on.go).
func LeakedSockets() int64 { return leaked.Load() }

// letGo reports whether this call is the one that lets the descriptor
// go (to close it, or to hand it to an os.File): true once.
func (s *Socket) letGo() bool {
	if s.gone.Swap(true) {
		return false
	}
	if s.guard != nil {
		s.guard.gone.Store(true)
	}
	return true
}

// acquire takes a reference to the raw descriptor for one system call,
// or returns the file's RawConn once the runtime's poller has the socket.
func (s *Socket) acquire() (fd int, frc syscall.RawConn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return -1, nil, net.ErrClosed
	}
	if s.frc != nil {
		return -1, s.frc, nil
	}
	s.refs++
	return s.fd, nil, nil
}

// release gives a reference back; the last one after Close closes.
func (s *Socket) release() {
	s.mu.Lock()
	s.refs--
	last := s.refs == 0 && s.closing
	s.mu.Unlock()
	if last {
		s.destroy()
	}
}

// destroy closes the descriptor: raw, or through the file that has it.
func (s *Socket) destroy() error {
	if s.file != nil {
		return s.file.Close()
	}
	if !s.letGo() {
		return nil
	}
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(s.fd), 0, 0); e != 0 && e != unix.EINTR {
		return os.NewSyscallError("close", e)
	}
	return nil
}

// Polled reports whether the socket has been handed to the runtime's
// poller (a read or write had to wait without a Waiter).
func (s *Socket) Polled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.file != nil
}

// toPoller hands the descriptor to the runtime's poller, once.
func (s *Socket) toPoller() (syscall.RawConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, net.ErrClosed
	}
	if s.frc != nil {
		return s.frc, nil
	}
	f := os.NewFile(uintptr(s.fd), "tcp "+s.remote.String())
	if f == nil {
		return nil, fmt.Errorf("sockio: socket %d: no file", s.fd)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sockio: socket %d: %w", s.fd, err)
	}
	s.letGo() // the file closes it now (and its finalizer)
	if !s.rdl.IsZero() {
		f.SetReadDeadline(s.rdl)
	}
	if !s.wdl.IsZero() {
		f.SetWriteDeadline(s.wdl)
	}
	s.file, s.frc = f, rc
	return rc, nil
}

// socketRawConn is a Socket's syscall.RawConn.
type socketRawConn struct{ s *Socket }

// Control calls f with the descriptor, which stays open during the call.
func (r *socketRawConn) Control(f func(fd uintptr)) error {
	fd, frc, err := r.s.acquire()
	if err != nil {
		return err
	}
	if frc != nil {
		return frc.Control(f)
	}
	f(uintptr(fd))
	r.s.release()
	return nil
}

// Read calls f until it returns true, waiting for the socket to be
// readable in between (in the runtime's poller) and giving up at the read
// deadline, as the net package's RawConn does.
func (r *socketRawConn) Read(f func(fd uintptr) bool) error {
	return r.s.rawStep(f, &r.s.rdlNs)
}

// Write calls f until it returns true, waiting for the socket to be
// writable in between.
func (r *socketRawConn) Write(f func(fd uintptr) bool) error {
	return r.s.rawStep(f, &r.s.wdlNs)
}

// LocalAddrPort returns the socket's own address, as LocalAddr without
// making a net.Addr.
func (s *Socket) LocalAddrPort() netip.AddrPort { return s.local }

// RemoteAddrPort returns the peer's address, as RemoteAddr without making
// a net.Addr.
func (s *Socket) RemoteAddrPort() netip.AddrPort { return s.remote }

// Unread reports whether bytes are queued to be read, without waiting
// or taking them (recv(2) with MSG_PEEK and MSG_DONTWAIT): ok is false
// when the socket is closed, or the runtime's poller has it (ask its
// RawConn then).
func (s *Socket) Unread() (unread, ok bool) {
	fd, frc, err := s.acquire()
	if err != nil || frc != nil {
		return false, false
	}
	n, e := Peek(uintptr(fd))
	s.release()
	return e == 0 && n > 0, true
}

// acquireBefore is rawStep's start for a step that never waits: the
// deadline dl checked, a reference to the raw descriptor taken (ok; give
// it back with release), or ok false once the runtime's poller has the
// socket (step through its RawConn then).
func (s *Socket) acquireBefore(dl *atomic.Int64) (fd int, ok bool, err error) {
	if d := dl.Load(); d != 0 && d <= MonoNow() {
		return -1, false, os.ErrDeadlineExceeded
	}
	fd, frc, err := s.acquire()
	if err != nil || frc != nil {
		return -1, false, err
	}
	return fd, true, nil
}

func (s *Socket) rawStep(f func(fd uintptr) bool, dl *atomic.Int64) error {
	if d := dl.Load(); d != 0 && d <= MonoNow() {
		return os.ErrDeadlineExceeded
	}
	fd, frc, err := s.acquire()
	if err != nil {
		return err
	}
	if frc == nil {
		done := f(uintptr(fd))
		s.release()
		if done {
			return nil
		}
		// It has to wait: the runtime's poller waits from now on.
		if frc, err = s.toPoller(); err != nil {
			return err
		}
	}
	if dl == &s.rdlNs {
		err = frc.Read(f)
	} else {
		err = frc.Write(f)
	}
	if err != nil && s.isClosing() {
		// The file says "use of closed file"; a socket's callers expect
		// net.ErrClosed, as a net.Conn returns.
		err = net.ErrClosed
	}
	return err
}

func (s *Socket) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// SyscallConn returns the socket's RawConn. Its Control and a Read or
// Write step that does not wait use the raw descriptor; the first wait
// hands the socket to the runtime's poller.
func (s *Socket) SyscallConn() (syscall.RawConn, error) { return &s.rawConn, nil }

// Read reads up to len(p) bytes.
func (s *Socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.rbuf, s.rn, s.rerrno = p, 0, 0
	if s.readF == nil {
		s.readF = s.readStep
	}
	err := s.rawConn.Read(s.readF)
	n, e := s.rn, s.rerrno
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case e != 0:
		return 0, s.opError("read", os.NewSyscallError("read", e))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *Socket) readStep(fd uintptr) bool {
	s.rn, s.rerrno = Read(fd, s.rbuf)
	if s.rerrno == syscall.EAGAIN {
		s.rerrno = 0
		return false
	}
	return true
}

// Write writes all of p.
func (s *Socket) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf, s.wn, s.werrno = p, 0, 0
	if s.writeF == nil {
		s.writeF = s.writeStep
	}
	err := s.rawConn.Write(s.writeF)
	n, e := s.wn, s.werrno
	s.wbuf = nil
	switch {
	case err != nil:
		return n, s.opError("write", err)
	case e != 0:
		return n, s.opError("write", os.NewSyscallError("write", e))
	}
	return n, nil
}

func (s *Socket) writeStep(fd uintptr) bool {
	n, e := Write(fd, s.wbuf[s.wn:])
	s.wn += n
	switch e {
	case 0:
		return true
	case syscall.EAGAIN:
		return false
	}
	s.werrno = e
	return true
}

// Close closes the socket: at once when no system call is in progress on
// it, else when the last one ends. A second Close returns net.ErrClosed.
func (s *Socket) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return s.opError("close", net.ErrClosed)
	}
	s.closing = true
	last := s.refs == 0
	s.mu.Unlock()
	if !last {
		return nil
	}
	if err := s.destroy(); err != nil {
		return s.opError("close", err)
	}
	return nil
}

// CloseWrite shuts down the writing side (shutdown(2) SHUT_WR).
func (s *Socket) CloseWrite() error {
	var e syscall.Errno
	err := s.rawConn.Control(func(fd uintptr) {
		_, _, e = unix.RawSyscall(unix.SYS_SHUTDOWN, fd, unix.SHUT_WR, 0)
	})
	if err == nil && e != 0 {
		err = os.NewSyscallError("shutdown", e)
	}
	if err != nil {
		return s.opError("close", err)
	}
	return nil
}

// LocalAddr is the address the socket is bound to.
func (s *Socket) LocalAddr() net.Addr { return tcpAddr(&s.laddr, s.local) }

// RemoteAddr is the peer's address.
func (s *Socket) RemoteAddr() net.Addr { return tcpAddr(&s.raddr, s.remote) }

// tcpAddr returns the *net.TCPAddr of ap that p holds, made and stored
// the first time (any goroutine may make it; one of them is kept).
func tcpAddr(p *atomic.Pointer[net.TCPAddr], ap netip.AddrPort) *net.TCPAddr {
	if a := p.Load(); a != nil {
		return a
	}
	p.CompareAndSwap(nil, net.TCPAddrFromAddrPort(ap))
	return p.Load()
}

// SetDeadline sets the read and write deadlines.
func (s *Socket) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline (the zero time: none).
func (s *Socket) SetReadDeadline(t time.Time) error {
	return s.setDeadline(t, &s.rdl, &s.rdlNs, (*os.File).SetReadDeadline)
}

// SetWriteDeadline sets the write deadline (the zero time: none).
func (s *Socket) SetWriteDeadline(t time.Time) error {
	return s.setDeadline(t, &s.wdl, &s.wdlNs, (*os.File).SetWriteDeadline)
}

func (s *Socket) setDeadline(t time.Time, at *time.Time, ns *atomic.Int64, set func(*os.File, time.Time) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return s.opError("set", net.ErrClosed)
	}
	*at = t
	ns.Store(Mono(t))
	if s.file != nil {
		if err := set(s.file, t); err != nil {
			return s.opError("set", err)
		}
	}
	return nil
}

// opError wraps err as the net package's errors are: a *net.OpError.
func (s *Socket) opError(op string, err error) error {
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: tcpAddr(&s.laddr, s.local), Addr: tcpAddr(&s.raddr, s.remote), Err: err}
}

// Acceptor takes connections from one listening socket: accept4(2), its
// TCP_NODELAY and its local address are raw system calls, and each
// connection is a Socket, non-blocking and close-on-exec. It waits for the
// listener in the runtime's poller, or with a Waiter (SetWaiter: the
// event loop the accepting code runs on). Its state is reused from one
// accept to the next, so one goroutine or loop at a time calls Accept.
type Acceptor struct {
	rc     syscall.RawConn
	fd     int // rc's descriptor, for a Waiter (-1: unknown)
	waiter atomic.Pointer[waiterRef]
	nfd    int
	rsa    unix.RawSockaddrAny
	errno  syscall.Errno
	again  bool                  // tryOnce found no connection
	accept func(fd uintptr) bool // acceptOnce, made once
	try    func(fd uintptr) bool // tryOnce, made once
}

// NewAcceptor returns an Acceptor for the listening socket rc is the
// RawConn of.
func NewAcceptor(rc syscall.RawConn) *Acceptor {
	a := &Acceptor{rc: rc, fd: -1}
	a.accept, a.try = a.acceptOnce, a.tryOnce
	if err := rc.Control(func(fd uintptr) { a.fd = int(fd) }); err != nil {
		a.fd = -1
	}
	return a
}

// SetWaiter makes w wait for the listener in Accept, in place of the
// runtime's poller (nil: undo). It makes the Acceptor an
// evloop.Bindable.
func (a *Acceptor) SetWaiter(w Waiter) {
	if w == nil {
		a.waiter.Store(nil)
		return
	}
	a.waiter.Store(&waiterRef{w})
}

// Wake ends a Waiter's wait for the listener: the listener's owner calls
// it after closing the listening socket, so that Accept returns.
func (a *Acceptor) Wake() {
	if r := a.waiter.Load(); r != nil && a.fd >= 0 {
		r.w.Wake(a.fd)
	}
}

// tryOnce is acceptOnce for a Waiter: it never leaves the runtime to wait
// (again: nothing to accept yet).
func (a *Acceptor) tryOnce(fd uintptr) bool {
	a.again = !a.acceptOnce(fd)
	return true
}

// wait runs accept4 until it takes a connection or fails, waiting for the
// listener in between: with the Waiter, under a reference to the socket
// for each try (a listener closed meanwhile fails the next try), or in
// the runtime's poller.
func (a *Acceptor) wait() error {
	for {
		r := a.waiter.Load()
		if r == nil || a.fd < 0 {
			return a.rc.Read(a.accept)
		}
		if err := a.rc.Read(a.try); err != nil || !a.again {
			return err
		}
		on, err := r.w.Wait(a.fd, false, 0)
		if !on {
			return a.rc.Read(a.accept) // the code left its loop
		}
		if err != nil {
			return err
		}
	}
}

// acceptOnce is the accept4(2) rc.Read runs: done unless the listener
// has no connection yet.
func (a *Acceptor) acceptOnce(fd uintptr) bool {
	for {
		alen := uint32(unsafe.Sizeof(a.rsa))
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(&a.rsa)), uintptr(unsafe.Pointer(&alen)),
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			a.nfd = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for the listener
		}
		a.errno = e
		return true
	}
}

// Accept takes the next connection. Errors are *net.OpError, as
// net.TCPListener's.
func (a *Acceptor) Accept() (*Socket, error) {
	a.nfd, a.errno = -1, 0
	opErr := func(err error) error { return &net.OpError{Op: "accept", Net: "tcp", Err: err} }
	if err := a.wait(); err != nil {
		return nil, opErr(err)
	}
	if a.errno != 0 {
		return nil, opErr(os.NewSyscallError("accept4", a.errno))
	}
	nfd := a.nfd
	remote := RawAddrPort(&a.rsa)
	one := int32(1)
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(nfd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
	local, err := LocalAddrPort(nfd)
	if err != nil {
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(nfd), 0, 0)
		return nil, opErr(err)
	}
	return OwnNonblocking(nfd, local, remote), nil // accept4 made it non-blocking
}

// LocalAddrPort is the address the socket fd is bound to: getsockname(2),
// raw (x/sys's Getsockname asks getsockopt through the runtime's entry
// for blocking calls).
func LocalAddrPort(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	alen := uint32(unsafe.Sizeof(rsa))
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&alen))); e != 0 {
		return netip.AddrPort{}, os.NewSyscallError("getsockname", e)
	}
	return RawAddrPort(&rsa), nil
}

// RawAddrPort reads an IPv4 or IPv6 socket address as the kernel wrote
// it (an IPv4-mapped IPv6 address stays as written).
func RawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// ListenerFile returns a duplicate of ln's listening socket as an os.File
// registered with the runtime's poller, whose RawConn Accept waits on (Go's
// listener gives none that waits). The caller closes it together with ln:
// the socket listens until both are closed.
func ListenerFile(ln net.Listener) (*os.File, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("sockio: %T is not a TCP listener", ln)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sockio: listener: %w", err)
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("sockio: listener: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("sockio: duplicating the listener: %w", derr)
	}
	// The duplicate shares the listener's non-blocking flag: os.NewFile
	// registers it with the runtime's poller.
	return os.NewFile(uintptr(nfd), "listener "+ln.Addr().String()), nil
}

// Adopt moves c's socket into a Socket: a duplicate of its descriptor
// (non-blocking, close-on-exec) becomes the Socket's, and c is closed.
func Adopt(c *net.TCPConn) (*Socket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sockio: adopting a connection: %w", err)
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("sockio: adopting a connection: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("sockio: adopting a connection: %w", derr)
	}
	local, remote := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	c.Close()
	// The duplicate shares the descriptor's non-blocking flag, which Go's
	// sockets have.
	s, err := NewSocket(nfd, local, remote)
	if err != nil {
		unix.Close(nfd)
		return nil, err
	}
	return s, nil
}
