package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/sockio"
)

// idlePoller watches the sockets of every spliced session of a Conns
// between two plain TCP connections, so that an idle session holds no
// goroutine: one epoll instance (one descriptor for the whole Conns, not
// one per session), itself watched by Go's poller, and one goroutine that
// reads its events. A socket that becomes readable wakes its session: a
// few bytes the other side takes at once (a command, an answer) are moved
// by the poller's goroutine itself (moveNow); more go on a short-lived
// goroutine (splice(2), as pumpTCP); then the session sleeps again.
// 10,000 idle IMAP sessions thus cost their sockets and a small struct
// each, not two parked goroutines and their stacks.
type idlePoller struct {
	file *os.File // the epoll descriptor
	rc   syscall.RawConn

	mu       sync.Mutex
	sessions map[uint32]*idleSession
	next     uint32
	exited   chan struct{} // closed when run returns

	// The turns of moving bytes: on the poller's goroutine (moveNow), on
	// a goroutine of their own (move).
	inline, spawned atomic.Int64
	// polls counts the reads of the epoll descriptor (epoll_pwait).
	polls atomic.Int64
	// buf is moveNow's, on the poller's goroutine (run) only.
	buf []byte
}

// The events a session's socket is armed for: readable, peer closed, one
// event per arming (EPOLLONESHOT: a session moving bytes is not woken
// again until it re-arms).
const idleEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newIdlePoller() (*idlePoller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("relay: epoll descriptor: %w", err)
	}
	f := os.NewFile(uintptr(fd), "relay-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("relay: epoll descriptor: %w", err)
	}
	p := &idlePoller{file: f, rc: rc, sessions: make(map[uint32]*idleSession), exited: make(chan struct{})}
	go p.run()
	return p, nil
}

// run reads the epoll events and wakes their sessions until the poller is
// closed. It waits in Go's poller (the epoll descriptor is readable when
// events are ready), not in a blocking system call.
//
// Everything happens inside one RawConn.Read: its function takes the
// events and wakes their sessions, and asks to wait again once a read
// returned fewer events than it had room for. That read emptied the ready
// list, so the next event to arrive is news to Go's poller too (the
// sessions' sockets are armed one event at a time, EPOLLONESHOT, and
// re-arming a ready socket queues it anew): the wait needs no read first
// that would find nothing. A new RawConn.Read would clear the poller's
// record of an event that arrived meanwhile, which is why the loop does
// not return between turns.
func (p *idlePoller) run() {
	defer close(p.exited)
	events := make([]unix.EpollEvent, 128)
	turn := func(fd uintptr) bool {
		for {
			n, e := sockio.EpollEvents(fd, events)
			p.polls.Add(1)
			if e != 0 {
				return true // not a descriptor we can wait on any more
			}
			p.dispatch(events[:n])
			if n < len(events) {
				return false // wait for the next event
			}
		}
	}
	// Read returns when the poller is closed, or when epoll_pwait failed
	// (turn returned true): either ends the poller.
	_ = p.rc.Read(turn)
}

// dispatch wakes the sessions of events.
func (p *idlePoller) dispatch(events []unix.EpollEvent) {
	for _, ev := range events {
		p.mu.Lock()
		x := p.sessions[uint32(ev.Fd)>>1]
		p.mu.Unlock()
		if x != nil {
			x.wake(int(ev.Fd&1), ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0)
		}
	}
}

// close stops the poller; its sessions must have ended.
func (p *idlePoller) close() {
	p.file.Close()
	<-p.exited
}

// add registers x and returns its key.
func (p *idlePoller) add(x *idleSession) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.next = (p.next + 1) & (1<<31 - 1) // the event's data is key<<1 | direction
		if _, used := p.sessions[p.next]; !used {
			p.sessions[p.next] = x
			return p.next
		}
	}
}

func (p *idlePoller) remove(key uint32) {
	p.mu.Lock()
	delete(p.sessions, key)
	p.mu.Unlock()
}

