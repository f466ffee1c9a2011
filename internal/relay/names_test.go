package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeResolver answers lookups from a table and counts them.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	calls   int
}

func (r *fakeResolver) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	a, ok := r.answers[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	return a, nil
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func backendPort(t *testing.T) (net.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func dialName(t *testing.T, d Dialer) error {
	t.Helper()
	c, err := d.Dial(context.Background(), netip.MustParseAddrPort("192.0.2.7:1234"), netip.AddrPort{})
	if err == nil {
		c.Close()
	}
	return err
}

// A host name is looked up once per TTL, not on every dial.
func TestNamesKeepAnswerForTTL(t *testing.T) {
	_, port := backendPort(t)
	r := &fakeResolver{answers: map[string][]netip.Addr{"backend.test": {netip.MustParseAddr("127.0.0.1")}}}
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	names := &Names{TTL: 10 * time.Second, Lookup: r.lookup, Now: clock.now}
	d := Dialer{Addr: "backend.test:" + port, Proxy: "none", Timeout: 5 * time.Second, Names: names}
	for range 3 {
		if err := dialName(t, d); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.count(); n != 1 {
		t.Fatalf("%d lookups for 3 dials within the TTL, want 1", n)
	}
	clock.t = clock.t.Add(10 * time.Second)
	if err := dialName(t, d); err != nil {
		t.Fatal(err)
	}
	if n := r.count(); n != 2 {
		t.Fatalf("%d lookups after the TTL, want 2", n)
	}
	// An IP address is never looked up.
	d.Addr = "127.0.0.1:" + port
	if err := dialName(t, d); err != nil {
		t.Fatal(err)
	}
	if n := r.count(); n != 2 {
		t.Fatalf("%d lookups after dialing an IP address, want 2", n)
	}
}

// Addresses are tried in the resolver's order; when none connects, or the
// lookup fails, nothing is kept and the next dial looks up again.
func TestNamesFallbackAndForget(t *testing.T) {
	_, port := backendPort(t)
	r := &fakeResolver{answers: map[string][]netip.Addr{
		// Nothing listens on 127.0.0.2 at port: refused, then 127.0.0.1.
		"two.test":  {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")},
		"dead.test": {netip.MustParseAddr("127.0.0.2")},
	}}
	names := &Names{Lookup: r.lookup}
	d := Dialer{Addr: "two.test:" + port, Proxy: "none", Timeout: 5 * time.Second, Names: names}
	if err := dialName(t, d); err != nil {
		t.Fatalf("dial with a dead first address: %v", err)
	}
	d.Addr = "dead.test:" + port
	for range 2 {
		err := dialName(t, d)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial to a dead backend: %v, want connection refused", err)
		}
	}
	if n := r.count(); n != 3 {
		t.Fatalf("%d lookups, want 3: a backend that did not connect is looked up again", n)
	}
	d.Addr = "unknown.test:" + port
	for range 2 {
		if err := dialName(t, d); err == nil {
			t.Fatal("dial to an unknown host succeeded")
		}
	}
	if n := r.count(); n != 5 {
		t.Fatalf("%d lookups, want 5: a failed lookup is not kept", n)
	}
}

// The cache holds at most maxNames host names.
func TestNamesBounded(t *testing.T) {
	r := &fakeResolver{answers: map[string][]netip.Addr{}}
	for i := range 3 * maxNames {
		r.answers[fmt.Sprintf("h%d.test", i)] = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	names := &Names{Lookup: r.lookup}
	for i := range 3 * maxNames {
		if _, err := names.resolve(context.Background(), fmt.Sprintf("h%d.test", i)); err != nil {
			t.Fatal(err)
		}
		names.mu.Lock()
		n := len(names.m)
		names.mu.Unlock()
		if n > maxNames {
			t.Fatalf("%d names kept, want at most %d", n, maxNames)
		}
	}
}
