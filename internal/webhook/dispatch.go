// Package webhook sends postern's events (blocks, unblocks, escalations,
// rejected reloads) as signed JSON POST requests to the configured
// receivers.
//
// Each webhook has its own bounded queue and one delivery goroutine, so a
// slow or unreachable receiver delays only its own events. Putting an
// event in a queue never waits: when a queue is full its oldest event is
// dropped and counted. Each event is retried with exponential backoff and
// jitter after a transport error, a timeout, 408, 429 or a 5xx answer,
// until it is delivered, its attempts are used up or its delivery
// deadline passes.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/guard"
)

// Outcome is how the delivery of one event ended (a metrics label).
type Outcome string

// The outcomes of a delivery.
const (
	Delivered Outcome = "delivered" // a 2xx answer
	Rejected  Outcome = "rejected"  // a 3xx or 4xx answer other than 408 and 429: not retried
	Failed    Outcome = "failed"    // every attempt failed
	Expired   Outcome = "expired"   // the delivery deadline passed
	Dropped   Outcome = "dropped"   // pushed out of a full queue, or still queued at shutdown or reconfiguration
)

// Attempt results (a metrics label).
const (
	AttemptOK        = "ok"         // 2xx
	AttemptHTTPError = "http_error" // any other status
	AttemptError     = "error"      // transport error or timeout
)

// Observer counts deliveries (internal/metrics implements it). hook is
// the webhook's configured name.
type Observer interface {
	Attempt(hook, result string)
	Outcome(hook string, o Outcome)
}

// Target is one configured receiver.
type Target struct {
	Name        string
	URL         string
	Secret      []byte // never logged
	Events      []string
	Timeout     time.Duration // one attempt
	Deadline    time.Duration // one event, retries included
	MaxAttempts int
	Queue       int
}

// Options are a Dispatcher's collaborators.
type Options struct {
	Node     string           // this gateway's name, in every event
	Log      *slog.Logger     // nil: discard
	Observer Observer         // nil: none
	Client   *http.Client     // nil: a client that follows no redirect
	Clock    func() time.Time // signature timestamps and deadlines; nil: time.Now
	// Backoff is the wait before the first retry; it doubles at each
	// retry up to MaxBackoff, and each wait is drawn at random between
	// half of it and all of it. Defaults: 1s and 5m.
	Backoff, MaxBackoff time.Duration
}

// Dispatcher fans events out to the webhooks. It implements
// guard.Notifier. It is safe for concurrent use.
type Dispatcher struct {
	opts   Options
	hooks  atomic.Pointer[[]*hook]
	intake chan guard.Notice // from the engine to the pump
	quit   chan struct{}     // closed by Close: the pump stops
	mu     sync.Mutex        // serializes Configure and Close
	wg     sync.WaitGroup
	done   bool
}

// IntakeSize is how many engine notices wait for the dispatcher's pump
// (which turns them into events and queues them per webhook). A notice
// that finds the intake full is dropped and counted for every webhook that
// wanted it.
const IntakeSize = 4096

// New returns a dispatcher without webhooks; Configure gives it some.
func New(opts Options) *Dispatcher {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.MaxBackoff < opts.Backoff {
		opts.MaxBackoff = max(5*time.Minute, opts.Backoff)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	d := &Dispatcher{opts: opts, intake: make(chan guard.Notice, IntakeSize), quit: make(chan struct{})}
	d.hooks.Store(new([]*hook))
	d.wg.Go(d.pump)
	return d
}

// pump turns the engine's notices into events, off the engine's
// goroutines, until Close.
func (d *Dispatcher) pump() {
	for {
		select {
		case n := <-d.intake:
			hs := *d.hooks.Load()
			if wanted(hs, n.Kind.String()) {
				d.send(hs, FromNotice(n, d.opts.Node))
			}
		case <-d.quit:
			return
		}
	}
}

// Configure replaces the webhooks by targets. The old webhooks stop:
// their queued events are dropped (and counted), an attempt under way is
// cancelled.
func (d *Dispatcher) Configure(targets []Target) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	hs := make([]*hook, 0, len(targets))
	for _, t := range targets {
		h := newHook(d, t)
		hs = append(hs, h)
	}
	old := d.hooks.Swap(&hs)
	for _, h := range *old {
		h.stop()
	}
	for _, h := range hs {
		d.wg.Go(h.run)
	}
}