// each calls f for every session registered.
func (p *idlePoller) each(f func(*idleSession)) {
	p.mu.Lock()
	all := make([]*idleSession, 0, len(p.sessions))
	for _, x := range p.sessions {
		all = append(all, x)
	}
	p.mu.Unlock()
	for _, x := range all {
		f(x)
	}
}

// closeNotifier is a client connection that says when it is closed by
// anyone (netlisten.Conn): a session without a goroutine of its own would
// not notice otherwise, as closing a socket takes it out of the epoll set
// silently. The engine's close_all closes clients this way.
type closeNotifier interface {
	AfterClose(f func())
}

// idleSession is one spliced session under an idlePoller.
type idleSession struct {
	conns           *Conns
	poller          *idlePoller
	key             uint32
	client, backend net.Conn         // what the session closes
	c, b            sockio.TCPSocket // their sockets
	crc, brc        syscall.RawConn
	done            func()
	stop            func() bool // the context's AfterFunc, when the session has its own

	mu               sync.Mutex
	busy             [2]bool // a goroutine moves bytes up (0), down (1)
	closed, finished bool
	up, down         int64

	// pend holds, for the goroutine that takes over a direction, the
	// bytes moveNow read and the destination did not take (set before
	// the goroutine starts; busy keeps the direction its own).
	pend [2][]byte
}

// handoffIdle starts a session between client and backend under s's
// poller, and reports false when it cannot (TLS on either side, bytes read
// ahead, a client that does not report its closing, no epoll): the caller
// then splices on goroutines.
func (s *Conns) handoffIdle(ctx context.Context, client, backend net.Conn, buffered []byte, done func()) bool {
	cn, ok := client.(closeNotifier)
	if !ok {
		return false
	}
	c, ok := tcpOf(client)
	if !ok {
		return false
	}
	b, ok := tcpOf(backend)
	if !ok {
		return false
	}
	crc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	brc, err := b.SyscallConn()
	if err != nil {
		return false
	}
	p := s.idlePoller()
	if p == nil {
		return false
	}
	client.SetDeadline(time.Time{})
	backend.SetDeadline(time.Time{})
	x := &idleSession{conns: s, poller: p, client: client, backend: backend, c: c, b: b, crc: crc, brc: brc, done: done}
	s.track(x, true)
	s.wg.Add(1)
	x.key = p.add(x)
	cn.AfterClose(x.close)
	if ctx != s.ctx {
		x.stop = context.AfterFunc(ctx, x.close)
	} else if ctx.Err() != nil {
		x.close() // Serve's context ended before x was registered
		return true
	}
	var failed bool
	if len(buffered) > 0 {
		n, err := backend.Write(buffered)
		x.mu.Lock()
		x.up = int64(n)
		x.mu.Unlock()
		failed = err != nil
	}
	x.mu.Lock()
	for dir := 0; dir < 2 && !failed && !x.closed; dir++ {
		failed = x.arm(dir, unix.EPOLL_CTL_ADD) != nil
	}
	x.mu.Unlock()
	if failed {
		x.close() // closes both connections, outside the lock
	}
	return true
}

// idlePoller returns s's poller, started on first use; nil if epoll is not
// available.
func (s *Conns) idlePoller() *idlePoller {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle == nil && !s.idleFailed {
		p, err := newIdlePoller()
		if err != nil {
			s.idleFailed = true
			return nil
		}
		s.idle = p
	}
	return s.idle
}

// closeIdle ends every session under s's poller (s's context is done).
func (s *Conns) closeIdle() {
	s.mu.Lock()
	p := s.idle
	s.mu.Unlock()
	if p != nil {
		p.each((*idleSession).close)
	}
}

