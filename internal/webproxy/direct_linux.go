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
func (bc *backendConn) idleClean() bool {
	if bc.peekFn == nil {
		bc.peekFn = bc.peek // made once: a closure per call would allocate
	}
	bc.clean = false
	err := bc.raw.Read(bc.peekFn)
	return err == nil && bc.clean
}

func (bc *backendConn) peek(fd uintptr) bool {
	_, e := sockio.Peek(fd)
	bc.clean = e == syscall.EAGAIN
	return true // never wait for readiness
}
