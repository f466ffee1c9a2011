package sockio

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pollWaiter is a Waiter that waits with poll(2), for tests: it runs the
// calling code wherever it runs.
type pollWaiter struct{ waits int }

func (w *pollWaiter) Wait(fd int, write bool, deadline int64) (bool, error) {
	w.waits++
	ev := int16(unix.POLLIN)
	if write {
		ev = unix.POLLOUT
	}
	for {
		ms := -1
		if deadline != 0 {
			d := time.Duration(deadline - MonoNow())
			if d <= 0 {
				return true, os.ErrDeadlineExceeded
			}
			ms = int(d/time.Millisecond) + 1
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: ev}}, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return true, nil
		}
	}
}

func (w *pollWaiter) Wake(int) {}
