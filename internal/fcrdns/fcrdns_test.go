package fcrdns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
)

type zone = fcrdnstest.Zone

func startZone(t *testing.T) *zone { return fcrdnstest.Start(t) }

func ptr(t *testing.T, addr, name string) string { return fcrdnstest.PTR(t, addr, name) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newResolver(t *testing.T, z *zone, clk *clock, opts Options) *Resolver {
	t.Helper()
	opts.Server = z.Addr
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	if clk != nil {
		opts.Clock = clk.now
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifiedName(t *testing.T) {
	z := startZone(t)
	z.Add(t,
		ptr(t, "192.0.2.10", "Mail.Example.COM."), "mail.example.com. 300 IN A 192.0.2.10",
		ptr(t, "192.0.2.11", "liar.example.com."), "liar.example.com. 300 IN A 192.0.2.99",
		ptr(t, "192.0.2.12", "two.example.net."), ptr(t, "192.0.2.12", "a.example.net."),
		"a.example.net. 300 IN A 192.0.2.50", "two.example.net. 300 IN A 192.0.2.12",
		ptr(t, "2001:db8::25", "v6.example.org."), "v6.example.org. 300 IN AAAA 2001:db8::25",
		"v6.example.org. 300 IN A 192.0.2.25",
		ptr(t, "192.0.2.13", "bad*name.example.com."), "bad*name.example.com. 300 IN A 192.0.2.13",
	)
	r := newResolver(t, z, nil, Options{})
	ctx := context.Background()
	cases := []struct {
		addr, name string
		err        error
		msg        string
	}{
		{"192.0.2.10", "mail.example.com", nil, ""},
		{"::ffff:192.0.2.10", "mail.example.com", nil, ""},
		{"192.0.2.11", "", ErrNotConfirmed, "liar.example.com does not resolve back to 192.0.2.11"},
		{"192.0.2.12", "two.example.net", nil, ""}, // a.example.net is tried first and does not confirm
		{"2001:db8::25", "v6.example.org", nil, ""},
		{"192.0.2.200", "", ErrNoPTR, "no PTR record for 192.0.2.200"},
		{"192.0.2.13", "", ErrNoPTR, ""}, // a PTR that is no host name is ignored
	}
	for _, c := range cases {
		name, err := r.VerifiedName(ctx, netip.MustParseAddr(c.addr))
		if name != c.name || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%s: got %q, %v; want %q, %v", c.addr, name, err, c.name, c.err)
		}
		if c.msg != "" && (err == nil || !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("%s: error %v, want it to say %q", c.addr, err, c.msg)
		}
	}
}

func TestCacheAnswersWithoutQuery(t *testing.T) {
	z := startZone(t)
	z.Add(t, ptr(t, "192.0.2.10", "mail.example.com."), "mail.example.com. 300 IN A 192.0.2.10")
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := newResolver(t, z, clk, Options{TTL: 10 * time.Minute, NegativeTTL: time.Minute})
	ctx := context.Background()
	pos, neg := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.77")

	if name, err := r.VerifiedName(ctx, pos); name != "mail.example.com" || err != nil {
		t.Fatalf("first lookup: %q, %v", name, err)
	}
	if _, err := r.VerifiedName(ctx, neg); !errors.Is(err, ErrNoPTR) {
		t.Fatalf("negative lookup: %v", err)
	}
	sent := z.Queries()
	if sent != 3 { // PTR + A, then PTR
		t.Fatalf("server saw %d queries, want 3", sent)
	}
	clk.add(59 * time.Second)
	if name, err := r.VerifiedName(ctx, pos); name != "mail.example.com" || err != nil {
		t.Fatalf("cached lookup: %q, %v", name, err)
	}
	if _, err := r.VerifiedName(ctx, neg); !errors.Is(err, ErrNoPTR) {
		t.Fatalf("cached negative lookup: %v", err)
	}
	if got := z.Queries(); got != sent {
		t.Fatalf("cache hits sent %d queries", got-sent)
	}
	// The negative answer expires after a minute, the positive after ten.
	clk.add(2 * time.Second)
	_, _ = r.VerifiedName(ctx, neg)
	_, _ = r.VerifiedName(ctx, pos)
	if got := z.Queries(); got != sent+1 {
		t.Fatalf("after 61s: %d new queries, want 1 (the negative answer only)", got-sent)
	}
	clk.add(10 * time.Minute)
	_, _ = r.VerifiedName(ctx, pos)
	if got := z.Queries(); got != sent+3 {
		t.Fatalf("after the TTL: %d new queries, want 3", got-sent)
	}
}

func TestCacheIsBounded(t *testing.T) {
	z := startZone(t)
	r := newResolver(t, z, nil, Options{CacheSize: 3})
	for i := range 10 {
		_, _ = r.VerifiedName(context.Background(), netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	if n := r.CacheLen(); n != 3 {
		t.Fatalf("cache holds %d answers, want 3", n)
	}
	// The newest are kept.
	before := z.Queries()
	_, _ = r.VerifiedName(context.Background(), netip.AddrFrom4([4]byte{192, 0, 2, 9}))
	if z.Queries() != before {
		t.Fatal("the newest answer was evicted")
	}
}

func TestTimeout(t *testing.T) {
	z := startZone(t)
	rev, _ := dns.ReverseAddr("192.0.2.10")
	z.Silent(rev)
	z.Add(t, ptr(t, "192.0.2.11", "slow.example.com."))
	z.Silent("slow.example.com.")
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := newResolver(t, z, clk, Options{Timeout: 150 * time.Millisecond})
	for _, a := range []string{"192.0.2.10", "192.0.2.11"} {
		start := time.Now()
		name, err := r.VerifiedName(context.Background(), netip.MustParseAddr(a))
		if name != "" || !errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: %q, %v; want a timeout", a, name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: took %v with a 150ms timeout", a, d)
		}
	}
	// A timeout is cached as a negative answer: the next client does not wait.
	before := z.Queries()
	if _, err := r.VerifiedName(context.Background(), netip.MustParseAddr("192.0.2.10")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("cached timeout: %v", err)
	}
	if z.Queries() != before {
		t.Fatal("a cached timeout sent a query")
	}
	// The caller's own deadline ends the wait too, and is not cached.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	rev2, _ := dns.ReverseAddr("192.0.2.12")
	z.Silent(rev2)
	if _, err := r.VerifiedName(ctx, netip.MustParseAddr("192.0.2.12")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("caller deadline: %v", err)
	}
	if n := r.CacheLen(); n != 2 {
		t.Fatalf("cache holds %d answers, want 2 (the caller's deadline is not cached)", n)
	}
}

func TestServerFailure(t *testing.T) {
	z := startZone(t)
	rev, _ := dns.ReverseAddr("192.0.2.10")
	z.Fail(rev)
	r := newResolver(t, z, nil, Options{})
	_, err := r.VerifiedName(context.Background(), netip.MustParseAddr("192.0.2.10"))
	if !errors.Is(err, ErrDNS) || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("SERVFAIL: %v", err)
	}
}

func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	z := startZone(t)
	z.Add(t, ptr(t, "192.0.2.10", "mail.example.com."), "mail.example.com. 300 IN A 192.0.2.10")
	r := newResolver(t, z, nil, Options{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if name, err := r.VerifiedName(context.Background(), netip.MustParseAddr("192.0.2.10")); name != "mail.example.com" {
				t.Errorf("got %q, %v", name, err)
			}
		})
	}
	wg.Wait()
	if q := z.Queries(); q != 2 {
		t.Fatalf("20 concurrent lookups sent %d queries, want 2", q)
	}
}

func TestServerPortDefault(t *testing.T) {
	r, err := New(Options{Server: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Server() != "127.0.0.1:53" {
		t.Fatalf("server %q", r.Server())
	}
}

// BenchmarkVerifiedNameCached is a lookup answered from the cache.
func BenchmarkVerifiedNameCached(b *testing.B) {
	z := fcrdnstest.Start(b, fcrdnstest.PTR(b, "192.0.2.10", "mail.example.com."), "mail.example.com. 300 IN A 192.0.2.10")
	r, err := New(Options{Server: z.Addr})
	if err != nil {
		b.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.10")
	if name, err := r.VerifiedName(context.Background(), a); name != "mail.example.com" {
		b.Fatalf("%q %v", name, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = r.VerifiedName(context.Background(), a)
	}
	if z.Queries() != 2 {
		b.Fatalf("%d queries", z.Queries())
	}
}
