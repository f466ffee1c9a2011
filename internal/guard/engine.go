package guard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// Store is what the engine needs of the blocked-address store; *store.DB
// implements it.
type Store interface {
	PutBlocks(ctx context.Context, blocks []store.Block) error
	DeleteBlocks(ctx context.Context, prefixes []netip.Prefix) (int, error)
	DeleteAllBlocks(ctx context.Context) (int, error)
	PurgeExpired(ctx context.Context, before time.Time) ([]netip.Prefix, error)
	LoadBlocks(ctx context.Context) ([]store.Block, error)
	AppendAudit(ctx context.Context, entries ...store.AuditEntry) error
	Audit(ctx context.Context, since time.Time, limit int) ([]store.AuditEntry, error)
}

// Options configure an Engine.
type Options struct {
	Store  Store            // nil: blocks live in memory only
	Clock  func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
	Node   string           // this node's name, recorded in blocks
	// StoreTimeout bounds one store write made on behalf of an event
	// (default 10s).
	StoreTimeout time.Duration
	// MaxCounters bounds the cross-session event counters (default
	// DefaultMaxCounters).
	MaxCounters int
	// Cluster shares blocks and counts with other gateways (nil: none).
	Cluster Cluster
	// Peers are the other gateways' addresses, never blocked
	// automatically.
	Peers []netip.Prefix
	// FingerprintKey, when set, keys password fingerprints instead of a
	// random key of this process: gateways of a cluster that share it
	// count a retry of the same wrong password once, whichever sees it.
	FingerprintKey *[32]byte
	// Observer is told connections, events, blocks, logins and store
	// commits (for metrics); nil: none.
	Observer Observer
	// Notifier is told of blocks made and removed and of escalations
	// (webhooks, exports); nil: none.
	Notifier Notifier
}

// ErrClosed is returned by operations on a closed engine.
var ErrClosed = errors.New("guard: engine closed")

// Engine is the intrusion prevention engine. It is safe for concurrent use.
type Engine struct {
	settings atomic.Pointer[Settings]
	blocks   atomic.Pointer[blockTable]
	passes   atomic.Pointer[passes.Table] // travel passes; nil: none

	clock   func() time.Time
	log     *slog.Logger
	node    string
	st      Store
	timeout time.Duration
	key     [32]byte // keys password fingerprints; never leaves the process

	mu      sync.Mutex // serializes changes to the block table and history
	history map[netip.Prefix]offence

	counters *counters
	gates    loginGates
	accounts accounts
	live     liveSessions

	cluster  Cluster
	peers    []netip.Prefix
	sharedFP bool // fingerprints keyed with the cluster's key: sent with counts
	obs      Observer
	notify   Notifier

	wq     writeQueue
	quit   chan struct{}
	wdone  chan struct{}
	closed atomic.Bool
}

// offence remembers a prefix's past blocks for escalation.
type offence struct {
	level int
	last  time.Time
}

// New returns an engine with settings s, loading the stored blocks. Close
// it to stop its store writer.
func New(ctx context.Context, s *Settings, opts Options) (*Engine, error) {
	if s == nil {
		return nil, errors.New("guard: nil settings")
	}
	e := &Engine{
		clock:    opts.Clock,
		log:      opts.Logger,
		node:     opts.Node,
		st:       opts.Store,
		timeout:  opts.StoreTimeout,
		history:  make(map[netip.Prefix]offence),
		counters: newCounters(opts.MaxCounters),
		obs:      opts.Observer,
		notify:   opts.Notifier,
		quit:     make(chan struct{}),
		wdone:    make(chan struct{}),
		cluster:  opts.Cluster,
		peers:    newPeers(opts.Peers),
	}
	if e.clock == nil {
		e.clock = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.timeout <= 0 {
		e.timeout = 10 * time.Second
	}
	if opts.FingerprintKey != nil {
		e.key, e.sharedFP = *opts.FingerprintKey, true
	} else if _, err := rand.Read(e.key[:]); err != nil {
		return nil, fmt.Errorf("guard: password fingerprint key: %w", err)
	}
	e.live.init()
	e.wq.signal = make(chan struct{}, 1)
	e.settings.Store(s)
	tbl := new(blockTable)
	if e.st != nil {
		stored, err := e.st.LoadBlocks(ctx)
		if err != nil {
			return nil, fmt.Errorf("guard: loading blocks: %w", err)
		}
		for _, b := range stored {
			tbl.Insert(b.Prefix, newEntry(b))
			e.remember(b)
		}
	}
	e.blocks.Store(tbl)
	go e.writer()
	return e, nil
}

// remember records a block in the escalation history.
func (e *Engine) remember(b store.Block) {
	if h, ok := e.history[b.Prefix]; !ok || b.Level >= h.level {
		e.history[b.Prefix] = offence{level: b.Level, last: b.FirstSeen}
	}
}

// Apply makes s the engine's settings (on reload). Blocks and counters stay.
func (e *Engine) Apply(s *Settings) { e.settings.Store(s) }

// Settings returns the settings in force.
func (e *Engine) Settings() *Settings { return e.settings.Load() }

// Now returns the engine's clock reading.
func (e *Engine) Now() time.Time { return e.clock() }

// Close stops the store writer after it has written what was queued.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	close(e.quit)
	<-e.wdone
	return nil
}

