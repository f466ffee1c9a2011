package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/passes"
)

// PassManager is what pass sharing needs of the travel passes manager;
// *passes.Manager implements it.
type PassManager interface {
	ApplyRemote(ctx context.Context, p passes.Pass, node string) (bool, error)
	RemoveRemote(ctx context.Context, id, node string) (bool, error)
	Held() map[string]passes.Pass
}

// maxPassRecord bounds a pass record read from Redis, in bytes.
const maxPassRecord = 8 << 10

// passResync is how often the passes are compared with the cluster's
// even when no announcement arrives (one may be lost while the
// subscription reconnects).
const passResync = 30 * time.Second

// PassShare shares travel passes between the gateways of a cluster. The
// passes in force are a hash, <prefix>{p}:passes (pass ID -> record); a
// removed pass leaves a tombstone in <prefix>{p}:gone (pass ID -> its end
// in ms) until it would have ended; every change is announced on the
// channel <prefix>{p}:events, and each node then compares its passes with
// the hashes (also at start and every 30s). Nothing here runs on the login
// path: Added and Removed only queue.
type PassShare struct {
	rdb                 redis.UniversalClient
	live, gone, channel string
	node                string
	timeout             time.Duration
	log                 *slog.Logger
	m                   PassManager
	signal              chan struct{}
	mu                  sync.Mutex
	queue               []passOp
	cancel              context.CancelFunc
	wg                  sync.WaitGroup
	synced              chan struct{} // a sync pass ended (for tests)
}

type passOp struct {
	add bool
	p   passes.Pass
}

// passRecord is a pass as kept in Redis.
type passRecord struct {
	passes.Pass
	Node string `json:"node"`
}

// Passes returns the pass sharing of this cluster link for manager m
// (set it as m's publisher, then Start it). It uses the link's Redis
// client, so it must be closed before the link.
func (c *Cluster) Passes(m PassManager) *PassShare {
	prefix := strings.TrimSuffix(c.k.stream, "{b}:stream")
	return &PassShare{
		rdb: c.rdb, live: prefix + "{p}:passes", gone: prefix + "{p}:gone", channel: prefix + "{p}:events",
		node: c.node, timeout: c.timeout, log: c.log, m: m,
		signal: make(chan struct{}, 1), synced: make(chan struct{}, 1),
	}
}

// Added queues the announcement of a pass added on this node.
func (s *PassShare) Added(p passes.Pass) { s.push(passOp{add: true, p: p}) }

// Removed queues the announcement of a pass removed on this node.
func (s *PassShare) Removed(p passes.Pass) { s.push(passOp{p: p}) }

func (s *PassShare) push(op passOp) {
	s.mu.Lock()
	if len(s.queue) < 100_000 {
		s.queue = append(s.queue, op)
	}
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// Start starts the goroutine that sends this node's changes and applies
// the others'; Close stops it.
func (s *PassShare) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.run(ctx) }()
}

// Close stops the goroutine (after one last try to send what is queued).
func (s *PassShare) Close() {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
		s.cancel = nil
	}
}

func (s *PassShare) run(ctx context.Context) {
	sub := s.rdb.Subscribe(ctx, s.channel)
	defer sub.Close()
	// Wait for the subscription to be confirmed, so that a change announced
	// after the first sync below is not missed (when Redis is away, the
	// periodic sync catches up).
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	if _, err := sub.Receive(rctx); err != nil && ctx.Err() == nil {
		s.log.Warn("cluster: subscribing to travel pass announcements", "node", s.node, "err", err)
	}
	cancel()
	msgs := sub.Channel()
	tick := time.NewTicker(passResync)
	defer tick.Stop()
	s.sync(ctx)
	for {
		select {
		case <-ctx.Done():
			s.flush(context.Background())
			return
		case <-s.signal:
			s.flush(ctx)
		case m, ok := <-msgs:
			if !ok {
				return
			}
			if m.Payload != s.node {
				s.sync(ctx)
			}
		case <-tick.C:
			s.flush(ctx)
			s.sync(ctx)
		}
	}
}

