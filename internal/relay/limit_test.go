package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestBackendLimit(t *testing.T) {
	l := &BackendLimit{Max: 5, PerNetwork: 3}
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.200") // same /24
	c := netip.MustParseAddr("198.51.100.1")
	var rel []func()
	for _, addr := range []netip.Addr{a, b, a} {
		r, err := l.Acquire(addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		rel = append(rel, r)
	}
	if _, err := l.Acquire(b); !errors.Is(err, ErrBackendLimit) {
		t.Fatalf("a fourth connection from 192.0.2.0/24: %v, want ErrBackendLimit", err)
	}
	for range 2 {
		r, err := l.Acquire(c)
		if err != nil {
			t.Fatalf("another network: %v", err)
		}
		rel = append(rel, r)
	}
	if _, err := l.Acquire(netip.MustParseAddr("203.0.113.1")); !errors.Is(err, ErrBackendLimit) {
		t.Fatalf("over the total: %v", err)
	}
	rel[0]()
	rel[0]() // twice is once
	if total, network := l.InUse(a); total != 4 || network != 2 {
		t.Fatalf("in use %d, network %d; want 4, 2", total, network)
	}
	if _, err := l.Acquire(a); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// IPv6 counts per /64.
	v6 := &BackendLimit{PerNetwork: 1}
	if _, err := v6.Acquire(netip.MustParseAddr("2001:db8:1:2::1")); err != nil {
		t.Fatal(err)
	}
	if _, err := v6.Acquire(netip.MustParseAddr("2001:db8:1:2:ffff::9")); !errors.Is(err, ErrBackendLimit) {
		t.Fatalf("same /64: %v", err)
	}
	if _, err := v6.Acquire(netip.MustParseAddr("2001:db8:1:3::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	// nil and zero bound nothing.
	var none *BackendLimit
	for range 1000 {
		if _, err := none.Acquire(a); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLimitConnReleases(t *testing.T) {
	l := &BackendLimit{Max: 1}
	client := netip.MustParseAddr("192.0.2.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	d := Dialer{Addr: ln.Addr().String(), Proxy: "none", Limit: l}
	c, err := d.Dial(t.Context(), netip.AddrPortFrom(client, 1), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	if raw, ok := tcpOf(c); !ok || raw == nil {
		t.Fatal("the splice cannot reach the socket beneath a limited connection")
	}
	if _, err := d.Dial(t.Context(), netip.AddrPortFrom(client, 2), netip.AddrPort{}); !errors.Is(err, ErrBackendLimit) {
		t.Fatalf("second dial: %v", err)
	}
	c.Close()
	c2, err := d.Dial(t.Context(), netip.AddrPortFrom(client, 3), netip.AddrPort{})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	// ReleaseLimit frees the place early, also beneath TLS; Close then
	// releases nothing more.
	ReleaseLimit(tls.Client(c2, &tls.Config{}))
	if total, _ := l.InUse(client); total != 0 {
		t.Fatalf("after ReleaseLimit: %d in use", total)
	}
	c3, err := d.Dial(t.Context(), netip.AddrPortFrom(client, 4), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if total, _ := l.InUse(client); total != 1 {
		t.Fatalf("closing a released connection released again: %d in use", total)
	}
	c3.Close()
}

// A PROXY header never claims postern's own address for a client it does
// not know.
func TestProxyHeaderNeedsAClientAddress(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	dst := netip.MustParseAddrPort("127.0.0.1:25")
	for _, src := range []netip.AddrPort{{}, netip.MustParseAddrPort("0.0.0.0:1"), netip.MustParseAddrPort("[::]:1"), netip.MustParseAddrPort("[::ffff:0.0.0.0]:1")} {
		if err := WriteProxyHeader(a, 2, src, dst, time.Second); err == nil {
			t.Errorf("%v: a header was written", src)
		}
	}
}
