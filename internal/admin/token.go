package admin

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	minTokenLen   = 16
	maxTokenBytes = 4096
)

// LoadOrCreateToken returns the API token kept in the file at path. A
// missing file is created (mode 0600, its directory 0700 if missing too)
// holding 32 random bytes in hex. An existing file must be a regular file
// readable by its owner only; its content, trimmed, is the token.
func LoadOrCreateToken(path string) (string, error) {
	tok, err := readTokenFile(path, true)
	if !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok = hex.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // created meanwhile by another process
		return readTokenFile(path, true)
	}
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	// The umask may have taken bits away from 0600; put them back.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("admin token: %w", err)
	}
	if _, err := io.WriteString(f, tok+"\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("admin token: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("admin token: writing %s: %w", path, err)
	}
	return tok, nil
}

// ReadToken reads the API token from the file at path, for a client. It
// does not create the file and does not check its mode (the server does).
func ReadToken(path string) (string, error) {
	tok, err := readTokenFile(path, false)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("admin token file %s does not exist (postern serve creates it when it starts)", path)
	}
	return tok, err
}

func readTokenFile(path string, private bool) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0) // a FIFO must not hang the open; refused below
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("admin token file %s is not a regular file", path)
	}
	if private && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("admin token file %s is readable by group or others (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("admin token: reading %s: %w", path, err)
	}
	if len(data) > maxTokenBytes {
		return "", fmt.Errorf("admin token file %s is longer than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(data))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	return tok, nil
}

// checkToken accepts printable ASCII tokens without spaces, long enough
// not to be guessed.
func checkToken(tok string) error {
	if tok == "" {
		return errors.New("the token is empty (delete the file to have postern create one)")
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return errors.New("the token may hold printable ASCII characters only, no spaces")
		}
	}
	if len(tok) < minTokenLen {
		return fmt.Errorf("the token is %d characters; use at least %d (delete the file to have postern create one)", len(tok), minTokenLen)
	}
	return nil
}
