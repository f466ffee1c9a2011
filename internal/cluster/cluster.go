// Package cluster shares an engine's blocks and cross-session counters
// with the other gateways of a site through Redis or Valkey (cluster mode).
//
// Blocks: each block is one key (its value the block, its expiry the
// block's), listed in a sorted-set index by expiry, and announced on a
// stream (XADD with MAXLEN ~). Every node reads the stream from the last
// entry it applied (kept in a state file) and applies what the other nodes
// announce to its engine, which puts it in its in-memory table and its
// SQLite store, so a node restarted without Redis still enforces it. A
// reconcile pass (at start, after an outage, when the stream was trimmed
// past the last entry applied) compares the index with the engine's table.
//
// Counters: each cross-session event is one atomic increment of a key per
// (prefix, group, trigger) whose expiry is set at its first event (the
// engine's fixed window), run by a Lua script; the node whose increment
// returns exactly the threshold makes the block.
//
// Nothing here runs on the engine's accept path: Publish and Count only
// queue; one goroutine sends what is queued in pipelines bounded by a time
// budget, another reads the stream. When Redis cannot be reached the
// engine goes on alone (its table enforces, its counters count),
// announcements wait in a bounded queue and are replayed afterwards, and
// the outage is logged once.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// Engine is what the cluster needs of the engine; *guard.Engine
// implements it.
type Engine interface {
	ApplyRemote(ctx context.Context, c guard.Change) error
	Crossed(ev guard.Event)
	ActiveBlocks() []store.Block
}

// Options configure a Cluster.
type Options struct {
	Client       redis.UniversalClient // required; closed by Close
	KeyPrefix    string                // default "postern:"
	Node         string                // this node's name (required)
	Timeout      time.Duration         // one round trip (default 500ms)
	StreamLength int64                 // MAXLEN ~ of the stream (default 100,000)
	Queue        int                   // changes kept while Redis is away (default 100,000)
	StatePath    string                // file keeping the last stream entry applied ("": none)
	Logger       *slog.Logger
	// Batch bounds the commands of one pipeline (default 4,096).
	Batch int
}

