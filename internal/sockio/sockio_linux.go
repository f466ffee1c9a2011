//go:build linux

package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxRW is the most one call reads or writes, as in Go's internal/poll:
// some kernels refuse larger counts.
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write make raw system calls.
// Everything else (deadlines, Close, CloseWrite, addresses, SyscallConn) is
// the socket's beneath: Go's *net.TCPConn (New), or a Socket whose
// descriptor the program owns (NewOwned). Reads and writes behave as the TCPConn's do: a Write
// returns only when all of p is written or it fails, a read of end of
// stream returns io.EOF, deadlines and closing interrupt a wait, and
// errors are *net.OpError like the net package's.
type Conn struct {
	socket
	tcp *net.TCPConn // the socket when it is Go's (RawTCP)
	own *Socket      // the socket when it is the program's own
	rc  syscall.RawConn

	fd int // the descriptor's number (FD)

	rmu    sync.Mutex // guards the read state below across one Read
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // guards the write state below across one Write
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool

	// waiter, when set, waits for readiness in place of the runtime's
	// poller (SetWaiter); rfd and wfd are the descriptor the last step
	// used, tryReadFn and tryWriteFn the steps that never wait, as
	// functions for the RawConn (made at their first use: an owned
	// socket's steps run without them, tryReadOnce).
	waiter atomic.Pointer[waiterRef]
	// firstWaiter is the first SetWaiter's Waiter, which waiter points
	// to; firstSet: it has been set (SetWaiter's callers do not race).
	firstWaiter waiterRef
	firstSet    bool
	rfd, wfd    int
	tryReadFn   func(fd uintptr) bool
	tryWriteFn  func(fd uintptr) bool
	// rdl and wdl are the read and write deadlines (on the monotonic
	// clock, Mono; 0: none), for a Waiter; the TCPConn has them too.
	rdl, wdl atomic.Int64
	// drained (guarded by rmu) is true when the last read on a Waiter
	// emptied the socket (it returned less than asked), or before the
	// first: any byte that arrives after it is a new readiness event for
	// the Waiter, so the next Read waits first instead of making a read
	// that finds nothing. A read elsewhere (the runtime's poller, ReadNow)
	// clears it.
	drained bool
	// closing is set when Close begins: a Read no longer waits on the
	// descriptor of an earlier read, whose number may be reused.
	closing atomic.Bool

	// writeReadFn is WriteRead's step; wrWriting is true until its write
	// is done, wrLeft when the socket did not take all of it at once.
	writeReadFn func(fd uintptr) bool
	wrWriting   bool
	wrLeft      bool
	wrIdle      bool // peek first
	wrPending   bool // the peek found something
}

// socket is what a Conn reads and writes: Go's *net.TCPConn, or a
// Socket that owns its descriptor.
type socket = TCPSocket

// New returns c reading and writing with raw system calls, or c itself
// (as a net.Conn) when its descriptor cannot be reached.
func New(c *net.TCPConn) net.Conn {
	s := newConn(c)
	if s == nil {
		return c
	}
	s.tcp = c
	return s
}

// AsTCPSocket returns c as a TCPSocket when it is one: a *net.TCPConn or
// a Socket.
func AsTCPSocket(c net.Conn) (TCPSocket, bool) {
	switch t := c.(type) {
	case *net.TCPConn:
		return t, true
	case *Socket:
		return t, true
	}
	return nil, false
}

// NewOwned returns a Conn over s, a socket whose descriptor the program
// owns: with a Waiter (SetWaiter) it makes no call through the runtime,
// closing included.
func NewOwned(s *Socket) *Conn { return newConn(s) }

// InitOwned makes c, a zero Conn, a Conn over s as NewOwned does, in
// storage of the caller's (a connection's struct that holds its Conn): no
// allocation. c must not be copied afterwards.
func (c *Conn) InitOwned(s *Socket) { c.init(s) }

func newConn(sock socket) *Conn {
	s := new(Conn)
	if !s.init(sock) {
		return nil
	}
	return s
}

// init makes s, a zero Conn, a Conn over sock; false when sock has no
// RawConn.
func (s *Conn) init(sock socket) bool {
	rc, err := sock.SyscallConn()
	if err != nil {
		return false
	}
	s.socket, s.rc = sock, rc
	// A Waiter that has not waited for the socket yet starts watching it
	// at its first wait and reports the bytes already there: the first
	// read on a Waiter needs no read before that wait either.
	s.drained = true
	if so, ok := sock.(*Socket); ok {
		// A new socket of the program's own: its number, without the
		// allocation a function that captures s would cost.
		s.fd = so.fd
		s.rfd, s.wfd = s.fd, s.fd
		s.own = so
	} else {
		rc.Control(func(fd uintptr) { s.fd, s.rfd, s.wfd = int(fd), int(fd), int(fd) })
	}
	// The steps that wait in the runtime's poller (readFn, writeFn,
	// writeReadFn), and the RawConn's steps that never wait, are made at
	// their first use: a session on an event loop never needs the first,
	// nor the second on a socket of the program's own, and each is an
	// allocation.
	return true
}