// Close stops every webhook and waits for their goroutines.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	if !d.done {
		close(d.quit)
	}
	d.done = true
	old := d.hooks.Swap(new([]*hook))
	d.mu.Unlock()
	for _, h := range *old {
		h.stop()
	}
	d.wg.Wait()
}

// Notify hands an engine notice to the dispatcher: a send on a buffered
// channel that never waits (the notice is dropped, and counted, when the
// channel is full). Encoding and queueing happen on the dispatcher's own
// goroutine.
func (d *Dispatcher) Notify(n guard.Notice) {
	hs := *d.hooks.Load()
	if !wanted(hs, n.Kind.String()) {
		return
	}
	select {
	case d.intake <- n:
	default:
		for _, h := range hs {
			if h.wants[n.Kind.String()] {
				h.outcome(Dropped)
			}
		}
	}
}

// Send queues ev for the webhooks that want its type. It never waits for
// a delivery.
func (d *Dispatcher) Send(ev Event) {
	if ev.ID == "" {
		ev.ID = newID()
	}
	d.send(*d.hooks.Load(), ev)
}

func wanted(hs []*hook, typ string) bool {
	for _, h := range hs {
		if h.wants[typ] {
			return true
		}
	}
	return false
}

func (d *Dispatcher) send(hs []*hook, ev Event) {
	var body []byte
	for _, h := range hs {
		if !h.wants[ev.Type] {
			continue
		}
		if body == nil {
			var err error
			if body, err = json.Marshal(ev); err != nil {
				d.opts.Log.Error("webhook: encoding an event", "type", ev.Type, "err", err)
				return
			}
		}
		h.push(queued{ev: ev, body: body, at: d.opts.Clock()})
	}
}

// queued is an event waiting for delivery.
type queued struct {
	ev   Event
	body []byte
	at   time.Time // queued at: the delivery deadline runs from here
}

// hook is one webhook: its queue and its delivery goroutine.
type hook struct {
	d      *Dispatcher
	t      Target
	wants  map[string]bool
	ctx    context.Context
	cancel context.CancelFunc
	signal chan struct{} // a push happened (capacity 1)

	mu    sync.Mutex
	queue []queued // ring buffer of capacity t.Queue
	head  int
	n     int
}

