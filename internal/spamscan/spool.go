package spamscan

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// spoolBuffer is the write buffer in front of a spool file, so that a
// gateway writing line by line does not make a system call per line.
const spoolBuffer = 64 << 10

// Spool holds a message being received: in memory up to a limit, then in a
// temporary file (mode 0600, in the spool's directory, removed on Close).
// It is an io.Writer while receiving and an io.ReaderAt afterwards; reads
// and writes may interleave, and all methods are safe for concurrent use.
type Spool struct {
	dir      string
	memLimit int64

	mu     sync.Mutex
	buf    []byte // the message while it fits in memLimit
	file   *os.File
	bw     *bufio.Writer // in front of file
	size   int64
	err    error // sticky write error
	closed bool
}

// NewSpool returns an empty Spool that keeps up to memLimit bytes in memory
// and moves the message to a temporary file in dir ("" for the system's
// temporary directory) as soon as it grows past that. With memLimit <= 0
// every non-empty message goes to a file.
func NewSpool(dir string, memLimit int64) *Spool {
	return &Spool{dir: dir, memLimit: max(memLimit, 0)}
}

// Write appends p to the message. After a failed write (disk full) every
// later write fails with the same error.
func (s *Spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("spool: write: %w", fs.ErrClosed)
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.file == nil && int64(len(s.buf))+int64(len(p)) <= s.memLimit {
		if need := len(s.buf) + len(p); need > cap(s.buf) {
			grown := make([]byte, len(s.buf), min(max(2*cap(s.buf), need, 4096), int(s.memLimit)))
			copy(grown, s.buf)
			s.buf = grown
		}
		s.buf = append(s.buf, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.file == nil {
		if err := s.spill(); err != nil {
			s.err = err
			return 0, err
		}
	}
	n, err := s.bw.Write(p)
	s.size += int64(n)
	if err != nil {
		s.err = fmt.Errorf("spool: write %s: %w", s.file.Name(), err)
		return n, s.err
	}
	return n, nil
}

// spill moves the message from memory to a new temporary file.
func (s *Spool) spill() error {
	f, err := os.CreateTemp(s.dir, "postern-spool-*.eml") // mode 0600
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if _, err := f.Write(s.buf); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("spool: write %s: %w", f.Name(), err)
	}
	s.file, s.bw, s.buf = f, bufio.NewWriterSize(f, spoolBuffer), nil
	return nil
}

// ReadAt reads len(p) bytes of the message from offset off, as io.ReaderAt
// specifies: fewer only at the end (with io.EOF) or on error.
func (s *Spool) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, fmt.Errorf("spool: read: %w", fs.ErrClosed)
	case off < 0:
		return 0, errors.New("spool: read: negative offset")
	case s.err != nil:
		return 0, s.err
	}
	if s.file == nil {
		if off >= int64(len(s.buf)) {
			return 0, io.EOF
		}
		n := copy(p, s.buf[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	if s.bw.Buffered() > 0 {
		if err := s.bw.Flush(); err != nil {
			s.err = fmt.Errorf("spool: write %s: %w", s.file.Name(), err)
			return 0, s.err
		}
	}
	n, err := s.file.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("spool: read %s: %w", s.file.Name(), err)
	}
	return n, err
}

// Size returns the number of bytes written so far.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Close releases the message: the memory, or the temporary file, which it
// removes. Further calls do nothing.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.buf = nil
	if s.file == nil {
		return nil
	}
	name := s.file.Name()
	err := s.file.Close()
	if rerr := os.Remove(name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	s.file, s.bw = nil, nil
	if err != nil {
		return fmt.Errorf("spool: close %s: %w", name, err)
	}
	return nil
}
