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
// NewFile goes one step further for a file: on Linux its batches go out
// in raw write system calls whenever they cannot block, which the
// runtime does not account for at all.
package logbatch

import (
	"io"
	"os"
	"sync"
	"time"
)

// DefaultDelay is the longest a line waits before it is written.
const DefaultDelay = 50 * time.Millisecond

// maxBatch is the size at which a batch is written at once, by the write
// that filled it.
const maxBatch = 64 << 10

// Writer collects what is written to it and writes it to the underlying
// writer at most its delay after the first byte of a batch, or at once
// when a batch reaches maxBatch bytes. Each Write is kept whole and in
// order. It is safe for concurrent use.
type Writer struct {
	w     io.Writer
	delay time.Duration

	mu     sync.Mutex
	buf    []byte
	timer  *time.Timer // armed while buf holds a batch
	armed  bool
	closed bool
	err    error // the last failed write's, reported by the next Write or Flush
}

// New returns a Writer that batches writes to w, each line waiting at
// most delay (<= 0: DefaultDelay). Close it to write what waits and stop
// batching.
func New(w io.Writer, delay time.Duration) *Writer {
	if delay <= 0 {
		delay = DefaultDelay
	}
	b := &Writer{w: w, delay: delay}
	b.timer = time.AfterFunc(time.Hour, b.tick)
	b.timer.Stop()
	return b
}

// NewFile returns a Writer that batches writes to f, the process's
// standard error or a log file, each line waiting at most delay (<= 0:
// DefaultDelay). On Linux a batch goes out in raw write system calls
// whenever f polls writable, so that a flush does not wake the runtime's
// monitor thread (see fileWriter); the lines, their order and what a
// full pipe does are as with New(f, delay).
func NewFile(f *os.File, delay time.Duration) *Writer {
	return New(newFileWriter(f), delay)
}

// Write adds p to the batch; it writes the batch when it is full, and
// once the Writer is closed it writes p at once. It returns the error of
// an earlier write that failed, once.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= maxBatch {
		b.flushLocked()
	} else if !b.armed {
		b.armed = true
		b.timer.Reset(b.delay)
	}
	err := b.err
	b.err = nil
	return len(p), err
}

// tick writes the batch when its delay has passed.
func (b *Writer) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

// flushLocked writes the batch; b.mu is held.
func (b *Writer) flushLocked() {
	if b.armed {
		b.timer.Stop()
		b.armed = false
	}
	if len(b.buf) == 0 {
		return
	}
	if _, err := b.w.Write(b.buf); err != nil {
		b.err = err
	}
	if cap(b.buf) > 2*maxBatch {
		b.buf = nil // a burst's buffer is not kept
	} else {
		b.buf = b.buf[:0]
	}
}

// Flush writes what waits, and returns the error of the last write that
// failed since the last report.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	err := b.err
	b.err = nil
	return err
}

// Close writes what waits; from then on every Write goes straight to the
// underlying writer. It does not close that writer.
func (b *Writer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	b.closed = true
	err := b.err
	b.err = nil
	return err
}