// Wrap returns c reading and writing with raw system calls when it is a
// *net.TCPConn or a Socket, and c unchanged otherwise.
func Wrap(c net.Conn) net.Conn {
	switch t := c.(type) {
	case *net.TCPConn:
		return New(t)
	case *Socket:
		return NewOwned(t)
	}
	return c
}

// RawTCP returns the socket beneath, for a relay that splices it: the
// *net.TCPConn, or the owned Socket.
func (c *Conn) RawTCP() (TCPSocket, bool) { return c.socket, true }

// ReadFrom copies r to the socket: with Go's splice(2) and sendfile(2)
// paths when the socket is a *net.TCPConn.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if c.tcp != nil {
		return c.tcp.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// WriteTo copies the socket to w: with Go's splice(2) path when the socket
// is a *net.TCPConn.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if c.tcp != nil {
		return c.tcp.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c})
}

// Read reads up to len(p) bytes, waiting for the socket to be readable.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // as net's: no system call, no end of stream
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	var err error
	if r := c.waiter.Load(); r == nil || !c.readOnWaiter(r.w, &err) {
		c.rn, c.rerr, c.drained = 0, 0, false
		if c.readFn == nil {
			c.readFn = c.readOnce
		}
		err = c.rc.Read(c.readFn)
	}
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	return c.readResult(n, errno, err)
}