// PasswordFingerprint returns a keyed, truncated hash of a password tried
// for an account, so the engine can tell a retry of the same wrong password
// from a new guess without keeping the password. The key is random per
// process.
func (e *Engine) PasswordFingerprint(account, password string) uint64 {
	m := hmac.New(sha256.New, e.key[:])
	m.Write([]byte(account))
	m.Write([]byte{0})
	m.Write([]byte(password))
	fp := binary.BigEndian.Uint64(m.Sum(nil))
	if fp == 0 {
		fp = 1
	}
	return fp
}

// Verdict is the connection gate's answer (Accept, Admit): a Decision
// whose Action is Allow, Tarpit (with Delay), Refuse (with the reason's
// Refusal text) or Close, and whether a refusal should be quiet.
type Verdict struct {
	Decision
	// Quiet, with Refuse, says the address has been refused more than
	// AnsweredRefusals times in the last minute: a front-end for which
	// answering costs work (a TLS handshake on an implicit-TLS port)
	// closes the connection without a word.
	Quiet bool
}

// AnsweredRefusals is how many refused connections of one address (block
// prefix) a minute get the protocol's refusal where answering costs a TLS
// handshake; later ones are closed without it (Verdict.Quiet).
const AnsweredRefusals = 5

// Admit decides at accept whether addr may use service: refused by the
// access policy (grant/deny), refused or tarpitted while blocked, or
// allowed. A blocked address is refused on every service whatever group's
// trigger made the block (the block list is one), where the service's
// group refuses it: refuse_blocked refuses every block;
// close_blocked_connection alone refuses the blocks a trigger made (not
// manual ones) for their block time; a group's own refuse_blocked: false
// refuses none. A blocked address not refused is tarpitted when
// tarpit_delay is set. It takes no lock and does not allocate.
//
// Admit is the first half of Accept, the call front-ends use; it neither
// opens a session nor counts the connection toward connections per minute.
func (e *Engine) Admit(addr netip.Addr, svc service.Service) Verdict {
	s := e.settings.Load()
	addr = addr.Unmap()
	if s.Policy != nil && !s.Policy.AllowService(svc, addr) {
		return e.refused(s, addr, svc)
	}
	return e.admitBlocks(s, addr, svc)
}

// admitBlocks is the block table's half of Admit.
func (e *Engine) admitBlocks(s *Settings, addr netip.Addr, svc service.Service) Verdict {
	tbl := e.blocks.Load()
	if !tbl.Contains(addr) {
		return Verdict{}
	}
	now := e.clock()
	ent, ok := activeBlock(tbl, addr, now)
	if !ok {
		return Verdict{}
	}
	ent.hit(now)
	g, ok := GroupOf(svc)
	if !ok {
		g = GroupSMTP
	}
	if s.refuses(g, ent.rec.Reason) {
		return Verdict{Decision: Decision{Action: Refuse, Blocked: true, Reason: ent.rec.Reason}, Quiet: e.quiet(s, addr, now)}
	}
	if s.TarpitDelay > 0 {
		return Verdict{Decision: Decision{Action: Tarpit, Delay: s.TarpitDelay, Blocked: true, Reason: ent.rec.Reason}}
	}
	return Verdict{Decision: Decision{Blocked: true, Reason: ent.rec.Reason}}
}

