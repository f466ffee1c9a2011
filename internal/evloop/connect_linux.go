//go:build linux

package evloop

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/sockio"
)

// ConnectControl returns a net.Dialer Control function that, when the
// handler ctx belongs to runs on a loop, connects the socket itself and
// waits on the loop for the connection to be made, until deadline: the
// runtime then finds the socket connected and does not wait. Off a loop
// it returns nil: the Dialer connects as usual.
func ConnectControl(ctx context.Context, deadline time.Time) func(network, address string, c syscall.RawConn) error {
	t, ok := ctx.Value(ctxKey{}).(*task)
	if !ok || !t.onLoop() {
		return nil
	}
	return func(network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("evloop: connect to %q: %w", address, err)
		}
		var cerr error
		err = c.Control(func(fd uintptr) {
			cerr = connect(t, int(fd), ap, deadline)
			if cerr != nil {
				// The Dialer closes the socket: its number may come back.
				t.l.forgetFD(t, int(fd))
			}
		})
		if err != nil {
			return err
		}
		return cerr
	}
}

// connect starts a non-blocking connect and waits on t's loop until it is
// made, failed, or the deadline passes. The system calls are raw: the
// socket is non-blocking, and the runtime's entry for blocking calls would
// wake its monitor thread for nothing.
func connect(t *task, fd int, ap netip.AddrPort, deadline time.Time) error {
	dl := sockio.Mono(deadline)
	rsa, alen := rawSockaddr(ap)
	var e unix.Errno
	for {
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), alen)
		if e != unix.EINTR {
			break
		}
	}
	switch e {
	case 0, unix.EISCONN:
		return nil
	case unix.EINPROGRESS, unix.EALREADY:
	default:
		return os.NewSyscallError("connect", e)
	}
	for {
		on, werr := t.Wait(fd, true, dl)
		if !on {
			return fmt.Errorf("evloop: connect: the handler left its loop")
		}
		if werr != nil {
			return werr
		}
		var v int32
		l := uint32(4)
		if _, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR,
			uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
			return os.NewSyscallError("getsockopt", e)
		}
		switch e := syscall.Errno(v); e {
		case 0:
			return nil
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			continue
		default:
			return os.NewSyscallError("connect", e)
		}
	}
}

// rawSockaddr is ap as the kernel reads it, and its length. An IPv4
// address (also written as IPv4-mapped IPv6) goes to an IPv4 socket, as
// the Dialer makes for it.
func rawSockaddr(ap netip.AddrPort) (unix.RawSockaddrAny, uintptr) {
	var rsa unix.RawSockaddrAny
	port := ap.Port()
	if a := ap.Addr().Unmap(); a.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		sa.Family = unix.AF_INET
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port) // network byte order
		sa.Addr = a.As4()
		return rsa, unix.SizeofSockaddrInet4
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
	sa.Family = unix.AF_INET6
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	sa.Addr = ap.Addr().As16()
	return rsa, unix.SizeofSockaddrInet6
}

// DialSocket connects to ap from the loop ctx's handler runs on, with a
// socket the program owns (sockio.Socket; read it through a sockio.Conn,
// NewOwned or InitOwned): the socket, its options, the connect and,
// later, its close are raw system calls, and the runtime's poller never
// has it while its handler stays on the loop. control, if not nil, runs
// on the socket before it connects (keep-alive options). on is false,
// and nothing is done, when the handler does not run on a loop. Errors
// are *net.OpError, as net.Dialer's.
func DialSocket(ctx context.Context, ap netip.AddrPort, deadline time.Time, control func(fd int) error) (s *sockio.Socket, on bool, err error) {
	t, ok := ctx.Value(ctxKey{}).(*task)
	if !ok || !t.onLoop() {
		return nil, false, nil
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	if !deadline.IsZero() && !deadline.After(time.Now()) {
		return nil, true, opErr(os.ErrDeadlineExceeded)
	}
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family = unix.AF_INET
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return nil, true, opErr(os.NewSyscallError("socket", e))
	}
	fd := int(r)
	fail := func(err error) (*sockio.Socket, bool, error) {
		t.l.forgetFD(t, fd)
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
		return nil, true, opErr(err)
	}
	one := int32(1)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
		return fail(os.NewSyscallError("setsockopt", e))
	}
	if control != nil {
		if err := control(fd); err != nil {
			return fail(err)
		}
	}
	if err := connect(t, fd, ap, deadline); err != nil {
		return fail(err)
	}
	local, err := sockio.LocalAddrPort(fd)
	if err != nil {
		return fail(err)
	}
	return sockio.OwnNonblocking(fd, local, ap), true, nil // socket(2) made it non-blocking
}