// Cluster is one node's link to the others. Its methods are safe for
// concurrent use.
type Cluster struct {
	rdb     redis.UniversalClient
	k       keys
	node    string
	timeout time.Duration
	maxlen  int64
	qmax    int
	batch   int
	state   string
	log     *slog.Logger

	mu      sync.Mutex
	pubs    []guard.Change
	queued  int // blocks and prefixes in pubs
	dropped int // changes dropped since the queue filled
	events  chan guard.Event
	signal  chan struct{}

	evDropped atomic.Int64
	pending   atomic.Int64 // announcements and events queued or being sent
	loaded    atomic.Bool  // the scripts are in Redis's script cache
	down      atomic.Bool
	downMu    sync.Mutex
	lastUp    time.Time // when the last outage ended (under downMu)
	resync    chan struct{}

	eng    Engine
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// keys are the names postern uses in Redis. The block keys, the index and
// the stream share one hash tag, so a script can touch them together in a
// Redis Cluster; counter keys spread over the slots.
type keys struct {
	stream, index, block, counter string
	// esc+prefix holds a prefix's escalation memory ("level ms": the level
	// of its last automatic block and when it was made), escIndex lists
	// them by expiry.
	esc, escIndex string
	// tomb+prefix is an unblocked block's tombstone (the unblock's time in
	// ms), tombAll unblock-all's.
	tomb, tombAll string
}

// counterKey names the counter of ev; its fingerprint set is the same name
// with ":f", in the same hash slot.
func (k keys) counterKey(ev guard.Event) string { return k.counter + "{" + ev.Key() + "}" }

func newKeys(prefix string) keys {
	return keys{
		stream:   prefix + "{b}:stream",
		index:    prefix + "{b}:index",
		block:    prefix + "{b}:k:",
		counter:  prefix + "c:",
		esc:      prefix + "{b}:e:",
		escIndex: prefix + "{b}:eindex",
		tomb:     prefix + "{b}:t:",
		tombAll:  prefix + "{b}:tall",
	}
}

// New returns a cluster link; Start sets it going.
func New(opts Options) (*Cluster, error) {
	if opts.Client == nil {
		return nil, errors.New("cluster: no Redis client")
	}
	if opts.Node == "" {
		return nil, errors.New("cluster: the node needs a name")
	}
	c := &Cluster{
		rdb: opts.Client, k: newKeys(cmpOr(opts.KeyPrefix, "postern:")), node: opts.Node,
		timeout: opts.Timeout, maxlen: opts.StreamLength, qmax: opts.Queue, batch: opts.Batch,
		state: opts.StatePath, log: opts.Logger,
		signal: make(chan struct{}, 1), resync: make(chan struct{}, 1),
	}
	if c.timeout <= 0 {
		c.timeout = 500 * time.Millisecond
	}
	if c.maxlen <= 0 {
		c.maxlen = 100_000
	}
	if c.qmax <= 0 {
		c.qmax = 100_000
	}
	if c.batch <= 0 {
		c.batch = 4096
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.events = make(chan guard.Event, 16*c.batch)
	return c, nil
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Node returns this node's name.
func (c *Cluster) Node() string { return c.node }

// Publish queues a change for the other nodes; it never blocks. When the
// queue is full (a long outage) the change is dropped and counted: the
// reconcile pass after the outage announces this node's blocks again.
func (c *Cluster) Publish(ch guard.Change) {
	n := weight(ch)
	c.mu.Lock()
	if c.queued+n > c.qmax {
		c.dropped++
		c.mu.Unlock()
		return
	}
	// A large change (an import) goes as parts of at most chunk blocks,
	// each its own stream entry and its own share of a pipeline.
	for len(ch.Blocks) > chunk {
		part := ch
		part.Blocks = ch.Blocks[:chunk:chunk]
		ch.Blocks = ch.Blocks[chunk:]
		c.pubs = append(c.pubs, part)
		c.pending.Add(1)
	}
	for len(ch.Prefixes) > chunk {
		part := ch
		part.Prefixes = ch.Prefixes[:chunk:chunk]
		ch.Prefixes = ch.Prefixes[chunk:]
		c.pubs = append(c.pubs, part)
		c.pending.Add(1)
	}
	c.pubs = append(c.pubs, ch)
	c.queued += n
	c.pending.Add(1)
	c.mu.Unlock()
	c.wake()
}

// weight is what a change counts for in the queue's bound and a
// pipeline's share: its blocks or prefixes, at least 1.
func weight(ch guard.Change) int { return max(1, len(ch.Blocks)+len(ch.Prefixes)) }

// Count queues one event to be counted cluster-wide; it never blocks.
// While Redis is away, or when the queue is full, the event is counted
// locally only (the engine always counts it locally too).
func (c *Cluster) Count(ev guard.Event) {
	if c.down.Load() {
		return
	}
	c.pending.Add(1)
	select {
	case c.events <- ev:
		c.wake()
	default:
		c.pending.Add(-1)
		c.evDropped.Add(1)
	}
}

// Pending returns the announcements and events queued or being sent.
func (c *Cluster) Pending() int64 { return c.pending.Load() }

func (c *Cluster) wake() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// Start connects the cluster to engine e and starts its goroutines: the
// sender and the stream reader. Close stops them.
func (c *Cluster) Start(e Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	c.eng, c.cancel = e, cancel
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.sender(ctx) }()
	go func() { defer c.wg.Done(); c.reader(ctx) }()
}

// Close stops the goroutines (the sender tries once more to send what is
// queued, within the time budget) and closes the Redis client.
func (c *Cluster) Close() error {
	var err error
	c.once.Do(func() {
		if c.cancel != nil {
			c.cancel()
			c.wg.Wait()
		}
		err = c.rdb.Close()
	})
	return err
}

// Down reports whether Redis is considered unreachable now.
func (c *Cluster) Down() bool { return c.down.Load() }

// outage records a failed round trip; the first of an outage is logged.
func (c *Cluster) outage(err error) {
	c.downMu.Lock()
	defer c.downMu.Unlock()
	if !c.down.Swap(true) {
		lvl := slog.LevelError
		if time.Since(c.lastUp) < time.Minute {
			lvl = slog.LevelDebug // a flapping Redis: one line a minute at most
		}
		c.log.Log(context.Background(), lvl, "cluster: Redis unreachable; enforcing and counting locally, announcements queued", "node", c.node, "err", err)
	}
}

// reachable records a successful round trip; the end of an outage is
// logged and asks for a reconcile pass.
func (c *Cluster) reachable() {
	if !c.down.Load() {
		return
	}
	c.downMu.Lock()
	defer c.downMu.Unlock()
	if c.down.Swap(false) {
		c.mu.Lock()
		q, d := len(c.pubs), c.dropped
		c.dropped = 0
		c.mu.Unlock()
		lvl := slog.LevelWarn
		if time.Since(c.lastUp) < time.Minute {
			lvl = slog.LevelDebug
		}
		c.lastUp = time.Now()
		c.log.Log(context.Background(), lvl, "cluster: Redis reachable again; replaying queued announcements and reconciling", "node", c.node,
			"queued", q, "dropped", d, "events_counted_locally_only", c.evDropped.Swap(0))
		c.loaded.Store(false)
		select {
		case c.resync <- struct{}{}:
		default:
		}
		c.wake()
	}
}

// probe pings Redis during an outage; an answer ends it. An outage ends
// when the sender's pipeline goes through, on this ping, or when the
// reader gets an answer while nothing waits to be sent: a reader that gets
// answers while writes time out does not make the state flap.
func (c *Cluster) probe(ctx context.Context) {
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.rdb.Ping(tctx).Err(); err == nil {
		c.reachable()
	}
}

// budget is the time allowed for a pipeline of n commands.
func (c *Cluster) budget(n int) time.Duration {
	return c.timeout + time.Duration(n)*50*time.Microsecond
}

// backoff waits d or until ctx is done; it reports whether ctx is done.
func backoff(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-t.C:
		return false
	}
}

// sender sends queued announcements and events until ctx is done.
func (c *Cluster) sender(ctx context.Context) {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			c.flush(context.Background()) // one last try, within the budget
			return
		case <-c.signal:
		case <-retry.C:
			if c.down.Load() && c.Pending() == 0 {
				c.probe(ctx) // nothing to send: ask Redis whether it is back
			}
		}
		c.flush(ctx)
	}
}

