package geoip

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/safefile"
)

// A database must be a regular file under its format's limit: a device or
// a FIFO (which must not hang the open) is refused at the configuration
// line that names it, and so is a text file over safefile.MaxText.
func TestLoadOnlyRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "sg.zone")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "my.zone")
	if err := os.WriteFile(big, []byte("192.0.2.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, safefile.MaxText+1); err != nil { // sparse
		t.Fatal(err)
	}
	conf := diag.Pos{File: "postern.yaml", Line: 4, Col: 13}
	for _, c := range []struct {
		src  Source
		want string
		is   error
	}{
		{Source{Path: "/dev/zero", Format: FormatZone, Country: "SG"}, "not a regular file: it is a character device", safefile.ErrNotRegular},
		{Source{Path: "/dev/zero", Format: FormatMMDB}, "not a regular file: it is a character device", safefile.ErrNotRegular},
		{Source{Path: fifo}, "not a regular file: it is a FIFO (named pipe)", safefile.ErrNotRegular},
		{Source{Path: fifo, Format: FormatCSV}, "not a regular file: it is a FIFO (named pipe)", safefile.ErrNotRegular},
		{Source{Path: big}, fmt.Sprintf("file too large: a zone file of %d bytes, more than the %d allowed for text files", safefile.MaxText+1, safefile.MaxText), safefile.ErrTooLarge},
	} {
		c.src.Pos = conf
		done := make(chan error, 1)
		go func() { _, err := Load(context.Background(), []Source{c.src}); done <- err }()
		select {
		case err := <-done:
			want := fmt.Sprintf("postern.yaml:4:13: geoip database %q: cannot open: %s", c.src.Path, c.want)
			if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, c.is) {
				t.Errorf("Load(%+v) = %v, want %s", c.src, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Load(%s) hangs", c.src.Path)
		}
	}
}
