package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for cache expiry.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestChecker(t *testing.T, s *testServer, opts Options) *Checker {
	t.Helper()
	opts.Resolver = s.addr
	if opts.Timeout == 0 {
		opts.Timeout = time.Second
	}
	return New(opts)
}

func addrs(ss ...string) []netip.Addr {
	a := make([]netip.Addr, len(ss))
	for i, s := range ss {
		a[i] = netip.MustParseAddr(s)
	}
	return a
}

func checkOne(t *testing.T, c *Checker, addr, zone string) Result {
	t.Helper()
	res := c.Check(context.Background(), netip.MustParseAddr(addr), []string{zone})
	if len(res) != 1 {
		t.Fatalf("Check returned %d results, want 1", len(res))
	}
	if res[0].Zone != zone {
		t.Errorf("Zone = %q, want %q", res[0].Zone, zone)
	}
	return res[0]
}

func TestListedIPv4(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})

	r := checkOne(t, c, "203.0.113.7", "bl.test")
	if !r.Listed || r.Err != nil {
		t.Fatalf("203.0.113.7: Listed=%v Err=%v, want listed", r.Listed, r.Err)
	}
	if !slices.Equal(r.Codes, addrs("127.0.0.2", "127.0.0.4")) {
		t.Errorf("Codes = %v", r.Codes)
	}
	// Two strings of one TXT record are joined; CR, LF and NUL are cleaned.
	if want := "Listed: see https://bl.test/query/203.0.113.7 bye"; r.Reason != want {
		t.Errorf("Reason = %q, want %q", r.Reason, want)
	}

	// RFC 5782 test entry, with the zone written with a final dot.
	r = checkOne(t, c, "127.0.0.2", "BL.test.")
	if !r.Listed || r.Reason != "test entry" || !slices.Equal(r.Codes, addrs("127.0.0.2")) {
		t.Errorf("127.0.0.2: %+v", r)
	}
	// An IPv4-mapped IPv6 address is looked up as IPv4.
	r = checkOne(t, c, "::ffff:203.0.113.7", "bl.test")
	if !r.Listed {
		t.Errorf("::ffff:203.0.113.7 not listed: %+v", r)
	}
}

func TestListedIPv6TruncatedTXTOverTCP(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	r := checkOne(t, c, "2001:db8::1", "bl.test")
	if !r.Listed || r.Err != nil || !slices.Equal(r.Codes, addrs("127.0.0.3")) {
		t.Fatalf("2001:db8::1: %+v", r)
	}
	if !strings.HasPrefix(r.Reason, "part0-xxx") || len(r.Reason) != maxReasonLen {
		t.Errorf("Reason = %q (%d bytes), want the long TXT cut to %d", r.Reason, len(r.Reason), maxReasonLen)
	}
	if s.tcpQueries() == 0 {
		t.Error("the truncated TXT answer was not retried over TCP")
	}
	if n := s.count("A", v6Name("2001:db8::1", "bl.test")); n != 1 {
		t.Errorf("%d A queries for the nibble name, want 1", n)
	}
}

func TestNotListed(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	for _, addr := range []string{"203.0.113.8", "2001:db8::2", "203.0.113.9" /* TXT, no A */} {
		r := checkOne(t, c, addr, "bl.test")
		if r.Listed || r.Err != nil || len(r.Codes) != 0 || r.Reason != "" {
			t.Errorf("%s: %+v, want not listed without error", addr, r)
		}
	}
	// No TXT lookup for an address that is not listed.
	if n := s.count("TXT", "8.113.0.203.bl.test."); n != 0 {
		t.Errorf("%d TXT queries for an unlisted address", n)
	}
}

func TestRefusedAndBadAnswers(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	for _, tc := range []struct {
		zone string
		want error
		code string
	}{
		{"refused.test", ErrRefused, "127.255.255.254"},
		{"dnswl.test", ErrRefused, "127.0.0.255"},
		{"bad.test", ErrBadAnswer, "192.0.2.1"},
	} {
		r := checkOne(t, c, "203.0.113.7", tc.zone)
		if r.Listed || !errors.Is(r.Err, tc.want) {
			t.Errorf("%s: Listed=%v Err=%v, want not listed, %v", tc.zone, r.Listed, r.Err, tc.want)
		}
		if !slices.Equal(r.Codes, addrs(tc.code)) {
			t.Errorf("%s: Codes = %v", tc.zone, r.Codes)
		}
		if r.Err != nil && !strings.Contains(r.Err.Error(), tc.zone) {
			t.Errorf("%s: error %q does not name the zone", tc.zone, r.Err)
		}
	}
	// Refusals are not cached: the zone is asked again.
	checkOne(t, c, "203.0.113.7", "refused.test")
	if n := s.count("A", "7.113.0.203.refused.test."); n != 2 {
		t.Errorf("%d queries to the refusing zone, want 2 (no caching)", n)
	}
}