// readResult is what Read returns for a read step's count n and errno, or
// the RawConn's err (a closed connection, a deadline).
func (c *Conn) readResult(n int, errno syscall.Errno, err error) (int, error) {
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOnce is the RawConn read step: false asks to wait for readability.
func (c *Conn) readOnce(fd uintptr) bool {
	n, e := Read(fd, c.rbuf)
	if e == syscall.EAGAIN {
		return false
	}
	c.rn, c.rerr = n, e
	return true
}

// Write writes all of p, waiting for the socket to be writable as often
// as needed.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	var err error
	if r := c.waiter.Load(); r == nil || !c.writeOnWaiter(r.w, &err) {
		c.werr = 0
		if c.writeFn == nil {
			c.writeFn = c.writeSome
		}
		err = c.rc.Write(c.writeFn)
	}
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// writeSome is the RawConn write step: it writes until all is written, the
// socket is full (false: wait for writability) or an error.
func (c *Conn) writeSome(fd uintptr) bool {
	n, e := Write(fd, c.wbuf[c.wn:])
	c.wn += n
	switch e {
	case 0:
		return true
	case syscall.EAGAIN:
		return false
	}
	c.werr = e
	return true
}

// WriteRead writes all of w and then reads up to len(r) bytes, as Write
// and then Read do, for a request whose answer cannot come before the
// request is sent (a proxy's request to its backend): after the write the
// socket is not read until the poller reports it readable, which saves
// the read that would find nothing. The poller's record of readiness is
// cleared before the write, not after it, so an answer that comes at once
// still ends the wait; but so is any readiness from before the call. So
// with idle set (a connection taken from a pool of idle ones), the socket
// is first peeked, after the clearing: if bytes or the end of the stream
// are waiting, nothing is written and the error is ErrPending. Without
// idle, nothing must be waiting when WriteRead is called (a new
// connection, whose peer speaks only when spoken to).
//
// What the socket does not take of w at once is written as Write writes
// it, and the answer then read as Read reads it. nw is what was written;
// an error with nw < len(w) is the write's.
func (c *Conn) WriteRead(w, r []byte, idle bool) (nw, nr int, err error) {
	if len(w) == 0 || len(r) == 0 || c.waiter.Load() != nil {
		if idle {
			if err := c.pending(); err != nil {
				return 0, 0, err
			}
		}
		if nw, err = c.Write(w); err != nil {
			return nw, 0, err
		}
		nr, err = c.Read(r)
		return nw, nr, err
	}
	if len(r) > maxRW {
		r = r[:maxRW]
	}
	c.rmu.Lock()
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = w, 0, 0
	c.rbuf, c.rn, c.rerr = r, 0, 0
	c.wrWriting, c.wrLeft, c.wrIdle, c.wrPending = true, false, idle, false
	if c.writeReadFn == nil {
		c.writeReadFn = c.writeReadStep
	}
	rawErr := c.rc.Read(c.writeReadFn)
	nw, werr := c.wn, c.werr
	nr, rerr := c.rn, c.rerr
	writing, left, pending := c.wrWriting, c.wrLeft, c.wrPending
	c.wbuf, c.rbuf = nil, nil
	c.wmu.Unlock()
	c.rmu.Unlock()
	switch {
	case pending:
		return 0, 0, ErrPending
	case werr != 0:
		return nw, 0, c.opError("write", os.NewSyscallError("write", werr))
	case rawErr != nil && writing:
		return nw, 0, c.opError("write", rawErr)
	case left:
		n, err := c.Write(w[nw:])
		nw += n
		if err != nil {
			return nw, 0, err
		}
		nr, err = c.Read(r)
		return nw, nr, err
	}
	nr, err = c.readResult(nr, rerr, rawErr)
	return nw, nr, err
}

// writeReadStep is WriteRead's RawConn read step: the peek of an idle
// connection, the write (false: wait for readability before the first
// read), then readOnce.
func (c *Conn) writeReadStep(fd uintptr) bool {
	if !c.wrWriting {
		return c.readOnce(fd)
	}
	if c.wrIdle {
		c.wrIdle = false
		if _, e := Peek(fd); e != syscall.EAGAIN {
			c.wrPending = true // bytes, the end of the stream, or an error
			return true
		}
	}
	if !c.writeSome(fd) {
		c.wrLeft = true // full: the rest is Write's
		return true
	}
	if c.werr != 0 {
		return true
	}
	c.wrWriting = false
	return false
}

// pending peeks at the socket: ErrPending unless nothing is waiting.
func (c *Conn) pending() error {
	var e syscall.Errno
	if err := c.rc.Control(func(fd uintptr) { _, e = Peek(fd) }); err != nil {
		return c.opError("read", err)
	}
	if e != syscall.EAGAIN {
		return ErrPending
	}
	return nil
}

// opError wraps err as the net package does for a TCPConn's Read and
// Write. An error from the RawConn (closed, deadline) is already an
// *net.OpError, for the operation "raw-read" or "raw-write": its cause is
// kept and the operation named as net names it.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// SetWaiter makes w wait for the socket's readiness in Read and Write (nil:
// the runtime's poller waits, as by default). The code that reads and
// writes must be the code w runs. Close wakes w.
func (c *Conn) SetWaiter(w Waiter) {
	if w == nil {
		c.waiter.Store(nil)
		return
	}
	if !c.firstSet {
		// The first Waiter is kept in the Conn: no allocation. The slot
		// is never written again, so a Read that loaded it reads it
		// safely after any later SetWaiter.
		c.firstSet = true
		c.firstWaiter.w = w
		c.waiter.Store(&c.firstWaiter)
		return
	}
	c.waiter.Store(&waiterRef{w})
}

// Close closes the connection and wakes a Waiter waiting for it.
func (c *Conn) Close() error {
	c.closing.Store(true)
	r := c.waiter.Load()
	if r == nil {
		return c.socket.Close()
	}
	fd := c.FD()
	err := c.socket.Close()
	r.w.Wake(fd)
	return err
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.Store(Mono(t))
	c.wdl.Store(Mono(t))
	err := c.socket.SetDeadline(t)
	c.wakeIfPast(t)
	return err
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdl.Store(Mono(t))
	err := c.socket.SetReadDeadline(t)
	c.wakeIfPast(t)
	return err
}

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(Mono(t))
	err := c.socket.SetWriteDeadline(t)
	c.wakeIfPast(t)
	return err
}

// wakeIfPast wakes a Waiter for a deadline already past (the way to
// interrupt a wait from another goroutine): a Waiter's wait in progress
// holds the deadline it started with, and would not see the new one
// before that.
func (c *Conn) wakeIfPast(t time.Time) {
	if t.IsZero() {
		return
	}
	if r := c.waiter.Load(); r != nil && Mono(t) <= MonoNow() {
		r.w.Wake(-1)
	}
}

