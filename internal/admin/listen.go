package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// splitListen parses "unix:/path" or "tcp:host:port" into a network and an
// address for net.Listen and net.Dial.
func splitListen(listen string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(listen, "unix:"):
		p := strings.TrimPrefix(listen, "unix:")
		if p == "" {
			return "", "", fmt.Errorf("bad admin address %q: unix: needs a socket path", listen)
		}
		return "unix", p, nil
	case strings.HasPrefix(listen, "tcp:"):
		a := strings.TrimPrefix(listen, "tcp:")
		if _, _, err := net.SplitHostPort(a); err != nil {
			return "", "", fmt.Errorf("bad admin address %q: want tcp:host:port", listen)
		}
		return "tcp", a, nil
	}
	return "", "", fmt.Errorf("bad admin address %q: want unix:/path/admin.sock or tcp:127.0.0.1:8025", listen)
}

// Listen opens the API's listener: listen is "unix:/path" or
// "tcp:host:port".
//
// A unix socket is created with mode 0600 (set after bind, whatever the
// umask), its directory with 0750 if missing. An existing file at the path
// is replaced only if it is a stale socket nobody answers on; a live socket
// or any other file is an error. Closing the listener removes the socket.
//
// A TCP listener closes, at accept, connections from addresses the
// server's grant function refuses (loopback only when it is nil).
//
// Listen is separate from ServeListener so a daemon can listen before it
// drops privileges.
func (s *Server) Listen(ctx context.Context, listen string) (net.Listener, error) {
	network, addr, err := splitListen(listen)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		return listenUnix(ctx, addr)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return GrantListener(ln, s.grant, s.log, "admin API"), nil
}

func listenUnix(ctx context.Context, path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if err := removeStale(ctx, path); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // unixListener.Close removes it, if it is still ours
	if err := os.Chmod(path, 0o600); err != nil {
		ul.Close()
		os.Remove(path)
		return nil, fmt.Errorf("admin API: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("admin API: %w", err)
	}
	return &unixListener{UnixListener: ul, path: path, fi: fi}, nil
}

// removeStale removes a socket at path that nobody answers on; a live
// socket or another kind of file is an error.
func removeStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("admin API: refusing to replace %s: it exists and is not a socket", path)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("admin API: %s is in use: another process answers on it (is postern already running?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin API: cannot tell whether %s is stale: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("admin API: removing stale socket: %w", err)
	}
	return nil
}

// unixListener removes its socket file on Close, unless the file was
// replaced meanwhile.
type unixListener struct {
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}

// GrantListener wraps ln so that Accept closes every connection from an
// address grant refuses (or from a peer that is not TCP) at once, before
// a byte of TLS or HTTP is read, and logs it at warn as "name: connection
// refused: address not granted". The admin API's TCP listener and the
// console use it.
func GrantListener(ln net.Listener, grant func(netip.Addr) bool, log *slog.Logger, name string) net.Listener {
	return &grantListener{Listener: ln, grant: grant, log: log, refused: name + ": connection refused: address not granted"}
}

type grantListener struct {
	net.Listener
	grant   func(netip.Addr) bool
	log     *slog.Logger
	refused string // the log message
}

func (l *grantListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if a, ok := remoteAddr(c.RemoteAddr()); ok && l.grant(a) {
			return c, nil
		}
		l.log.Warn(l.refused, "remote", c.RemoteAddr().String())
		c.Close()
	}
}

// remoteAddr returns the IP address of a TCP peer, unmapped.
func remoteAddr(a net.Addr) (netip.Addr, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	ap := ta.AddrPort()
	return ap.Addr().Unmap().WithZone(""), ap.Addr().IsValid()
}
