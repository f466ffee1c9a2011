package sockio

import (
	"errors"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxSplice is the most one splice(2) moves, and the size asked for the
// pipe: as Go's own splice.
const maxSplice = 1 << 20

// pipe is a pipe the bytes of a splice pass through; data counts the bytes
// in it. A pipe goes back to the pool only empty.
type pipe struct {
	r, w    int
	data    int
	cleanup runtime.Cleanup // closes r and w when the pool drops the pipe
}

var pipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice) // a smaller pipe only means more calls
	p := &pipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) { unix.Close(fds[0]); unix.Close(fds[1]) }, fds)
	return p
}}

func getPipe() *pipe {
	p, _ := pipes.Get().(*pipe)
	return p
}

// putPipe returns an empty pipe to the pool and closes one that still
// holds bytes (a splice that failed half-way).
func putPipe(p *pipe) {
	if p.data != 0 {
		p.cleanup.Stop()
		unix.Close(p.r)
		unix.Close(p.w)
		p.r, p.w = -1, -1
		return
	}
	pipes.Put(p)
}

// Splice moves up to n bytes from the socket of src to the socket of dst
// in the kernel (splice(2) through a pooled pipe), waiting in Go's poller
// for src to be readable and dst writable, and honouring both sockets'
// deadlines. It stops after n bytes, at src's end of stream, or at an
// error, and returns the bytes delivered to dst. It holds a pipe only while
// it runs. src and dst are the RawConns of two TCP sockets.
func Splice(dst, src syscall.RawConn, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	p := getPipe()
	if p == nil {
		return 0, ErrNoPipe
	}
	var written int64
	var err error
	for n > 0 {
		max := int64(maxSplice)
		if max > n {
			max = n
		}
		var in int
		in, err = spliceIn(p, src, int(max))
		if err != nil || in == 0 {
			break // an error, or src's end of stream
		}
		var out int
		out, err = spliceOut(p, dst)
		written += int64(out)
		n -= int64(out)
		if err != nil {
			break
		}
	}
	putPipe(p)
	return written, err
}

// spliceIn moves up to max bytes from src's socket into the pipe, waiting
// for readability; 0 bytes means end of stream.
func spliceIn(p *pipe, src syscall.RawConn, max int) (int, error) {
	var in int
	var errno syscall.Errno
	err := src.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, fd, 0, uintptr(p.w), 0, uintptr(max), unix.SPLICE_F_NONBLOCK)
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				// The pipe is empty and large enough for max, so this is
				// the socket having nothing queued: wait.
				return false
			}
			in, errno = int(r), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, &SpliceError{Op: "read", Errno: errno}
	}
	p.data += in
	return in, nil
}

// spliceOut moves everything in the pipe to dst's socket, waiting for
// writability as needed.
func spliceOut(p *pipe, dst syscall.RawConn) (int, error) {
	var out int
	var errno syscall.Errno
	err := dst.Write(func(fd uintptr) bool {
		for p.data > 0 {
			r, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(p.r), 0, fd, 0, uintptr(p.data), unix.SPLICE_F_NONBLOCK)
			switch {
			case e == syscall.EINTR:
				continue
			case e == 0 && r > 0:
				p.data -= int(r)
				out += int(r)
				continue
			case e == syscall.EAGAIN:
				return false
			case e == 0:
				errno = syscall.EIO // the pipe is ours: it cannot be empty here
			default:
				errno = e
			}
			return true
		}
		return true
	})
	if err != nil {
		return out, err
	}
	if errno != 0 {
		return out, &SpliceError{Op: "write", Errno: errno}
	}
	return out, nil
}

// SpliceError is a failed splice(2) on the reading (Op "read") or the
// writing side.
type SpliceError struct {
	Op    string
	Errno syscall.Errno
}

func (e *SpliceError) Error() string { return "splice (" + e.Op + "): " + e.Errno.Error() }

// Unwrap returns the errno, for errors.Is(err, syscall.ECONNRESET) and the
// like.
func (e *SpliceError) Unwrap() error { return e.Errno }

// ErrNoPipe is the error of a Splice that could not create a pipe (out
// of descriptors); it moved nothing, and the caller may copy instead.
var ErrNoPipe = errors.New("splice: cannot create a pipe")
