// Package logbatch writes a process's log lines in batches: the lines
// that a busy gateway logs within a few milliseconds of each other (a
// login, a message, a block) go out in one write instead of one each.
//
// Batching is about more than the write itself. A Go program's write to
// its standard error is a system call the runtime accounts for (the
// scheduler's monitor thread is woken for it when the program had gone
// idle), and on a gateway that logs every login and every message, the
// log's write was the first such call after each idle moment: about one
// thread wake-up a login. A line waits at most the Writer's delay
// (DefaultDelay) before it is written; Flush and Close write what waits.
// NewFile goes one step further for a pipe or a socket: on Linux its
// batches go out in raw write system calls whenever they cannot block,
// which the runtime does not account for at all.
//
// No goroutine that logs waits for the log's destination: batches are
// written by the Writer's timer, outside its lock, and a Write waits only
// when maxBuffered bytes are held behind a write still under way.
package logbatch

import (
	"io"
	"os"
	"sync"
	"time"
)

// DefaultDelay is the longest a line waits before it is written.
const DefaultDelay = 50 * time.Millisecond

// maxBatch is the size at which a batch is written at once, without
// waiting for its delay.
const maxBatch = 64 << 10

// maxBuffered is how much a Writer holds while the write of an earlier
// batch is still under way (a disk that stalls, a full pipe). Beyond it a
// Write waits for that write, as an unbatched log would; below it no
// Write ever waits for the log's destination.
const maxBuffered = 4 << 20

// Writer collects what is written to it and writes it to the underlying
// writer at most its delay after the first byte of a batch, or at once
// when a batch reaches maxBatch bytes. Each Write is kept whole and in
// order. It is safe for concurrent use.
//
// The batches are written by the Writer's timer (and by Flush and Close),
// never by a Write below maxBuffered, and the Writer's lock is not held
// while a batch is written: a log destination that is slow for a while
// does not hold up the goroutines that log — a gateway's event loops
// among them.
type Writer struct {
	w     io.Writer
	delay time.Duration

	mu      sync.Mutex
	done    sync.Cond // broadcast when a write ends
	buf     []byte
	spare   []byte      // the buffer of the last batch written, for the next
	timer   *time.Timer // armed while buf holds a batch
	armed   bool
	soon    bool // the timer is set to fire at once (a full batch)
	writing bool // a batch (or, after Close, a Write) is being written, outside mu
	closed  bool
	err     error // the last failed write's, reported by the next Write or Flush
}

// New returns a Writer that batches writes to w, each line waiting at
// most delay (<= 0: DefaultDelay). Close it to write what waits and stop
// batching.
func New(w io.Writer, delay time.Duration) *Writer {
	if delay <= 0 {
		delay = DefaultDelay
	}
	b := &Writer{w: w, delay: delay}
	b.done.L = &b.mu
	b.timer = time.AfterFunc(time.Hour, b.tick)
	b.timer.Stop()
	return b
}

// NewFile returns a Writer that batches writes to f, the process's
// standard error or a log file, each line waiting at most delay (<= 0:
// DefaultDelay). On Linux a batch for a pipe or a socket goes out in raw
// write system calls whenever f polls writable, so that a flush does not
// wake the runtime's monitor thread (see fileWriter); the lines, their
// order and what a full pipe does are as with New(f, delay).
func NewFile(f *os.File, delay time.Duration) *Writer {
	return New(newFileWriter(f), delay)
}

// Write adds p to the batch and returns at once, unless maxBuffered bytes
// wait behind a write still under way; once the Writer is closed it
// writes p itself. It returns the error of an earlier write that failed,
// once.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) >= maxBuffered && !b.closed {
		if b.writing {
			b.done.Wait()
		} else {
			b.flushLocked(false)
		}
	}
	if b.closed {
		return b.writeDirect(p)
	}
	b.buf = append(b.buf, p...)
	switch {
	case len(b.buf) >= maxBatch:
		// The timer's goroutine writes it now; a write under way writes
		// it next. Set once: every Reset of a timer that has fired
		// starts a goroutine, which would wait behind a stalled write.
		if !b.writing && !b.soon {
			b.timer.Reset(0)
			b.armed, b.soon = true, true
		}
	case !b.armed:
		b.armed = true
		b.timer.Reset(b.delay)
	}
	err := b.err
	b.err = nil
	return len(p), err
}

// writeDirect writes p after the writes under way, once the Writer is
// closed; b.mu is held.
func (b *Writer) writeDirect(p []byte) (int, error) {
	for b.writing {
		b.done.Wait()
	}
	b.writing = true
	b.mu.Unlock()
	n, err := b.w.Write(p)
	b.mu.Lock()
	b.writing = false
	b.done.Broadcast()
	return n, err
}

// tick writes the batch when its delay has passed (or when it filled).
func (b *Writer) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed, b.soon = false, false
	b.flushLocked(false)
}

// flushLocked writes the batch, after any write under way; with all, it
// also writes what arrives meanwhile until nothing waits, else only what
// has reached maxBatch by then (a newer batch keeps its delay). b.mu is
// held, and released while each batch is written.
func (b *Writer) flushLocked(all bool) {
	for b.writing {
		b.done.Wait()
	}
	for first := true; len(b.buf) > 0 && (all || first || len(b.buf) >= maxBatch); first = false {
		out := b.buf
		b.buf, b.spare = b.spare[:0], nil
		if b.armed && all {
			b.timer.Stop()
			b.armed, b.soon = false, false
		}
		b.writing = true
		b.mu.Unlock()
		_, err := b.w.Write(out)
		b.mu.Lock()
		b.writing = false
		if err != nil {
			b.err = err
		}
		if cap(out) <= 2*maxBatch {
			b.spare = out[:0] // a burst's buffer is not kept
		}
		b.done.Broadcast()
	}
	if len(b.buf) > 0 && !b.armed {
		b.armed = true
		b.timer.Reset(b.delay)
	}
}

// Flush writes what waits, and returns the error of the last write that
// failed since the last report.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked(true)
	err := b.err
	b.err = nil
	return err
}

// Close writes what waits; from then on every Write goes straight to the
// underlying writer. It does not close that writer.
func (b *Writer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked(true)
	b.closed = true
	b.timer.Stop()
	b.armed, b.soon = false, false
	err := b.err
	b.err = nil
	return err
}
