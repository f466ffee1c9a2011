//go:build linux

package evloop

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/sockio"
)

// Group is a set of loops, one per processor, that run handlers.
type Group struct {
	loops  []*loop
	next   atomic.Uint32
	active atomic.Int32 // the loops Go picks from (the first ones); 0: all
	wg     sync.WaitGroup
	stats  Stats
}

// Stats counts what a Group's handlers did.
type Stats struct {
	// Started counts the handlers started on a loop, Detached those that
	// left it (MayBlock), Ended those that ended on it.
	Started, Detached, Ended atomic.Int64
	// Coroutines counts the coroutines made to run handlers: a loop
	// keeps those whose handler ended on it for the next ones.
	Coroutines atomic.Int64
}

// Stats returns the Group's counters.
func (g *Group) Stats() *Stats { return &g.stats }

// Start starts n loops (n <= 0: GOMAXPROCS). Close stops them.
func Start(n int, log *slog.Logger) (*Group, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Group{}
	for range n {
		l, err := newLoop(log)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			l.run()
		}()
	}
	return g, nil
}

// Len returns the number of loops.
func (g *Group) Len() int { return len(g.loops) }

// SetActive makes Go start new handlers on the first n loops only (n
// clamped to 1..Len()), as many as the processors the runtime has: with
// fewer processors than loops, each loop's wake-up would be a goroutine
// switch of its own where one loop serves all its sockets in one turn.
// Handlers running on the other loops stay there until they end.
func (g *Group) SetActive(n int) {
	g.active.Store(int32(min(max(n, 1), len(g.loops))))
}

// Active returns the number of loops Go starts new handlers on.
func (g *Group) Active() int {
	if n := int(g.active.Load()); n > 0 {
		return n
	}
	return len(g.loops)
}

// closeWait bounds how long Close waits for handlers still running.
const closeWait = 5 * time.Second

// Close stops the loops once their handlers have ended, and waits for
// that, at most closeWait: handlers still running are not interrupted
// (close their connections first), and a loop that still has one goes on
// serving it.
func (g *Group) Close() {
	for _, l := range g.loops {
		l.stop()
	}
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// Go runs handle on one of the loops, with a context derived from ctx that
// Bind, Wait and MayBlock recognise; c, if not nil, is bound first (Bind).
// handle must not panic: recover in it.
func (g *Group) Go(ctx context.Context, c Bindable, handle func(ctx context.Context)) {
	l := g.loops[int(g.next.Add(1)%uint32(g.Active()))]
	t := &task{l: l, heapIdx: -1, stats: &g.stats}
	t.attached.Store(true)
	t.closed, t.fds, t.bound = t.closedBuf[:0], t.fdsBuf[:0], t.boundBuf[:0]
	t.tctx = taskCtx{Context: ctx, t: t}
	t.ctx = &t.tctx
	if c != nil {
		t.bound = append(t.bound, c)
	}
	t.handle = handle
	l.post(t, &l.starts)
}

// loop is one event loop: an epoll instance parked in the runtime's
// poller, the tasks it runs, and their timers.
type loop struct {
	log  *slog.Logger
	ep   int
	file *os.File
	tfd  int // the timerfd that wakes the loop at its earliest deadline

	mu       sync.Mutex
	starts   []*task // new tasks, posted by Go
	wakes    []*task // tasks whose connection was closed (Wake)
	stopping bool
	sleeping atomic.Bool // parked: a post wakes it (wake)

	// Owned by the loop's goroutine:
	fds     []fdState // by descriptor
	timers  timerHeap
	armed   int64 // when the timerfd expires (sockio.MonoNow's clock, 0: disarmed)
	live    int   // tasks started and not ended
	events  []unix.EpollEvent
	batch   []*task // the spare slices of starts and wakes
	wbatch  []*task
	current *task // the task running now
	idle    []*worker
}

// fdState is what the loop knows of a descriptor it watches.
type fdState struct {
	t     *task
	ready uint32 // events seen and not consumed by a wait
	// hup: the peer closed its side, or the socket failed, and no wait
	// to read has returned for it since. The event that reported it may
	// have come with the last bytes, which a read takes first (a short
	// read, after which a socket counts as empty); no new event comes for
	// the end of the stream after them, so the next wait to read returns
	// at once, for the read that finds it. Once: a wait after that read
	// found nothing (a descriptor closed and reused unseen) waits.
	hup bool
}

func newLoop(log *slog.Logger) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("evloop: epoll instance: %w", err)
	}
	file := os.NewFile(uintptr(ep), "evloop-epoll")
	// The loop's deadlines wake it through a timerfd in its own epoll
	// instance rather than a deadline on the instance's file: a runtime
	// timer, whose every change to an earlier time wakes a thread
	// sleeping in the runtime's poller, and which fires even after the
	// deadline it was set for has gone.
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("evloop: timerfd_create: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(tfd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, tfd, &ev); err != nil {
		unix.Close(tfd)
		file.Close()
		return nil, fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	return &loop{log: log, ep: ep, file: file, tfd: tfd, events: make([]unix.EpollEvent, 128)}, nil
}

