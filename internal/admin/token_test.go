package admin_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
)

func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "admin.token")
	tok, err := admin.LoadOrCreateToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok) {
		t.Errorf("token %q: want 64 hex digits", tok)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v; want 0600", fi.Mode(), err)
	}
	again, err := admin.LoadOrCreateToken(path)
	if err != nil || again != tok {
		t.Errorf("second load: %q, %v; want the same token", again, err)
	}
	if read, err := admin.ReadToken(path); err != nil || read != tok {
		t.Errorf("ReadToken: %q, %v", read, err)
	}
	other, err := admin.LoadOrCreateToken(filepath.Join(t.TempDir(), "t"))
	if err != nil || other == tok {
		t.Errorf("a second token equals the first, or %v", err)
	}
}

func TestTokenFileChecks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("trimmed", "  my-own-token-of-24-chars\n\n", 0o600)
	if tok, err := admin.LoadOrCreateToken(p); err != nil || tok != "my-own-token-of-24-chars" {
		t.Errorf("own token: %q, %v", tok, err)
	}
	for name, tc := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"world":  {strings.Repeat("a", 64), 0o644, "chmod 600"},
		"group":  {strings.Repeat("a", 64), 0o640, "readable by group or others"},
		"empty":  {"\n", 0o600, "empty"},
		"short":  {"secret", 0o600, "at least 16"},
		"spaces": {"my token has spaces in it", 0o600, "no spaces"},
	} {
		p := write(name, tc.body, tc.mode)
		if tok, err := admin.LoadOrCreateToken(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %q, %v; want an error with %q", name, tok, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "world")); string(b) != strings.Repeat("a", 64) {
		t.Error("a refused token file was changed")
	}
	// A client reads a token it may read, whatever the mode.
	if tok, err := admin.ReadToken(filepath.Join(dir, "world")); err != nil || tok != strings.Repeat("a", 64) {
		t.Errorf("ReadToken: %q, %v", tok, err)
	}
	if _, err := admin.ReadToken(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("ReadToken of a missing file: %v", err)
	}
	if _, err := admin.LoadOrCreateToken(dir); err == nil {
		t.Error("a directory was accepted as a token file")
	}
}

// A FIFO in place of the token file is refused at once (before, opening it
// waited for a writer and startup hung).
func TestTokenFileFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := admin.LoadOrCreateToken(p); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("FIFO token file: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a FIFO token file hangs")
	}
}
