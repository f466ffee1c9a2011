package logbatch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lines returns n numbered lines of about width bytes each.
func lines(n, width int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "line %06d %s\n", i, strings.Repeat("x", width-13))
	}
	return b.Bytes()
}

// readAll reads r until EOF in the background.
func readAll(r *os.File) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- b
	}()
	return out
}

func TestFileWriterPipe(t *testing.T) {
	// Whole batches of short lines, a batch larger than a chunk (split at
	// line ends), and a line longer than a chunk (through the file): all
	// arrive whole and in order.
	long := append(bytes.Repeat([]byte("y"), 3*rawChunk), '\n')
	for name, p := range map[string][]byte{
		"small":      lines(3, 80),
		"chunks":     lines(200, 100),
		"long line":  append(append(lines(2, 50), long...), lines(2, 50)...),
		"no newline": []byte("partial"),
	} {
		t.Run(name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got := readAll(r)
			fw := newFileWriter(w)
			if fw.fd < 0 {
				t.Fatal("no descriptor for raw writes")
			}
			n, err := fw.Write(p)
			if err != nil || n != len(p) {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(p))
			}
			w.Close()
			if b := <-got; !bytes.Equal(b, p) {
				t.Fatalf("read %d bytes, want %d, equal: %v", len(b), len(p), bytes.Equal(b, p))
			}
		})
	}
}

func TestFileWriterFullPipe(t *testing.T) {
	// A pipe already full does not poll writable: the batch goes through
	// the file, which waits for the reader, and nothing is lost.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	filled := 0
	rc.Control(func(fd uintptr) {
		unix.SetNonblock(int(fd), true)
		chunk := bytes.Repeat([]byte("f"), 4096)
		for {
			n, err := unix.Write(int(fd), chunk)
			if n > 0 {
				filled += n
			}
			if err != nil {
				break
			}
		}
		unix.SetNonblock(int(fd), false)
	})
	if filled == 0 {
		t.Fatal("could not fill the pipe")
	}
	fw := newFileWriter(w)
	if writable(fw.fd) {
		t.Fatal("a full pipe polls writable")
	}
	p := lines(10, 60)
	done := make(chan error, 1)
	go func() {
		_, err := fw.Write(p)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Write returned (%v) while the pipe was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	got := readAll(r)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.Close()
	b := <-got
	if len(b) != filled+len(p) || !bytes.Equal(b[filled:], p) {
		t.Fatalf("read %d bytes, want %d with the lines last", len(b), filled+len(p))
	}
}

func TestFileWriterClosed(t *testing.T) {
	// A closed file: the raw write fails, the file reports why.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	fw := newFileWriter(w)
	w.Close()
	if _, err := fw.Write([]byte("x\n")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write to a closed file: %v, want os.ErrClosed", err)
	}
}

func TestNewFileRegular(t *testing.T) {
	// A log file: batches through NewFile land whole, in order, and go
	// through the *os.File (a raw write to a disk that stalls would keep
	// its processor); a pipe and a socket get raw writes.
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fw := newFileWriter(f); fw.fd != -1 {
		t.Errorf("a regular file gets raw writes (descriptor %d)", fw.fd)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if fw := newFileWriter(pw); fw.fd < 0 {
		t.Error("a pipe gets no raw writes")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock, peer := os.NewFile(uintptr(fds[0]), "sock"), os.NewFile(uintptr(fds[1]), "peer")
	defer sock.Close()
	defer peer.Close()
	if fw := newFileWriter(sock); fw.fd < 0 {
		t.Error("a socket gets no raw writes")
	}
	b := NewFile(f, time.Hour)
	want := lines(300, 70)
	for l := range bytes.Lines(want) {
		if _, err := b.Write(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes (%v), want %d", len(got), err, len(want))
	}
}