// refused counts a connection the access policy refused toward
// connections per minute (I), as an admitted one is counted by Open, so an
// address hammering a port it may not use is blocked too; it blocks the
// address when the count reaches the threshold. Counting an address seen
// before does not allocate.
func (e *Engine) refused(s *Settings, addr netip.Addr, svc service.Service) Verdict {
	g, ok := GroupOf(svc)
	if !ok {
		g = GroupSMTP
	}
	now := e.clock()
	quiet := e.quiet(s, addr, now)
	limit := s.groups[g].threshold[trigI]
	if limit <= 0 || s.Bypass.Addr(addr) {
		return Verdict{Decision: Decision{Action: Refuse}, Quiet: quiet}
	}
	p := s.prefixOf(addr)
	n := e.counters.add(p, g, trigI, now, connectionWindow, limit, 0)
	e.clusterCount(Event{Prefix: p, Group: g, Reason: reason.Connections, Window: connectionWindow, Limit: limit,
		Addr: addr, Service: svc.String(), Detail: "refused connections"})
	if n >= limit {
		if s.groups[g].logOnly[trigI] {
			e.log.Info("would block (log only)", "prefix", p.String(), "reason", reason.Connections.String(),
				"why", reason.Connections.Name(), "service", svc.String(), "detail", "refused connections", "count", n)
		} else if e.autoBlockable(s, addr, p) {
			b, _ := e.block(s, offense{prefix: p, reason: reason.Connections, service: svc.String(),
				detail: "refused connections", hits: n, first: now})
			return Verdict{Decision: Decision{Action: Refuse, Blocked: true, Reason: b.Reason}, Quiet: quiet}
		}
	}
	return Verdict{Decision: Decision{Action: Refuse}, Quiet: quiet}
}

// quiet counts a refusal of addr and reports whether the address has had
// more than AnsweredRefusals in the last minute.
func (e *Engine) quiet(s *Settings, addr netip.Addr, now time.Time) bool {
	return e.counters.add(s.prefixOf(addr), groupAll, trigRefused, now, connectionWindow, AnsweredRefusals, 0) > AnsweredRefusals
}

// BlockOf returns the active block covering addr, if any.
func (e *Engine) BlockOf(addr netip.Addr) (store.Block, bool) {
	ent, ok := activeBlock(e.blocks.Load(), addr.Unmap(), e.clock())
	if !ok {
		return store.Block{}, false
	}
	return ent.block(), true
}

// LiveSessions returns the number of open sessions.
func (e *Engine) LiveSessions() int { return e.live.count() }

// LiveSessionsByService returns the number of open sessions of each
// service (indexed by service.Service), for a metrics scrape.
func (e *Engine) LiveSessionsByService() [service.Count]int {
	var n [service.Count]int
	e.live.countByService(&n)
	return n
}

// Blocks returns every block, expired ones included, with current counters.
func (e *Engine) Blocks() []store.Block {
	tbl := e.blocks.Load()
	out := make([]store.Block, 0, tbl.Size())
	for _, ent := range tbl.All() {
		out = append(out, ent.block())
	}
	return out
}

// autoBlockable reports whether the engine may block addr by itself: never
// a trusted upstream nor an address on the bypass list (self-lockout guard).
func autoBlockable(s *Settings, addr netip.Addr) bool {
	if s.Policy != nil && s.Policy.TrustedUpstream(addr) {
		return false
	}
	return !s.Bypass.Addr(addr)
}

// offense describes a block the engine is about to make.
type offense struct {
	prefix  netip.Prefix
	reason  reason.Code
	service string
	detail  string
	hits    int
	first   time.Time
}

