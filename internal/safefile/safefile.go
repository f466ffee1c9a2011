// Package safefile opens the files a configuration names (include, bypass,
// zone and GeoIP files, the configuration itself) so that a wrong path can
// never hang or exhaust the gateway: the file must be a regular file (after
// symbolic links are followed) no larger than a stated limit.
//
// The file is opened with O_NONBLOCK, so opening a FIFO returns at once
// instead of waiting for a writer, and the checks are made with fstat on
// the opened descriptor, so nothing can swap the file between the check and
// the read. Reads are bounded by the limit as well, so a file that grows
// after the check is still refused.
package safefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Size limits for the files postern reads.
const (
	// MaxConfig bounds the configuration file: long lists belong in
	// include files.
	MaxConfig = 16 << 20 // 16 MiB
	// MaxText bounds one text file: a pattern include, a bypass file, a
	// zone file or a CSV GeoIP range list (a country list of a million
	// networks is about 20 MB; a full CSV range list about 250 MB in IPv4
	// and IPv6 together is over the limit, use MMDB for that).
	MaxText = 64 << 20 // 64 MiB
	// MaxDatabase bounds an MMDB GeoIP database, which is read whole into
	// memory (a full country or ASN database is 10–120 MB).
	MaxDatabase = 512 << 20 // 512 MiB
)

// ErrNotRegular is returned (wrapped) for a directory, device, FIFO, socket
// or anything else that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned (wrapped) for a file over its limit.
var ErrTooLarge = errors.New("file too large")

// Open opens path for reading and checks that it is a regular file of at
// most limit bytes. The error names the path and keeps the cause for
// errors.Is (fs.ErrNotExist, fs.ErrPermission, ErrNotRegular, ErrTooLarge).
func Open(path string, limit int64) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, cause(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, cause(err))
	}
	if err := Check(fi, limit); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, fi, nil
}

// Check reports whether fi describes a regular file of at most limit bytes.
func Check(fi fs.FileInfo, limit int64) error {
	m := fi.Mode()
	if !m.IsRegular() {
		return fmt.Errorf("%w: it is %s", ErrNotRegular, kind(m))
	}
	if fi.Size() > limit {
		return fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrTooLarge, fi.Size(), limit)
	}
	return nil
}

// ReadFile reads the regular file at path, of at most limit bytes.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, fi, err := Open(path, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, path, fi.Size(), limit)
}

// ReadAll reads the open file f (named path in errors), sized size when it
// was checked, refusing more than limit bytes should it have grown since.
func ReadAll(f io.Reader, path string, size, limit int64) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, min(size, limit)+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, cause(err))
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%s: %w: it grew past the %d bytes allowed while being read", path, ErrTooLarge, limit)
	}
	return buf.Bytes(), nil
}

// Reader returns a reader of f that fails once more than limit bytes were
// read (a file that grew after Open was checked).
func Reader(f io.Reader, path string, limit int64) io.Reader {
	return &limited{r: f, path: path, left: limit}
}

type limited struct {
	r    io.Reader
	path string
	left int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, fmt.Errorf("%s: %w: it grew past its limit while being read", l.path, ErrTooLarge)
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, fmt.Errorf("%s: %w: it grew past its limit while being read", l.path, ErrTooLarge)
	}
	return n, err
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// cause strips the operation and path from a *fs.PathError, which our
// messages name already, keeping the cause for errors.Is.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
