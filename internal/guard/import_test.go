package guard

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// An import the store refuses leaves nothing enforced: the imported blocks
// come out of the table again and the blocks they replaced come back.
func TestImportFailedStoreEnforcesNothing(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	ctx := context.Background()
	if _, err := h.e.BlockManual(ctx, netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "kept", "cli"); err != nil {
		t.Fatal(err)
	}
	h.st.mu.Lock()
	h.st.fail = errors.New("disk full")
	h.st.mu.Unlock()
	imp := []store.Block{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Reason: reason.Login, Expires: h.clock.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Reason: reason.Relay},
	}
	n, err := h.e.Import(ctx, imp, "cli")
	if err == nil || n != 0 || !strings.Contains(err.Error(), "none imported") || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("import into a failing store = %d, %v", n, err)
	}
	if a := h.e.Admit(ip("198.51.100.7"), service.SMTP); a.Action != Allow {
		t.Fatalf("a failed import is enforced: %+v", a)
	}
	if a := h.e.Admit(ip("192.0.2.1"), service.SMTP); a.Reason != reason.Manual {
		t.Fatalf("the block a failed import replaced did not come back: %+v", a)
	}
	if bs := h.e.Blocks(); len(bs) != 1 || bs[0].Comment != "kept" {
		t.Fatalf("blocks after a failed import: %+v", bs)
	}
	for _, a := range h.st.audit {
		if a.Action == "import" {
			t.Fatal("a failed import is in the audit log")
		}
	}

	// The store works again: the same import goes through whole.
	h.st.mu.Lock()
	h.st.fail = nil
	h.st.mu.Unlock()
	if n, err := h.e.Import(ctx, imp, "cli"); n != 2 || err != nil {
		t.Fatalf("import: %d %v", n, err)
	}
	if h.e.Admit(ip("198.51.100.7"), service.SMTP).Reason != reason.Relay || h.e.Admit(ip("192.0.2.1"), service.SMTP).Reason != reason.Login {
		t.Fatal("a stored import is not enforced")
	}
	if b, ok := h.st.get("198.51.100.7/32"); !ok || b.Node != "test" {
		t.Fatalf("stored import: %+v %v (the node is filled in for the store too)", b, ok)
	}
}