// post queues t on q (starts or wakes) and wakes the loop if it is parked.
func (l *loop) post(t *task, q *[]*task) {
	l.mu.Lock()
	*q = append(*q, t)
	l.mu.Unlock()
	if l.sleeping.Load() {
		l.wake()
	}
}

// wake ends the loop's wait in the runtime's poller: a read deadline in
// the past on the epoll instance's file makes the runtime ready the
// parked goroutine itself, with no system call (an eventfd written and
// read again costs two, and a turn of the poller to find it). The
// deadline stays past until the loop clears it, so a wake that comes
// before the loop parks is not lost: its next wait returns at once.
func (l *loop) wake() {
	l.file.SetReadDeadline(pastDeadline)
}

// pastDeadline is a read deadline that has always passed.
var pastDeadline = time.Unix(1, 0)

func (l *loop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.wake()
}

// run is the loop's goroutine.
func (l *loop) run() {
	defer func() {
		l.stopWorkers()
		unix.Close(l.tfd)
		l.file.Close()
	}()
	rc, err := l.file.SyscallConn()
	if err != nil {
		l.log.Error("evloop: epoll instance", "err", err)
		return
	}
	done := false
	step := func(uintptr) bool { return l.step(&done) }
	for !done {
		err := rc.Read(step)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A wake: cleared before the step that looks for what was
			// posted, so that a post after this sets it again.
			if err := l.file.SetReadDeadline(time.Time{}); err != nil {
				l.log.Error("evloop: waiting for events", "err", err)
				return
			}
			continue
		}
		if err != nil {
			l.log.Error("evloop: waiting for events", "err", err)
			return
		}
	}
}

// step runs until nothing is ready (false: park in the runtime's poller)
// or the loop is to end.
func (l *loop) step(done *bool) bool {
	l.sleeping.Store(false)
	for {
		if l.drain() {
			*done = true
			return true
		}
		if len(l.timers) > 0 {
			l.expire(sockio.MonoNow())
		}
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e == 0 && n > 0 {
			l.dispatch(l.events[:n])
			if int(n) == len(l.events) {
				continue // there may be more
			}
			// The instance is empty: an event from now on is a new edge
			// for the runtime's poller, which wakes the loop at once, so
			// no second look is needed before parking.
		}
		{
			l.sleeping.Store(true)
			l.mu.Lock()
			pending := len(l.starts) > 0 || len(l.wakes) > 0 || l.stopping
			l.mu.Unlock()
			if pending {
				l.sleeping.Store(false)
				continue
			}
			l.arm()
			return false
		}
	}
}

// drain starts the posted tasks and resumes the woken ones; true when the
// loop is to end (stopped, and no task left).
func (l *loop) drain() bool {
	l.mu.Lock()
	starts, wakes, stopping := l.starts, l.wakes, l.stopping
	if len(starts) == 0 && len(wakes) == 0 {
		l.mu.Unlock()
		return stopping && l.live == 0
	}
	l.starts, l.wakes = l.batch[:0], l.wbatch[:0]
	l.mu.Unlock()
	for i, t := range starts {
		starts[i] = nil
		l.start(t)
	}
	l.batch = starts[:0]
	for i, t := range wakes {
		wakes[i] = nil
		if t.waiting {
			l.resume(t, nil)
		}
	}
	l.wbatch = wakes[:0]
	return false
}

