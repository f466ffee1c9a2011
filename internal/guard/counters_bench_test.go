package guard

import (
	"context"
	"net/netip"
	"runtime"
	"testing"

	"github.com/postern/postern/internal/store"
)

// BenchmarkCounters1M fills the counters with one connections-per-minute
// counter for each of 1,000,000 distinct IPv6 /64s and reports the heap
// per counter, then measures a new block (which forgets the blocked
// prefix's counters) with all of them in place:
//
//	go test -run '^$' -bench Counters1M -benchtime 200x ./internal/guard/
func BenchmarkCounters1M(b *testing.B) {
	const n = 1_000_000
	clock := newClock()
	e, err := New(context.Background(), settingsFrom(b, services+`
intrusion_prevention:
  imap_pop3: { connections_per_minute: 100, failed_logins: 5 }
`, nil), Options{Clock: clock.Now, Store: newMemStore()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	prefix := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), 64)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	now := clock.Now()
	for i := range n {
		e.counters.add(prefix(i), trigI, now, connectionWindow, 100, 0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := e.counters.len(); got != n {
		b.Fatalf("%d counters, want %d", got, n)
	}
	st := e.settings.Load()
	i := 0
	for b.Loop() {
		// A new block of a prefix that has counters, among a million.
		p := prefix(i * 4099 % n)
		i++
		if _, made := e.block(st, offense{prefix: p, reason: store.ReasonLogin, service: "imap", hits: 5}); !made {
			b.Fatal("no block made")
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/counter")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/block")
}
