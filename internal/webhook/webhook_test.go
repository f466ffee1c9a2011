package webhook

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

var secret = []byte("0123456789abcdef-test-secret")

// counts records what the dispatcher reports, and wakes waiters.
type counts struct {
	mu       sync.Mutex
	attempts map[string]int
	outcomes map[Outcome]int
	changed  chan struct{}
}

func newCounts() *counts {
	return &counts{attempts: map[string]int{}, outcomes: map[Outcome]int{}, changed: make(chan struct{}, 1)}
}

func (c *counts) Attempt(hook, result string) {
	c.mu.Lock()
	c.attempts[result]++
	c.mu.Unlock()
	c.poke()
}

func (c *counts) Outcome(hook string, o Outcome) {
	c.mu.Lock()
	c.outcomes[o]++
	c.mu.Unlock()
	c.poke()
}

func (c *counts) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// wait waits until cond holds (checked under the lock) or fails the test
// after 10s.
func (c *counts) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("%s: not reached; attempts %v, outcomes %v", what, c.attempts, c.outcomes)
		}
	}
}

func newDispatcher(t *testing.T, c *counts, targets ...Target) *Dispatcher {
	t.Helper()
	d := New(Options{Node: "mx1", Observer: c, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	d.Configure(targets)
	t.Cleanup(d.Close)
	return d
}

func target(url string, events ...string) Target {
	return Target{Name: "t", URL: url, Secret: secret, Events: events, Timeout: 2 * time.Second, Deadline: time.Minute, MaxAttempts: 5, Queue: 10}
}

type received struct {
	header http.Header
	body   []byte
}

func blockNotice() guard.Notice {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	return guard.Notice{
		Kind: guard.NoticeBlock, Time: now, Prefix: netip.MustParsePrefix("203.0.113.50/32"), Reason: reason.DNSBL,
		Service: "smtp", Detail: "zen.example.org", Expires: now.Add(time.Hour), Node: "mx1", Actor: "engine", Auto: true,
	}
}

func TestSignedDelivery(t *testing.T) {
	got := make(chan received, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(SignatureHeader), b, time.Now(), 0); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
		}
		got <- received{r.Header.Clone(), b}
	}))
	defer srv.Close()
	c := newCounts()
	d := newDispatcher(t, c, target(srv.URL, EventBlock, EventReloadFailed))
	d.Notify(blockNotice())
	d.Notify(guard.Notice{Kind: guard.NoticeUnblock, Prefix: netip.MustParsePrefix("203.0.113.50/32")}) // not subscribed
	r := <-got
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("Postern-Event") != "block" || r.header.Get("Postern-Delivery") == "" {
		t.Errorf("headers: %v", r.header)
	}
	var ev Event
	if err := json.Unmarshal(r.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "block" || ev.Node != "mx1" || ev.ID != r.header.Get("Postern-Delivery") || ev.Block == nil ||
		ev.Block.Prefix != "203.0.113.50/32" || ev.Block.Reason != "D" || ev.Block.Service != "smtp" || ev.Block.Expires == nil || !ev.Block.Auto {
		t.Errorf("event: %s", r.body)
	}
	if want := "postern mx1: blocked 203.0.113.50/32 (D: "; !strings.HasPrefix(ev.Text, want) || !strings.Contains(ev.Text, "for 1h0m0s") {
		t.Errorf("text %q", ev.Text)
	}
	// A tampered body, another secret or a stale timestamp are refused.
	h := r.header.Get(SignatureHeader)
	if err := Verify(secret, h, append(r.body, ' '), time.Now(), 0); !errors.Is(err, ErrSignature) {
		t.Errorf("tampered body: %v", err)
	}
	if err := Verify([]byte("another-secret-of-16"), h, r.body, time.Now(), 0); !errors.Is(err, ErrSignature) {
		t.Errorf("other secret: %v", err)
	}
	d.Send(ReloadFailed(errors.New("bad <pattern> & co"), "mx1", time.Now()))
	r = <-got
	if err := json.Unmarshal(r.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "reload_failed" || ev.Reload == nil || ev.Reload.Error != "bad <pattern> & co" || !strings.Contains(ev.Text, "bad &lt;pattern&gt; &amp; co") {
		t.Errorf("reload_failed: %s", r.body)
	}
	c.wait(t, "two delivered", func() bool { return c.outcomes[Delivered] == 2 && c.attempts[AttemptOK] == 2 })
	select {
	case r := <-got:
		t.Fatalf("unsubscribed event sent: %s", r.body)
	default:
	}
}

func TestVerifyReplayWindow(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	at := time.Unix(1_800_000_000, 0)
	h := Sign(secret, body, at)
	for _, tc := range []struct {
		now  time.Time
		win  time.Duration
		want error
	}{
		{at, 0, nil},
		{at.Add(4 * time.Minute), 0, nil},
		{at.Add(-4 * time.Minute), 0, nil}, // the sender's clock a little ahead
		{at.Add(6 * time.Minute), 0, ErrStale},
		{at.Add(-6 * time.Minute), 0, ErrStale},
		{at.Add(time.Minute), 30 * time.Second, ErrStale},
	} {
		if err := Verify(secret, h, body, tc.now, tc.win); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("now %v window %v: %v, want %v", tc.now.Sub(at), tc.win, err, tc.want)
		}
	}
	// A second v1 (a receiver rotating secrets sees both) is accepted.
	if err := Verify(secret, Sign([]byte("old-secret-0123456"), body, at)+","+strings.Split(h, ",")[1], body, at, 0); err != nil {
		t.Errorf("two signatures: %v", err)
	}
	for _, bad := range []string{"", "t=1", "v1=00", "t=x,v1=" + strings.Repeat("0", 64), "t=1,v1=zz", "t=1,t=2,v1=" + strings.Repeat("0", 64), "t=01,v1=" + strings.Repeat("0", 64), "garbage"} {
		if err := Verify(secret, bad, body, at, 0); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestRetriesAfter500(t *testing.T) {
	var n atomic.Int32
	ids := make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(SignatureHeader), b, time.Now(), 0); err != nil {
			t.Errorf("attempt %d: %v", n.Load()+1, err)
		}
		ids <- r.Header.Get("Postern-Delivery")
		if n.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	c := newCounts()
	d := newDispatcher(t, c, target(srv.URL, EventBlock))
	d.Notify(blockNotice())
	c.wait(t, "delivered after two 500s", func() bool { return c.outcomes[Delivered] == 1 })
	if n.Load() != 3 || c.attempts[AttemptHTTPError] != 2 || c.attempts[AttemptOK] != 1 {
		t.Fatalf("%d attempts; %v", n.Load(), c.attempts)
	}
	a, b, e := <-ids, <-ids, <-ids
	if a != b || b != e {
		t.Errorf("a retry changed the delivery id: %s %s %s", a, b, e)
	}
	// A 4xx is not retried.
	n.Store(100)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1); http.Error(w, "no", http.StatusForbidden) })
	d.Notify(blockNotice())
	c.wait(t, "rejected", func() bool { return c.outcomes[Rejected] == 1 })
	if n.Load() != 101 {
		t.Errorf("a 403 was retried: %d attempts", n.Load()-100)
	}
}

func TestDownReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook"
	ln.Close() // connection refused from now on
	c := newCounts()
	tg := target(url, EventBlock)
	tg.MaxAttempts = 4
	d := newDispatcher(t, c, tg)
	start := time.Now()
	for range 3 {
		d.Notify(blockNotice())
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Notify waited %v", el)
	}
	c.wait(t, "three failed", func() bool { return c.outcomes[Failed] == 3 })
	if c.attempts[AttemptError] != 12 || c.outcomes[Delivered] != 0 {
		t.Errorf("attempts %v outcomes %v", c.attempts, c.outcomes)
	}
}

func TestSlowReceiver(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := newCounts()
	tg := target(srv.URL, EventBlock)
	tg.Timeout, tg.Deadline, tg.Queue, tg.MaxAttempts = 200*time.Millisecond, 700*time.Millisecond, 5, 100
	d := newDispatcher(t, c, tg)
	// The first event occupies the receiver; 200 more arrive meanwhile.
	d.Notify(blockNotice())
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver never saw the first event")
	}
	start := time.Now()
	for range 200 {
		d.Notify(blockNotice())
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("200 Notify calls took %v with a stuck receiver", el)
	}
	h := (*d.hooks.Load())[0]
	if n := h.len(); n > 5 {
		t.Errorf("queue holds %d, bound 5", n)
	}
	// 200 pushed into a queue of 5 while one is in flight: at least 195
	// dropped (the worker may have taken one more out meanwhile).
	c.wait(t, "drops counted", func() bool { return c.outcomes[Dropped] >= 194 })
	// The event in flight gives up at its delivery deadline, retries
	// included; the queued ones expire behind it.
	c.wait(t, "expired at the deadline", func() bool { return c.outcomes[Expired] >= 1 })
	if c.outcomes[Delivered] != 0 || c.attempts[AttemptError] < 1 {
		t.Errorf("attempts %v outcomes %v", c.attempts, c.outcomes)
	}
	c.wait(t, "every event accounted for", func() bool {
		total := 0
		for _, v := range c.outcomes {
			total += v
		}
		return total == 201
	})
}

func TestReconfigureAndClose(t *testing.T) {
	got := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.URL.Path }))
	defer srv.Close()
	c := newCounts()
	d := newDispatcher(t, c, target(srv.URL+"/a", EventBlock))
	d.Configure([]Target{target(srv.URL+"/b", EventUnblock)})
	d.Notify(blockNotice()) // nobody wants it any more
	n := blockNotice()
	n.Kind = guard.NoticeUnblock
	d.Notify(n)
	if p := <-got; p != "/b" {
		t.Fatalf("sent to %s", p)
	}
	d.Close()
	d.Configure([]Target{target(srv.URL+"/c", EventUnblock)}) // ignored once closed
	d.Notify(n)
	select {
	case p := <-got:
		t.Fatalf("sent to %s after Close", p)
	default:
	}
}