// flush sends everything queued, in pipelines of at most c.batch commands.
func (c *Cluster) flush(ctx context.Context) {
	for {
		c.mu.Lock()
		k, w := 0, 0
		for k < len(c.pubs) && (k == 0 || w+weight(c.pubs[k]) <= 4*c.batch) {
			w += weight(c.pubs[k])
			k++
		}
		pubs := slices.Clone(c.pubs[:k])
		c.pubs = c.pubs[k:]
		c.queued -= w
		c.mu.Unlock()
		var evs []guard.Event
	drain:
		for len(evs) < c.batch {
			select {
			case ev := <-c.events:
				evs = append(evs, ev)
			default:
				break drain
			}
		}
		if len(pubs) == 0 && len(evs) == 0 {
			return
		}
		if err := c.send(ctx, pubs, evs); err != nil {
			c.pending.Add(-int64(len(evs))) // counted locally only
			c.requeue(pubs)
			c.outage(err)
			return
		}
		c.pending.Add(-int64(len(pubs) + len(evs)))
		c.reachable()
	}
}

// requeue puts changes that could not be sent back at the head of the
// queue, within its bound.
func (c *Cluster) requeue(pubs []guard.Change) {
	if len(pubs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	keep := pubs[:0:0]
	for _, p := range pubs {
		m := weight(p)
		if n+m > c.qmax {
			c.dropped++
			c.pending.Add(-1)
			continue
		}
		keep = append(keep, p)
		n += m
	}
	for _, p := range c.pubs {
		m := weight(p)
		if n+m > c.qmax {
			c.dropped++
			c.pending.Add(-1)
			continue
		}
		keep = append(keep, p)
		n += m
	}
	c.pubs, c.queued = keep, n
}

// send runs one pipeline: the announcements in order, then the counts.
// It fails as a whole only when Redis could not be asked; a command
// Redis refused (a poisoned counter key) is logged and skipped.
func (c *Cluster) send(ctx context.Context, pubs []guard.Change, evs []guard.Event) error {
	for attempt := 0; ; attempt++ {
		if !c.loaded.Load() {
			if err := c.loadScripts(ctx); err != nil {
				return err
			}
		}
		n := len(evs)
		for _, p := range pubs {
			n += weight(p)
		}
		tctx, cancel := context.WithTimeout(ctx, c.budget(n))
		pipe := c.rdb.Pipeline()
		for _, p := range pubs {
			c.queuePublish(tctx, pipe, p)
		}
		// Events of one key in this batch are one increment by their number.
		type tally struct {
			ev  guard.Event
			n   int64
			cmd *redis.Cmd
		}
		byKey := make(map[string]*tally, len(evs))
		order := make([]*tally, 0, len(evs))
		// A fingerprinted event is its own increment (a repeat of the same
		// fingerprint in the batch is dropped: Redis would not count it).
		for _, ev := range evs {
			k := ev.Key()
			if ev.Fingerprint != 0 {
				k += "#" + strconv.FormatUint(ev.Fingerprint, 16)
			}
			if t := byKey[k]; t != nil {
				if ev.Fingerprint == 0 {
					t.n++
				}
				t.ev.Limit = ev.Limit
				continue
			}
			t := &tally{ev: ev, n: 1}
			byKey[k] = t
			order = append(order, t)
		}
		for _, t := range order {
			ck := c.k.counterKey(t.ev)
			t.cmd = scriptCount.EvalSha(tctx, pipe, []string{ck, ck + ":f"}, t.ev.Window.Milliseconds(), t.n,
				strconv.FormatUint(t.ev.Fingerprint, 10))
		}
		cmds, err := pipe.Exec(tctx)
		cancel()
		if err != nil && !isRedisError(err) {
			return fmt.Errorf("cluster: sending %d commands: %w", len(cmds), err)
		}
		noscript := false
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil && redis.HasErrorPrefix(e, "NOSCRIPT") {
				noscript = true
			}
		}
		if noscript && attempt == 0 {
			c.loaded.Store(false) // Redis restarted: its script cache is empty
			continue
		}
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil && isRedisError(e) {
				c.log.Warn("cluster: Redis refused a command; skipped", "cmd", cmdName(cmd), "err", e)
			}
		}
		for _, t := range order {
			// The increment that takes the count from below the threshold to
			// it or above is the crossing: exactly one per window.
			n, err := t.cmd.Int64()
			if lim := int64(t.ev.Limit); err == nil && lim > 0 && n-t.n < lim && n >= lim {
				c.eng.Crossed(t.ev)
			}
		}
		return nil
	}
}

