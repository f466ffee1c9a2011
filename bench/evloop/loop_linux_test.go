//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
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

// startOwn runs the goroutine-own mode for svc on a free loopback port.
func startOwn(t *testing.T, svc service) string {
	t.Helper()
	p, err := newOwnPoller()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := listenReusePort(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	svc.listen = netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port))
	ln, err := p.add(int32(fd))
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- p.run() }()
	served := make(chan struct{})
	go func() { serveOwn(ln, svc); close(served) }()
	t.Cleanup(func() {
		p.wake()
		if err := <-ran; err != nil {
			t.Error(err)
		}
		<-served
		ln.Close()
		p.close()
	})
	return svc.listen.String()
}

// TestRunOwn starts and stops the goroutine-own mode as main does.
func TestRunOwn(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runOwn(ctx, []service{{name: "imap", listen: netip.MustParseAddrPort("127.0.0.1:0"), backend: netip.MustParseAddrPort("127.0.0.1:1")}})
	}()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("runOwn = %v, want context.Canceled", err)
	}
}

// startLoopCosts runs the loop with every -costs (close and accept through
// the runtime's entry, connections handed over by an acceptor goroutine)
// for svc on a free loopback port.
func startLoopCosts(t *testing.T, svc service) string {
	t.Helper()
	if err := setCosts("close,accept,handoff"); err != nil {
		t.Fatal(err)
	}
	l, err := newLoop(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := listenReusePort(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	svc.listen = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
	ln := os.NewFile(uintptr(fd), "listener")
	done := make(chan error, 1)
	go func() { done <- l.run() }()
	accepted := make(chan struct{})
	go func() { handoff(ln, &svc, []*loop{l}); close(accepted) }()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		l.wake()
		if err := <-done; err != nil {
			t.Error(err)
		}
		l.close()
		resetCosts()
	})
	return svc.listen.String()
}

func TestSetCosts(t *testing.T) {
	defer func() { resetCosts() }()
	if err := setCosts("close, handoff,stack"); err != nil || !costs.close.Load() || costs.accept.Load() || !costs.handoff.Load() || !costs.stack.Load() {
		t.Fatalf("setCosts: %v, close %v accept %v handoff %v", err, costs.close.Load(), costs.accept.Load(), costs.handoff.Load())
	}
	if err := setCosts("close,sleep"); err == nil || !strings.Contains(err.Error(), `"sleep"`) {
		t.Fatalf("an unknown cost: %v", err)
	}
}

// resetCosts turns every -costs switch off.
func resetCosts() {
	for _, c := range []*atomic.Bool{&costs.close, &costs.accept, &costs.handoff, &costs.timer, &costs.tick, &costs.stack} {
		c.Store(false)
	}
}
