package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.txt")
	if err := os.WriteFile(ok, []byte("192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.txt")
	if err := os.Symlink(ok, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoLink := filepath.Join(dir, "fifo-link")
	if err := os.Symlink(fifo, fifoLink); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 101), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, p := range []string{ok, link} {
		data, err := ReadFile(p, 100)
		if err != nil || string(data) != "192.0.2.1\n" {
			t.Errorf("ReadFile(%s) = %q, %v", p, data, err)
		}
	}
	cases := []struct {
		path string
		want error
		text string
	}{
		{"/dev/zero", ErrNotRegular, "a character device"},
		{"/dev/null", ErrNotRegular, "a character device"},
		{fifo, ErrNotRegular, "a FIFO"},
		{fifoLink, ErrNotRegular, "a FIFO"},
		{dir, ErrNotRegular, "a directory"},
		{big, ErrTooLarge, "101 bytes, more than the 100 allowed"},
		{filepath.Join(dir, "missing"), fs.ErrNotExist, "no such file"},
	}
	for _, c := range cases {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(c.path, 100); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("ReadFile(%s) = %v, want %v naming the path and %q", c.path, err, c.want, c.text)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadFile(%s) hangs", c.path)
		}
	}
}

// A file that grows between the check and the read is still bounded.
func TestReadAllGrown(t *testing.T) {
	_, err := ReadAll(strings.NewReader(strings.Repeat("x", 200)), "f", 10, 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadAll of a grown file = %v, want ErrTooLarge", err)
	}
	data, err := ReadAll(strings.NewReader(strings.Repeat("x", 100)), "f", 10, 100)
	if err != nil || len(data) != 100 {
		t.Fatalf("ReadAll at the limit = %d bytes, %v", len(data), err)
	}
	r := Reader(strings.NewReader(strings.Repeat("x", 200)), "f", 100)
	buf := make([]byte, 64)
	var n int
	for {
		m, err := r.Read(buf)
		n += m
		if err != nil {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Reader past the limit: %v after %d bytes", err, n)
			}
			break
		}
	}
	if n > 101 {
		t.Fatalf("Reader handed out %d bytes for a limit of 100", n)
	}
}