func cmdName(cmd redis.Cmder) string {
	a := cmd.Args()
	if len(a) > 3 {
		a = a[:4]
	}
	return strings.TrimSpace(fmt.Sprint(a...))
}

// isRedisError reports an error Redis answered (as opposed to a network
// failure or a timeout).
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) && !isNetwork(err)
}

func isNetwork(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection") || strings.Contains(s, "i/o timeout") || strings.Contains(s, "EOF") ||
		strings.HasPrefix(s, "LOADING") || strings.HasPrefix(s, "MASTERDOWN") || strings.HasPrefix(s, "READONLY") ||
		strings.HasPrefix(s, "CLUSTERDOWN") || strings.HasPrefix(s, "TRYAGAIN")
}

func (c *Cluster) loadScripts(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for _, s := range allScripts {
		if err := s.Load(tctx, c.rdb).Err(); err != nil {
			return fmt.Errorf("cluster: loading scripts: %w", err)
		}
	}
	c.loaded.Store(true)
	return nil
}

// tombstoneTTL is how long an unblock's tombstone lasts when the block
// it removed had no expiry in Redis (a permanent block, or one Redis no
// longer held), and how long unblock-all's does.
const tombstoneTTL = 30 * 24 * time.Hour

// chunk bounds the blocks or prefixes of one stream entry.
const chunk = 1000

