package webproxy

import (
	"syscall"

	"github.com/postern/postern/internal/sockio"
)

// directPeek: the idle peek works here, so the direct path is used.
const directPeek = true

// idleClean peeks at an idle backend socket without blocking: true when
// nothing is waiting on it and the backend has not closed it. Bytes
// waiting on an idle connection are an answer nobody asked for; they must
// never be read as the next request's.
func idleClean(rc syscall.RawConn) bool {
	clean := false
	err := rc.Read(func(fd uintptr) bool {
		_, e := sockio.Peek(fd)
		clean = e == syscall.EAGAIN
		return true // never wait for readiness
	})
	return err == nil && clean
}