// A block the store cannot hold (a time outside its range) is refused
// before anything changes, naming the block.
func TestImportRefusesTimesTheStoreCannotHold(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	imp := []store.Block{
		{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Reason: reason.Relay},
		{Prefix: netip.MustParsePrefix("198.51.100.8/32"), Reason: reason.Relay, Expires: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	_, err := h.e.Import(context.Background(), imp, "cli")
	if err == nil || !strings.Contains(err.Error(), "block 2: 198.51.100.8/32: expires: time 9999-01-01T00:00:00Z out of range") {
		t.Fatalf("import of year 9999: %v", err)
	}
	if h.e.Admit(ip("198.51.100.7"), service.SMTP).Action != Allow || len(h.e.Blocks()) != 0 || h.st.puts != 0 {
		t.Fatal("a refused import changed something")
	}
}

// gatedStore holds the writer on a put of gate until release is closed,
// and fails every put that holds poison.
type gatedStore struct {
	*memStore
	gate, poison netip.Prefix
	release      chan struct{}
	mu           sync.Mutex
	batches      []int // sizes of the puts tried
}

func (g *gatedStore) PutBlocks(ctx context.Context, bs []store.Block) error {
	g.mu.Lock()
	g.batches = append(g.batches, len(bs))
	g.mu.Unlock()
	for _, b := range bs {
		if b.Prefix == g.gate {
			<-g.release
		}
		if b.Prefix == g.poison {
			return errors.New("constraint failed")
		}
	}
	return g.memStore.PutBlocks(ctx, bs)
}

// One failing write in a group commit does not fail the others: the
// group is retried one by one.
func TestGroupCommitFailureIsolated(t *testing.T) {
	st := &gatedStore{memStore: newMemStore(), gate: netip.MustParsePrefix("192.0.2.1/32"),
		poison: netip.MustParsePrefix("192.0.2.3/32"), release: make(chan struct{})}
	clock := newClock()
	e, err := New(context.Background(), settingsFrom(t, allTriggers, nil), Options{Store: st, Clock: clock.Now, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	results := make(map[string]chan error)
	block := func(p string) {
		results[p] = make(chan error, 1)
		go func() {
			_, err := e.BlockManual(ctx, netip.MustParsePrefix(p), time.Hour, "", "cli")
			results[p] <- err
		}()
	}
	block("192.0.2.1/32") // holds the writer
	waitUntil(t, func() bool { st.mu.Lock(); defer st.mu.Unlock(); return len(st.batches) == 1 })
	for _, p := range []string{"192.0.2.2/32", "192.0.2.3/32", "192.0.2.4/32"} {
		block(p)
	}
	waitUntil(t, func() bool { e.wq.mu.Lock(); defer e.wq.mu.Unlock(); return len(e.wq.ops) == 3 })
	close(st.release)
	for p, want := range map[string]bool{"192.0.2.1/32": true, "192.0.2.2/32": true, "192.0.2.3/32": false, "192.0.2.4/32": true} {
		select {
		case err := <-results[p]:
			if (err == nil) != want {
				t.Errorf("block %s: %v", p, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("block %s: no answer", p)
		}
		if _, ok := st.get(p); ok != want {
			t.Errorf("block %s stored: %v, want %v", p, ok, want)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if got := st.batches; len(got) != 5 || got[1] != 3 {
		t.Errorf("puts tried: %v, want [1 3 1 1 1] (the group of 3, then each alone)", got)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Account protection counts one account however its name is written, as
// the backend resolves it (logins.default_domain, case folded); the block
// detail names the account so.
func TestAccountKeysResolvedAsTheBackend(t *testing.T) {
	cfg := strings.Replace(allTriggers, "block_minutes: 60", "block_minutes: 60\n  account_protection: { failures: 3, delay: 2s }", 1) +
		"logins: { default_domain: Example.COM }\n"
	h := newHarness(t, cfg, nil)
	s := h.open("198.51.100.1", service.IMAP)
	for i, name := range []string{"ceo", "CEO@EXAMPLE.COM", "Ceo@Example.Com"} {
		h.open("192.0.2."+string(rune('1'+i)), service.IMAP).LoginFailed(name, 1)
	}
	for _, name := range []string{"ceo@example.com", "CEO", " ceo "} {
		if d := s.LoginDelay(name); d != 2*time.Second {
			t.Errorf("LoginDelay(%q) = %v: the three failures are one account's", name, d)
		}
	}
	if d := s.LoginDelay("ceo@other.example"); d != 0 {
		t.Error("another domain's ceo is another account")
	}
	// Three failures from one address block it; the detail names the
	// account as resolved.
	a := h.open("203.0.113.9", service.IMAP)
	a.LoginFailed("Bob", 1)
	a.LoginFailed("bob@example.com", 2)
	if d := a.LoginFailed("BOB", 3); !d.Blocked {
		t.Fatal("three failed logins did not block")
	}
	b, ok := h.e.BlockOf(ip("203.0.113.9"))
	if !ok || !strings.Contains(b.Detail, "bob@example.com") {
		t.Fatalf("block detail %q does not name the account as resolved", b.Detail)
	}
}

// An import into a closed engine fails and leaves nothing enforced; it
// does not wait for a writer that has stopped.
func TestImportAfterClose(t *testing.T) {
	h := newHarness(t, allTriggers, nil)
	h.e.Close()
	done := make(chan error, 1)
	go func() {
		_, err := h.e.Import(context.Background(), []store.Block{{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Reason: reason.Relay}}, "cli")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("import after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("import after Close hangs")
	}
	if h.e.Admit(ip("198.51.100.7"), service.SMTP).Action != Allow {
		t.Fatal("a failed import is enforced")
	}
}

// A block of a failing import that was hit while the write was pending,
// and so queued again by a Sweep behind it, is taken out of the store too:
// the store never keeps a block the table dropped.
func TestImportRollbackUndoesSweptHits(t *testing.T) {
	imported := netip.MustParsePrefix("198.51.100.7/32")
	st := &gatedStore{memStore: newMemStore(), gate: netip.MustParsePrefix("198.51.100.8/32"),
		poison: netip.MustParsePrefix("198.51.100.8/32"), release: make(chan struct{})}
	e, err := New(context.Background(), settingsFrom(t, allTriggers, nil), Options{Store: st, Clock: newClock().Now, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	imp := make(chan error, 1)
	go func() {
		_, err := e.Import(ctx, []store.Block{{Prefix: imported, Reason: reason.Relay}, {Prefix: st.gate, Reason: reason.Relay}}, "cli")
		imp <- err
	}()
	waitUntil(t, func() bool { st.mu.Lock(); defer st.mu.Unlock(); return len(st.batches) == 1 })
	if e.Admit(ip("198.51.100.7"), service.SMTP).Action != Refuse {
		t.Fatal("the pending import is not enforced")
	}
	swept := make(chan error, 1)
	go func() { swept <- e.Sweep(ctx) }()
	waitUntil(t, func() bool { e.wq.mu.Lock(); defer e.wq.mu.Unlock(); return len(e.wq.ops) == 1 })
	close(st.release)
	if err := <-imp; err == nil {
		t.Fatal("the import did not fail")
	}
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	if e.Admit(ip("198.51.100.7"), service.SMTP).Action != Allow {
		t.Fatal("a failed import is enforced")
	}
	if b, ok := st.get("198.51.100.7/32"); ok {
		t.Fatalf("the store keeps a block of the failed import: %+v", b)
	}
}
