package cluster

import (
	"context"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// countingEngine counts the crossings it is told of.
type countingEngine struct {
	crossed atomic.Int64
	mu      sync.Mutex
	applied []guard.Change
}

func (c *countingEngine) ApplyRemote(ctx context.Context, ch guard.Change) error {
	c.mu.Lock()
	c.applied = append(c.applied, ch)
	c.mu.Unlock()
	return nil
}
func (c *countingEngine) Crossed(ev guard.Event)      { c.crossed.Add(1) }
func (c *countingEngine) ActiveBlocks() []store.Block { return nil }

// TestOneCrossingPerThreshold: four links count the same key concurrently
// (25 events each, threshold 10): exactly one of them is told of the
// crossing. The window's expiry is set at the first event.
func TestOneCrossingPerThreshold(t *testing.T) {
	mr := miniredis.RunT(t)
	eng := new(countingEngine)
	var links []*Cluster
	for i := range 4 {
		c, err := New(Options{Client: redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true}), Node: "n" + string(rune('0'+i))})
		if err != nil {
			t.Fatal(err)
		}
		c.Start(eng)
		t.Cleanup(func() { c.Close() })
		links = append(links, c)
	}
	ev := guard.Event{Prefix: netip.MustParsePrefix("203.0.113.1/32"), Group: guard.GroupMail, Reason: reason.Login, Window: time.Hour, Limit: 10}
	var wg sync.WaitGroup
	for _, c := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				c.Count(ev)
			}
		}()
	}
	wg.Wait()
	eventually(t, 5*time.Second, "every event counted", func() bool {
		for _, c := range links {
			if c.Pending() != 0 {
				return false
			}
		}
		return true
	})
	key := "postern:c:{" + ev.Key() + "}"
	if v, _ := mr.Get(key); v != "100" {
		t.Errorf("count %q, want 100", v)
	}
	if ttl := mr.TTL(key); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("window %s, want an hour", ttl)
	}
	if n := eng.crossed.Load(); n != 1 {
		t.Errorf("%d crossings reported, want exactly 1", n)
	}
}

// TestRedisAwayCountsLocallyOnly: with Redis gone, Count drops events at
// once (the engine counts them itself) and Publish keeps changes within the
// queue's bound.
func TestRedisAwayCountsLocallyOnly(t *testing.T) {
	mr := miniredis.RunT(t)
	lb := new(logBuffer)
	c, err := New(Options{Client: redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond}),
		Node: "n1", Queue: 100, Timeout: 100 * time.Millisecond, Logger: lb.logger()})
	if err != nil {
		t.Fatal(err)
	}
	c.Start(new(countingEngine))
	t.Cleanup(func() { c.Close() })
	mr.Close()
	ev := guard.Event{Prefix: netip.MustParsePrefix("203.0.113.1/32"), Reason: reason.Login, Window: time.Minute, Limit: 3}
	c.Count(ev)
	eventually(t, 5*time.Second, "the outage noticed", c.Down)
	for range 1000 {
		c.Count(ev)
	}
	b := store.Block{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Reason: reason.Manual}
	for range 500 {
		c.Publish(guard.Change{Kind: guard.ChangePut, Blocks: []store.Block{b}})
	}
	eventually(t, 5*time.Second, "the queue bounded", func() bool { return c.Pending() <= 100 })
}

func TestDecodeEntryRoundTrip(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	b := store.Block{Prefix: netip.MustParsePrefix("2001:db8::/48"), Reason: reason.Login, Service: "imap", Detail: "account a@b",
		FirstSeen: now, LastSeen: now, Hits: 5, Expires: now.Add(time.Hour), Node: "mx1", By: "engine", Level: 2}
	op, data := changeData(guard.Change{Kind: guard.ChangePut, Blocks: []store.Block{b}})
	ch, err := decodeEntry(map[string]any{"op": op, "node": "mx1", "data": data, "auto": "1"})
	if err != nil || len(ch.Blocks) != 1 || ch.Blocks[0] != b || !ch.Auto {
		t.Fatalf("round trip: %+v %v", ch, err)
	}
	got, err := decodeBlock(encodeBlock(b))
	if err != nil || got != b {
		t.Fatalf("block round trip: %+v %v", got, err)
	}
	op, data = changeData(guard.Change{Kind: guard.ChangeDelete, Prefixes: []netip.Prefix{b.Prefix}})
	if ch, err := decodeEntry(map[string]any{"op": op, "node": "mx1", "data": data}); err != nil || ch.Prefixes[0] != b.Prefix {
		t.Fatalf("delete round trip: %+v %v", ch, err)
	}
}

// FuzzDecodeEntry: no stream entry makes the decoder panic, and whatever
// it accepts is valid for the store.
func FuzzDecodeEntry(f *testing.F) {
	f.Add("put", "mx1", `[{"p":"192.0.2.0/24","r":"U","f":1,"l":1,"x":0,"n":"mx1","b":"admin:cli"}]`)
	f.Add("del", "mx1", `["192.0.2.0/24","2001:db8::/32"]`)
	f.Add("purge", "mx1", "1700000000000")
	f.Add("delall", "mx1", "")
	f.Add("put", "", "[]")
	f.Fuzz(func(t *testing.T, op, node, data string) {
		ch, err := decodeEntry(map[string]any{"op": op, "node": node, "data": data})
		if err != nil {
			return
		}
		for i := range ch.Blocks {
			if err := store.CheckBlock(&ch.Blocks[i]); err != nil || ch.Blocks[i].Prefix != ch.Blocks[i].Prefix.Masked() {
				t.Fatalf("accepted an invalid block %+v: %v", ch.Blocks[i], err)
			}
		}
	})
}

