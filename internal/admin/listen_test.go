package admin_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/admin/admintest"
	"github.com/postern/postern/internal/store"
)

func TestUnixSocketModeAndRemoval(t *testing.T) {
	f := startUnix(t, options{})
	fi, err := os.Lstat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	f.stop()
	if _, err := os.Lstat(f.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestUnixSocketCreatesItsDirectory(t *testing.T) {
	f := start(t, "unix:"+filepath.Join(shortDir(t), "run", "a.sock"), options{})
	if _, err := f.c.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(shortDir(t), "a.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // a crashed server's socket: the file stays, nobody answers
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	f := start(t, "unix:"+path, options{})
	if _, err := f.c.Health(context.Background()); err != nil {
		t.Errorf("after replacing a stale socket: %v", err)
	}
}

func TestLiveSocketIsNotReplaced(t *testing.T) {
	f := startUnix(t, options{})
	srv := admin.NewServer(admintest.New(t0), nil, testToken, nil, nil)
	_, err := srv.Listen(context.Background(), "unix:"+f.path)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	if _, err := f.c.Health(context.Background()); err != nil {
		t.Errorf("the first server lost its socket: %v", err)
	}
}

func TestNonSocketFileIsNotRemoved(t *testing.T) {
	path := filepath.Join(shortDir(t), "a.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(admintest.New(t0), nil, testToken, nil, nil)
	err := srv.Serve(context.Background(), "unix:"+path)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Serve over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("the file was touched: %q, %v", b, err)
	}
	// Nor is a symbolic link to a socket followed.
	link := filepath.Join(filepath.Dir(path), "l.sock")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(context.Background(), "unix:"+link); err == nil {
		t.Error("Serve over a symbolic link succeeded")
	}
}

func TestBadListenAddress(t *testing.T) {
	srv := admin.NewServer(admintest.New(t0), nil, testToken, nil, nil)
	for _, l := range []string{"", "unix:", "127.0.0.1:80", "tcp:nohost", "http://x"} {
		if err := srv.Serve(context.Background(), l); err == nil {
			t.Errorf("Serve(%q) succeeded", l)
		}
	}
}

// slowEngine blocks BlockManual until release is closed.
type slowEngine struct {
	*admintest.Engine
	entered chan struct{}
	release chan struct{}
}

func (e *slowEngine) BlockManual(ctx context.Context, p netip.Prefix, d time.Duration, comment, actor string) (store.Block, error) {
	close(e.entered)
	<-e.release
	return e.Engine.BlockManual(ctx, p, d, comment, actor)
}

func TestGracefulShutdown(t *testing.T) {
	eng := &slowEngine{Engine: admintest.New(t0), entered: make(chan struct{}), release: make(chan struct{})}
	srv := admin.NewServer(eng, nil, testToken, nil, nil)
	listen := "unix:" + filepath.Join(shortDir(t), "a.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, listen)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ctx, ln) }()
	c := admin.NewClient(listen, testToken)
	added := make(chan error, 1)
	go func() {
		_, err := c.AddBlock(context.Background(), pfx("192.0.2.1/32"), 0, "", false)
		added <- err
	}()
	<-eng.entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("ServeListener returned during a request: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := admin.NewClient(listen, testToken).Health(context.Background()); err == nil {
		t.Error("a new request was served during shutdown")
	}
	close(eng.release)
	if err := <-added; err != nil {
		t.Errorf("the request in progress failed: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeListener: %v", err)
	}
	if _, ok := eng.Get(pfx("192.0.2.1/32")); !ok {
		t.Error("the block in progress was lost")
	}
}

// TestGrantListener: a connection from an address the grant refuses is
// closed before the server reads it and logged under the given name; a
// granted one is returned.
func TestGrantListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ln := admin.GrantListener(inner, func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") }, log, "console")
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()

	refused, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}).Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	refused.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := refused.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a refused address read %d bytes", n)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a refused address was not closed")
	}

	ok, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}).Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	select {
	case c, open := <-accepted:
		if !open {
			t.Fatal("Accept failed")
		}
		defer c.Close()
		if got := c.RemoteAddr().String(); got != ok.LocalAddr().String() {
			t.Errorf("Accept returned %s, want the granted client %s", got, ok.LocalAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a granted address was not returned by Accept")
	}
	if got := logs.String(); !strings.Contains(got, `msg="console: connection refused: address not granted" remote=127.0.0.2:`) || strings.Count(got, "\n") != 1 {
		t.Errorf("log: %q", got)
	}
}