func TestServfail(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	r := checkOne(t, c, "203.0.113.7", "servfail.test")
	if r.Listed || r.Err == nil {
		t.Fatalf("SERVFAIL: %+v, want not listed with an error", r)
	}
	if !strings.Contains(r.Err.Error(), s.addr) {
		t.Errorf("error %q does not name the resolver %s", r.Err, s.addr)
	}
	n := s.count("A", "7.113.0.203.servfail.test.")
	checkOne(t, c, "203.0.113.7", "servfail.test")
	if s.count("A", "7.113.0.203.servfail.test.") == n {
		t.Error("a SERVFAIL answer was cached")
	}
}

func TestTimeout(t *testing.T) {
	s := startServer(t)
	const timeout = 150 * time.Millisecond
	c := newTestChecker(t, s, Options{Timeout: timeout})
	start := time.Now()
	res := c.Check(context.Background(), netip.MustParseAddr("203.0.113.7"), []string{"slow.test", "bl.test"})
	elapsed := time.Since(start)
	if elapsed > timeout+200*time.Millisecond {
		t.Errorf("Check took %v with a %v timeout", elapsed, timeout)
	}
	r := res[0]
	var dnsErr *net.DNSError
	if r.Listed || r.Err == nil || !(errors.Is(r.Err, context.DeadlineExceeded) || errors.As(r.Err, &dnsErr) && dnsErr.IsTimeout) {
		t.Errorf("slow zone: Listed=%v Err=%v, want a timeout", r.Listed, r.Err)
	}
	// The slow zone does not hold up the answer of the good one.
	if !res[1].Listed {
		t.Errorf("bl.test: %+v", res[1])
	}
	if c.flights.waiting("7.113.0.203.slow.test.") != 0 {
		t.Error("a flight is left over")
	}
}

func TestContextEndsFirst(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := c.Check(ctx, netip.MustParseAddr("203.0.113.7"), []string{"slow.test"})[0]
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("Check took %v after ctx ended at 50ms", elapsed)
	}
	if r.Listed || !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("got %+v, want ctx's error", r)
	}
	// The only caller left, so the lookup was cancelled and forgotten.
	if n := c.flights.waiting("7.113.0.203.slow.test."); n != 0 {
		t.Errorf("%d waiters left", n)
	}
}

func TestCache(t *testing.T) {
	s := startServer(t)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newTestChecker(t, s, Options{CacheTTL: time.Minute, Clock: clock.Now})
	const listed, unlisted = "7.113.0.203.bl.test.", "8.113.0.203.bl.test."
	lookupBoth := func() {
		t.Helper()
		res := c.Check(context.Background(), netip.MustParseAddr("203.0.113.7"), []string{"bl.test"})
		if !res[0].Listed || res[0].Reason == "" || len(res[0].Codes) != 2 {
			t.Fatalf("listed: %+v", res[0])
		}
		res[0].Codes[0] = netip.Addr{} // must not write through to the cache
		res = c.Check(context.Background(), netip.MustParseAddr("203.0.113.8"), []string{"bl.test"})
		if res[0].Listed || res[0].Err != nil {
			t.Fatalf("unlisted: %+v", res[0])
		}
	}
	want := func(a, txt, nx int) {
		t.Helper()
		if got := [3]int{s.count("A", listed), s.count("TXT", listed), s.count("A", unlisted)}; got != [3]int{a, txt, nx} {
			t.Errorf("queries (A, TXT, A unlisted) = %v, want %v", got, [3]int{a, txt, nx})
		}
	}

	lookupBoth()
	want(1, 1, 1)
	lookupBoth() // both from the cache
	want(1, 1, 1)
	clock.Advance(59 * time.Second)
	lookupBoth()
	want(1, 1, 1)
	clock.Advance(time.Second) // TTL reached: asked again
	lookupBoth()
	want(2, 2, 2)
	if n := c.cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
}

func TestCacheDisabled(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{CacheTTL: -1})
	checkOne(t, c, "127.0.0.2", "bl.test")
	checkOne(t, c, "127.0.0.2", "bl.test")
	if n := s.count("A", "2.0.0.127.bl.test."); n != 2 {
		t.Errorf("%d queries with the cache off, want 2", n)
	}
}

