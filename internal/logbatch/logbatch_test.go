package logbatch

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder counts the writes it gets.
type recorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	fail   error
	wrote  chan struct{} // receives after each write
}

func newRecorder() *recorder { return &recorder{wrote: make(chan struct{}, 1000)} }

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	r.wrote <- struct{}{}
	if r.fail != nil {
		return 0, r.fail
	}
	return r.buf.Write(p)
}

func (r *recorder) state() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String(), r.writes
}

// Lines logged close together go out in one write, whole and in order,
// when the batch's delay has passed (the timer's tick, called here).
func TestBatchesLines(t *testing.T) {
	r := newRecorder()
	w := New(r, time.Hour)
	defer w.Close()
	log := slog.New(slog.NewTextHandler(w, nil))
	var want strings.Builder
	for i := range 50 {
		log.Info("login", "user", fmt.Sprintf("u%d", i))
		fmt.Fprintf(&want, "user=u%d\n", i)
	}
	if got, n := r.state(); n != 0 || got != "" {
		t.Fatalf("written before the delay: %d writes, %q", n, got)
	}
	w.tick()
	got, n := r.state()
	if n != 1 {
		t.Errorf("50 lines took %d writes; want 1", n)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		lines = append(lines, l[strings.Index(l, "user="):])
	}
	if strings.Join(lines, "\n")+"\n" != want.String() {
		t.Errorf("lines out of order or cut:\n%s", got)
	}
	// The next line starts a new batch.
	log.Info("after")
	w.tick()
	if got, n := r.state(); n != 2 || !strings.Contains(got, "msg=after") {
		t.Errorf("second batch: %d writes, %q", n, got)
	}
}

// The timer writes a batch by itself once its delay has passed.
func TestDelayWritesTheBatch(t *testing.T) {
	r := newRecorder()
	w := New(r, 5*time.Millisecond)
	defer w.Close()
	w.Write([]byte("line\n"))
	select {
	case <-r.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the batch was never written")
	}
	if got, _ := r.state(); got != "line\n" {
		t.Errorf("written: %q", got)
	}
}

// A full batch goes out at once, without waiting for its delay, written
// by the timer's goroutine rather than by the Write that filled it.
func TestFullBatchGoesAtOnce(t *testing.T) {
	r := newRecorder()
	w := New(r, time.Hour)
	defer w.Close()
	line := bytes.Repeat([]byte("x"), 1000)
	line[len(line)-1] = '\n'
	for range maxBatch/len(line) + 1 {
		w.Write(line)
	}
	select {
	case <-r.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("a full batch was not written")
	}
	got, n := r.state()
	if n != 1 || len(got) < maxBatch {
		t.Errorf("after %d bytes: %d writes of %d bytes; want one of at least %d", (maxBatch/len(line)+1)*len(line), n, len(got), maxBatch)
	}
}

// stuck is a destination whose writes wait until release is closed.
type stuck struct {
	recorder
	entered  chan struct{} // receives when a write begins
	release  chan struct{}
	released atomic.Bool
}

func (s *stuck) Write(p []byte) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.recorder.Write(p)
}

// blockedInWrite reports whether a goroutine waits inside Writer.Write
// for a write under way.
func blockedInWrite() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "sync.(*Cond).Wait") && strings.Contains(g, "logbatch.(*Writer).Write(") {
			return true
		}
	}
	return false
}

// While a batch's write is stuck (a disk that stalls, a full pipe), the
// goroutines that log go on: Write returns at once until maxBuffered
// bytes wait, and the Write beyond that waits for the stuck write. Every
// line arrives whole and in order once the destination moves again.
func TestWriteDoesNotWaitForASlowDestination(t *testing.T) {
	s := &stuck{recorder: *newRecorder(), entered: make(chan struct{}, 1000), release: make(chan struct{})}
	w := New(s, time.Millisecond)
	w.Write([]byte("first\n"))
	<-s.entered // the first batch's write is under way, and stuck
	var want bytes.Buffer
	want.WriteString("first\n")
	line := append(bytes.Repeat([]byte("y"), 200), '\n')
	goroutines := runtime.NumGoroutine()
	n := 0
	for len(want.Bytes()) < maxBuffered-len(line) {
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
		want.Write(line)
		n++
	}
	// Nor did they start a goroutine each to write the full batches
	// behind the stuck write.
	if g := runtime.NumGoroutine(); g > goroutines+5 {
		t.Errorf("%d goroutines after %d Writes behind a stuck write, %d before", g, n, goroutines)
	}
	// Those Writes returned although nothing could be written: now one
	// past maxBuffered, which must wait for the stuck write.
	returned := make(chan bool)
	go func() {
		for range 2 * (maxBuffered / len(line)) {
			w.Write(line)
		}
		returned <- s.released.Load()
	}()
	// The goroutine gets to a Write that waits for the stuck one.
	deadline := time.Now().Add(10 * time.Second)
	for !blockedInWrite() {
		if time.Now().After(deadline) {
			t.Fatal("no Write waits for the stuck write although maxBuffered bytes wait")
		}
		runtime.Gosched()
	}
	s.released.Store(true)
	close(s.release)
	if !<-returned {
		t.Error("Writes past maxBuffered returned before the stuck write ended")
	}
	for range 2 * (maxBuffered / len(line)) {
		want.Write(line)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.state(); got != want.String() {
		t.Errorf("%d bytes arrived, want %d (lines lost, cut or out of order)", len(got), want.Len())
	}
	if n == 0 {
		t.Error("no Write went through while the destination was stuck")
	}
}

// Flush and Close write what waits; after Close, writes go straight
// through. Nothing is lost.
func TestFlushAndClose(t *testing.T) {
	r := newRecorder()
	w := New(r, time.Hour)
	w.Write([]byte("one\n"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.state(); got != "one\n" {
		t.Fatalf("after Flush: %q", got)
	}
	w.Write([]byte("two\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.state(); got != "one\ntwo\n" {
		t.Fatalf("after Close: %q", got)
	}
	w.Write([]byte("three\n"))
	if got, n := r.state(); got != "one\ntwo\nthree\n" || n != 3 {
		t.Fatalf("a write after Close: %d writes, %q", n, got)
	}
}

// A failed write is reported by the next Write or Flush, once.
func TestReportsAFailedWrite(t *testing.T) {
	r := newRecorder()
	r.fail = errors.New("disk full")
	w := New(r, time.Hour)
	defer w.Close()
	w.Write([]byte("lost\n"))
	if err := w.Flush(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Flush after a failed write: %v", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("the error was reported twice: %v", err)
	}
}

// Concurrent writers: every line arrives whole, once.
func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := New(f, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(w, "g%d line %d %s\n", g, i, strings.Repeat("y", 100))
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if !strings.HasSuffix(l, strings.Repeat("y", 100)) || seen[l] {
			t.Fatalf("a line cut or repeated: %q", l)
		}
		seen[l] = true
	}
	if len(seen) != 8*500 {
		t.Errorf("%d lines; want %d", len(seen), 8*500)
	}
}