// block makes (or refreshes) an automatic block: into the in-memory table,
// so Admit enforces it at once, and queued for the store. It does not wait
// for the store: the session that tripped the block may run on an event
// loop, whose other sessions must not wait for a commit (10 s at most,
// the store timeout, on a disk that stalls). A write that fails marks the
// block for the next Sweep to write again. An active block of the same
// prefix is refreshed (hits, last seen), not extended.
func (e *Engine) block(s *Settings, o offense) (store.Block, bool) {
	now := e.clock()
	e.mu.Lock()
	tbl := e.blocks.Load()
	if ent, ok := tbl.Get(o.prefix); ok && ent.active(now) {
		ent.hit(now)
		e.mu.Unlock()
		return ent.block(), false
	}
	level := 0
	if h, ok := e.history[o.prefix]; ok && now.Sub(h.last) < s.Memory {
		level = h.level + 1
	}
	if o.first.IsZero() {
		o.first = now
	}
	b := store.Block{
		Prefix: o.prefix, Reason: o.reason, Service: o.service, Detail: o.detail,
		FirstSeen: o.first.UTC(), LastSeen: now.UTC(), Hits: int64(max(o.hits, 1)),
		Expires: now.Add(s.blockDuration(level)).UTC(), Node: e.node, By: "engine", Level: level,
	}
	ent := newEntry(b)
	e.blocks.Store(tbl.InsertPersist(o.prefix, ent))
	e.history[o.prefix] = offence{level: level, last: now}
	// The log line once the write is done (the writer goroutine calls
	// after): a "blocked" line names a block that is in the store, or
	// follows the line that says it is not.
	e.wq.push(writeOp{kind: opPut, blocks: []store.Block{b}, after: func(err error) {
		if err != nil {
			ent.dirty.Store(true) // retried by the next Sweep
			e.log.Error("block enforced but not stored; will retry", "prefix", o.prefix.String(), "reason", o.reason.String(), "err", err)
		}
		e.log.Warn("blocked", "prefix", o.prefix.String(), "reason", o.reason.String(), "why", o.reason.Name(),
			"service", o.service, "detail", o.detail, "for", b.Expires.Sub(now).Round(time.Second).String(), "level", level)
	}})
	e.publish(Change{Kind: ChangePut, Blocks: []store.Block{b}, Auto: true})
	e.mu.Unlock()

	e.counters.resetPrefix(o.prefix)
	if e.obs != nil {
		e.obs.Blocked(o.reason)
	}
	e.notifyBlock(b, true)
	return b, true
}

// closeLive closes the live sessions inside p except skip.
func (e *Engine) closeLive(p netip.Prefix, skip *Session) int {
	return e.live.closeIn(p, skip)
}

// wait waits for a queued store write, bounded by the store timeout.
func (e *Engine) wait(done <-chan error) error {
	if done == nil {
		return nil
	}
	t := time.NewTimer(e.timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errors.New("store write timed out")
	}
}

// validPrefix checks an administrator's target.
func validPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid address or prefix")
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return fmt.Errorf("%s: write IPv4 addresses as IPv4, without zones", p)
	}
	if p != p.Masked() {
		return fmt.Errorf("%s has host bits set; did you mean %s?", p, p.Masked())
	}
	return nil
}

// BlockManual blocks p for d (0: the block time in force), reason U. It
// returns after the block is stored; live sessions inside p are closed when
// close_blocked_connection is on.
func (e *Engine) BlockManual(ctx context.Context, p netip.Prefix, d time.Duration, comment, actor string) (store.Block, error) {
	if err := validPrefix(p); err != nil {
		return store.Block{}, err
	}
	if d < 0 {
		return store.Block{}, errors.New("negative duration")
	}
	s := e.settings.Load()
	if d == 0 {
		d = s.BlockTime
	}
	now := e.clock()
	b := store.Block{
		Prefix: p, Reason: reason.Manual, FirstSeen: now.UTC(), LastSeen: now.UTC(),
		Expires: now.Add(d).UTC(), Node: e.node, By: "admin:" + actor, Comment: comment,
	}
	e.mu.Lock()
	if old, ok := e.blocks.Load().Get(p); ok {
		b.Hits = old.hits.Load()
	}
	e.blocks.Store(e.blocks.Load().InsertPersist(p, newEntry(b)))
	done := e.wq.push(writeOp{kind: opPut, blocks: []store.Block{b}})
	e.publish(Change{Kind: ChangePut, Blocks: []store.Block{b}, Actor: actor})
	e.mu.Unlock()
	if e.obs != nil {
		e.obs.Blocked(reason.Manual)
	}
	e.notifyBlock(b, false)
	if err := e.waitCtx(ctx, done); err != nil {
		return store.Block{}, fmt.Errorf("storing block %s: %w", p, err)
	}
	detail := "for " + d.String()
	if comment != "" {
		detail += "; " + comment
	}
	e.audit(ctx, store.AuditEntry{Time: now, Actor: actor, Action: "block", Target: p.String(), Detail: detail})
	if s.CloseBlocked {
		e.closeLive(p, nil)
	}
	e.log.Warn("blocked by administrator", "prefix", p.String(), "for", d.String(), "actor", actor, "comment", comment)
	return b, nil
}