// queuePublish adds the commands announcing ch to pipe.
func (c *Cluster) queuePublish(ctx context.Context, pipe redis.Pipeliner, ch guard.Change) {
	auto := "0"
	if ch.Auto {
		auto = "1"
	}
	base := []any{c.maxlen, cmpOr(ch.Node, c.node), ch.Actor, auto}
	switch ch.Kind {
	case guard.ChangePut:
		now := time.Now().UnixMilli()
		for len(ch.Blocks) > 0 {
			part := ch.Blocks[:min(chunk, len(ch.Blocks))]
			ch.Blocks = ch.Blocks[len(part):]
			_, data := changeData(guard.Change{Kind: guard.ChangePut, Blocks: part})
			memVal, memExp := "", int64(0)
			if ch.Auto && len(part) == 1 && ch.Memory > 0 {
				last := part[0].LastSeen
				if last.IsZero() {
					last = part[0].FirstSeen
				}
				memVal = fmt.Sprintf("%d %d", part[0].Level, msOf(last))
				memExp = last.Add(ch.Memory).UnixMilli()
			}
			ks := []string{c.k.stream, c.k.index, c.k.escIndex, c.k.esc + part[0].Prefix.String()}
			args := append(append([]any(nil), base...), now, data, memVal, memExp)
			for _, b := range part {
				p := b.Prefix.String()
				ks = append(ks, c.k.block+p)
				args = append(args, encodeBlock(b), msOf(b.Expires), p)
			}
			scriptPut.EvalSha(ctx, pipe, ks, args...)
		}
	case guard.ChangeDelete:
		for len(ch.Prefixes) > 0 {
			part := ch.Prefixes[:min(chunk, len(ch.Prefixes))]
			ch.Prefixes = ch.Prefixes[len(part):]
			_, data := changeData(guard.Change{Kind: guard.ChangeDelete, Prefixes: part})
			ks := []string{c.k.stream, c.k.index}
			args := append(append([]any(nil), base...), data, time.Now().UnixMilli(), tombstoneTTL.Milliseconds())
			for _, p := range part {
				ks = append(ks, c.k.block+p.String())
				args = append(args, p.String())
			}
			for _, p := range part {
				ks = append(ks, c.k.tomb+p.String())
			}
			scriptDel.EvalSha(ctx, pipe, ks, args...)
			for _, p := range part {
				for _, k := range counterKeys(p) {
					ck := c.k.counter + "{" + k + "}"
					pipe.Unlink(ctx, ck, ck+":f")
				}
			}
		}
	case guard.ChangeDeleteAll:
		scriptDelAll.EvalSha(ctx, pipe, []string{c.k.stream, c.k.index, c.k.tombAll},
			append(base, c.k.block, c.k.tomb, time.Now().UnixMilli(), tombstoneTTL.Milliseconds())...)
	case guard.ChangePurge:
		_, data := changeData(ch)
		scriptPurge.EvalSha(ctx, pipe, []string{c.k.stream, c.k.index}, append(base, data, c.k.block)...)
	}
}

// counterKeys are the names of every counter of prefix p (an
// administrator's unblock forgets them cluster-wide).
func counterKeys(p netip.Prefix) []string {
	var out []string
	for g := guard.GroupSMTP; g <= guard.GroupWeb+1; g++ {
		for _, r := range reason.All {
			out = append(out, guard.Event{Prefix: p, Group: g, Reason: r}.Key())
		}
	}
	return out
}

