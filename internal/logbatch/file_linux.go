package logbatch

import (
	"bytes"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawChunk is the most a raw write carries: PIPE_BUF, which a pipe that
// polls writable takes whole without blocking.
const rawChunk = 4096

// fileWriter writes a batch to a pipe or a socket (a service manager's
// journal, a container runtime's log) with raw write system calls where
// it can. A write through *os.File is a system call the runtime accounts
// for: it wakes the runtime's monitor thread from its deep sleep, which
// then polls every 20 µs for a millisecond or more. On a gateway whose
// sessions make only raw system calls (the event loops), the log's
// flush was the one such call left, and the monitor's polling after it
// cost about a tenth of a login's CPU. A raw write is made only when it
// cannot block: the pipe or socket polls writable and the chunk is at
// most rawChunk bytes of whole lines. Anything else — a full pipe, a
// line longer than rawChunk, an error — goes through the *os.File.
//
// A regular file (or a terminal) always goes through the *os.File: it
// polls writable whether or not a write will wait (a disk whose
// write-back is congested holds writers for as long as it takes), and a
// raw system call that waits keeps its processor from every other
// goroutine — with one processor (postern's when it is nearly idle), the
// whole gateway. A write the runtime accounts for lets go of it.
type fileWriter struct {
	f  *os.File
	fd int // -1: no raw writes
}

func newFileWriter(f *os.File) *fileWriter {
	w := &fileWriter{f: f, fd: -1}
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			var st unix.Stat_t
			if unix.Fstat(int(fd), &st) == nil && (st.Mode&unix.S_IFMT == unix.S_IFIFO || st.Mode&unix.S_IFMT == unix.S_IFSOCK) {
				w.fd = int(fd)
			}
		})
	}
	return w
}

// Write writes p in raw chunks while it can, the rest through the file.
func (w *fileWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && w.fd >= 0 {
		chunk := p[n:]
		if len(chunk) > rawChunk {
			i := bytes.LastIndexByte(chunk[:rawChunk], '\n')
			if i < 0 {
				break // a line longer than a chunk: one write through the file
			}
			chunk = chunk[:i+1]
		}
		if !writable(w.fd) {
			break
		}
		k, ok := rawWrite(w.fd, chunk)
		n += k
		if !ok {
			break
		}
	}
	if n < len(p) {
		m, err := w.f.Write(p[n:])
		return n + m, err
	}
	return n, nil
}

// writable reports whether fd polls writable now (a raw ppoll that does
// not wait).
func writable(fd int) bool {
	pfd := unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
	var zero unix.Timespec
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		return e == 0 && n == 1 && pfd.Revents&unix.POLLOUT != 0 && pfd.Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) == 0
	}
}

// rawWrite makes one raw write of p (again on EINTR); false when it
// failed or wrote nothing.
func rawWrite(fd int, p []byte) (int, bool) {
	for {
		k, _, e := syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 || k == 0 {
			return 0, false
		}
		return int(k), true
	}
}