// Unblock removes the blocks of exactly these prefixes and forgets their
// counters. It returns how many blocks existed; only those are recorded
// in the audit log. UnblockAll and PurgeExpired record nothing when they
// remove nothing.
func (e *Engine) Unblock(ctx context.Context, prefixes []netip.Prefix, actor string) (int, error) {
	for _, p := range prefixes {
		if err := validPrefix(p); err != nil {
			return 0, err
		}
	}
	e.mu.Lock()
	tbl := e.blocks.Load()
	var removed []netip.Prefix
	var gone []store.Block // for the notifier
	for _, p := range prefixes {
		if ent, ok := tbl.Get(p); ok { // a repeated prefix is gone by its second turn
			tbl = tbl.DeletePersist(p)
			removed = append(removed, p)
			if e.notify != nil {
				gone = append(gone, ent.rec)
			}
		}
	}
	n := len(removed)
	e.blocks.Store(tbl)
	done := e.wq.push(writeOp{kind: opDelete, prefixes: slices.Clone(prefixes)})
	e.publish(Change{Kind: ChangeDelete, Prefixes: slices.Clone(prefixes), Actor: actor})
	e.mu.Unlock()
	for _, p := range prefixes {
		e.counters.reset(p)
	}
	e.notifyUnblock(gone, actor)
	if err := e.waitCtx(ctx, done); err != nil {
		return n, fmt.Errorf("removing blocks from the store: %w", err)
	}
	// The audit log records what changed: a prefix that was not blocked
	// was not unblocked.
	for _, p := range removed {
		e.audit(ctx, store.AuditEntry{Time: e.clock(), Actor: actor, Action: "unblock", Target: p.String()})
	}
	return n, nil
}

// UnblockAll removes every block.
func (e *Engine) UnblockAll(ctx context.Context, actor string) (int, error) {
	e.mu.Lock()
	n := e.blocks.Load().Size()
	var gone []store.Block // for the notifier
	if e.notify != nil {
		for _, ent := range e.blocks.Load().All() {
			gone = append(gone, ent.rec)
		}
	}
	e.blocks.Store(new(blockTable))
	done := e.wq.push(writeOp{kind: opDeleteAll})
	e.publish(Change{Kind: ChangeDeleteAll, Actor: actor})
	e.mu.Unlock()
	e.resetAllCounters()
	e.notifyUnblock(gone, actor)
	if err := e.waitCtx(ctx, done); err != nil {
		return n, fmt.Errorf("removing all blocks from the store: %w", err)
	}
	if n > 0 {
		e.audit(ctx, store.AuditEntry{Time: e.clock(), Actor: actor, Action: "unblock-all", Detail: fmt.Sprintf("%d blocks", n)})
	}
	return n, nil
}

