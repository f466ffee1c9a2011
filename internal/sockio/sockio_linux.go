//go:build linux

package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// maxRW is the most one call reads or writes, as in Go's internal/poll:
// some kernels refuse larger counts.
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write make raw system calls.
// Everything else (deadlines, Close, CloseWrite, addresses, SyscallConn) is
// the *net.TCPConn's. Reads and writes behave as the TCPConn's do: a Write
// returns only when all of p is written or it fails, a read of end of
// stream returns io.EOF, deadlines and closing interrupt a wait, and
// errors are *net.OpError like the net package's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

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
}

// New returns c reading and writing with raw system calls, or c itself
// (as a net.Conn) when its descriptor cannot be reached.
func New(c *net.TCPConn) net.Conn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	s := &Conn{TCPConn: c, rc: rc}
	s.readFn = s.readOnce
	s.writeFn = s.writeSome
	return s
}

// Wrap returns c reading and writing with raw system calls when it is a
// *net.TCPConn, and c unchanged otherwise.
func Wrap(c net.Conn) net.Conn {
	if t, ok := c.(*net.TCPConn); ok {
		return New(t)
	}
	return c
}

// RawTCP returns the socket beneath, for a relay that splices it.
func (c *Conn) RawTCP() (*net.TCPConn, bool) { return c.TCPConn, true }

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
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
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
	err := c.rc.Write(c.writeFn)
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
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		if len(rest) > maxRW {
			rest = rest[:maxRW]
		}
		var r uintptr
		var e syscall.Errno
		if raceEnabled {
			var n int
			n, e = annotatedIO(syscall.Write, fd, rest)
			r = uintptr(n)
		} else {
			r, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		}
		switch e {
		case 0:
			c.wn += int(r)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = e
		return true
	}
	return true
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
