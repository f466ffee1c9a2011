package sockio

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read reads up to len(p) bytes from the socket fd with one raw read(2):
// for a syscall.RawConn's Read. 0 bytes and no error mean end of stream;
// EAGAIN means nothing is queued yet.
func Read(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	if raceEnabled {
		return annotatedIO(syscall.Read, fd, p)
	}
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// Write writes as much of p as the socket fd takes now with raw write(2)
// calls: for a syscall.RawConn's Write or Control. It returns the count
// written and EAGAIN when the socket took less than p.
func Write(fd uintptr, p []byte) (int, syscall.Errno) {
	n := 0
	for n < len(p) {
		rest := p[n:]
		if len(rest) > maxRW {
			rest = rest[:maxRW]
		}
		var r uintptr
		var e syscall.Errno
		if raceEnabled {
			var m int
			m, e = annotatedIO(syscall.Write, fd, rest)
			r = uintptr(m)
		} else {
			r, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		}
		switch e {
		case 0:
			n += int(r)
		case syscall.EINTR:
		default:
			return n, e
		}
	}
	return n, 0
}

// Queued returns the number of bytes queued for reading on the socket fd
// (ioctl SIOCINQ).
func Queued(fd uintptr) (int, syscall.Errno) {
	var v int32
	if _, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, fd, unix.SIOCINQ, uintptr(unsafe.Pointer(&v))); e != 0 {
		return 0, e
	}
	return int(v), 0
}

// EpollEvents reads the events ready on the epoll descriptor epfd without
// waiting (epoll_wait(2) with a timeout of 0): for an epoll descriptor that
// Go's poller watches, once it reported it readable.
func EpollEvents(epfd uintptr, events []unix.EpollEvent) (int, syscall.Errno) {
	if len(events) == 0 {
		return 0, 0
	}
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// annotatedIO makes a read or write through the syscall package, for the
// race detector (see race.go).
func annotatedIO(f func(int, []byte) (int, error), fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := f(int(fd), p)
		if err == nil {
			return n, 0
		}
		e, ok := err.(syscall.Errno)
		if !ok {
			return 0, syscall.EIO
		}
		if e != syscall.EINTR {
			return 0, e
		}
	}
}
