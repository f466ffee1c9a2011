// Package admintest provides an in-memory admin.Engine for tests of the
// administration API and of the commands that use it.
package admintest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// DefaultBlockTime is the block time BlockManual uses for a zero duration.
const DefaultBlockTime = 4 * time.Hour

// Engine is an in-memory admin.Engine with a settable clock. It records
// the audit log and counts every call. The zero value is not usable; call
// New.
type Engine struct {
	mu     sync.Mutex
	now    time.Time
	blocks map[netip.Prefix]store.Block
	audit  []store.AuditEntry
	calls  int
	fail   error
}

var _ admin.Engine = (*Engine)(nil)

// New returns an empty engine whose clock stands at now.
func New(now time.Time) *Engine {
	return &Engine{now: now, blocks: map[netip.Prefix]store.Block{}}
}

// SetNow sets the clock.
func (e *Engine) SetNow(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = t
}

// FailWith makes every later mutating call fail with err (nil: succeed).
func (e *Engine) FailWith(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fail = err
}

// Put stores blocks directly, as if the engine had made them; it is
// neither counted nor audited.
func (e *Engine) Put(bs ...store.Block) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range bs {
		e.blocks[b.Prefix] = b
	}
}

// Get returns the block of p.
func (e *Engine) Get(p netip.Prefix) (store.Block, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.blocks[p]
	return b, ok
}

// Len returns the number of blocks.
func (e *Engine) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.blocks)
}

// Calls returns how many Engine methods have been called.
func (e *Engine) Calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

// AuditLog returns every audit entry, oldest first.
func (e *Engine) AuditLog() []store.AuditEntry {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.audit)
}

// Snapshot returns a copy of every block, keyed by prefix.
func (e *Engine) Snapshot() map[netip.Prefix]store.Block {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.blocks)
}

func (e *Engine) record(actor, action, target, detail string) {
	e.audit = append(e.audit, store.AuditEntry{Time: e.now, Actor: actor, Action: action, Target: target, Detail: detail})
}

// Blocks implements admin.Engine.
func (e *Engine) Blocks() []store.Block {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	return slices.Collect(maps.Values(e.blocks))
}

// BlockManual implements admin.Engine: a new block or an extended one.
func (e *Engine) BlockManual(_ context.Context, p netip.Prefix, d time.Duration, comment, actor string) (store.Block, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.fail != nil {
		return store.Block{}, e.fail
	}
	if d == 0 {
		d = DefaultBlockTime
	}
	b, ok := e.blocks[p]
	if !ok {
		b = store.Block{Prefix: p, FirstSeen: e.now, Node: "test"}
	}
	b.Reason, b.LastSeen, b.Expires = reason.Manual, e.now, e.now.Add(d)
	b.By, b.Comment = "admin:"+actor, comment
	e.blocks[p] = b
	e.record(actor, "block", p.String(), fmt.Sprintf("for %s: %s", d, comment))
	return b, nil
}

// Unblock implements admin.Engine.
func (e *Engine) Unblock(_ context.Context, prefixes []netip.Prefix, actor string) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.fail != nil {
		return 0, e.fail
	}
	n := 0
	for _, p := range prefixes {
		if _, ok := e.blocks[p]; ok {
			delete(e.blocks, p)
			e.record(actor, "unblock", p.String(), "")
			n++
		}
	}
	return n, nil
}

// PurgeExpired implements admin.Engine.
func (e *Engine) PurgeExpired(_ context.Context, actor string) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.fail != nil {
		return 0, e.fail
	}
	n := 0
	for p, b := range e.blocks {
		if b.Expired(e.now) {
			delete(e.blocks, p)
			n++
		}
	}
	if n > 0 {
		e.record(actor, "purge-expired", "", fmt.Sprintf("%d blocks", n))
	}
	return n, nil
}

// UnblockAll implements admin.Engine.
func (e *Engine) UnblockAll(_ context.Context, actor string) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.fail != nil {
		return 0, e.fail
	}
	n := len(e.blocks)
	clear(e.blocks)
	if n > 0 {
		e.record(actor, "unblock-all", "", fmt.Sprintf("%d blocks", n))
	}
	return n, nil
}

// Import implements admin.Engine: all or nothing. A block with detail
// "engine-refuses" is refused with admin.ErrBadRequest, to test that path.
func (e *Engine) Import(_ context.Context, blocks []store.Block, actor string) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.fail != nil {
		return 0, e.fail
	}
	for _, b := range blocks {
		if !b.Reason.Valid() || !b.Prefix.IsValid() {
			return 0, fmt.Errorf("%w: invalid block %v", admin.ErrBadRequest, b)
		}
		if strings.Contains(b.Detail, "engine-refuses") {
			return 0, fmt.Errorf("%w: the engine refuses %s", admin.ErrBadRequest, b.Prefix)
		}
	}
	for _, b := range blocks {
		e.blocks[b.Prefix] = b
	}
	e.record(actor, "import", "", fmt.Sprintf("%d blocks", len(blocks)))
	return len(blocks), nil
}

// Audit implements admin.Engine: entries at or after since, newest first.
func (e *Engine) Audit(_ context.Context, since time.Time, limit int) ([]store.AuditEntry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	var out []store.AuditEntry
	for i := len(e.audit) - 1; i >= 0 && len(out) < limit; i-- {
		if !e.audit[i].Time.Before(since) {
			out = append(out, e.audit[i])
		}
	}
	return out, nil
}

// Now implements admin.Engine.
func (e *Engine) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	return e.now
}
