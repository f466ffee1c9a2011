package guard

import (
	"context"
	"net/netip"
	"runtime"
	"testing"

	"github.com/postern/postern/internal/reason"
)

// BenchmarkCounters1M counts one connection for each of 1,000,000 distinct
// IPv6 /64s and reports the heap per counter and the counters kept, then
// measures a new block (which forgets the blocked prefix's counters) with
// all of them in place. "cap=1M" keeps every counter; "default" is the
// engine's default cap (DefaultMaxCounters), where the flood evicts:
//
//	go test -run '^$' -bench Counters1M -benchtime 1000x ./internal/guard/
func BenchmarkCounters1M(b *testing.B) {
	b.Run("cap=1M", func(b *testing.B) { benchCounters(b, 1<<20) })
	b.Run("default", func(b *testing.B) { benchCounters(b, 0) })
}

func benchCounters(b *testing.B, maxCounters int) {
	const n = 1_000_000
	clock := newClock()
	e, err := New(context.Background(), settingsFrom(b, services+`
intrusion_prevention:
  imap_pop3: { connections_per_minute: 100, failed_logins: 5 }
`, nil), Options{Clock: clock.Now, Store: newMemStore(), MaxCounters: maxCounters})
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
		e.counters.add(prefix(i), GroupSMTP, trigI, now, connectionWindow, 100, 0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	kept := e.counters.len()
	if maxCounters >= n && kept != n {
		b.Fatalf("%d counters, want %d", kept, n)
	}
	st := e.settings.Load()
	i := 0
	for b.Loop() {
		// A new block of a prefix that has counters, among a million.
		p := prefix(n - 1 - i%n)
		i++
		if _, made := e.block(st, offense{prefix: p, reason: reason.Login, service: "imap", hits: 5}); !made {
			b.Fatal("no block made")
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(kept), "B/counter")
	b.ReportMetric(float64(kept), "counters")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/block")
}
