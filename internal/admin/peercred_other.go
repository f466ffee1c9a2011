//go:build !linux

package admin

import "net"

// peerUser names the OS user at the other end of a unix socket; peer
// credentials are read on Linux only, elsewhere the actor is ActorUnix.
func peerUser(*net.UnixConn) string { return "" }