// TestEngineBlocks wires a dispatcher to a real engine: a block made and
// removed by an administrator reaches the receiver, and the engine's calls
// return while the receiver is stuck.
func TestEngineBlocks(t *testing.T) {
	got := make(chan Event, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(SignatureHeader), b, time.Now(), 0); err != nil {
			t.Error(err)
		}
		var ev Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Error(err)
		}
		got <- ev
	}))
	defer srv.Close()
	d := newDispatcher(t, newCounts(), target(srv.URL, EventBlock, EventUnblock))
	e, err := guard.New(t.Context(), &guard.Settings{BlockTime: time.Hour}, guard.Options{Node: "mx1", Notifier: d})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	p := netip.MustParsePrefix("198.51.100.0/24")
	if _, err := e.BlockManual(t.Context(), p, 2*time.Hour, "scanner", "cli"); err != nil {
		t.Fatal(err)
	}
	ev := <-got
	if ev.Type != "block" || ev.Block.Prefix != p.String() || ev.Block.Reason != "U" || ev.Block.Actor != "admin:cli" || ev.Block.Auto ||
		ev.Block.Expires == nil || ev.Block.Expires.Sub(ev.Time) != 2*time.Hour || !strings.Contains(ev.Text, "by admin:cli") {
		t.Fatalf("block: %+v %+v", ev, ev.Block)
	}
	if _, err := e.Unblock(t.Context(), []netip.Prefix{p}, "api:ops"); err != nil {
		t.Fatal(err)
	}
	ev = <-got
	if ev.Type != "unblock" || ev.Block.Prefix != p.String() || ev.Block.Actor != "api:ops" || ev.Text != "postern mx1: unblocked 198.51.100.0/24 by api:ops" {
		t.Fatalf("unblock: %+v %+v", ev, ev.Block)
	}
}

// TestEngineAutomaticBlockAndEscalation: a DNSBL listing seen by a real
// engine (settings loaded from a configuration file as the gateway loads
// them) blocks the address; the second offence escalates. Both reach the
// receiver with the engine's node, reason, service and expiry.
func TestEngineAutomaticBlockAndEscalation(t *testing.T) {
	got := make(chan Event, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Error(err)
		}
		got <- ev
	}))
	defer srv.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(`
services:
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
intrusion_prevention:
  block_minutes: 60
  escalation: { factor: 3, max_minutes: 400 }
  smtp: { dnsbl: [zen.example.org] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(t.Context(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()).UTC() }
	d := newDispatcher(t, newCounts(), target(srv.URL, EventBlock, EventEscalation))
	e, err := guard.New(t.Context(), snap.Guard, guard.Options{Node: "mx1", Notifier: d, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	offend := func() {
		s, _ := e.Open(netip.MustParseAddr("203.0.113.9"), service.SMTP, nil)
		if dec := s.DNSBLListed("zen.example.org"); !dec.Blocked {
			t.Fatalf("not blocked: %+v", dec)
		}
	}
	offend()
	ev := next(t, got)
	if ev.Type != "block" || ev.Block.Prefix != "203.0.113.9/32" || ev.Block.Reason != "D" || ev.Block.Service != "smtp" ||
		!ev.Block.Auto || ev.Block.Actor != "engine" || ev.Block.Node != "mx1" || ev.Block.Level != 0 || ev.Block.Expires.Sub(ev.Time) != time.Hour {
		t.Fatalf("block: %+v %+v", ev, ev.Block)
	}
	now.Add(int64(time.Hour + time.Second))
	offend()
	ev, esc := next(t, got), next(t, got)
	if ev.Type != "block" || esc.Type != "escalation" || esc.Block.Level != 1 || esc.Block.Expires.Sub(esc.Time) != 3*time.Hour ||
		!strings.Contains(esc.Text, "escalation level 1, for 3h0m0s") {
		t.Fatalf("escalation: %+v / %+v %+v", ev, esc, esc.Block)
	}
}

func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
		return Event{}
	}
}

// TestIntakeFullDrops: Notify never waits; with the intake full (its pump
// held up) further notices are dropped and counted per webhook.
func TestIntakeFullDrops(t *testing.T) {
	c := newCounts()
	d := &Dispatcher{opts: Options{Observer: c, Clock: time.Now}, intake: make(chan guard.Notice, 2), quit: make(chan struct{})}
	h := newHook(d, target("http://127.0.0.1:9/", EventBlock))
	defer h.stop()
	d.hooks.Store(&[]*hook{h}) // no pump: nothing leaves the intake
	for range 5 {
		d.Notify(blockNotice())
	}
	if len(d.intake) != 2 || c.outcomes[Dropped] != 3 {
		t.Fatalf("intake %d, outcomes %v", len(d.intake), c.outcomes)
	}
}