// dispatch hands out a batch of events.
func (l *loop) dispatch(evs []unix.EpollEvent) {
	for i := range evs {
		fd := int(evs[i].Fd)
		if fd == l.tfd {
			var buf [8]byte
			unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 8)
			l.armed = 0 // expired: a timerfd fires once
			l.expire(sockio.MonoNow())
			continue
		}
		if fd >= len(l.fds) {
			continue
		}
		st := &l.fds[fd]
		t := st.t
		if t == nil {
			continue
		}
		ev := evs[i].Events
		var r uint32
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			r |= readReady
		}
		if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			r |= writeReady
		}
		if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			st.hup = true
		}
		st.ready |= r
		if t.waiting {
			for i := range t.wfd {
				if t.wfd[i] == fd && st.ready&t.want[i] != 0 {
					st.ready &^= t.want[i]
					l.resume(t, nil)
					break
				}
			}
		}
	}
}

const (
	readReady  = 1
	writeReady = 2
)

// rearmLater is how much later than the timerfd's expiry the earliest
// deadline may be before the loop sets the timerfd again: an expiry a
// little early only finds nothing due and is set again then.
const rearmLater = 20 * time.Millisecond

// arm sets the timerfd to the earliest deadline before the loop parks:
// at once when that is earlier than it is set for, when there is none
// (disarmed: a deadline gone with its session does not wake the loop),
// and when it is more than rearmLater later. One raw system call, and
// none when nothing changed.
func (l *loop) arm() {
	next := l.timers.next()
	switch {
	case next == l.armed:
		return
	case next == 0, l.armed == 0, next < l.armed, next-l.armed > int64(rearmLater):
	default:
		return
	}
	var its unix.ItimerSpec
	if next != 0 {
		d := next - sockio.MonoNow()
		if d <= 0 {
			d = 1 // due already: expire at once (zero would disarm)
		}
		its.Value = unix.NsecToTimespec(d)
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(l.tfd), 0, uintptr(unsafe.Pointer(&its)), 0, 0, 0); e != 0 {
		l.log.Error("evloop: timerfd_settime", "err", e)
		return
	}
	l.armed = next
}

// expire resumes the tasks whose deadline has passed.
func (l *loop) expire(now int64) {
	for len(l.timers) > 0 && l.timers[0].deadline <= now {
		t := l.timers.pop()
		if t.waiting {
			l.resume(t, os.ErrDeadlineExceeded)
		}
	}
}

// start runs t on one of the loop's coroutines (an idle one, or a new
// one) to its first wait.
func (l *loop) start(t *task) {
	l.live++
	t.stats.Started.Add(1)
	for _, c := range t.bound {
		c.SetWaiter(t)
	}
	var w *worker
	if n := len(l.idle); n > 0 {
		w = l.idle[n-1]
		l.idle[n-1] = nil
		l.idle = l.idle[:n-1]
	} else {
		w = l.newWorker()
		t.stats.Coroutines.Add(1)
	}
	w.t, w.done = t, false
	t.w = w
	l.run1(t)
}

// maxIdleWorkers bounds the coroutines a loop keeps for its next handlers.
const maxIdleWorkers = 64

// worker is a coroutine (iter.Pull) that runs a loop's handlers one after
// another. A handler that starts on a coroutine that has run one before
// finds its stack grown already: a new coroutine starts on a small stack,
// and copying it as a login's calls deepen was 6 % of postern's CPU a
// login (docs/benchmarks/issue17-round13.md).
type worker struct {
	next func() (struct{}, bool)
	stop func()
	// yield switches back to whoever called next: the loop, or the
	// goroutine of a handler that left it.
	yield func(struct{}) bool
	t     *task // the handler it runs now
	done  bool  // t's handler has returned
}

func (l *loop) newWorker() *worker {
	w := &worker{}
	w.next, w.stop = iter.Pull(func(yield func(struct{}) bool) {
		w.yield = yield
		for {
			l.runHandler(w.t)
			w.done = true
			if !yield(struct{}{}) {
				return
			}
		}
	})
	return w
}

// runHandler runs t's handler; a panic would otherwise end the loop and
// the process.
func (l *loop) runHandler(t *task) {
	defer func() {
		if v := recover(); v != nil {
			buf := make([]byte, 32<<10)
			buf = buf[:runtime.Stack(buf, false)]
			l.log.Error("evloop: a handler panicked", "panic", fmt.Sprint(v), "stack", string(buf))
		}
	}()
	t.handle(t.ctx)
}

// stopWorkers ends the idle coroutines; on the loop, as it ends.
func (l *loop) stopWorkers() {
	for i, w := range l.idle {
		l.idle[i] = nil
		w.stop()
	}
	l.idle = l.idle[:0]
}

