package relay

import (
	"net/netip"
	"time"
)

// Keep-alive of backend connections. A logged-in session relays without
// deadlines, so a backend host that vanishes without closing (power, a
// network partition) is found only by TCP keep-alive probes: Go's default
// times, the first probe after 15 s of silence, then every 15 s, dead
// after 9. A backend on the loopback interface needs none: its end is on
// this host, and the kernel closes it (FIN or RST) when its process dies.
// Dial skips the four setsockopt(2) calls then.
const (
	backendKeepAliveIdle     = 15 * time.Second
	backendKeepAliveInterval = 15 * time.Second
	backendKeepAliveCount    = 9
)

// needsKeepAlive reports whether a connection to address ("ip:port", as
// resolved for the connect) needs keep-alive probes: all but loopback.
func needsKeepAlive(address string) bool {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return true
	}
	return !ap.Addr().Unmap().IsLoopback()
}