// stopIdle stops s's poller once its sessions have ended.
func (s *Conns) stopIdle() {
	s.mu.Lock()
	p := s.idle
	s.idle = nil
	s.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// arm (re-)registers the source socket of direction dir (0: the client's,
// bytes going up; 1: the backend's) for one readability event; x.mu is
// held. A socket closed meanwhile fails.
func (x *idleSession) arm(dir, op int) error {
	epfd := -1
	if err := x.poller.rc.Control(func(fd uintptr) { epfd = int(fd) }); err != nil {
		return err
	}
	rc := x.crc
	if dir == 1 {
		rc = x.brc
	}
	var cerr error
	ev := unix.EpollEvent{Events: idleEvents, Fd: int32(x.key<<1 | uint32(dir))}
	err := rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(epfd, op, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("relay: watching a socket: %w", err)
	}
	return nil
}

// wake starts moving bytes in direction dir unless a goroutine is already
// at it or the session is over.
func (x *idleSession) wake(dir int, hup bool) {
	x.mu.Lock()
	if x.busy[dir] || x.closed {
		x.mu.Unlock()
		return
	}
	x.busy[dir] = true
	x.mu.Unlock()
	if x.moveNow(dir, hup) {
		x.poller.inline.Add(1)
		return
	}
	x.poller.spawned.Add(1)
	go x.move(dir)
}

// inlineMax bounds what the poller's goroutine moves itself when a session
// wakes (moveNow): a command, an answer, an IDLE notification.
const inlineMax = 16 << 10

// moveNow moves the bytes queued in direction dir on the poller's own
// goroutine (run, the only caller of wake), without waiting — the usual
// wake of an interactive session: a command, an answer — so that it costs
// no goroutine (whose start wakes a second thread) and no timer. It reads
// what is queued (up to inlineMax) and writes it; it reports false when
// move must take over — inlineMax bytes read (a transfer: more may be
// queued), or a destination that did not take them all (what it did not
// take is in x.pend[dir], written first by move) — with x.busy[dir] still
// set and the bytes written counted.
//
// hup says the wake's event reported that the source's peer had closed
// its side (EPOLLRDHUP, EPOLLHUP): everything it will ever send was then
// queued, so a read that does not fill the buffer took the last of it,
// and the session ends with this turn, without re-arming the socket for
// the end of stream that a read would find next (a server that says
// goodbye and closes: one turn, not two).
func (x *idleSession) moveNow(dir int, hup bool) bool {
	drc, rc := x.brc, x.crc
	if dir == 1 {
		drc, rc = x.crc, x.brc
	}
	if x.poller.buf == nil {
		x.poller.buf = make([]byte, inlineMax)
	}
	buf := x.poller.buf
	var n int
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) { n, errno = sockio.Read(fd, buf) }); err != nil {
		x.endTurn(dir, 0, true) // closed
		return true
	}
	switch {
	case errno == syscall.EAGAIN:
		x.endTurn(dir, 0, false) // woken for nothing
		return true
	case errno != 0 || n == 0:
		x.endTurn(dir, 0, true) // a failure, or the end of the stream
		return true
	}
	var w int
	if err := drc.Control(func(fd uintptr) { w, errno = sockio.Write(fd, buf[:n]) }); err != nil || (errno != 0 && errno != syscall.EAGAIN) {
		x.endTurn(dir, 0, true)
		return true
	}
	if w < n {
		x.pend[dir] = append([]byte(nil), buf[w:n]...)
		x.count(dir, int64(w))
		return false // the destination is full: move writes the rest first
	}
	if n == len(buf) {
		x.count(dir, int64(w))
		return false // a transfer: more may be queued
	}
	x.endTurn(dir, int64(w), hup)
	return true
}

// count adds n bytes moved in direction dir.
func (x *idleSession) count(dir int, n int64) {
	x.mu.Lock()
	x.countLocked(dir, n)
	x.mu.Unlock()
}

// countLocked is count with x.mu held.
func (x *idleSession) countLocked(dir int, n int64) {
	if dir == 0 {
		x.up += n
	} else {
		x.down += n
	}
}

