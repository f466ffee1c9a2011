package benchkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ReadySocket is a service manager's notification socket for one server
// the bench starts: the server says READY=1 on it once it serves (postern
// serve does, as under systemd's Type=notify). A port that accepts
// connections proves less: postern binds its ports before it opens its
// block store and drops privileges, and the kernel completes handshakes
// on a listening socket whether or not anything accepts them yet, so a
// load started then waits for the store.
type ReadySocket struct {
	dir  string
	conn *net.UnixConn
}

// NewReadySocket makes the socket, in a directory of its own under the
// system's temporary directory (a socket's path is limited to 107 bytes).
func NewReadySocket() (*ReadySocket, error) {
	dir, err := os.MkdirTemp("", "postern-bench-ready")
	if err != nil {
		return nil, fmt.Errorf("ready socket: %w", err)
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("ready socket: %w", err)
	}
	return &ReadySocket{dir: dir, conn: conn}, nil
}

// Env is the environment entry that points a server at the socket.
func (r *ReadySocket) Env() string {
	return "NOTIFY_SOCKET=" + filepath.Join(r.dir, "notify.sock")
}

// Wait returns once a notification with the line READY=1 arrives; an
// error when exited reports that the server has ended, or when timeout
// passes first.
func (r *ReadySocket) Wait(timeout time.Duration, exited func() bool) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for {
		if exited() {
			return errors.New("exited before it said READY=1")
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("did not say READY=1 within %v (%s)", timeout, r.Env())
		}
		// Short reads, so that an exit is noticed within 100 ms.
		next := time.Now().Add(100 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		if err := r.conn.SetReadDeadline(next); err != nil {
			return fmt.Errorf("ready socket: %w", err)
		}
		n, _, err := r.conn.ReadFromUnix(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return fmt.Errorf("ready socket: %w", err)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "READY=1" {
				return nil
			}
		}
	}
}

// Close closes the socket and removes its directory.
func (r *ReadySocket) Close() {
	r.conn.Close()
	os.RemoveAll(r.dir)
}
