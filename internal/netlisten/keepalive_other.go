//go:build !linux

package netlisten

import "net"

// listenConfig returns the configuration of a listening socket: Go sets
// the keep-alive options on each accepted connection.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
	}}
}
