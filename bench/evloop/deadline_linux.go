//go:build linux

package main

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// checkTimeout is how long a checked session (-login, -smtp-checks) may
// go without reading anything before it relays: the loop then closes it,
// as postern's deadlines close a silent client or backend. A variable for
// tests.
var checkTimeout = 60 * time.Second

// wheelSlots is the deadline wheel's size in seconds; a later deadline
// waits in its slot until its second comes round.
const wheelSlots = 128

// wheel keeps a loop's deadlines to the second, with no system call a
// session: arming one appends the session to its second's slot (once a
// second per session), and a timerfd ticking once a second makes the loop
// look at the slots whose second has come. A session that read again
// since it was filed has a later deadline and is skipped there.
type wheel struct {
	tfd   int // -1: no checked sessions, no wheel
	slots [wheelSlots][]*sock
	last  int64 // the last second looked at
}

// startWheel makes l's ticking timerfd and adds it to its epoll set.
func (l *loop) startWheel() error {
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return err
	}
	second := unix.Timespec{Sec: 1}
	if err := unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Interval: second, Value: second}, nil); err != nil {
		unix.Close(tfd)
		return err
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, int32(tfd), unix.EPOLLIN); err != nil {
		unix.Close(tfd)
		return err
	}
	l.wheel.tfd, l.wheel.last = tfd, time.Now().Unix()
	return nil
}

// arm gives the checked session of client c a deadline checkTimeout from
// now.
func (l *loop) arm(c *sock) {
	k := c.chk
	if k == nil || l.wheel.tfd < 0 {
		return
	}
	d := time.Now().Add(checkTimeout).Unix() + 1
	if d == k.deadline {
		return // filed in that second already
	}
	k.deadline = d
	i := d % wheelSlots
	l.wheel.slots[i] = append(l.wheel.slots[i], c)
}

// tick closes the checked sessions whose deadline has passed.
func (l *loop) tick() {
	var n [8]byte
	unix.RawSyscall(unix.SYS_READ, uintptr(l.wheel.tfd), uintptr(unsafe.Pointer(&n[0])), 8)
	now := time.Now().Unix()
	for s := l.wheel.last + 1; s <= now; s++ {
		i := s % wheelSlots
		list := l.wheel.slots[i]
		l.wheel.slots[i] = nil
		for _, c := range list {
			k := c.chk
			switch {
			case l.get(c.fd) != c || k == nil || k.state == stRelay:
				// closed, or relaying: no deadline
			case k.deadline > s:
				if k.deadline%wheelSlots == i {
					l.wheel.slots[i] = append(l.wheel.slots[i], c) // a later round of the wheel
				}
			case k.deadline == s:
				l.expire(c, k)
			}
		}
	}
	l.wheel.last = now
}

// expire closes a checked session that waited too long, saying so to the
// client.
func (l *loop) expire(c *sock, k *checked) {
	if k.smtp != nil {
		rawWrite(c.fd, []byte("421 4.4.2 postern.bench.invalid Error: timeout exceeded\r\n"))
	} else {
		rawWrite(c.fd, []byte("* BYE Disconnected for inactivity.\r\n"))
	}
	l.abandon(c, k)
}
