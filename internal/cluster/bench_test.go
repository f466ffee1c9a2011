package cluster

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// benchAddr is the i-th test address (10.x.y.z).
func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// BenchmarkPropagation: b.N blocks made one after another on node A (the
// engine's decision, Crossed, as when a cluster count reaches the
// threshold), each timed until node B's Admit refuses the address. Run
// with -benchtime 1000x for the figures in docs/BENCHMARKS.md.
func BenchmarkPropagation(b *testing.B) {
	r := startRedis(b)
	na := startNode(b, "mx1", r.addr(), "")
	nb := startNode(b, "mx2", r.addr(), "")
	eventually(b, propagate, "caught up", func() bool { return na.caughtUp() && nb.caughtUp() })
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		a := benchAddr(i)
		ev := guard.Event{Prefix: netip.PrefixFrom(a, 32), Group: guard.GroupMail, Reason: reason.Login, Window: time.Hour, Limit: 5, Addr: a, Service: "imap"}
		t0 := time.Now()
		na.e.Crossed(ev)
		deadline := t0.Add(propagate)
		for nb.e.Admit(a, service.IMAP).Action != guard.Refuse {
			if time.Now().After(deadline) {
				b.Fatalf("block %d did not reach mx2 in %s", i, propagate)
			}
			time.Sleep(50 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// benchEvents reports b.N failed logins from b.N/4 addresses (4 each,
// each with a new password: below the threshold of 5) on node n and reports the
// engine's rate (time spent in LoginFailed) and, with a cluster, the
// sustained rate at which Redis counted them (the producer waits whenever
// 32,768 events are queued), and how many were counted locally only.
func benchEvents(b *testing.B, n *node) {
	sessions := make([]*guard.Session, max(1, b.N/4))
	for i := range sessions {
		s, _ := n.e.Accept(benchAddr(1<<22+i), service.IMAP, func() {})
		sessions[i] = s
	}
	b.ResetTimer()
	t0 := time.Now()
	var waited time.Duration
	for i := range b.N {
		sessions[i%len(sessions)].LoginFailed("u", uint64(i+1))
		// Sustained rate: keep the sender's queue from overflowing (an
		// overflowing event is counted locally only, which the rate must
		// not hide).
		if n.c != nil && i%1024 == 0 {
			w := time.Now()
			for n.c.Pending() > 32768 {
				time.Sleep(100 * time.Microsecond)
			}
			waited += time.Since(w)
		}
	}
	handled := time.Since(t0) - waited
	if n.c != nil {
		eventually(b, time.Minute, "events counted", func() bool { return n.c.Pending() == 0 })
	}
	counted := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/handled.Seconds(), "events/s")
	if n.c != nil {
		b.ReportMetric(float64(b.N)/counted.Seconds(), "counted/s")
		b.ReportMetric(float64(n.c.evDropped.Load()), "dropped")
	}
}

// BenchmarkEventsCluster: events per second on a node counting in Redis.
func BenchmarkEventsCluster(b *testing.B) {
	r := startRedis(b)
	n := startNode(b, "mx1", r.addr(), "")
	benchEvents(b, n)
}

// BenchmarkEventsLocal: the same without a cluster.
func BenchmarkEventsLocal(b *testing.B) {
	dir := b.TempDir()
	db, err := store.Open(context.Background(), dir+"/postern.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	e, err := guard.New(context.Background(), settings(b, dir), guard.Options{Store: db, Node: "mx1"})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	benchEvents(b, &node{name: "mx1", e: e})
}

// BenchmarkAdmitClusterNode: Admit on a node linked to Redis (a clean and
// a blocked address): the accept path is the engine's alone.
func BenchmarkAdmitClusterNode(b *testing.B) {
	r := startRedis(b)
	n := startNode(b, "mx1", r.addr(), "")
	n.e.BlockManual(context.Background(), netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", "cli")
	clean, blocked := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("198.51.100.1")
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i&1 == 0 {
			n.e.Admit(clean, service.IMAP)
		} else {
			n.e.Admit(blocked, service.IMAP)
		}
	}
}

// BenchmarkRedisMemory: Redis's used memory for b.N blocks (keys, index,
// stream), imported on one node. Run with -benchtime 100000x.
func BenchmarkRedisMemory(b *testing.B) {
	r := startRedis(b)
	n := startNode(b, "mx1", r.addr(), "")
	rc := r.client(b)
	ctx := context.Background()
	mem := func() int64 {
		info, _ := rc.Info(ctx, "memory").Result()
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
				x, _ := strconv.ParseInt(v, 10, 64)
				return x
			}
		}
		return 0
	}
	before := mem()
	now := time.Now().UTC()
	bs := make([]store.Block, b.N)
	for i := range bs {
		bs[i] = store.Block{Prefix: netip.PrefixFrom(benchAddr(i), 32), Reason: reason.Login, Service: "imap",
			Detail: "account user@example.com", FirstSeen: now, LastSeen: now, Hits: 5, Expires: now.Add(time.Hour), By: "engine"}
	}
	b.ResetTimer()
	if _, err := n.e.Import(ctx, bs, "bench"); err != nil {
		b.Fatal(err)
	}
	eventually(b, time.Minute, "blocks announced", n.idle)
	b.StopTimer()
	used := mem() - before
	b.ReportMetric(float64(used)/float64(b.N), "bytes/block")
	b.ReportMetric(float64(used)/(1<<20), "MiB")
}