// reader applies the stream until ctx is done.
func (c *Cluster) reader(ctx context.Context) {
	last, err := c.loadState()
	if err != nil {
		c.log.Error("cluster: reading the stream position; starting from the cluster's block set", "path", c.state, "err", err)
		last = ""
	}
	need := true // reconcile at start
	wait := 50 * time.Millisecond
	for ctx.Err() == nil {
		select {
		case <-c.resync:
			need = true
		default:
		}
		if need {
			id, err := c.catchUp(ctx, last)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.outage(err)
				if backoff(ctx, wait) {
					return
				}
				wait = min(2*wait, 2*time.Second)
				continue
			}
			last, need, wait = id, false, 50*time.Millisecond
			c.saveState(last)
		}
		res, err := c.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{c.k.stream, last}, Count: 500, Block: time.Second}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.outage(err)
			need = true
			if backoff(ctx, wait) {
				return
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		if c.Pending() == 0 {
			c.reachable() // nothing waits to be sent that could say otherwise
		}
		for _, s := range res {
			if len(s.Messages) > 0 {
				c.apply(ctx, s.Messages)
				last = s.Messages[len(s.Messages)-1].ID
			}
		}
		c.saveState(last)
	}
}

// apply applies stream entries in order, skipping this node's own and
// malformed ones; consecutive blocks are applied together.
func (c *Cluster) apply(ctx context.Context, msgs []redis.XMessage) {
	var puts []store.Block
	flush := func() {
		if len(puts) > 0 {
			if err := c.eng.ApplyRemote(ctx, guard.Change{Kind: guard.ChangePut, Blocks: puts, Node: "cluster"}); err != nil {
				c.log.Warn("cluster: applying blocks from the stream", "err", err)
			}
			puts = nil
		}
	}
	for _, m := range msgs {
		ch, err := decodeEntry(m.Values)
		if err != nil {
			c.log.Warn("cluster: skipping a malformed stream entry", "id", m.ID, "err", err)
			continue
		}
		if ch.Node == c.node {
			continue
		}
		if ch.Kind == guard.ChangePut && ch.Actor == "" {
			puts = append(puts, ch.Blocks...)
			continue
		}
		flush()
		if err := c.eng.ApplyRemote(ctx, ch); err != nil {
			c.log.Warn("cluster: applying a change from the stream", "id", m.ID, "node", ch.Node, "err", err)
		}
	}
	flush()
}

// catchUp brings the engine up to the cluster after a start or an outage:
// entries after last are read by the loop, but when last is unknown or the
// stream no longer holds it (trimmed, or Redis lost its data), the block
// set is reconciled. It returns the position to read from.
func (c *Cluster) catchUp(ctx context.Context, last string) (string, error) {
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	first, err := c.rdb.XRangeN(tctx, c.k.stream, "-", "+", 1).Result()
	var tail []redis.XMessage
	if err == nil {
		tail, err = c.rdb.XRevRangeN(tctx, c.k.stream, "+", "-", 1).Result()
	}
	cancel()
	if err != nil {
		return "", fmt.Errorf("cluster: reading the stream: %w", err)
	}
	end := "0-0"
	if len(tail) > 0 {
		end = tail[0].ID
	}
	gap := last == "" || len(first) == 0 || idLess(last, first[0].ID) || idLess(end, last)
	if !gap {
		// Entries after last are still there; the loop reads them. Blocks this
		// node made while away were queued and are being replayed; a reconcile
		// still announces those the queue had to drop.
		return last, c.reconcile(ctx, false)
	}
	if err := c.reconcile(ctx, true); err != nil {
		return "", err
	}
	return end, nil
}

// idLess compares stream IDs ("ms-seq").
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (uint64, uint64) {
	m, s, _ := strings.Cut(id, "-")
	x, _ := strconv.ParseUint(m, 10, 64)
	y, _ := strconv.ParseUint(s, 10, 64)
	return x, y
}

