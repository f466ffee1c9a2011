package netlisten

import (
	"fmt"
	"net"
	"syscall"
)

// listenConfig returns the configuration of a listening socket. On Linux
// an accepted socket inherits SO_KEEPALIVE and the TCP keep-alive times
// from its listening socket (the kernel clones the listener's socket for
// each connection), so they are set once here, and Go is told not to set
// them again on every accepted connection: four setsockopt(2) calls per
// connection fewer, the same probes.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = setKeepAlive(int(fd))
			})
			if err == nil {
				err = serr
			}
			if err != nil {
				return fmt.Errorf("keep-alive options on %s: %w", address, err)
			}
			return nil
		},
	}
}

func setKeepAlive(fd int) error {
	for _, o := range []struct {
		level, name, value int
	}{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(keepAliveIdle.Seconds())},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(keepAliveInterval.Seconds())},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
	} {
		if err := syscall.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			return fmt.Errorf("setsockopt(%d, %d): %w", o.level, o.name, err)
		}
	}
	return nil
}
