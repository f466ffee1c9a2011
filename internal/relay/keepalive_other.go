//go:build !linux

package relay

import (
	"net"
	"net/netip"
	"time"
)

// backendDialer returns the net.Dialer of backend connections, with Go's
// keep-alive probes.
func backendDialer(_ string, timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: backendKeepAliveIdle, Interval: backendKeepAliveInterval, Count: backendKeepAliveCount,
	}}
}

// ownedDialControl: there are no event loops here (DialSocket does nothing).
func ownedDialControl(netip.AddrPort) func(fd int) error { return nil }