func (e *Engine) resetAllCounters() {
	for i := range e.counters.shards {
		s := &e.counters.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// PurgeExpired removes every block that has expired by now (IceWarp's
// "Remove All Expired").
func (e *Engine) PurgeExpired(ctx context.Context, actor string) (int, error) {
	now := e.clock()
	n, err := e.purge(ctx, now)
	if e.cluster != nil {
		e.mu.Lock()
		e.publish(Change{Kind: ChangePurge, Before: now, Actor: actor})
		e.mu.Unlock()
	}
	if err != nil {
		return n, err
	}
	if n > 0 {
		e.audit(ctx, store.AuditEntry{Time: e.clock(), Actor: actor, Action: "purge-expired", Detail: fmt.Sprintf("%d blocks", n)})
	}
	return n, nil
}

// purge removes blocks expired at or before cut.
func (e *Engine) purge(ctx context.Context, cut time.Time) (int, error) {
	e.mu.Lock()
	tbl := e.blocks.Load()
	var gone []netip.Prefix
	var recs []store.Block // for the notifier
	for p, ent := range tbl.All() {
		if !ent.rec.Expires.IsZero() && !cut.Before(ent.rec.Expires) {
			gone = append(gone, p)
			if e.notify != nil {
				recs = append(recs, ent.rec)
			}
		}
	}
	for _, p := range gone {
		tbl = tbl.DeletePersist(p)
	}
	e.blocks.Store(tbl)
	done := e.wq.push(writeOp{kind: opPurge, before: cut})
	e.mu.Unlock()
	e.notifyUnblock(recs, "expired")
	if err := e.waitCtx(ctx, done); err != nil {
		return len(gone), fmt.Errorf("purging expired blocks from the store: %w", err)
	}
	return len(gone), nil
}

// Import adds blocks as they are (reason, times and all), replacing blocks
// of the same prefixes. Either every block is valid, stored and enforced,
// or none is: the blocks are checked first (a prefix, reason or time the
// store cannot hold is refused before anything changes), then enforced and
// stored in one transaction; if the store write fails, the blocks are taken
// out of the table again (where nothing newer replaced them meanwhile) and
// the blocks they replaced come back. Import keeps blocks and may set their
// Node; the caller must not change them afterwards.
func (e *Engine) Import(ctx context.Context, blocks []store.Block, actor string) (int, error) {
	for i := range blocks {
		b := &blocks[i]
		if err := validPrefix(b.Prefix); err != nil {
			return 0, fmt.Errorf("block %d: %w", i+1, err)
		}
		if !b.Reason.Valid() {
			return 0, fmt.Errorf("block %d (%s): unknown reason %q", i+1, b.Prefix, string(rune(b.Reason)))
		}
		if err := store.CheckBlock(b); err != nil {
			return 0, fmt.Errorf("block %d: %w", i+1, err)
		}
		if b.Node == "" {
			b.Node = e.node
		}
	}
	if len(blocks) == 0 {
		return 0, nil
	}
	ours := make([]*entry, len(blocks))
	e.mu.Lock()
	old := e.blocks.Load()
	// One copy of the table, changed in place: far less garbage than a
	// persistent insert per block for a large import.
	tbl := old.Clone()
	for i, b := range blocks {
		ours[i] = newEntry(b)
		tbl.Insert(b.Prefix, ours[i])
	}
	e.blocks.Store(tbl)
	done := e.wq.push(writeOp{kind: opPut, blocks: blocks, timeout: importTimeout(e.timeout, len(blocks)), alone: true})
	e.mu.Unlock()
	// Wait for the outcome whatever ctx says: the writer bounds it, and only
	// the outcome tells whether the blocks must come out again. A write
	// queued after the writer stopped is never made.
	var err error
	select {
	case err = <-done:
	case <-e.wdone:
		select {
		case err = <-done:
		default:
			err = ErrClosed
		}
	}
	if err != nil {
		e.rollback(old, blocks, ours)
		return 0, fmt.Errorf("storing imported blocks (none imported): %w", err)
	}
	e.mu.Lock()
	for _, b := range blocks {
		e.remember(b)
	}
	// Announced once stored: a failed import is rolled back and must not
	// reach the other nodes.
	e.publish(Change{Kind: ChangePut, Blocks: slices.Clone(blocks), Actor: actor})
	e.mu.Unlock()
	e.audit(ctx, store.AuditEntry{Time: e.clock(), Actor: actor, Action: "import", Detail: fmt.Sprintf("%d blocks", len(blocks))})
	return len(blocks), nil
}

// importTimeout bounds the store write of an import of n blocks: the
// engine's store timeout, plus 250 µs a block (50 s more for 200,000, ten
// times what a quiet machine needs).
func importTimeout(base time.Duration, n int) time.Duration {
	return base + time.Duration(n)*250*time.Microsecond
}

// rollback takes an import whose store write failed out of the table:
// each prefix still holding the entry the import put there gets back what
// it held in old (or nothing). Changes made since (a newer block, an
// unblock) stay. The store never saw the import, so table and store agree
// again.
//
// An imported block that was hit while the write was pending may have been
// queued again by a Sweep (to save its hit count) behind the failed write;
// for those prefixes the store is put back as well, in queue order, so it
// never keeps a block the table dropped.
func (e *Engine) rollback(old *blockTable, blocks []store.Block, ours []*entry) {
	e.mu.Lock()
	tbl := e.blocks.Load().Clone()
	var restore []store.Block
	var drop []netip.Prefix
	for i, b := range blocks {
		if cur, ok := tbl.Get(b.Prefix); !ok || cur != ours[i] {
			continue
		}
		hit := ours[i].hits.Load() != b.Hits
		if prev, ok := old.Get(b.Prefix); ok {
			tbl.Insert(b.Prefix, prev)
			if hit {
				restore = append(restore, prev.block())
			}
		} else {
			tbl.Delete(b.Prefix)
			if hit {
				drop = append(drop, b.Prefix)
			}
		}
	}
	e.blocks.Store(tbl)
	var dones []<-chan error
	if len(restore) > 0 {
		dones = append(dones, e.wq.push(writeOp{kind: opPut, blocks: restore}))
	}
	if len(drop) > 0 {
		dones = append(dones, e.wq.push(writeOp{kind: opDelete, prefixes: drop}))
	}
	e.mu.Unlock()
	for _, d := range dones {
		if err := e.wait(d); err != nil {
			e.log.Error("undoing a failed import in the store", "err", err)
		}
	}
}

// Audit returns the audit log, newest first.
func (e *Engine) Audit(ctx context.Context, since time.Time, limit int) ([]store.AuditEntry, error) {
	if e.st == nil {
		return nil, nil
	}
	return e.st.Audit(ctx, since, limit)
}

func (e *Engine) audit(ctx context.Context, a store.AuditEntry) {
	if e.st == nil {
		return
	}
	a.Time = a.Time.UTC()
	if e.cluster != nil && e.node != "" && !strings.Contains(a.Actor, "@") {
		a.Actor += "@" + e.node // cluster mode: the audit names the node
	}
	if err := e.st.AppendAudit(ctx, a); err != nil {
		e.log.Error("audit log write failed", "action", a.Action, "err", err)
	}
}

func (e *Engine) waitCtx(ctx context.Context, done <-chan error) error {
	if done == nil {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sweep does the periodic housekeeping at now: it drops stale counters,
// purges blocks expired longer than purge_expired_after ago, and writes
// changed hit counts (and blocks whose store write failed) to the store.
func (e *Engine) Sweep(ctx context.Context) error {
	s := e.settings.Load()
	now := e.clock()
	e.counters.sweep(now)
	e.accounts.sweep(now, s.BlockTime)
	e.mu.Lock()
	for p, h := range e.history {
		if now.Sub(h.last) >= s.Memory {
			delete(e.history, p)
		}
	}
	var dirty []store.Block
	for _, ent := range e.blocks.Load().All() {
		if ent.dirty.Swap(false) {
			dirty = append(dirty, ent.block())
		}
	}
	var done <-chan error
	if len(dirty) > 0 {
		done = e.wq.push(writeOp{kind: opPut, blocks: dirty})
	}
	e.mu.Unlock()
	if err := e.waitCtx(ctx, done); err != nil {
		return fmt.Errorf("saving hit counts: %w", err)
	}
	if s.PurgeAfter > 0 {
		if n, err := e.purge(ctx, now.Add(-s.PurgeAfter)); err != nil {
			return err
		} else if n > 0 {
			e.log.Info("purged expired blocks", "count", n, "expired_before", now.Add(-s.PurgeAfter).UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// Run sweeps every interval until ctx is done.
func (e *Engine) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("housekeeping", "err", err)
			}
		}
	}
}
