package guard_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// worldSnapshot builds a configuration whose imap grant list is every
// country of the GeoIP dataset (≈1M networks), as the Admit
// benchmark asks.
func worldSnapshot(b *testing.B) *snapshot.Snapshot {
	geo := os.Getenv("POSTERN_GEO_DIR")
	if geo == "" {
		b.Skip("POSTERN_GEO_DIR is not set")
	}
	dir := b.TempDir()
	cfg := fmt.Sprintf(`geoip:
  databases: [ { path: %s } ]
patterns:
  World: "{world.txt}"
services:
  imap: { listen: ":143", backend: "b:1", grant: "[World]" }
intrusion_prevention:
  imap_pop3: { connections_per_minute: 1000000000, failed_logins: 1000000000 }
`, filepath.Join(geo, "geo-whois-asn-country.mmdb"))
	// Country codes come from the database itself.
	probe, err := snapshot.Load(context.Background(), writeCfg(b, dir, "probe.yaml", fmt.Sprintf("geoip:\n  databases: [ { path: %s } ]\n", filepath.Join(geo, "geo-whois-asn-country.mmdb"))), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	var items []string
	for _, cc := range probe.GeoIP.Countries() {
		items = append(items, "country:"+cc)
	}
	writeCfg(b, dir, "world.txt", strings.Join(items, "\n"))
	s, err := snapshot.Load(context.Background(), writeCfg(b, dir, "postern.yaml", cfg), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func writeCfg(b *testing.B, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// insideCountries returns n addresses inside the dataset's networks.
func insideCountries(s *snapshot.Snapshot, n int) []netip.Addr {
	r := rand.New(rand.NewPCG(7, 8))
	var pool []netip.Prefix
	for _, cc := range s.GeoIP.Countries() {
		pool = append(pool, s.GeoIP.CountryPrefixes(cc)...)
	}
	out := make([]netip.Addr, n)
	for i := range out {
		p := pool[r.IntN(len(pool))]
		a := p.Addr().AsSlice()
		for bit := p.Bits(); bit < len(a)*8; bit++ {
			if r.IntN(2) == 1 {
				a[bit/8] |= 0x80 >> (bit % 8)
			}
		}
		out[i], _ = netip.AddrFromSlice(a)
	}
	return out
}

// randomBlocks returns n active blocks: /32s and IPv6 /64s.
func randomBlocks(n int, now time.Time) []store.Block {
	r := rand.New(rand.NewPCG(9, 10))
	out := make([]store.Block, 0, n)
	seen := make(map[netip.Prefix]bool, n)
	for len(out) < n {
		var p netip.Prefix
		if len(out)%2 == 0 {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), 32)
		} else {
			var a [16]byte
			a[0], a[1] = 0x2a, byte(r.IntN(256))
			for i := 2; i < 8; i++ {
				a[i] = byte(r.IntN(256))
			}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 64)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, store.Block{Prefix: p, Reason: reason.Login, FirstSeen: now, LastSeen: now, Expires: now.Add(24 * time.Hour)})
	}
	return out
}

// BenchmarkAdmitClean: Admit for addresses that are granted (inside the
// ≈1M-network world pattern) and not blocked, with 100,000 active blocks.
func BenchmarkAdmitClean(b *testing.B) {
	s := worldSnapshot(b)
	e, err := guard.New(context.Background(), s.Guard, guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	blocks := randomBlocks(100_000, time.Now())
	if _, err := e.Import(context.Background(), blocks, "bench"); err != nil {
		b.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		var addrs []netip.Addr
		for _, a := range insideCountries(s, 1<<15) {
			if a.Is6() == v6 {
				if _, blocked := e.BlockOf(a); !blocked && len(addrs) < 1<<12 {
					addrs = append(addrs, a)
				}
			}
		}
		name := "IPv4"
		if v6 {
			name = "IPv6"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if e.Admit(addrs[i&(len(addrs)-1)], service.IMAP).Action != guard.Allow {
					b.Fatal("a clean, granted address was refused")
				}
				i++
			}
		})
	}
}

