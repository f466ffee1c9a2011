//go:build !linux

package webproxy

import "syscall"

// directPeek: without the idle peek every request takes the ReverseProxy
// path.
const directPeek = false

func idleClean(syscall.RawConn) bool { return false }