// reconcile compares the cluster's active blocks with the engine's: a
// block the engine lacks (or holds in another version) is applied when
// pull is set. An active block the cluster lacks that a node unblocked
// since it was made (see buried) is dropped; otherwise this node's own is
// announced again, and other nodes' are left to expire: the cluster may
// have lost them with a Redis that kept no data, and their own node
// announces them again.
func (c *Cluster) reconcile(ctx context.Context, pull bool) error {
	now := time.Now()
	tctx, cancel := context.WithTimeout(ctx, c.timeout*4)
	defer cancel()
	remote := make(map[netip.Prefix]store.Block)
	err := c.indexed(tctx, c.k.index, c.k.block, now, "blocks", func(key, member, value string) {
		b, err := decodeBlock(value)
		if err != nil || b.Prefix.String() != member {
			c.log.Warn("cluster: skipping a malformed block key", "key", key, "err", err)
			return
		}
		remote[b.Prefix] = b
	})
	if err != nil {
		return err
	}
	local := c.eng.ActiveBlocks()
	have := make(map[netip.Prefix]store.Block, len(local))
	var missing []store.Block
	for _, b := range local {
		have[b.Prefix] = b
		if _, ok := remote[b.Prefix]; !ok {
			missing = append(missing, b)
		}
	}
	missing, unblocked, err := c.buried(tctx, missing)
	if err != nil {
		return err
	}
	var ours []store.Block
	for _, b := range missing {
		if b.Node == c.node {
			ours = append(ours, b)
		}
	}
	if len(unblocked) > 0 {
		c.log.Info("cluster: reconcile: dropping blocks unblocked while this node was away", "node", c.node, "blocks", len(unblocked))
		if err := c.eng.ApplyRemote(ctx, guard.Change{Kind: guard.ChangeDelete, Prefixes: unblocked, Node: "cluster"}); err != nil {
			c.log.Warn("cluster: reconcile: removing unblocked blocks", "err", err)
		}
	}
	var pulls []store.Block
	if pull {
		for p, b := range remote {
			if h, ok := have[p]; !ok || !h.Expires.Equal(b.Expires) || h.Node != b.Node || h.Reason != b.Reason {
				pulls = append(pulls, b)
			}
		}
	}
	if len(pulls) > 0 {
		if err := c.eng.ApplyRemote(ctx, guard.Change{Kind: guard.ChangePut, Blocks: pulls, Node: "cluster"}); err != nil {
			c.log.Warn("cluster: reconcile: applying blocks", "err", err)
		}
	}
	if len(ours) > 0 {
		c.Publish(guard.Change{Kind: guard.ChangePut, Blocks: ours, Node: c.node})
	}
	if len(pulls)+len(ours) > 0 {
		c.log.Info("cluster: reconciled", "node", c.node, "applied", len(pulls), "announced_again", len(ours))
	}
	// Index members of blocks long expired are dropped.
	c.rdb.ZRemRangeByScore(tctx, c.k.index, "-inf", strconv.FormatInt(now.Add(-time.Hour).UnixMilli(), 10))
	return c.pullMemory(tctx, now)
}

// buried splits blocks the cluster lacks into those an unblock removed
// after they were made (a tombstone, of the prefix or of unblock-all, at
// or after the block's first-seen time), which this node missed (the
// stream entry trimmed, or not read yet) and drops, and the others.
func (c *Cluster) buried(ctx context.Context, ours []store.Block) (keep []store.Block, gone []netip.Prefix, err error) {
	if len(ours) == 0 {
		return nil, nil, nil
	}
	for len(ours) > 0 {
		part := ours[:min(chunk, len(ours))]
		ours = ours[len(part):]
		ks := make([]string, 0, len(part)+1)
		for _, b := range part {
			ks = append(ks, c.k.tomb+b.Prefix.String())
		}
		ks = append(ks, c.k.tombAll)
		vals, err := c.mget(ctx, ks)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: reading tombstones: %w", err)
		}
		all := tombTime(vals[len(part)])
		for i, b := range part {
			t := max(all, tombTime(vals[i]))
			if t > 0 && t >= msOf(b.FirstSeen) {
				gone = append(gone, b.Prefix)
			} else {
				keep = append(keep, b)
			}
		}
	}
	return keep, gone, nil
}

