package relay

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/sockio"
)

// sockOf returns the sockio connection that c reads and writes through
// when nothing (TLS, bytes read ahead) stands in front of it.
func sockOf(c net.Conn) (*sockio.Conn, bool) {
	switch v := c.(type) {
	case *sockio.Conn:
		return v, true
	case *limitedConn:
		if v.sendHeld() != nil {
			return nil, false
		}
		return sockOf(v.Conn)
	case interface{ Sock() (*sockio.Conn, bool) }:
		return v.Sock()
	}
	return nil, false
}

// loopBuffers are the relay's read buffers on the loops: one per relay
// while it moves bytes, given back when it goes idle or ends.
var loopBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// loopGrace is how long a relay on a loop waits for bytes before it hands
// the session to the idle poller: activeGrace (a variable for tests).
var loopGrace = activeGrace

// loopBulkReads is how many reads in a row that fill the buffer make a
// bulk transfer (a FETCH of a large message): the relay then hands the
// session to the idle poller, which moves it with splice(2) on a
// goroutine, without copying it through the loop (4 × 16 KiB; a variable
// for tests). Copied on the loop, a 20 MB FETCH cost about twice the CPU
// a MB (docs/benchmarks/issue17-round13.md).
var loopBulkReads = 4

// loopDir is one direction of a relay on a loop.
type loopDir struct {
	src, dst *sockio.Conn
	pend     []byte // read, not yet written
	n        int64  // bytes written
	full     int    // reads in a row that filled the buffer
}

// move moves what can move now; it reports whether bytes moved, and false
// for ok at the end of the stream or an error.
func (d *loopDir) move(buf []byte) (moved, ok bool) {
	if len(d.pend) > 0 {
		n, err := d.dst.WriteNow(d.pend)
		d.n += int64(n)
		d.pend = d.pend[n:]
		if err != nil && !wouldBlock(err) {
			return n > 0, false
		}
		if len(d.pend) > 0 {
			return n > 0, true
		}
		d.pend = nil
		moved = n > 0
	}
	// A side is read again after every move, even when its last read
	// emptied it: skipping those reads that find nothing cost more CPU a
	// login, not less, with more context switches — the reads tend to
	// find a local backend's answer before the thread goes to sleep
	// (docs/benchmarks/issue17-round14.md).
	n, err := d.src.ReadNow(buf)
	if n == 0 {
		d.full = 0
		return moved, wouldBlock(err)
	}
	if n == len(buf) {
		d.full++
	} else {
		d.full = 0
	}
	w, err := d.dst.WriteNow(buf[:n])
	d.n += int64(w)
	if w < n {
		d.pend = append([]byte(nil), buf[w:n]...)
	}
	return true, err == nil || wouldBlock(err)
}

// wouldBlock reports whether err is sockio's ErrWouldBlock, which ReadNow
// and WriteNow return as it is, never wrapped: compared, where errors.Is
// would walk every other error (io.EOF at each session's end).
func wouldBlock(err error) bool {
	return err == sockio.ErrWouldBlock
}

// relayOnLoop relays a logged-in session's bytes on the loop its handler
// runs on, as long as they move: a login followed at once by commands (or
// by LOGOUT) costs no hand-off to another goroutine. ended says the
// session ended (both connections closed, the bytes reported, done
// called); otherwise, when ran, no byte moved for loopGrace, or a bulk
// transfer began (loopBulkReads), and buffered has been written: the
// caller hands the session to the idle poller with nothing buffered. Off a loop, or with connections it cannot relay, it
// does nothing (ran false).
func (s *Conns) relayOnLoop(ctx context.Context, client, backend net.Conn, buffered []byte, done func()) (ended, ran bool) {
	if !evloop.OnLoop(ctx) {
		return false, false
	}
	c, ok1 := sockOf(client)
	b, ok2 := sockOf(backend)
	if !ok1 || !ok2 {
		return false, false
	}
	cfd, bfd := c.FD(), b.FD()
	if cfd < 0 || bfd < 0 {
		return false, false
	}
	client.SetDeadline(time.Time{})
	backend.SetDeadline(time.Time{})
	// The gateway's end ends the session, as it ends a handed-off one.
	if !s.endsWithCtx(client) {
		stop := context.AfterFunc(ctx, func() { client.Close() })
		defer stop()
	}
	bp := loopBuffers.Get().(*[]byte)
	defer loopBuffers.Put(bp)
	buf := *bp
	up := loopDir{src: c, dst: b, pend: buffered}
	down := loopDir{src: b, dst: c}
	deadline := time.Now().Add(loopGrace)
	for {
		m1, ok1 := up.move(buf)
		m2, ok2 := down.move(buf)
		if !ok1 || !ok2 {
			client.Close()
			backend.Close()
			reportRelayed(backend, up.n, down.n)
			if done != nil {
				done()
			}
			return true, true
		}
		pending := len(up.pend) > 0 || len(down.pend) > 0
		if !pending && (up.full >= loopBulkReads || down.full >= loopBulkReads) {
			// Bulk: splice moves it, off the loop.
			reportRelayed(backend, up.n, down.n)
			return false, true
		}
		if m1 || m2 {
			deadline = time.Now().Add(loopGrace)
			continue
		}
		var until time.Time
		if !pending {
			until = deadline
		}
		on, err := evloop.WaitAny(ctx,
			evloop.Ready{FD: cfd, Read: len(up.pend) == 0, Write: len(down.pend) > 0},
			evloop.Ready{FD: bfd, Read: len(down.pend) == 0, Write: len(up.pend) > 0}, until)
		if !on {
			// Nothing here leaves the loop; should it have, the bytes
			// pending could not be handed over: end the session.
			up.pend, down.pend = nil, nil
			backend.Close() // the next move fails
			continue
		}
		if err != nil && !pending {
			// Idle: the idle poller takes over.
			reportRelayed(backend, up.n, down.n)
			return false, true
		}
	}
}
