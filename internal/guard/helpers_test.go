package guard

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/bypass"
	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// memStore is an in-memory Store that records what it was asked to do.
type memStore struct {
	mu     sync.Mutex
	blocks map[netip.Prefix]store.Block
	audit  []store.AuditEntry
	puts   int
	delay  time.Duration // each PutBlocks takes this long
	fail   error
	engine *Engine       // whose writes get and len wait for (nil: none)
	gate   chan struct{} // set before use: PutBlocks waits for it
}

func newMemStore() *memStore { return &memStore{blocks: make(map[netip.Prefix]store.Block)} }

func (m *memStore) PutBlocks(ctx context.Context, bs []store.Block) error {
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	if m.gate != nil {
		<-m.gate // a disk that stalls until the test lets it go
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.puts++
	for _, b := range bs {
		m.blocks[b.Prefix] = b
	}
	return nil
}
func (m *memStore) DeleteBlocks(ctx context.Context, ps []netip.Prefix) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range ps {
		if _, ok := m.blocks[p]; ok {
			n++
			delete(m.blocks, p)
		}
	}
	return n, nil
}
func (m *memStore) DeleteAllBlocks(ctx context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.blocks)
	clear(m.blocks)
	return n, nil
}
func (m *memStore) PurgeExpired(ctx context.Context, before time.Time) ([]netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []netip.Prefix
	for p, b := range m.blocks {
		if !b.Expires.IsZero() && !before.Before(b.Expires) {
			out = append(out, p)
			delete(m.blocks, p)
		}
	}
	return out, nil
}
func (m *memStore) LoadBlocks(ctx context.Context) ([]store.Block, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Block
	for _, b := range m.blocks {
		out = append(out, b)
	}
	return out, nil
}
func (m *memStore) AppendAudit(ctx context.Context, es ...store.AuditEntry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audit = append(m.audit, es...)
	return nil
}
func (m *memStore) Audit(ctx context.Context, since time.Time, limit int) ([]store.AuditEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.audit)
	slices.Reverse(out)
	return out, nil
}
func (m *memStore) get(p string) (store.Block, bool) {
	m.sync()
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blocks[netip.MustParsePrefix(p)]
	return b, ok
}

// sync waits for the engine's queued writes (automatic blocks are not
// waited for by the session that trips them).
func (m *memStore) sync() {
	if m.engine != nil {
		if err := m.engine.Sync(context.Background()); err != nil {
			panic(err)
		}
	}
}

func (m *memStore) len() int {
	m.sync()
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.blocks)
}

// settingsFrom compiles a configuration text into Settings; files maps
// extra file names (relative to the config) to contents.
func settingsFrom(t testing.TB, yaml string, files map[string]string) *Settings {
	t.Helper()
	s, err := tryCompile(t, yaml, files)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tryCompile(t testing.TB, yaml string, files map[string]string) (*Settings, error) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse(filepath.Join(dir, "postern.yaml"), []byte(yaml))
	if err != nil {
		return nil, err
	}
	var srcs []patterns.Source
	for _, p := range cfg.Patterns {
		srcs = append(srcs, patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos, Quoted: p.Text.Quoted})
	}
	reg, err := patterns.Compile(srcs, patterns.Options{})
	if err != nil {
		return nil, err
	}
	pol, _, err := policy.Build(cfg, reg)
	if err != nil {
		return nil, err
	}
	// The bypass list is loaded as the snapshot build loads it.
	var byp *bypass.List
	if bf := cfg.IntrusionPrevention.BypassFile; bf.IsSet() {
		byp, err = bypass.Load(context.Background(), bf.Value, bf.Pos, fakeResolver)
		if err != nil {
			return nil, err
		}
	}
	return Compile(cfg, reg, pol, byp)
}

// fakeResolver resolves mx.partner.example only.
func fakeResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "mx.partner.example" {
		return []netip.Addr{netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("2001:db8:25::1")}, nil
	}
	return nil, &os.PathError{Op: "lookup", Path: host, Err: os.ErrNotExist}
}

type harness struct {
	e     *Engine
	clock *fakeClock
	st    *memStore
}

func newHarness(t testing.TB, yaml string, files map[string]string) *harness {
	t.Helper()
	h := &harness{clock: newClock(), st: newMemStore()}
	e, err := New(context.Background(), settingsFrom(t, yaml, files), Options{Store: h.st, Clock: h.clock.Now, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	h.e = e
	h.st.engine = e
	return h
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// open opens a session on service from addr.
func (h *harness) open(addr string, svc service.Service) *Session {
	s, _ := h.e.Open(ip(addr), svc, nil)
	return s
}

const services = `
services:
  smtp: { listen: ":25", backend: "b:25" }
  submission: { listen: ":587", backend: "b:587" }
  imap: { listen: ":143", backend: "b:143" }
  web: { listen: ":443", backend: "http://b" }
`