func TestSingleflight(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	const callers = 20
	const name = "7.113.0.203.held.test."
	results := make([]Result, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			results[i] = c.Check(context.Background(), netip.MustParseAddr("203.0.113.7"), []string{"held.test"})[0]
		})
	}
	// One caller leaves early; the lookup goes on for the others.
	ctx, cancel := context.WithCancel(context.Background())
	early := make(chan Result, 1)
	go func() { early <- c.Check(ctx, netip.MustParseAddr("203.0.113.7"), []string{"held.test"})[0] }()

	deadline := time.Now().Add(5 * time.Second)
	for c.flights.waiting(name) < callers+1 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d callers joined the lookup", c.flights.waiting(name))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if r := <-early; !errors.Is(r.Err, context.Canceled) {
		t.Errorf("early caller: %+v, want context.Canceled", r)
	}
	s.Release()
	wg.Wait()
	for i, r := range results {
		if !r.Listed || r.Reason != "held" {
			t.Errorf("caller %d: %+v", i, r)
		}
	}
	if a, txt := s.count("A", name), s.count("TXT", name); a != 1 || txt != 1 {
		t.Errorf("%d A and %d TXT queries for %d concurrent callers, want 1 and 1", a, txt, callers)
	}
}

func TestManyZones(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	var zones []string
	for i := range 40 {
		zones = append(zones, fmt.Sprintf("z%d.multi.test", i))
	}
	zones = append(zones, "slow.test", "", "bad zone", "servfail.test")
	c.timeout = 200 * time.Millisecond
	start := time.Now()
	res := c.Check(context.Background(), netip.MustParseAddr("198.51.100.20"), zones)
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("%d zones took %v: not concurrent?", len(zones), elapsed)
	}
	if len(res) != len(zones) {
		t.Fatalf("%d results for %d zones", len(res), len(zones))
	}
	for i, r := range res {
		if r.Zone != zones[i] {
			t.Errorf("result %d is for %q, want %q", i, r.Zone, zones[i])
		}
		wantListed := i < 40 && i%2 == 0
		wantErr := i >= 40
		if r.Listed != wantListed || (r.Err != nil) != wantErr {
			t.Errorf("%q: Listed=%v Err=%v", r.Zone, r.Listed, r.Err)
		}
	}

	zone, reason := c.Listed(context.Background(), netip.MustParseAddr("198.51.100.20"), []string{"z1.multi.test", "z4.multi.test", "z2.multi.test"})
	if zone != "z4.multi.test" || reason != "" {
		t.Errorf("Listed = %q, %q; want z4.multi.test", zone, reason)
	}
	if zone, _ := c.Listed(context.Background(), netip.MustParseAddr("198.51.100.20"), []string{"z1.multi.test"}); zone != "" {
		t.Errorf("Listed = %q, want none", zone)
	}
	if zone, _ := c.Listed(context.Background(), netip.MustParseAddr("198.51.100.20"), nil); zone != "" {
		t.Errorf("Listed(no zones) = %q", zone)
	}
}

func TestInvalidInput(t *testing.T) {
	s := startServer(t)
	c := newTestChecker(t, s, Options{})
	r := c.Check(context.Background(), netip.Addr{}, []string{"bl.test"})[0]
	if r.Listed || r.Err == nil {
		t.Errorf("zero address: %+v", r)
	}
	long := strings.Repeat("a.", 100) + "test"
	r = c.Check(context.Background(), netip.MustParseAddr("2001:db8::1"), []string{long})[0]
	if r.Listed || r.Err == nil {
		t.Errorf("over-long name: %+v", r)
	}
}

func TestSystemResolverDefaults(t *testing.T) {
	c := New(Options{})
	if c.timeout != DefaultTimeout || c.cache == nil || c.cache.ttl != DefaultCacheTTL || c.cache.max != DefaultCacheSize {
		t.Errorf("defaults not applied: timeout %v, cache %+v", c.timeout, c.cache)
	}
	if c.res.PreferGo || c.res.Dial != nil {
		t.Error("an empty Resolver should use the system resolver")
	}
	// A resolver without a port gets :53 (nothing is dialled here).
	if r, addr := newResolver("127.0.0.1"); r.Dial == nil || !r.PreferGo || addr != "127.0.0.1:53" {
		t.Errorf("resolver without port: %q", addr)
	}
	if _, addr := newResolver("[::1]"); addr != "[::1]:53" {
		t.Errorf("IPv6 resolver without port: %q", addr)
	}
}
