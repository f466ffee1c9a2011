package relay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// backendDialer returns the net.Dialer of backend connections to addr
// (host:port). For an IP address the choice is made here: none for
// loopback, else Go's keep-alive setup. For a host name Go's
// per-connection keep-alive setup is off, and control sets the probes on
// the socket before it connects when the resolved address is not loopback
// (the kernel starts the keep-alive timer once the connection is
// established).
func backendDialer(addr string, timeout time.Duration) net.Dialer {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if ap.Addr().Unmap().IsLoopback() {
			return net.Dialer{Timeout: timeout, KeepAlive: -1}
		}
		return net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: backendKeepAliveIdle, Interval: backendKeepAliveInterval, Count: backendKeepAliveCount,
		}}
	}
	return net.Dialer{Timeout: timeout, KeepAlive: -1, ControlContext: keepAliveControl}
}

// ownedDialControl is what a socket of the event loops' own (DialSocket)
// to ap needs before it connects: keep-alive probes when ap is not
// loopback, as backendDialer's.
func ownedDialControl(ap netip.AddrPort) func(fd int) error {
	if ap.Addr().Unmap().IsLoopback() {
		return nil
	}
	return setKeepAlive
}

func keepAliveControl(_ context.Context, _, address string, c syscall.RawConn) error {
	if !needsKeepAlive(address) {
		return nil
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = setKeepAlive(int(fd)) }); err != nil {
		return fmt.Errorf("keep-alive options for %s: %w", address, err)
	}
	if serr != nil {
		return fmt.Errorf("keep-alive options for %s: %w", address, serr)
	}
	return nil
}

func setKeepAlive(fd int) error {
	for _, o := range []struct {
		level, name, value int
	}{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(backendKeepAliveIdle.Seconds())},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(backendKeepAliveInterval.Seconds())},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, backendKeepAliveCount},
	} {
		if err := syscall.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			return fmt.Errorf("setsockopt(%d, %d): %w", o.level, o.name, err)
		}
	}
	return nil
}
