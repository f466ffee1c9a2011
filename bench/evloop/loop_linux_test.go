//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// startLoop runs one event loop for svc on a free loopback port.
func startLoop(t *testing.T, svc service, blocking bool) string {
	t.Helper()
	svc.listen = netip.MustParseAddrPort("127.0.0.1:0")
	l, err := newLoop([]service{svc}, blocking)
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for fd := range l.listeners {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			t.Fatal(err)
		}
		addr = fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	}
	done := make(chan error, 1)
	go func() { done <- l.run() }()
	t.Cleanup(func() {
		l.wake()
		if err := <-done; err != nil {
			t.Error(err)
		}
		l.close()
	})
	return addr
}