// endTurn ends a turn of moving bytes in direction dir (moved of them):
// the session sleeps again (re-armed), or at end (or once closed) it is
// closed.
func (x *idleSession) endTurn(dir int, moved int64, end bool) {
	x.mu.Lock()
	x.countLocked(dir, moved)
	x.busy[dir] = false
	if !x.closed && !end {
		if err := x.arm(dir, unix.EPOLL_CTL_MOD); err != nil {
			end = true
		}
	}
	end = end || x.closed
	x.mu.Unlock()
	if end {
		x.close()
	}
}

// activeGrace is how long a goroutine woken to move bytes goes on moving
// them as they come (waiting in Go's poller, as pumpTCP) before it goes
// back to the shared poller: a transfer in progress (a FETCH) does not pay
// a wake-up per chunk, only one each activeGrace; an idle session holds no
// goroutine once it has passed.
const activeGrace = 100 * time.Millisecond

// move moves the bytes queued in direction dir, and more as they come
// until activeGrace has passed, then goes back to sleep (re-arms), or ends
// the session at an end of stream or an error.
func (x *idleSession) move(dir int) {
	dst, src, drc, rc := x.b, x.c, x.brc, x.crc
	if dir == 1 {
		dst, src, drc, rc = x.c, x.b, x.crc, x.brc
	}
	var moved int64
	end := false
	if p := x.pend[dir]; p != nil {
		// What moveNow read and the destination did not take yet.
		x.pend[dir] = nil
		n, err := dst.Write(p)
		moved += int64(n)
		if err != nil {
			x.endTurn(dir, moved, true)
			return
		}
	}
	// One read deadline for the whole turn, not two timer updates per
	// chunk; reaching it (while waiting, or as a copy starts: the copy then
	// moves nothing more, the bytes stay queued and wake the next turn) is
	// not an end.
	src.SetReadDeadline(time.Now().Add(activeGrace))
	for first := true; ; first = false {
		var queued int
		var err error
		if first {
			queued, err = peekQueued(rc)
		} else {
			queued, err = waitQueued(rc) // it looks before it waits
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil || queued == 0 {
			end = true // a failure, or the end of the stream
			break
		}
		if queued < 0 {
			break // woken for nothing
		}
		n, err := spliceN(dst, src, drc, rc, int64(queued))
		moved += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil || n < int64(queued) {
			end = true
			break
		}
	}
	src.SetReadDeadline(time.Time{})
	x.endTurn(dir, moved, end)
}

// peekQueued returns the number of bytes queued on a socket without
// waiting: -1 when there are none yet, 0 when the peer closed its side.
func peekQueued(rc syscall.RawConn) (int, error) {
	queued := -1
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		switch q, err := queuedNow(fd); err {
		case nil:
			queued = q
		case syscall.EAGAIN:
		default:
			serr = err
		}
		return true // never wait here: the poller does
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: serr}
	}
	return queued, nil
}

// close ends the session: both connections are closed; once no goroutine
// is moving bytes, the session is reported (byte counts, done) and
// forgotten. Any goroutine may call it, any number of times.
func (x *idleSession) close() {
	x.mu.Lock()
	first := !x.closed
	x.closed = true
	fin := !x.busy[0] && !x.busy[1] && !x.finished
	if fin {
		x.finished = true
	}
	x.mu.Unlock()
	if first {
		x.client.Close()
		x.backend.Close()
	}
	if fin {
		x.finish()
	}
}

// Close ends the session (drain).
func (x *idleSession) Close() error {
	x.close()
	return nil
}

func (x *idleSession) finish() {
	defer x.conns.wg.Done()
	defer x.conns.track(x, false)
	x.poller.remove(x.key)
	if x.stop != nil {
		x.stop()
	}
	x.mu.Lock()
	up, down := x.up, x.down
	x.mu.Unlock()
	reportRelayed(x.backend, up, down)
	if x.done != nil {
		x.done()
	}
}
