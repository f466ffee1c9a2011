package sdnotify

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeManager is a NOTIFY_SOCKET as systemd binds it.
func fakeManager(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestNotifications(t *testing.T) {
	path, c := fakeManager(t)
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": path}), 1)
	if n == nil {
		t.Fatal("no notifier for a set NOTIFY_SOCKET")
	}
	if err := n.Ready("serving 2 services"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "READY=1\nSTATUS=serving 2 services\n" {
		t.Errorf("ready: %q", got)
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	got := recv(t, c)
	if !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("reloading: %q", got)
	}
	us, err := strconv.ParseInt(strings.SplitN(strings.TrimPrefix(got, "RELOADING=1\nMONOTONIC_USEC="), "\n", 2)[0], 10, 64)
	if err != nil || us <= 0 {
		t.Errorf("MONOTONIC_USEC not a positive number: %q", got)
	}
	if err := n.Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("stopping: %q", got)
	}
}

func TestNoSocket(t *testing.T) {
	if n := fromEnv(env(nil), 1); n != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET")
	}
	var n *Notifier
	if err := n.Ready(""); err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != 0 {
		t.Fatal("a watchdog without a notifier")
	}
	if fromEnv(env(map[string]string{"NOTIFY_SOCKET": "relative"}), 1) != nil {
		t.Fatal("a relative socket path was taken")
	}
}

func TestAbstractSocket(t *testing.T) {
	name := "postern-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram", Name: "\x00" + name})
	if err != nil {
		t.Skipf("abstract sockets: %v", err)
	}
	defer c.Close()
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": "@" + name}), 1)
	if err := n.Ready(""); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "READY=1\n" {
		t.Errorf("got %q", got)
	}
}

func TestWatchdog(t *testing.T) {
	path, c := fakeManager(t)
	if n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": "7"}), 8); n.WatchdogInterval() != 0 {
		t.Fatal("a watchdog meant for another process was taken")
	}
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000", "WATCHDOG_PID": "8"}), 8)
	if n.WatchdogInterval() != 20*time.Millisecond {
		t.Fatalf("interval %v", n.WatchdogInterval())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	healthy := make(chan error, 1)
	healthy <- nil
	go func() {
		defer close(done)
		n.Watchdog(ctx, func() error {
			select {
			case err := <-healthy:
				return err
			default:
				return errors.New("stuck")
			}
		})
	}()
	if got := recv(t, c); got != "WATCHDOG=1\n" {
		t.Errorf("got %q", got)
	}
	// Unhealthy: no keep-alive follows.
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err == nil {
		t.Errorf("keep-alive sent while unhealthy: %q", buf[:n])
	}
	cancel()
	<-done
}
