//go:build !linux

package webproxy

// directPeek: without the idle peek every request takes the ReverseProxy
// path.
const directPeek = false

func (bc *backendConn) idleClean() bool { return false }