func newHook(d *Dispatcher, t Target) *hook {
	if t.Queue <= 0 {
		t.Queue = 1000
	}
	if t.MaxAttempts <= 0 {
		t.MaxAttempts = 1
	}
	if t.Timeout <= 0 {
		t.Timeout = 5 * time.Second
	}
	if t.Deadline < t.Timeout {
		t.Deadline = t.Timeout
	}
	h := &hook{d: d, t: t, wants: make(map[string]bool), signal: make(chan struct{}, 1), queue: make([]queued, t.Queue)}
	for _, e := range t.Events {
		h.wants[e] = true
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// push queues q, dropping the oldest event when the queue is full. An
// event for a hook stopped meanwhile (a reconfiguration raced with it) is
// dropped.
func (h *hook) push(q queued) {
	if h.ctx.Err() != nil {
		h.outcome(Dropped)
		return
	}
	h.mu.Lock()
	dropped := false
	if h.n == len(h.queue) {
		h.queue[h.head] = queued{}
		h.head = (h.head + 1) % len(h.queue)
		h.n--
		dropped = true
	}
	h.queue[(h.head+h.n)%len(h.queue)] = q
	h.n++
	h.mu.Unlock()
	if dropped {
		h.outcome(Dropped)
	}
	select {
	case h.signal <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued event.
func (h *hook) pop() (queued, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return queued{}, false
	}
	q := h.queue[h.head]
	h.queue[h.head] = queued{}
	h.head = (h.head + 1) % len(h.queue)
	h.n--
	return q, true
}

// len returns how many events wait in the queue.
func (h *hook) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func (h *hook) stop() { h.cancel() }

func (h *hook) outcome(o Outcome) {
	if obs := h.d.opts.Observer; obs != nil {
		obs.Outcome(h.t.Name, o)
	}
}

// run delivers the queued events one after the other until the hook
// stops; what is still queued then is dropped.
func (h *hook) run() {
	for {
		q, ok := h.pop()
		if !ok {
			select {
			case <-h.signal:
				continue
			case <-h.ctx.Done():
				return
			}
		}
		if h.ctx.Err() != nil {
			h.outcome(Dropped)
			for {
				if _, ok := h.pop(); !ok {
					return
				}
				h.outcome(Dropped)
			}
		}
		o := h.deliver(q)
		h.outcome(o)
		if o != Delivered {
			h.d.opts.Log.Warn("webhook delivery failed", "webhook", h.t.Name, "event", q.ev.Type, "id", q.ev.ID, "outcome", string(o))
		}
	}
}

// deliver sends one event, with retries, within its deadline.
func (h *hook) deliver(q queued) Outcome {
	deadline := q.at.Add(h.t.Deadline)
	wait := h.d.opts.Backoff
	for attempt := 1; ; attempt++ {
		left := deadline.Sub(h.d.opts.Clock())
		if left <= 0 {
			return Expired
		}
		retry, err := h.attempt(q, min(h.t.Timeout, left))
		if err == nil {
			return Delivered
		}
		h.d.opts.Log.Debug("webhook attempt failed", "webhook", h.t.Name, "id", q.ev.ID, "attempt", attempt, "err", err)
		if !retry {
			return Rejected
		}
		if h.ctx.Err() != nil {
			return Dropped
		}
		if attempt >= h.t.MaxAttempts {
			return Failed
		}
		// Full jitter over the upper half: receivers that failed
		// together are not retried together.
		sleep := wait/2 + rand.N(wait/2+1)
		wait = min(wait*2, h.d.opts.MaxBackoff)
		if h.d.opts.Clock().Add(sleep).After(deadline) {
			return Expired
		}
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-h.ctx.Done():
			t.Stop()
			return Dropped
		}
	}
}

// attempt POSTs the event once; retry says whether a failure may be
// retried.
func (h *hook) attempt(q queued, timeout time.Duration) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(h.ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.t.URL, bytes.NewReader(q.body))
	if err != nil {
		h.observe(AttemptError)
		return false, fmt.Errorf("webhook %s: request: %w", h.t.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "postern-webhook")
	req.Header.Set("Postern-Event", q.ev.Type)
	req.Header.Set("Postern-Delivery", q.ev.ID)
	req.Header.Set(SignatureHeader, Sign(h.t.Secret, q.body, h.d.opts.Clock()))
	resp, err := h.d.opts.Client.Do(req)
	if err != nil {
		h.observe(AttemptError)
		return true, fmt.Errorf("webhook %s: %w", h.t.Name, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		h.observe(AttemptOK)
		return false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		h.observe(AttemptHTTPError)
		return true, fmt.Errorf("webhook %s: %s", h.t.Name, resp.Status)
	default:
		h.observe(AttemptHTTPError)
		return false, fmt.Errorf("webhook %s: %s", h.t.Name, resp.Status)
	}
}

func (h *hook) observe(result string) {
	if obs := h.d.opts.Observer; obs != nil {
		obs.Attempt(h.t.Name, result)
	}
}
