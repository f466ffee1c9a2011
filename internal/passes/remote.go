package passes

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/postern/postern/internal/store"
)

// Publisher announces this gateway's pass changes to the other gateways
// of a cluster: Added after a pass was added here, Removed after one was
// removed here. Both must return at once (queue, never wait on a network).
type Publisher interface {
	Added(p Pass)
	Removed(p Pass)
}

// SetPublisher makes the manager announce its adds and removes to pub
// (nil: none). Passes applied from the cluster are not announced again.
func (m *Manager) SetPublisher(pub Publisher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pub = pub
}

// CheckID checks that id has the form NewID gives (16 hex digits).
func CheckID(id string) error {
	if len(id) != 16 {
		return fmt.Errorf("pass id %.40q is not 16 hex digits", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return fmt.Errorf("pass id %.40q is not 16 hex digits", id)
	}
	return nil
}

// ApplyRemote adds a pass another gateway added (read from the cluster):
// it is checked and compiled against this gateway's running policy like a
// pass added here (an invalid one is refused with ErrInvalid), stored so
// it survives a restart, and written to the audit log with the actor as
// by@node. A pass already held is left alone. It reports whether the pass
// was added.
func (m *Manager) ApplyRemote(ctx context.Context, p Pass, node string) (bool, error) {
	if err := CheckID(p.ID); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	now := m.tab.Now()
	set, err := Check(&p, now, m.compiler())
	if err != nil {
		return false, fmt.Errorf("%w: pass %s from %s: %w", ErrInvalid, p.ID, node, err)
	}
	if len(p.By) > 200 {
		return false, fmt.Errorf("%w: pass %s: actor longer than 200 bytes", ErrInvalid, p.ID)
	}
	p.Until, p.Created = p.Until.UTC(), p.Created.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tab.Get(p.ID); ok {
		return false, nil
	}
	if m.st != nil {
		if err := m.st.PutPass(ctx, store.Pass{ID: p.ID, Account: p.Account, From: p.From, Created: p.Created, Until: p.Until, By: p.By, Comment: p.Comment}); err != nil {
			return false, fmt.Errorf("store travel pass %s from %s: %w", p.ID, node, err)
		}
	}
	m.tab.Put(p, set)
	m.audit(ctx, store.AuditEntry{Time: now, Actor: p.By + "@" + node, Action: ActionAdd, Target: p.Account,
		Detail: fmt.Sprintf("id=%s from=%q until=%s comment=%q", p.ID, p.From, p.Until.Format(time.RFC3339), p.Comment)})
	return true, nil
}

// RemoveRemote removes a pass another gateway removed (read from the
// cluster), from the table and the store, and writes it to the audit log.
// It reports whether this gateway held the pass.
func (m *Manager) RemoveRemote(ctx context.Context, id, node string) (bool, error) {
	if err := CheckID(id); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.tab.Get(id)
	if !ok {
		return false, nil
	}
	if m.st != nil {
		if _, err := m.st.DeletePasses(ctx, []string{id}); err != nil {
			return false, fmt.Errorf("delete travel pass %s removed on %s: %w", id, node, err)
		}
	}
	m.tab.Remove(id)
	m.audit(ctx, store.AuditEntry{Time: m.tab.Now(), Actor: "cluster@" + node, Action: ActionRemove, Target: p.Account,
		Detail: fmt.Sprintf("id=%s from=%q until=%s", p.ID, p.From, p.Until.Format(time.RFC3339))})
	return true, nil
}

// Held returns every pass in the table, expired or not, by ID.
func (m *Manager) Held() map[string]Pass {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Pass)
	for _, p := range m.tab.all() {
		out[p.ID] = p
	}
	return out
}