// resume runs t from its wait with the wait's result.
func (l *loop) resume(t *task, err error) {
	t.waiting = false
	if t.heapIdx >= 0 {
		l.timers.remove(t.heapIdx)
	}
	t.werr = err
	l.run1(t)
}

// run1 runs t until it waits, leaves the loop or ends.
func (l *loop) run1(t *task) {
	for {
		w := t.w
		l.current = t
		_, ok := w.next()
		l.current = nil
		if !ok || w.done {
			l.forgetClosed(t) // closed already: no EPOLL_CTL_DEL to fail with EBADF
			l.forget(t)
			t.attached.Store(false)
			t.unbind()
			l.live--
			t.stats.Ended.Add(1)
			t.w, w.t = nil, nil
			switch {
			case !ok: // the coroutine ended (runtime.Goexit)
			case len(l.idle) < maxIdleWorkers:
				l.idle = append(l.idle, w)
			default:
				w.stop()
			}
			return
		}
		if t.detach {
			l.forgetClosed(t)
			l.forget(t)
			t.attached.Store(false)
			l.live--
			t.stats.Detached.Add(1)
			// The rest of the handler runs on a goroutine of its own,
			// whose waits go to the runtime's poller.
			// Its coroutine ends with it.
			go func() {
				for {
					if _, ok := w.next(); !ok || w.done {
						break
					}
				}
				t.unbind()
				w.stop()
			}()
			return
		}
		// A wait: is a socket ready already?
		l.forgetClosed(t)
		ready := false
		var failed error
		for i, fd := range t.wfd {
			if t.want[i] == 0 {
				continue
			}
			st, err := l.watch(t, fd)
			if errors.Is(err, unix.EBADF) {
				// Closed by another goroutine between the step that
				// found it not ready and this wait: the caller's next
				// step reports the close (net.ErrClosed).
				ready = true
				break
			}
			if err != nil {
				failed = err
				break
			}
			if st.ready&t.want[i] != 0 {
				st.ready &^= t.want[i]
				ready = true
				break
			}
			if st.hup && t.want[i]&readReady != 0 {
				st.hup = false
				ready = true // the end of the stream is there to read
				break
			}
		}
		if failed != nil {
			t.werr = failed
			continue
		}
		if ready {
			t.werr = nil
			continue
		}
		t.waiting = true
		if t.deadline != 0 {
			l.timers.push(t)
		}
		return
	}
}

// watch registers fd for t, once. A descriptor the kernel refuses gives
// an error: EBADF when it was closed.
func (l *loop) watch(t *task, fd int) (*fdState, error) {
	if fd < 0 {
		return nil, fmt.Errorf("evloop: cannot watch descriptor %d: %w", fd, unix.EINVAL)
	}
	if fd >= len(l.fds) {
		n := max(2*len(l.fds), fd+1, 64)
		fds := make([]fdState, n)
		copy(fds, l.fds)
		l.fds = fds
	}
	st := &l.fds[fd]
	if st.t == t {
		return st, nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &ev)
	if errors.Is(err, unix.EEXIST) {
		// A descriptor number that an ended task watched and that was
		// closed and reused unseen by the kernel's bookkeeping: take it
		// over.
		err = unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		return nil, fmt.Errorf("evloop: cannot watch the socket: %w", err)
	}
	*st = fdState{t: t}
	t.fds = append(t.fds, fd)
	return st, nil
}

// forget stops watching t's descriptors that are still open (those
// closed are forgotten by forgetClosed, without a system call).
func (l *loop) forget(t *task) {
	for _, fd := range t.fds {
		if st := &l.fds[fd]; st.t == t {
			*st = fdState{}
			// One still open stops reporting to this loop; one closed
			// unseen (no Wake) is gone from the instance already (EBADF).
			unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(l.ep), unix.EPOLL_CTL_DEL, uintptr(fd), 0, 0, 0)
		}
	}
	t.fds = t.fds[:0]
	if t.heapIdx >= 0 {
		l.timers.remove(t.heapIdx)
	}
}