func eventEngine(b *testing.B) *guard.Engine {
	dir := b.TempDir()
	cfg := writeCfg(b, dir, "postern.yaml", `services:
  imap: { listen: ":143", backend: "b:1" }
intrusion_prevention:
  imap_pop3: { connections_per_minute: 1000000000, failed_logins: 1000000000 }
`)
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	e, err := guard.New(context.Background(), s.Guard, guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// BenchmarkEvents: failed-login events counted cross-session over 65,536
// addresses (none reaches its threshold). Run with -cpu 1,2.
func BenchmarkEvents(b *testing.B) {
	e := eventEngine(b)
	sessions := make([]*guard.Session, 1<<16)
	for i := range sessions {
		sessions[i], _ = e.Open(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), service.IMAP, nil)
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1 << 20)
		for pb.Next() {
			sessions[i&(1<<16-1)].LoginFailed("user@example.com", i|1)
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// cleanAddrs returns the 4,096 addresses 10.1.0.0–10.1.15.255, which
// eventEngine never blocks, for the benchmarks to take in turn.
func cleanAddrs() []netip.Addr {
	addrs := make([]netip.Addr, 1<<12)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	return addrs
}

// BenchmarkAccept: the connection gate for a clean address, the session
// closed again (what a short connection costs the engine): Admit, the
// session and its count toward connections per minute (I).
func BenchmarkAccept(b *testing.B) {
	e := eventEngine(b)
	addrs := cleanAddrs()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		gs, v := e.Accept(addrs[i&(len(addrs)-1)], service.IMAP, nil)
		if v.Action != guard.Allow {
			b.Fatal("a clean address was not allowed")
		}
		gs.Close()
		i++
	}
}

// BenchmarkLogin: what a successful login costs the engine from the
// connection to its end — Accept, BeginLogin, Succeeded, Close — for 4,096
// clean addresses in turn (the engine's part of every IMAP or POP3 login).
func BenchmarkLogin(b *testing.B) {
	e := eventEngine(b)
	addrs := cleanAddrs()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		gs, v := e.Accept(addrs[i&(len(addrs)-1)], service.IMAP, nil)
		if v.Action != guard.Allow {
			b.Fatal("a clean address was not allowed")
		}
		l, d := gs.BeginLogin(ctx, "alice@example.test")
		if l == nil {
			b.Fatalf("a clean login was refused: %+v", d)
		}
		l.Succeeded()
		gs.Close()
		i++
	}
}

// BenchmarkBlockEnforcement measures how long after the event that trips a
// block Admit refuses the address, with the real SQLite store behind the
// engine: the block is in the in-memory table before the store write.
func BenchmarkBlockEnforcement(b *testing.B) {
	dir := b.TempDir()
	cfg := writeCfg(b, dir, "postern.yaml", `services:
  smtp: { listen: ":25", backend: "b:1" }
intrusion_prevention:
  smtp: { dnsbl: [zen.example.org] }
`)
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(dir, "postern.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	e, err := guard.New(context.Background(), s.Guard, guard.Options{Store: db})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	var lat, took []time.Duration
	i := 0
	for b.Loop() {
		i++
		addr := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		ses, _ := e.Open(addr, service.SMTP, nil)
		seen := make(chan time.Duration, 1)
		ready := make(chan struct{})
		var start atomic.Int64
		go func() {
			close(ready)
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				if e.Admit(addr, service.SMTP).Action == guard.Refuse {
					seen <- time.Duration(time.Now().UnixNano() - start.Load())
					return
				}
			}
			seen <- time.Second
		}()
		<-ready
		t0 := time.Now()
		start.Store(t0.UnixNano())
		ses.DNSBLListed("zen.example.org")
		took = append(took, time.Since(t0))
		lat = append(lat, <-seen)
		ses.Close()
	}
	e.Sync(context.Background()) // the last block's write, outside the figures
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "µs-p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "µs-p99")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "µs-max")
	// How long the session that tripped the block waited for the event
	// (on an event loop, every session of the loop waits with it).
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "µs-event-p50")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "µs-event-p99")
}

// BenchmarkAdmitRefused: Admit for addresses the grant list refuses, each
// counted toward connections per minute (I) without reaching the
// threshold; 4,096 addresses, each seen before.
func BenchmarkAdmitRefused(b *testing.B) {
	dir := b.TempDir()
	cfg := writeCfg(b, dir, "postern.yaml", `patterns: { Office: "203.0.113.0/24" }
services:
  imap: { listen: ":143", backend: "b:1", grant: "[Office]" }
intrusion_prevention:
  imap_pop3: { connections_per_minute: 1000000000 }
`)
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	e, err := guard.New(context.Background(), s.Guard, guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	addrs := make([]netip.Addr, 1<<12)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		e.Admit(addrs[i], service.IMAP)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if e.Admit(addrs[i&(len(addrs)-1)], service.IMAP).Action != guard.Refuse {
			b.Fatal("an address outside the grant list was admitted")
		}
		i++
	}
}

// BenchmarkAdmitBlocked: Admit for blocked addresses (4,096 manual
// blocks, defaults: refused), each refusal counted for Verdict.Quiet.
func BenchmarkAdmitBlocked(b *testing.B) {
	dir := b.TempDir()
	cfg := writeCfg(b, dir, "postern.yaml", `services:
  imap: { listen: ":143", backend: "b:1" }
intrusion_prevention:
  imap_pop3: { failed_logins: 5 }
`)
	s, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	e, err := guard.New(context.Background(), s.Guard, guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	addrs := make([]netip.Addr, 1<<12)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		if _, err := e.BlockManual(context.Background(), netip.PrefixFrom(addrs[i], 32), time.Hour, "", "bench"); err != nil {
			b.Fatal(err)
		}
		e.Admit(addrs[i], service.IMAP)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if e.Admit(addrs[i&(len(addrs)-1)], service.IMAP).Action != guard.Refuse {
			b.Fatal("a blocked address was admitted")
		}
		i++
	}
}