// rememberingEngine records the escalation memory it is handed.
type rememberingEngine struct {
	countingEngine
	mu2  sync.Mutex
	mem  map[netip.Prefix]int
	last map[netip.Prefix]time.Time
}

func (r *rememberingEngine) RememberOffence(p netip.Prefix, level int, last time.Time) {
	r.mu2.Lock()
	defer r.mu2.Unlock()
	r.mem[p], r.last[p] = level, last
}

func (r *rememberingEngine) remembered() map[netip.Prefix]int {
	r.mu2.Lock()
	defer r.mu2.Unlock()
	return maps.Clone(r.mem)
}

// TestEscalationMemoryKeys: an automatic block sets its prefix's
// escalation memory for the engine's memory (a manual block or an import
// does not); a link starting later hands it to its engine at reconcile,
// with the block's level and time, and skips a malformed record.
func TestEscalationMemoryKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	lb := new(logBuffer)
	link := func(name string, e Engine) *Cluster {
		c, err := New(Options{Client: redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true}), Node: name, Logger: lb.logger()})
		if err != nil {
			t.Fatal(err)
		}
		c.Start(e)
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := link("mx1", new(countingEngine))
	made := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	auto := store.Block{Prefix: netip.MustParsePrefix("203.0.113.9/32"), Reason: reason.Login, FirstSeen: made, LastSeen: made,
		Expires: made.Add(time.Hour), Node: "mx1", By: "engine", Level: 3}
	manual := store.Block{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Reason: reason.Manual, FirstSeen: made, LastSeen: made,
		Expires: made.Add(time.Hour), Node: "mx1", By: "admin:cli"}
	a.Publish(guard.Change{Kind: guard.ChangePut, Blocks: []store.Block{auto}, Auto: true, Memory: 24 * time.Hour})
	a.Publish(guard.Change{Kind: guard.ChangePut, Blocks: []store.Block{manual}, Actor: "cli"})
	eventually(t, 5*time.Second, "the blocks sent", func() bool { return a.Pending() == 0 })
	key := "postern:{b}:e:203.0.113.9/32"
	if v, _ := mr.Get(key); v != "3 "+itoa(made.UnixMilli()) {
		t.Fatalf("escalation key %q", v)
	}
	if ttl := mr.TTL(key); ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("escalation memory kept %s, want the day from the block", ttl)
	}
	if mr.Exists("postern:{b}:e:192.0.2.0/24") {
		t.Error("a manual block set escalation memory")
	}
	// A poisoned record next to it.
	mr.Set("postern:{b}:e:198.51.100.1/32", "many 12")
	mr.ZAdd("postern:{b}:eindex", float64(time.Now().Add(time.Hour).UnixMilli()), "198.51.100.1/32")

	r := &rememberingEngine{mem: map[netip.Prefix]int{}, last: map[netip.Prefix]time.Time{}}
	link("mx2", r)
	eventually(t, 5*time.Second, "the memory handed over", func() bool { return len(r.remembered()) > 0 })
	got := r.remembered()
	if len(got) != 1 || got[auto.Prefix] != 3 || !r.last[auto.Prefix].Equal(made) {
		t.Errorf("remembered %v %v, want level 3 at %s for %s", got, r.last, made, auto.Prefix)
	}
	eventually(t, 5*time.Second, "the poisoned record logged", func() bool {
		return strings.Contains(lb.String(), "malformed escalation key")
	})
}

// TestDecodeMemory: escalation records are read only in the form postern
// writes.
func TestDecodeMemory(t *testing.T) {
	p, level, last, err := decodeMemory("203.0.113.0/24", "2 1764770000000")
	if err != nil || p.String() != "203.0.113.0/24" || level != 2 || last.UnixMilli() != 1764770000000 {
		t.Fatalf("good record: %v %d %v %v", p, level, last, err)
	}
	for _, bad := range [][2]string{
		{"203.0.113.1/24", "1 1764770000000"},     // not masked
		{"::ffff:1.2.3.4/128", "1 1764770000000"}, // IPv4 in IPv6
		{"203.0.113.1/32", "-1 1764770000000"},
		{"203.0.113.1/32", "65 1764770000000"},
		{"203.0.113.1/32", "1 0"},
		{"203.0.113.1/32", "1"},
		{"203.0.113.1/32", "1 17647700000x"},
		{"203.0.113.1/32", "1  1764770000000"},
		{"203.0.113.1/32", strings.Repeat("1", 70) + " 1"},
	} {
		if _, _, _, err := decodeMemory(bad[0], bad[1]); err == nil {
			t.Errorf("accepted %q %q", bad[0], bad[1])
		}
	}
}
