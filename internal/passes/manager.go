package passes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/store"
)

// ErrInvalid marks a request that is the caller's fault (a bad account,
// list, duration or comment, or an account no login restriction applies
// to); its text says what is wrong.
var ErrInvalid = errors.New("invalid pass")

// ErrNotFound marks a pass ID that names no pass.
var ErrNotFound = errors.New("no such pass")

// Audit actions of passes.
const (
	ActionAdd    = "pass-add"
	ActionRemove = "pass-remove"
	ActionSweep  = "pass-sweep"
)

// Store is where passes are kept, with the blocks (*store.DB is one).
type Store interface {
	PutPass(ctx context.Context, p store.Pass) error
	DeletePasses(ctx context.Context, ids []string) (int, error)
	LoadPasses(ctx context.Context) ([]store.Pass, error)
	AppendAudit(ctx context.Context, entries ...store.AuditEntry) error
}

// AddRequest asks for a pass: For (a duration, "14d") or Until (an end
// time), exactly one.
type AddRequest struct {
	Account string    `json:"account"`
	From    string    `json:"from"`
	For     string    `json:"for,omitempty"`
	Until   time.Time `json:"until,omitzero"`
	Comment string    `json:"comment,omitempty"`
}

// Manager adds, removes and lists passes: the table the login gate
// consults, the store that keeps them across restarts, and the audit log.
// It is safe for concurrent use.
type Manager struct {
	tab *Table
	st  Store // nil: kept in memory only
	pol func() *policy.Policy
	pub Publisher // nil: no cluster (remote.go)

	mu sync.Mutex // serializes changes: the table and the store agree
}

// NewManager returns a manager of tab, kept in st (nil: memory only),
// whose lists compile against, and whose accounts resolve as, the running
// policy pol returns.
func NewManager(tab *Table, st Store, pol func() *policy.Policy) *Manager {
	return &Manager{tab: tab, st: st, pol: pol}
}

// Table is the manager's table.
func (m *Manager) Table() *Table { return m.tab }

// Load reads every stored pass into the table (at start). A pass whose
// list no longer compiles stays, never matching; its error is returned
// among the warnings.
func (m *Manager) Load(ctx context.Context) (warnings []error, err error) {
	if m.st == nil {
		return nil, nil
	}
	rows, err := m.st.LoadPasses(ctx)
	if err != nil {
		return nil, fmt.Errorf("load travel passes: %w", err)
	}
	ps := make([]Pass, len(rows))
	for i, r := range rows {
		ps[i] = Pass{ID: r.ID, Account: r.Account, From: r.From, Created: r.Created, Until: r.Until, By: r.By, Comment: r.Comment}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tab.Load(ps, m.compiler()), nil
}

// Recompile compiles every pass's list against the running policy again
// (after a reload) and returns the lists that no longer compile.
func (m *Manager) Recompile() []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tab.Recompile(m.compiler())
}

func (m *Manager) compiler() Compiler {
	pol := m.pol()
	return pol.CompileLoginList
}

// List returns the passes in force (see Table.List).
func (m *Manager) List() []Pass { return m.tab.List() }

// Add checks and adds a pass by actor, stores it and records it in the
// audit log. The account is resolved as the backend resolves login names;
// an account (or domain) that no login restriction applies to is refused,
// since a pass there would change nothing.
func (m *Manager) Add(ctx context.Context, rq AddRequest, actor string) (Pass, error) {
	now := m.tab.Now()
	pol := m.pol()
	account := strings.TrimSpace(rq.Account)
	if strings.HasPrefix(account, "@") {
		account = "@" + pol.Logins().Canon(account[1:])
	} else if strings.Contains(account, "@") {
		account = pol.Logins().Canon(account)
	}
	p := Pass{ID: NewID(), Account: account, From: strings.TrimSpace(rq.From), Created: now, By: actor, Comment: strings.TrimSpace(rq.Comment)}
	switch {
	case rq.For != "" && !rq.Until.IsZero():
		return Pass{}, fmt.Errorf("%w: give a duration (for) or an end (until), not both", ErrInvalid)
	case rq.For != "":
		d, err := ParseDuration(rq.For)
		if err != nil {
			return Pass{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		p.Until = now.Add(d)
	case !rq.Until.IsZero():
		p.Until = rq.Until
	default:
		return Pass{}, fmt.Errorf("%w: give how long the pass lasts (for, e.g. 14d) or when it ends (until)", ErrInvalid)
	}
	set, err := Check(&p, now, pol.CompileLoginList)
	if err != nil {
		return Pass{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !pol.Restricted(p.Account) {
		return Pass{}, fmt.Errorf("%w: no login IP restriction applies to %s, so it may already log in from anywhere; a pass would change nothing (add a login_restrictions line first)", ErrInvalid, p.Account)
	}
	p.Until = p.Until.UTC()
	p.Created = p.Created.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st != nil {
		if err := m.st.PutPass(ctx, store.Pass{ID: p.ID, Account: p.Account, From: p.From, Created: p.Created, Until: p.Until, By: p.By, Comment: p.Comment}); err != nil {
			return Pass{}, fmt.Errorf("store travel pass for %s: %w", p.Account, err)
		}
	}
	m.tab.Put(p, set)
	m.audit(ctx, store.AuditEntry{Time: now, Actor: actor, Action: ActionAdd, Target: p.Account,
		Detail: fmt.Sprintf("id=%s from=%q until=%s comment=%q", p.ID, p.From, p.Until.Format(time.RFC3339), p.Comment)})
	if m.pub != nil {
		m.pub.Added(p)
	}
	return p, nil
}

// Remove deletes the pass with the given ID by actor, from the table and
// the store, and records it in the audit log.
func (m *Manager) Remove(ctx context.Context, id, actor string) (Pass, error) {
	id = strings.TrimSpace(id)
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.tab.Get(id)
	if !ok {
		return Pass{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if m.st != nil {
		if _, err := m.st.DeletePasses(ctx, []string{id}); err != nil {
			return Pass{}, fmt.Errorf("delete travel pass %s: %w", id, err)
		}
	}
	m.tab.Remove(id)
	m.audit(ctx, store.AuditEntry{Time: m.tab.Now(), Actor: actor, Action: ActionRemove, Target: p.Account,
		Detail: fmt.Sprintf("id=%s from=%q until=%s", p.ID, p.From, p.Until.Format(time.RFC3339))})
	if m.pub != nil {
		m.pub.Removed(p)
	}
	return p, nil
}

// Sweep deletes the expired passes from the table and the store; expired
// passes already allow nothing, so this only tidies.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gone := m.tab.Sweep()
	if len(gone) == 0 || m.st == nil {
		return len(gone), nil
	}
	ids := make([]string, len(gone))
	for i, p := range gone {
		ids[i] = p.ID
	}
	if _, err := m.st.DeletePasses(ctx, ids); err != nil {
		return 0, fmt.Errorf("delete expired travel passes: %w", err)
	}
	return len(gone), nil
}

// audit records e; the change is made already, so a failure to record it
// is not the request's failure (the store logs write errors).
func (m *Manager) audit(ctx context.Context, e store.AuditEntry) {
	if m.st != nil {
		_ = m.st.AppendAudit(ctx, e)
	}
}
