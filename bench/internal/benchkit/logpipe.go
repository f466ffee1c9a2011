package benchkit

import (
	"fmt"
	"io"
	"os"
	"time"
)

// LogPipe hands a server's output to the bench through a pipe, as a
// service manager's journal takes it, and copies it into a file. postern
// writes its log to a pipe or a socket in raw system calls, and to a
// regular file through the runtime (a disk may stall a write): a bench
// that redirected postern into a file would measure the second, which
// postern under systemd or a container runtime does not run.
type LogPipe struct {
	w    *os.File
	done chan struct{}
}

// NewLogPipe creates the file at path and the pipe that fills it.
func NewLogPipe(path string) (*LogPipe, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log pipe: %w", err)
	}
	l := &LogPipe{w: w, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		io.Copy(f, r) // until every holder of the write end has closed it
		r.Close()
		f.Close()
	}()
	return l, nil
}

// Writer is the pipe's write end, for the server's Stdout and Stderr.
func (l *LogPipe) Writer() *os.File { return l.w }

// Started closes the bench's own copy of the write end once the server
// has started (or failed to start) with it.
func (l *LogPipe) Started() { l.w.Close() }

// Done is closed once every copy of the write end is closed (the server
// and any child that inherited its output have ended) and everything
// written is in the file.
func (l *LogPipe) Done() <-chan struct{} { return l.done }

// Wait waits for Done, at most timeout (a grandchild that outlives the
// server may hold the pipe open); false when the time ran out.
func (l *LogPipe) Wait(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-l.done:
		return true
	case <-t.C:
		return false
	}
}