// task is one handler on a loop.
type task struct {
	l      *loop
	ctx    context.Context // &tctx
	tctx   taskCtx
	handle func(context.Context)
	w      *worker // the coroutine it runs on

	// attached says the handler runs on the loop (read by Wait from any
	// goroutine that holds a bound connection).
	attached atomic.Bool
	bmu      sync.Mutex
	bound    []Bindable
	closed   []int       // descriptors closed (Wake), for the loop to forget
	nclosed  atomic.Bool // closed has entries
	// closedBuf and fdsBuf hold closed and fds for a handler's usual two
	// sockets, without an allocation each.
	closedBuf, fdsBuf [2]int
	// boundBuf holds bound for a handler's usual two connections (the
	// client's and the backend's); after unbind, bound is allocated.
	boundBuf [2]Bindable

	// The wait the coroutine asks for, and its result; set on the
	// coroutine before it yields, and by the loop before it resumes.
	wfd      [2]int
	want     [2]uint32 // 0: the slot is unused
	deadline int64
	werr     error
	detach   bool

	stats *Stats

	// The loop's own:
	waiting bool
	fds     []int
	heapIdx int
}

// onLoop reports whether the caller, the task's code, runs on the loop.
func (t *task) onLoop() bool { return t.attached.Load() && t.l.current == t }

// Wait implements sockio.Waiter.
func (t *task) Wait(fd int, write bool, deadline int64) (bool, error) {
	want := uint32(readReady)
	if write {
		want = writeReady
	}
	return t.wait([2]int{fd, -1}, [2]uint32{want, 0}, deadline)
}

// wait waits for the first of up to two sockets' readiness, until
// deadline (on sockio's monotonic clock, sockio.Mono; 0: none).
func (t *task) wait(fds [2]int, want [2]uint32, deadline int64) (bool, error) {
	if !t.attached.Load() || t.l.current != t {
		return false, nil
	}
	t.wfd, t.want, t.deadline = fds, want, deadline
	if deadline != 0 && deadline <= sockio.MonoNow() {
		return true, os.ErrDeadlineExceeded
	}
	t.w.yield(struct{}{})
	return true, t.werr
}

// Wake implements sockio.Waiter: any goroutine may call it. The loop
// forgets fd before the task's next wait, so that a socket the task opens
// under the same number is watched anew, and a wait in progress ends.
func (t *task) Wake(fd int) {
	if !t.attached.Load() {
		return
	}
	if fd >= 0 {
		t.bmu.Lock()
		t.closed = append(t.closed, fd)
		t.bmu.Unlock()
		t.nclosed.Store(true)
	}
	t.l.post(t, &t.l.wakes)
}

// forgetClosed forgets the descriptors closed since the last wait; on the
// loop.
func (l *loop) forgetClosed(t *task) {
	if !t.nclosed.Swap(false) {
		return // the usual wait: nothing closed, no lock
	}
	var buf [len(t.closedBuf)]int
	t.bmu.Lock()
	closed := append(buf[:0], t.closed...) // Wake appends to t.closed again
	t.closed = t.closed[:0]
	t.bmu.Unlock()
	for _, fd := range closed {
		l.forgetFD(t, fd)
	}
}

// forgetFD stops watching t's descriptor fd, closed (the kernel has
// dropped it from the epoll instance already).
func (l *loop) forgetFD(t *task, fd int) {
	if fd < 0 || fd >= len(l.fds) || l.fds[fd].t != t {
		return
	}
	l.fds[fd] = fdState{}
	for i, f := range t.fds {
		if f == fd {
			t.fds = append(t.fds[:i], t.fds[i+1:]...)
			break
		}
	}
}

func (t *task) mayBlock() {
	if !t.onLoop() {
		return
	}
	t.detach = true
	t.w.yield(struct{}{})
}

func (t *task) bind(c Bindable) bool {
	if !t.onLoop() {
		return false
	}
	t.bmu.Lock()
	t.bound = append(t.bound, c)
	t.bmu.Unlock()
	c.SetWaiter(t)
	return true
}

// unbind gives the bound connections back to the runtime's poller.
func (t *task) unbind() {
	t.bmu.Lock()
	bound := t.bound
	t.bound = nil
	t.bmu.Unlock()
	for _, c := range bound {
		c.SetWaiter(nil)
	}
}

func (t *task) waitAny(a, b Ready, deadline time.Time) (bool, error) {
	mask := func(r Ready) uint32 {
		var m uint32
		if r.Read {
			m |= readReady
		}
		if r.Write {
			m |= writeReady
		}
		return m
	}
	return t.wait([2]int{a.FD, b.FD}, [2]uint32{mask(a), mask(b)}, sockio.Mono(deadline))
}
