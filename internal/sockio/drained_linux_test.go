package sockio

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pollWaiter is a Waiter that waits with poll(2), for tests: it runs the
// calling code wherever it runs.
type pollWaiter struct{ waits int }

func (w *pollWaiter) Wait(fd int, write bool, deadline time.Time) (bool, error) {
	w.waits++
	ev := int16(unix.POLLIN)
	if write {
		ev = unix.POLLOUT
	}
	for {
		ms := -1
		if !deadline.IsZero() {
			d := time.Until(deadline)
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

// TestWaiterSkipsTheEmptyRead: against a peer in another process that
// answers 2 ms after each request, a Conn on a Waiter reads once a round
// trip once a short read has emptied the socket: it waits first rather
// than making the read that finds nothing. Without a Waiter (the
// runtime's poller) it reads twice.
func TestWaiterSkipsTheEmptyRead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a peer process")
	}
	const rounds = 100
	counts := map[string]int{}
	for _, side := range []string{"runtime poller", "Waiter"} {
		nc := startPeer(t, "2ms")
		s := New(nc).(*Conn)
		w := &pollWaiter{}
		if side == "Waiter" {
			s.SetWaiter(w)
		}
		s.SetDeadline(time.Now().Add(30 * time.Second))
		req, buf := []byte("a NOOP\r\n"), make([]byte, 64)
		before := readCalls(t)
		for range rounds {
			if _, err := s.Write(req); err != nil {
				t.Fatal(err)
			}
			n, err := s.Read(buf)
			if err != nil || string(buf[:n]) != string(req) {
				t.Fatalf("read %q, %v; want %q", buf[:n], err, req)
			}
		}
		counts[side] = readCalls(t) - before
		if side == "Waiter" && w.waits < rounds {
			t.Errorf("%d waits for %d round trips", w.waits, rounds)
		}
		s.Close()
	}
	// The first round trip reads twice either way; reading /proc/self/io
	// is a read or two of its own.
	if counts["Waiter"] > rounds+5 || counts["runtime poller"] < 2*rounds-5 {
		t.Errorf("read calls for %d round trips: %v; want about %d on a Waiter, %d without", rounds, counts, rounds, 2*rounds)
	}
	t.Logf("read calls for %d round trips: %v", rounds, counts)
}