// tombTime reads a tombstone's time (0: none or malformed).
func tombTime(v any) int64 {
	s, ok := v.(string)
	if !ok || len(s) > 20 {
		return 0
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 0 {
		return 0
	}
	return ms
}

// memoryEngine is an engine that takes the cluster's escalation memory
// (*guard.Engine does).
type memoryEngine interface {
	RememberOffence(p netip.Prefix, level int, last time.Time)
}

// pullMemory hands the cluster's escalation memory to the engine: the
// level and time of every prefix's last automatic block within the
// memory, whichever node made it, so this node's next block of the prefix
// escalates from it even when it never applied that block (it was away,
// joined later, or its store purged the block). Malformed records are
// logged and skipped.
func (c *Cluster) pullMemory(ctx context.Context, now time.Time) error {
	me, ok := c.eng.(memoryEngine)
	if !ok {
		return nil
	}
	n := 0
	err := c.indexed(ctx, c.k.escIndex, c.k.esc, now, "escalation memory", func(key, member, value string) {
		p, level, last, err := decodeMemory(member, value)
		if err != nil {
			c.log.Warn("cluster: skipping a malformed escalation key", "key", key, "err", err)
			return
		}
		me.RememberOffence(p, level, last)
		n++
	})
	if err != nil {
		return err
	}
	c.rdb.ZRemRangeByScore(ctx, c.k.escIndex, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	if n > 0 {
		c.log.Debug("cluster: escalation memory read", "node", c.node, "prefixes", n)
	}
	return nil
}

// indexed reads the keys an index (a sorted set scored by expiry) lists as
// not expired at now, in parts of chunk keys, and calls fn with each key
// still present, its index member and its value. what names them in errors.
func (c *Cluster) indexed(ctx context.Context, index, keyPrefix string, now time.Time, what string, fn func(key, member, value string)) error {
	members, err := c.rdb.ZRangeByScore(ctx, index, &redis.ZRangeBy{Min: strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return fmt.Errorf("cluster: reading the index of %s: %w", what, err)
	}
	for len(members) > 0 {
		part := members[:min(chunk, len(members))]
		members = members[len(part):]
		ks := make([]string, len(part))
		for i, m := range part {
			ks[i] = keyPrefix + m
		}
		vals, err := c.mget(ctx, ks)
		if err != nil {
			return fmt.Errorf("cluster: reading %s: %w", what, err)
		}
		for i, v := range vals {
			if s, ok := v.(string); ok { // nil: expired since
				fn(ks[i], part[i], s)
			}
		}
	}
	return nil
}

// mget reads keys of one hash slot.
func (c *Cluster) mget(ctx context.Context, ks []string) ([]any, error) {
	return c.rdb.MGet(ctx, ks...).Result()
}

// loadState reads the last stream entry applied ("" when unknown).
func (c *Cluster) loadState() (string, error) {
	if c.state == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.state)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	m, s, ok := strings.Cut(id, "-")
	if _, e1 := strconv.ParseUint(m, 10, 64); e1 != nil || !ok {
		return "", fmt.Errorf("bad stream position %.40q", id)
	}
	if _, e2 := strconv.ParseUint(s, 10, 64); e2 != nil {
		return "", fmt.Errorf("bad stream position %.40q", id)
	}
	return id, nil
}

// saveState records the last stream entry applied (write and rename; an
// older position after a crash only applies some entries again).
func (c *Cluster) saveState(id string) {
	if c.state == "" || id == "" {
		return
	}
	tmp := c.state + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err == nil {
		err = os.Rename(tmp, c.state)
		if err != nil {
			c.log.Error("cluster: saving the stream position", "path", c.state, "err", err)
		}
	} else {
		c.log.Error("cluster: saving the stream position", "path", filepath.Dir(c.state), "err", err)
	}
}
