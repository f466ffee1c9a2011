package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// Cluster shares the engine's blocks and cross-session counts with other
// gateways (cluster mode). Both methods are called on the event and
// administration paths, never by Admit, sometimes with the engine's table
// lock held: they must only queue the work and return at once.
type Cluster interface {
	// Publish announces a change this node made to its block table.
	Publish(c Change)
	// Count counts one event cluster-wide. When this very increment
	// brings the cluster-wide count to ev.Limit, the cluster calls the
	// engine's Crossed with the event, from its own goroutine.
	Count(ev Event)
}

// ChangeKind is what a Change does to the block table.
type ChangeKind uint8

// The kinds of change.
const (
	ChangePut       ChangeKind = iota + 1 // add or replace Blocks
	ChangeDelete                          // remove the blocks of Prefixes
	ChangeDeleteAll                       // remove every block
	ChangePurge                           // remove blocks expired at or before Before
)

// Change is one change to the block table, as one node announces it to
// the others.
type Change struct {
	Kind     ChangeKind
	Blocks   []store.Block  // ChangePut
	Prefixes []netip.Prefix // ChangeDelete
	Before   time.Time      // ChangePurge
	// Auto says the engine made the block (a trigger crossed its
	// threshold): an active block of the same prefix already in the
	// cluster wins over it, so one crossing makes one block.
	Auto  bool
	Node  string // the node that made the change
	Actor string // who asked for it ("" for the engine)
	// Memory is how long an automatic block counts for escalation (the
	// engine's escalation memory): the cluster keeps the block's level
	// that long, for every node (see RememberOffence).
	Memory time.Duration
}

// Event is one occurrence of a trigger counted cluster-wide.
type Event struct {
	Prefix  netip.Prefix
	Group   Group
	Reason  reason.Code
	Window  time.Duration // the counter's fixed window, from its first event
	Limit   int           // the threshold: the increment reaching it blocks
	Addr    netip.Addr    // the address that caused it
	Service string        // the service it was seen on
	Detail  string        // what was seen
	// Fingerprint is the wrong password's fingerprint, when the cluster
	// shares the fingerprint key (0 otherwise): the cluster counts a
	// fingerprint once per counter window.
	Fingerprint uint64
}

// Key names the counter the event increments: prefix, group and trigger.
func (ev Event) Key() string {
	g := "all"
	if ev.Group < numGroups {
		g = ev.Group.String()
	}
	return fmt.Sprintf("%s:%c:%s", g, rune(ev.Reason), ev.Prefix)
}

