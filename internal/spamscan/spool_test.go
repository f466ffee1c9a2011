package spamscan

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkReadAt reads every window of want from s, across any boundary.
func checkReadAt(t *testing.T, s *Spool, want []byte, offsets []int64, lengths []int) {
	t.Helper()
	for _, off := range offsets {
		for _, n := range lengths {
			p := make([]byte, n)
			got, err := s.ReadAt(p, off)
			end := min(off+int64(n), int64(len(want)))
			wantN := int(max(end-off, 0))
			start := min(off, int64(len(want)))
			if got != wantN || !bytes.Equal(p[:got], want[start:start+int64(got)]) {
				t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d bytes of the message", n, off, got, err, wantN)
			}
			if wantN < n && err != io.EOF {
				t.Fatalf("ReadAt(%d bytes, %d) short without io.EOF: %v", n, off, err)
			}
			if wantN == n && err != nil && err != io.EOF {
				t.Fatalf("ReadAt(%d bytes, %d): %v", n, off, err)
			}
		}
	}
}

func writeChunks(t *testing.T, s *Spool, data []byte, rng *rand.Rand) {
	t.Helper()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(300))
		if k, err := s.Write(rest[:n]); k != n || err != nil {
			t.Fatalf("Write = %d, %v", k, err)
		}
		rest = rest[n:]
	}
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestSpoolInMemory(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	data := randomBytes(rng, 1000)
	s := NewSpool(dir, 1000)
	writeChunks(t, s, data, rng)
	if s.Size() != 1000 {
		t.Errorf("Size = %d", s.Size())
	}
	if f := spoolFiles(t, dir); len(f) != 0 {
		t.Errorf("files %v for a message within the memory limit", f)
	}
	checkReadAt(t, s, data, []int64{0, 1, 500, 999, 1000, 1001}, []int{0, 1, 10, 1000, 2000})
	if _, err := s.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("negative offset accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(make([]byte, 1), 0); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSpoolSpillsToDisk(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	data := randomBytes(rng, 3000)
	s := NewSpool(dir, 1000)
	writeChunks(t, s, data[:1000], rng)
	if f := spoolFiles(t, dir); len(f) != 0 {
		t.Fatalf("spilled at exactly the limit: %v", f)
	}
	checkReadAt(t, s, data[:1000], []int64{0, 999}, []int{1, 5})
	// Reads and writes interleave: the next byte spills.
	writeChunks(t, s, data[1000:1001], rng)
	checkReadAt(t, s, data[:1001], []int64{0, 995, 1000}, []int{1, 10})
	writeChunks(t, s, data[1001:], rng)

	files := spoolFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("files in the spool dir: %v", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("spool file mode %v, want 0600", fi.Mode().Perm())
	}
	if s.Size() != 3000 {
		t.Errorf("Size = %d", s.Size())
	}
	checkReadAt(t, s, data, []int64{0, 990, 999, 1000, 1001, 2999, 3000, 3001}, []int{0, 1, 2, 20, 3000, 4000})
	got, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}

	// Concurrent readers (run with -race).
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p := make([]byte, 100)
			off := int64(i * 350)
			if n, err := s.ReadAt(p, off); n != 100 || err != nil || !bytes.Equal(p, data[off:off+100]) {
				t.Errorf("concurrent ReadAt at %d: %d, %v", off, n, err)
			}
		})
	}
	wg.Wait()

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if f := spoolFiles(t, dir); len(f) != 0 {
		t.Errorf("spool file left after Close: %v", f)
	}
}

func TestSpoolZeroLimit(t *testing.T) {
	dir := t.TempDir()
	s := NewSpool(dir, 0)
	defer s.Close()
	if _, err := s.Write(nil); err != nil {
		t.Fatal(err)
	}
	if f := spoolFiles(t, dir); len(f) != 0 {
		t.Errorf("an empty write created %v", f)
	}
	if _, err := s.ReadAt(make([]byte, 1), 0); err != io.EOF {
		t.Errorf("ReadAt on an empty spool: %v, want io.EOF", err)
	}
	if _, err := s.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if f := spoolFiles(t, dir); len(f) != 1 {
		t.Errorf("files %v, want one", f)
	}
	checkReadAt(t, s, []byte("abc"), []int64{0, 1, 3}, []int{1, 3, 5})
}

func TestSpoolLarge(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	const size = 20 << 20
	data := randomBytes(rng, size)
	s := NewSpool(dir, 1<<20)
	for off := 0; off < size; off += 32 << 10 {
		if _, err := s.Write(data[off : off+32<<10]); err != nil {
			t.Fatal(err)
		}
	}
	if s.Size() != size {
		t.Fatalf("Size = %d", s.Size())
	}
	checkReadAt(t, s, data, []int64{0, 1<<20 - 1, 1 << 20, 10<<20 + 7, size - 1}, []int{1, 4096, 100 << 10})
	got, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if f := spoolFiles(t, dir); len(f) != 0 {
		t.Errorf("left over: %v", f)
	}
}

func TestSpoolWriteError(t *testing.T) {
	s := NewSpool(filepath.Join(t.TempDir(), "missing"), 4)
	defer s.Close()
	if _, err := s.Write([]byte("1234")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Write([]byte("5"))
	if err == nil {
		t.Fatal("no error spilling into a missing directory")
	}
	if _, err2 := s.Write([]byte("6")); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second write: %v, want the same error %v", err2, err)
	}
	if _, err := s.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("ReadAt on a failed spool succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