// readOnWaiter is Read's step with w waiting: false when w no longer runs
// this code and nothing was read (the runtime's poller waits instead).
// The RawConn still guards the descriptor against a concurrent Close and
// checks the deadline.
func (c *Conn) readOnWaiter(w Waiter, err *error) bool {
	if c.drained && !c.closing.Load() {
		// The socket was empty after the last read: nothing can be
		// there that the Waiter has not seen arrive.
		c.drained = false
		on, e := w.Wait(c.rfd, false, c.rdl.Load())
		if !on {
			return false
		}
		if e != nil {
			*err = e
			return true
		}
	}
	for {
		if e := c.tryReadOnce(); e != nil {
			c.drained = false
			*err = e
			return true
		}
		if c.rerr != syscall.EAGAIN {
			// A short read emptied the socket: TCP returns less than
			// asked only when nothing more is queued.
			c.drained = c.rerr == 0 && c.rn > 0 && c.rn < len(c.rbuf)
			return true
		}
		c.rerr = 0
		on, e := w.Wait(c.rfd, false, c.rdl.Load())
		if !on {
			return false
		}
		if e != nil {
			*err = e
			return true
		}
	}
}

// writeOnWaiter is Write's step with w waiting: false when w no longer
// runs this code (the runtime's poller waits for the rest).
func (c *Conn) writeOnWaiter(w Waiter, err *error) bool {
	for {
		if e := c.tryWriteOnce(); e != nil {
			*err = e
			return true
		}
		if c.werr != syscall.EAGAIN {
			return true
		}
		c.werr = 0
		on, e := w.Wait(c.wfd, true, c.wdl.Load())
		if !on {
			return false
		}
		if e != nil {
			*err = e
			return true
		}
	}
}

// tryRead is a RawConn read step that never waits: EAGAIN is left in
// rerr.
func (c *Conn) tryRead(fd uintptr) bool {
	c.rfd = int(fd)
	c.rn, c.rerr = Read(fd, c.rbuf)
	return true
}

// tryWrite is a RawConn write step that never waits: it writes what the
// socket takes, leaving EAGAIN in werr when it is full.
func (c *Conn) tryWrite(fd uintptr) bool {
	c.wfd = int(fd)
	if !c.writeSome(fd) {
		c.werr = syscall.EAGAIN
	}
	return true
}

// tryReadOnce runs tryRead once, the descriptor guarded against a
// concurrent Close and the read deadline checked, as the RawConn's Read
// does: directly on a socket of the program's own, without the RawConn's
// function and its indirect calls, while the runtime's poller does not
// have it.
func (c *Conn) tryReadOnce() error { return c.tryOnce(false) }

// tryWriteOnce is tryReadOnce for tryWrite.
func (c *Conn) tryWriteOnce() error { return c.tryOnce(true) }

// tryOnce is tryReadOnce, or tryWriteOnce when write.
func (c *Conn) tryOnce(write bool) error {
	if s := c.own; s != nil {
		dl := &s.rdlNs
		if write {
			dl = &s.wdlNs
		}
		if fd, ok, err := s.acquireBefore(dl); err != nil {
			return err
		} else if ok {
			if write {
				c.tryWrite(uintptr(fd))
			} else {
				c.tryRead(uintptr(fd))
			}
			s.release()
			return nil
		}
	}
	if write {
		if c.tryWriteFn == nil {
			c.tryWriteFn = c.tryWrite
		}
		return c.rc.Write(c.tryWriteFn)
	}
	if c.tryReadFn == nil {
		c.tryReadFn = c.tryRead
	}
	return c.rc.Read(c.tryReadFn)
}

// ErrWouldBlock is ReadNow's and WriteNow's answer when the socket has
// nothing to read or no room to write: this value itself, never wrapped,
// so that a relay may compare it.
var ErrWouldBlock = errors.New("sockio: the socket is not ready")

// ReadNow reads what is queued on the socket without waiting: 0 and
// ErrWouldBlock when nothing is, io.EOF at the end of the stream. It is for
// an event loop's relay, which waits for readiness itself; the descriptor
// is guarded against a concurrent Close as in Read.
func (c *Conn) ReadNow(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr, c.drained = p, 0, 0, false
	err := c.tryReadOnce()
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// WriteNow writes what the socket takes of p without waiting: the count
// written, with ErrWouldBlock when it took less than all.
func (c *Conn) WriteNow(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.tryWriteOnce()
	n, errno := c.wn, c.werr
	c.wbuf = nil
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno == syscall.EAGAIN:
		return n, ErrWouldBlock
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// FD returns the socket's descriptor, -1 once it is closed: for waiting
// for it (the number is reused after a Close).
func (c *Conn) FD() int {
	// The number is the socket's for its whole life; Control fails once
	// it is closed. A function that captures nothing costs no allocation.
	if c.rc.Control(noStep) != nil {
		return -1
	}
	return c.fd
}

// noStep is a RawConn function that does nothing.
func noStep(uintptr) {}