// newPeers returns the other gateways' prefixes, masked: never blocked
// automatically.
func newPeers(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// autoBlockable reports whether the engine may block prefix p for an
// event of addr by itself: never a trusted upstream or an address on the
// bypass list (self-lockout guard), and never a prefix that holds another
// gateway of the cluster.
func (e *Engine) autoBlockable(s *Settings, addr netip.Addr, p netip.Prefix) bool {
	for _, q := range e.peers {
		if q.Contains(addr) || q.Overlaps(p) {
			return false
		}
	}
	return autoBlockable(s, addr)
}

// publish hands a change to the cluster, if there is one. Callers hold
// e.mu, so the cluster sees changes in table order.
func (e *Engine) publish(c Change) {
	if e.cluster == nil {
		return
	}
	c.Node = e.node
	if c.Auto {
		c.Memory = e.settings.Load().Memory
	}
	e.cluster.Publish(c)
}

// clusterCount counts an event cluster-wide, if there is a cluster.
func (e *Engine) clusterCount(ev Event) {
	if e.cluster != nil {
		e.cluster.Count(ev)
	}
}

// Crossed is the cluster's report that an event brought its cluster-wide
// count to the threshold: the engine blocks the prefix, as if it had
// counted the events itself (a trigger set to log only logs), unless the
// address may not be blocked automatically. Live sessions inside the
// prefix are closed when close_blocked_connection is on.
func (e *Engine) Crossed(ev Event) {
	if e.closed.Load() {
		return
	}
	s := e.settings.Load()
	t, ok := triggerOf(byte(ev.Reason))
	if !ok || !ev.Prefix.IsValid() {
		return
	}
	g := ev.Group
	if g < numGroups && s.groups[g].logOnly[t] {
		e.log.Info("would block (log only)", "prefix", ev.Prefix.String(), "reason", ev.Reason.String(),
			"why", ev.Reason.Name(), "service", ev.Service, "detail", ev.Detail, "count", ev.Limit, "counted", "cluster")
		return
	}
	if !e.autoBlockable(s, ev.Addr, ev.Prefix) || !e.autoBlockable(s, ev.Prefix.Addr(), ev.Prefix) {
		e.log.Info("not blocking a trusted, bypassed or peer address", "addr", ev.Addr.String(), "reason", ev.Reason.String(), "detail", ev.Detail)
		return
	}
	detail := ev.Detail
	if detail == "" {
		detail = "counted across the cluster"
	} else {
		detail += "; counted across the cluster"
	}
	if _, made := e.block(s, offense{prefix: ev.Prefix, reason: ev.Reason, service: ev.Service, detail: detail, hits: ev.Limit}); made && s.CloseBlocked {
		e.closeLive(ev.Prefix, nil)
	}
}

// ApplyRemote applies a change another node made: to the block table
// first, then to the store (it returns after the store write), so a
// restarted node enforces it without the cluster. It publishes nothing.
// Blocks are checked as an import's are; an invalid one is skipped and
// reported in the error, the others are applied. An automatic block
// covering an address this engine may not block automatically (a
// trusted upstream, the bypass list, a peer) is skipped too.
func (e *Engine) ApplyRemote(ctx context.Context, c Change) error {
	s := e.settings.Load()
	var errs []error
	var done <-chan error
	e.mu.Lock()
	switch c.Kind {
	case ChangePut:
		ok := make([]store.Block, 0, len(c.Blocks))
		for i := range c.Blocks {
			b := c.Blocks[i]
			if err := validPrefix(b.Prefix); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := store.CheckBlock(&b); err != nil {
				errs = append(errs, err)
				continue
			}
			if b.By == "engine" && !e.autoBlockable(s, b.Prefix.Addr(), b.Prefix) {
				errs = append(errs, fmt.Errorf("%s: an automatic block of a trusted, bypassed or peer address", b.Prefix))
				continue
			}
			ok = append(ok, b)
		}
		if len(ok) > 0 {
			tbl := e.blocks.Load()
			if len(ok) > 16 {
				tbl = tbl.Clone()
				for _, b := range ok {
					tbl.Insert(b.Prefix, newEntry(b))
				}
			} else {
				for _, b := range ok {
					tbl = tbl.InsertPersist(b.Prefix, newEntry(b))
				}
			}
			e.blocks.Store(tbl)
			for _, b := range ok {
				e.remember(b)
			}
			done = e.wq.push(writeOp{kind: opPut, blocks: ok})
		}
		c.Blocks = ok
	case ChangeDelete:
		tbl := e.blocks.Load()
		var ps []netip.Prefix
		for _, p := range c.Prefixes {
			if validPrefix(p) != nil {
				errs = append(errs, fmt.Errorf("%s: invalid prefix", p))
				continue
			}
			ps = append(ps, p)
			if _, ok := tbl.Get(p); ok {
				tbl = tbl.DeletePersist(p)
			}
		}
		e.blocks.Store(tbl)
		if len(ps) > 0 {
			done = e.wq.push(writeOp{kind: opDelete, prefixes: ps})
		}
		c.Prefixes = ps
	case ChangeDeleteAll:
		e.blocks.Store(new(blockTable))
		done = e.wq.push(writeOp{kind: opDeleteAll})
	case ChangePurge:
		tbl := e.blocks.Load()
		var gone []netip.Prefix
		for p, ent := range tbl.All() {
			if !ent.rec.Expires.IsZero() && !c.Before.Before(ent.rec.Expires) {
				gone = append(gone, p)
			}
		}
		for _, p := range gone {
			tbl = tbl.DeletePersist(p)
		}
		e.blocks.Store(tbl)
		done = e.wq.push(writeOp{kind: opPurge, before: c.Before})
	default:
		e.mu.Unlock()
		return fmt.Errorf("unknown change kind %d", c.Kind)
	}
	e.mu.Unlock()

	switch c.Kind {
	case ChangePut:
		for _, b := range c.Blocks {
			e.counters.resetPrefix(b.Prefix)
		}
		if s.CloseBlocked {
			for _, b := range c.Blocks {
				e.closeLive(b.Prefix, nil)
			}
		}
	case ChangeDelete:
		for _, p := range c.Prefixes {
			e.counters.reset(p)
		}
	case ChangeDeleteAll:
		e.resetAllCounters()
	}
	if err := e.waitCtx(ctx, done); err != nil {
		errs = append(errs, fmt.Errorf("storing a change from node %s: %w", c.Node, err))
	}
	if c.Actor != "" {
		a := store.AuditEntry{Time: e.clock(), Actor: c.Actor + "@" + c.Node, Detail: "made on node " + c.Node}
		switch c.Kind {
		case ChangePut:
			a.Action = "block"
			if len(c.Blocks) == 1 {
				a.Target = c.Blocks[0].Prefix.String()
			} else {
				a.Action, a.Detail = "import", fmt.Sprintf("%d blocks; made on node %s", len(c.Blocks), c.Node)
			}
		case ChangeDelete:
			a.Action = "unblock"
			if len(c.Prefixes) == 1 {
				a.Target = c.Prefixes[0].String()
			} else {
				a.Detail = fmt.Sprintf("%d prefixes; made on node %s", len(c.Prefixes), c.Node)
			}
		case ChangeDeleteAll:
			a.Action = "unblock-all"
		case ChangePurge:
			a.Action = "purge-expired"
		}
		e.audit(ctx, a)
	}
	return errors.Join(errs...)
}

// RememberOffence records in the escalation memory that prefix p was
// blocked automatically at level at time last, as the cluster remembers it
// (a node that missed the block, or restarted after its store purged it,
// learns it at reconcile): the next automatic block of p escalates from
// it as from a block this engine made. The newer record wins (at equal
// times, the higher level); a record older than the memory, or more than
// a minute in the future (a clock that far off, or hostile data), is
// ignored.
func (e *Engine) RememberOffence(p netip.Prefix, level int, last time.Time) {
	now := e.clock()
	if validPrefix(p) != nil || level < 0 || now.Sub(last) >= e.settings.Load().Memory || last.After(now.Add(time.Minute)) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if h, ok := e.history[p]; !ok || last.After(h.last) || last.Equal(h.last) && level > h.level {
		e.history[p] = offence{level: level, last: last}
	}
}

// ActiveBlocks returns the active blocks (for a cluster's reconcile pass).
func (e *Engine) ActiveBlocks() []store.Block {
	now := e.clock()
	tbl := e.blocks.Load()
	out := make([]store.Block, 0, tbl.Size())
	for _, ent := range tbl.All() {
		if ent.active(now) {
			out = append(out, ent.block())
		}
	}
	slices.SortFunc(out, func(a, b store.Block) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out
}
