package webproxy

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordHandler keeps every record it is given.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
	got  chan struct{} // signalled on every record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	select {
	case h.got <- struct{}{}:
	default:
	}
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// find returns the first record whose message holds s.
func (h *recordHandler) find(s string) (slog.Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if strings.Contains(r.Message, s) {
			return r, true
		}
	}
	return slog.Record{}, false
}

// TestServerErrorsReachTheStructuredLog: net/http's own error log (here a
// failed TLS handshake) is written to the gateway's structured log at debug
// level, the text as the record's message.
func TestServerErrorsReachTheStructuredLog(t *testing.T) {
	h := newHarness(t, harnessOpts{tls: true})
	rec := &recordHandler{got: make(chan struct{}, 1)}
	p, err := New(h.p.cfg, h.eng, h.p.policy, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ctx, ln, time.Second) }()
	defer func() { cancel(); <-done }()

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) // plain HTTP to a TLS server
	buf := make([]byte, 512)
	c.Read(buf)
	c.Close()

	deadline := time.After(5 * time.Second)
	for {
		if r, ok := rec.find("TLS handshake error"); ok {
			if r.Level != slog.LevelDebug {
				t.Errorf("level %v, want debug", r.Level)
			}
			return
		}
		select {
		case <-rec.got:
		case <-deadline:
			t.Fatal("the TLS handshake error never reached the structured log")
		}
	}
}
