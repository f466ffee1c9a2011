package cluster

import (
	"context"
	"net/netip"
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
