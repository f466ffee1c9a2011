package passes_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/patterns"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func compile(t testing.TB) passes.Compiler {
	reg, err := patterns.Compile(nil, patterns.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return func(from string) (*patterns.Set, error) { return reg.Expr(patterns.Source{Text: from}) }
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"14d": 14 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour,
		"90m": 90 * time.Minute, "365d": passes.MaxDuration, " 1d ": 24 * time.Hour,
	}
	for in, want := range good {
		if got, err := passes.ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"": "empty", "366d": "longer than the 365d", "53w": "longer", "0d": "not positive",
		"-3h": "not positive", "d": "bad duration", "1.5d": "bad duration", "fortnight": "bad duration",
		"99999999d": "bad duration", "8761h": "longer",
	}
	for in, want := range bad {
		if _, err := passes.ParseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q) error = %v; want one saying %q", in, err, want)
		}
	}
}

func TestCheckAccount(t *testing.T) {
	for _, ok := range []string{"alice@example.com", "@example.com", "a.b+c@mail.example.org"} {
		if err := passes.CheckAccount(ok); err != nil {
			t.Errorf("CheckAccount(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "alice", "alice@", "@", "a@b@c", "*", "*@example.com", "a b@example.com",
		"alice@.example.com", "alice@example..com", "@example.com.", strings.Repeat("a", 320) + "@x.org", "a=b@example.com"} {
		if err := passes.CheckAccount(bad); err == nil {
			t.Errorf("CheckAccount(%q) accepted", bad)
		}
	}
}

func TestCheck(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	c := compile(t)
	base := passes.Pass{Account: "alice@example.com", From: "203.0.113.0/24", Until: now.Add(24 * time.Hour)}
	if set, err := passes.Check(&base, now, c); err != nil || set == nil {
		t.Fatalf("Check(good) = %v, %v", set, err)
	}
	cases := []struct {
		name string
		mod  func(*passes.Pass)
		want string
	}{
		{"no from", func(p *passes.Pass) { p.From = " " }, "no --from"},
		{"bad from", func(p *passes.Pass) { p.From = "300.1.1.1" }, "--from"},
		{"country without geo", func(p *passes.Pass) { p.From = "country:TH" }, "country"},
		{"past", func(p *passes.Pass) { p.Until = now }, "not in the future"},
		{"too long", func(p *passes.Pass) { p.Until = now.Add(passes.MaxDuration + time.Second) }, "365 days"},
		{"bad account", func(p *passes.Pass) { p.Account = "alice" }, "not an address"},
		{"long comment", func(p *passes.Pass) { p.Comment = strings.Repeat("x", passes.MaxComment+1) }, "comment"},
		{"comment newline", func(p *passes.Pass) { p.Comment = "a\nb" }, "line break"},
		{"long from", func(p *passes.Pass) { p.From = strings.Repeat("1.2.3.4 ", 300) }, "longer"},
	}
	for _, tc := range cases {
		p := base
		tc.mod(&p)
		if _, err := passes.Check(&p, now, c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check error = %v; want one saying %q", tc.name, err, tc.want)
		}
	}
}

// A pass lets its account (or its domain's accounts) in from its list
// while it lasts, and from the moment it ends no more: no job removes it,
// the check reads the clock. List hides it then; Sweep drops it.
func TestTableExpiry(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	tab := passes.NewTable(clk.now)
	c := compile(t)
	add := func(id, account, from string, d time.Duration) {
		p := passes.Pass{ID: id, Account: account, From: from, Created: clk.now(), Until: clk.now().Add(d)}
		set, err := passes.Check(&p, clk.now(), c)
		if err != nil {
			t.Fatal(err)
		}
		tab.Put(p, set)
	}
	add("a1", "alice@example.com", "203.0.113.0/24", 14*24*time.Hour)
	add("d1", "@example.org", "198.51.100.7", time.Hour)
	th := netip.MustParseAddr("203.0.113.9")
	ctx := context.Background()

	if p, ok := tab.Allow(ctx, "alice@example.com", th); !ok || p.ID != "a1" {
		t.Fatalf("alice from the pass's network: %v %v", p, ok)
	}
	if _, ok := tab.Allow(ctx, "alice@example.com", netip.MustParseAddr("203.0.114.1")); ok {
		t.Error("alice allowed from outside the pass's list")
	}
	if _, ok := tab.Allow(ctx, "bob@example.com", th); ok {
		t.Error("bob allowed by alice's pass")
	}
	if p, ok := tab.Allow(ctx, "carol@example.org", netip.MustParseAddr("198.51.100.7")); !ok || p.ID != "d1" {
		t.Error("a domain pass does not cover the domain's account")
	}
	if _, ok := tab.Allow(ctx, "carol@sub.example.org", netip.MustParseAddr("198.51.100.7")); ok {
		t.Error("a domain pass covers a subdomain")
	}
	if got := len(tab.List()); got != 2 {
		t.Fatalf("List = %d passes, want 2", got)
	}

	clk.add(time.Hour) // d1 ends exactly now
	if _, ok := tab.Allow(ctx, "carol@example.org", netip.MustParseAddr("198.51.100.7")); ok {
		t.Error("the domain pass still allows at its end")
	}
	if l := tab.List(); len(l) != 1 || l[0].ID != "a1" {
		t.Errorf("List after d1's end = %v", l)
	}
	clk.add(14*24*time.Hour - time.Hour - time.Nanosecond)
	if _, ok := tab.Allow(ctx, "alice@example.com", th); !ok {
		t.Error("alice's pass ends early")
	}
	clk.add(time.Nanosecond)
	if _, ok := tab.Allow(ctx, "alice@example.com", th); ok {
		t.Error("alice's pass still allows after its end")
	}
	if l := tab.List(); len(l) != 0 {
		t.Errorf("List after every end = %v", l)
	}
	if swept := tab.Sweep(); len(swept) != 2 {
		t.Errorf("Sweep = %v, want both", swept)
	}
	if _, ok := tab.Get("a1"); ok {
		t.Error("swept pass still there")
	}
}

func TestTableRemoveAndLoad(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	tab := passes.NewTable(clk.now)
	c := compile(t)
	ps := []passes.Pass{
		{ID: "a", Account: "alice@example.com", From: "192.0.2.1", Until: clk.now().Add(time.Hour)},
		{ID: "b", Account: "bob@example.com", From: "[gone]", Until: clk.now().Add(time.Hour)},
	}
	errs := tab.Load(ps, c)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "no longer compiles") {
		t.Fatalf("Load errors = %v", errs)
	}
	if _, ok := tab.Allow(context.Background(), "alice@example.com", netip.MustParseAddr("192.0.2.1")); !ok {
		t.Error("loaded pass does not allow")
	}
	if len(tab.List()) != 2 {
		t.Error("a pass whose list no longer compiles is hidden; it must stay listed so it can be removed")
	}
	if p, ok := tab.Remove("a"); !ok || p.Account != "alice@example.com" {
		t.Fatalf("Remove = %v %v", p, ok)
	}
	if _, ok := tab.Remove("a"); ok {
		t.Error("second Remove succeeded")
	}
	if _, ok := tab.Allow(context.Background(), "alice@example.com", netip.MustParseAddr("192.0.2.1")); ok {
		t.Error("removed pass still allows")
	}
	var nilTab *passes.Table
	if _, ok := nilTab.Allow(context.Background(), "alice@example.com", netip.MustParseAddr("192.0.2.1")); ok {
		t.Error("nil table allows")
	}
}

// Logins check passes while an admin adds and removes them and a reload
// recompiles them (run with -race).
func TestTableConcurrent(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	tab := passes.NewTable(clk.now)
	c := compile(t)
	addr := netip.MustParseAddr("192.0.2.1")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					tab.Allow(context.Background(), "alice@example.com", addr)
					tab.List()
				}
			}
		}()
	}
	for i := range 200 {
		p := passes.Pass{ID: passes.NewID(), Account: "alice@example.com", From: "192.0.2.0/24", Until: clk.now().Add(time.Hour)}
		set, err := passes.Check(&p, clk.now(), c)
		if err != nil {
			t.Fatal(err)
		}
		tab.Put(p, set)
		if i%3 == 0 {
			tab.Remove(p.ID)
		}
		if i%50 == 0 {
			tab.Recompile(c)
			tab.Sweep()
		}
	}
	close(stop)
	wg.Wait()
	if _, ok := tab.Allow(context.Background(), "alice@example.com", addr); !ok {
		t.Error("no pass allows after the run")
	}
}
