package netlisten

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

type refusal struct {
	client netip.AddrPort
	reason string
}

// refuser sets an over-limit function that writes an SMTP-style refusal
// and reports each call.
func refuser(s *server) <-chan refusal {
	ch := make(chan refusal, 10)
	s.SetOverLimit(func(c *Conn, reason string) {
		c.Write([]byte("421 4.7.0 Too many connections from your address\r\n"))
		ch <- refusal{c.ClientAddr(), reason}
	})
	return ch
}

func nextRefusal(t *testing.T, ch <-chan refusal) refusal {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testTimeout):
		t.Fatal("over-limit function not called")
		return refusal{}
	}
}

func TestMaxPerAddr(t *testing.T) {
	s := start(t, Config{MaxPerAddr: 2})
	refused := refuser(s)
	a5 := netip.MustParseAddr("127.0.0.5")

	s1 := func() *Conn { dial(t, s, "127.0.0.5"); return s.accept(t) }()
	dial(t, s, "127.0.0.5")
	s.accept(t)
	if live, max := s.Stats(); live != 2 || max != 2 {
		t.Errorf("Stats = %d, %d; want 2, 2", live, max)
	}

	// The third from the same address is refused with the protocol's reply.
	c3 := dial(t, s, "127.0.0.5")
	r := nextRefusal(t, refused)
	if r.reason != ReasonMaxPerAddr || r.client.Addr() != a5 {
		t.Errorf("refusal %+v, want %s for 127.0.0.5", r, ReasonMaxPerAddr)
	}
	if got := readLine(t, c3); got != "421 4.7.0 Too many connections from your address\r\n" {
		t.Errorf("refused client read %q", got)
	}
	expectClosed(t, c3)
	s.noAccept(t)

	// Another address is unaffected.
	dial(t, s, "127.0.0.6")
	if got := s.accept(t).ClientAddr().Addr(); got != netip.MustParseAddr("127.0.0.6") {
		t.Errorf("accepted %v, want 127.0.0.6", got)
	}

	// Closing one frees a slot, exactly once.
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s1.Close(); err == nil {
		t.Error("second Close returned nil")
	}
	if n := s.perAddrCount(a5); n != 1 {
		t.Fatalf("127.0.0.5 holds %d slots after one Close (twice), want 1", n)
	}
	dial(t, s, "127.0.0.5")
	if got := s.accept(t).ClientAddr().Addr(); got != a5 {
		t.Errorf("accepted %v, want 127.0.0.5", got)
	}
	if live, max := s.Stats(); live != 3 || max != 2 {
		t.Errorf("Stats = %d, %d; want 3, 2", live, max)
	}
}

// Behind a load balancer the limit applies to the address in the header.
func TestMaxPerAddrProxied(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.1"), MaxPerAddr: 1})
	refused := refuser(s)

	c := dial(t, s, "127.0.0.1")
	writeAll(t, c, proxyHeader(t, 2, "203.0.113.7:1000", "192.0.2.1:25"))
	s.accept(t)

	c = dial(t, s, "127.0.0.1")
	writeAll(t, c, proxyHeader(t, 2, "203.0.113.7:1001", "192.0.2.1:25"))
	if r := nextRefusal(t, refused); r.reason != ReasonMaxPerAddr || r.client.String() != "203.0.113.7:1001" {
		t.Errorf("refusal %+v", r)
	}
	if got := readLine(t, c); got != "421 4.7.0 Too many connections from your address\r\n" {
		t.Errorf("refused client read %q", got)
	}

	c = dial(t, s, "127.0.0.1")
	writeAll(t, c, proxyHeader(t, 1, "203.0.113.8:1000", "192.0.2.1:25"))
	if got := s.accept(t).ClientAddr().String(); got != "203.0.113.8:1000" {
		t.Errorf("accepted %s", got)
	}
}

func TestMaxConns(t *testing.T) {
	s := start(t, Config{MaxConns: 2})
	refused := refuser(s)
	dial(t, s, "127.0.0.7")
	first := s.accept(t)
	dial(t, s, "127.0.0.8")
	s.accept(t)

	c := dial(t, s, "127.0.0.9")
	if r := nextRefusal(t, refused); r.reason != ReasonMaxConns || r.client.Addr() != netip.MustParseAddr("127.0.0.9") {
		t.Errorf("refusal %+v, want %s", r, ReasonMaxConns)
	}
	readLine(t, c)
	expectClosed(t, c)

	first.Close()
	dial(t, s, "127.0.0.9")
	if got := s.accept(t).ClientAddr().Addr(); got != netip.MustParseAddr("127.0.0.9") {
		t.Errorf("accepted %v", got)
	}
}

// With no over-limit function a connection over the limit is closed
// silently.
func TestOverLimitSilent(t *testing.T) {
	s := start(t, Config{MaxPerAddr: 1})
	dial(t, s, "127.0.0.10")
	s.accept(t)
	c := dial(t, s, "127.0.0.10")
	expectClosed(t, c)
	s.noAccept(t)
	if live, _ := s.Stats(); live != 1 {
		t.Errorf("Stats live = %d, want 1", live)
	}
}

// perAddrCount returns the live connections from a, for tests.
func (l *Listener) perAddrCount(a netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perAddr[limitKey(a)]
}

// TestMaxPerAddrIPv6Slash64: the addresses of one IPv6 /64 share the
// per-address limit; another /64 and IPv4 clients are counted apart.
func TestMaxPerAddrIPv6Slash64(t *testing.T) {
	s := start(t, Config{MaxPerAddr: 2, Trusted: trust("127.0.0.1")})
	refused := refuser(s)
	proxied := func(src string) net.Conn {
		c := dial(t, s, "127.0.0.1")
		writeAll(t, c, proxyHeader(t, 2, src, "[2001:db8::1]:143"))
		return c
	}
	proxied("[2001:db8:1:2::a]:1000")
	first := s.accept(t)
	proxied("[2001:db8:1:2:ffff::b]:1000")
	s.accept(t)
	// A third address of the same /64 is over the limit.
	c3 := proxied("[2001:db8:1:2::c]:1000")
	r := nextRefusal(t, refused)
	if r.reason != ReasonMaxPerAddr || r.client.Addr() != netip.MustParseAddr("2001:db8:1:2::c") {
		t.Errorf("refusal %+v, want %s for 2001:db8:1:2::c", r, ReasonMaxPerAddr)
	}
	readLine(t, c3)
	s.noAccept(t)
	// The next /64 is not affected.
	proxied("[2001:db8:1:3::a]:1000")
	if got := s.accept(t).ClientAddr().Addr(); got != netip.MustParseAddr("2001:db8:1:3::a") {
		t.Errorf("accepted %v", got)
	}
	if live, max := s.Stats(); live != 3 || max != 2 {
		t.Errorf("Stats = %d, %d; want 3, 2", live, max)
	}
	// Closing one frees the /64's slot.
	first.Close()
	proxied("[2001:db8:1:2::d]:1000")
	if got := s.accept(t).ClientAddr().Addr(); got != netip.MustParseAddr("2001:db8:1:2::d") {
		t.Errorf("accepted %v", got)
	}
}
