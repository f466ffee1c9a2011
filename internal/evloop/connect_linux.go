//go:build linux

package evloop

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
		var sa unix.Sockaddr
		if a := ap.Addr(); a.Is4() {
			sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
		} else {
			sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
		}
		var cerr error
		err = c.Control(func(fd uintptr) { cerr = connect(t, int(fd), sa, deadline) })
		if err != nil {
			return err
		}
		return cerr
	}
}

// connect starts a non-blocking connect and waits on t's loop until it is
// made, failed, or the deadline passes.
func connect(t *task, fd int, sa unix.Sockaddr, deadline time.Time) error {
	err := unix.Connect(fd, sa)
	for err == unix.EINTR {
		err = unix.Connect(fd, sa)
	}
	switch err {
	case nil, unix.EISCONN:
		return nil
	case unix.EINPROGRESS, unix.EALREADY:
	default:
		return os.NewSyscallError("connect", err)
	}
	for {
		on, werr := t.Wait(fd, true, deadline)
		if !on {
			return fmt.Errorf("evloop: connect: the handler left its loop")
		}
		if werr != nil {
			return werr
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return os.NewSyscallError("getsockopt", err)
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