// flush writes the queued changes and announces them; on failure they
// stay queued for the next try.
func (s *PassShare) flush(ctx context.Context) {
	s.mu.Lock()
	ops := s.queue
	s.queue = nil
	s.mu.Unlock()
	if len(ops) == 0 {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, s.timeout+time.Duration(len(ops))*50*time.Microsecond)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, op := range ops {
		if op.add {
			data, err := json.Marshal(passRecord{Pass: op.p, Node: s.node})
			if err != nil {
				continue
			}
			pipe.HSet(tctx, s.live, op.p.ID, data)
		} else {
			pipe.HDel(tctx, s.live, op.p.ID)
			pipe.HSet(tctx, s.gone, op.p.ID, strconv.FormatInt(op.p.Until.UnixMilli(), 10))
		}
	}
	pipe.Publish(tctx, s.channel, s.node)
	if _, err := pipe.Exec(tctx); err != nil {
		s.log.Warn("cluster: could not share travel pass changes; will retry", "node", s.node, "changes", len(ops), "err", err)
		s.mu.Lock()
		s.queue = append(ops, s.queue...)
		s.mu.Unlock()
	}
}

// decodePass reads a pass record from Redis: bounded, strict JSON whose
// ID matches its hash field. The pass itself is checked by the manager.
func decodePass(id, v string) (passRecord, error) {
	var r passRecord
	if len(v) > maxPassRecord {
		return r, fmt.Errorf("record of %d bytes", len(v))
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("decoding: %w", err)
	}
	if r.ID != id {
		return r, fmt.Errorf("record id %.40q under field %.40q", r.ID, id)
	}
	if r.Node == "" || len(r.Node) > 255 || strings.ContainsAny(r.Node, " \t\r\n") {
		return r, fmt.Errorf("bad node %.40q", r.Node)
	}
	return r, nil
}

// sync compares this node's passes with the cluster's: a pass the cluster
// holds is applied (when valid under this node's policy), a tombstoned
// one removed, and a pass of this node's that the cluster lacks (added
// while Redis was away) announced again. Expired records are tidied.
func (s *PassShare) sync(ctx context.Context) {
	defer func() {
		select {
		case s.synced <- struct{}{}:
		default:
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	live, err := s.rdb.HGetAll(tctx, s.live).Result()
	var gone map[string]string
	if err == nil {
		gone, err = s.rdb.HGetAll(tctx, s.gone).Result()
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cluster: could not read the cluster's travel passes", "node", s.node, "err", err)
		}
		return
	}
	now := time.Now()
	var tidyLive, tidyGone []string
	held := s.m.Held()
	for id, v := range gone {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < now.UnixMilli() {
			tidyGone = append(tidyGone, id)
		}
		if _, ok := held[id]; ok {
			if _, err := s.m.RemoveRemote(ctx, id, "cluster"); err != nil {
				s.log.Warn("cluster: removing a travel pass removed on another node", "id", fmt.Sprintf("%.40q", id), "err", err)
			}
		}
	}
	for id, v := range live {
		if _, dead := gone[id]; dead {
			continue
		}
		r, err := decodePass(id, v)
		if err != nil {
			s.log.Warn("cluster: skipping a malformed travel pass in Redis", "key", s.live, "field", fmt.Sprintf("%.40q", id), "err", err)
			continue
		}
		if !r.Until.After(now) {
			tidyLive = append(tidyLive, id)
			continue
		}
		if _, ok := held[id]; ok {
			continue
		}
		if _, err := s.m.ApplyRemote(ctx, r.Pass, r.Node); err != nil {
			s.log.Warn("cluster: refusing a travel pass from another node", "id", id, "node", r.Node, "err", err)
		}
	}
	for id, p := range held {
		_, inLive := live[id]
		_, dead := gone[id]
		if !inLive && !dead && p.Until.After(now) {
			s.Added(p)
		}
	}
	if len(tidyLive) > 0 {
		s.rdb.HDel(tctx, s.live, tidyLive...)
	}
	if len(tidyGone) > 0 {
		s.rdb.HDel(tctx, s.gone, tidyGone...)
	}
}
