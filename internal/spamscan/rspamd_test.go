package spamscan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testMessage = "From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@example.com>\r\n" +
	"Subject: hello\r\n" +
	"\r\n" +
	"Hi Bob.\r\n"

func testMsg(body string) Message {
	return Message{
		Body:    strings.NewReader(body),
		Size:    int64(len(body)),
		From:    "alice@example.org",
		Rcpt:    []string{"bob@example.com", "carol@example.com"},
		IP:      netip.MustParseAddr("203.0.113.7"),
		Helo:    "mail.example.org",
		User:    "alice",
		QueueID: "Q123",
	}
}

// fakeRspamd serves handler on 127.0.0.1 and counts requests.
func fakeRspamd(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

const goodReply = `{"is_skipped":false,"score":7.3,"required_score":15.0,"action":"add header",
	"symbols":{"RDNS_NONE":{"name":"RDNS_NONE","score":1.0,"metric_score":1.0},
	"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1,"metric_score":-0.1,"options":["text/plain"]},
	"ARC_NA":{"name":"ARC_NA","score":0.0}},
	"messages":{},"message-id":"1@example.org","time_real":0.005,"milter":{"remove_headers":{"X-Spam":0}}}`

func TestRspamdRequestAndVerdict(t *testing.T) {
	type seen struct {
		method, path string
		header       http.Header
		length       int64
		body         []byte
	}
	got := make(chan seen, 1)
	srv, _ := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.Header.Clone(), r.ContentLength, body}
		io.WriteString(w, goodReply)
	})
	s := NewRspamd(srv.URL+"/", RspamdOptions{Password: "sekret"})
	if s.Name() != "rspamd" {
		t.Errorf("Name = %q", s.Name())
	}
	v, err := s.Scan(context.Background(), testMsg(testMessage))
	if err != nil {
		t.Fatal(err)
	}
	want := Verdict{Score: 7.3, Threshold: 15, Action: "add header", Symbols: []string{"ARC_NA", "MIME_GOOD", "RDNS_NONE"}}
	if !equalVerdict(v, want) {
		t.Errorf("verdict = %+v, want %+v", v, want)
	}

	req := <-got
	if req.method != http.MethodPost || req.path != "/checkv2" {
		t.Errorf("request %s %s, want POST /checkv2", req.method, req.path)
	}
	if string(req.body) != testMessage || req.length != int64(len(testMessage)) {
		t.Errorf("body %q (Content-Length %d), want the message exactly", req.body, req.length)
	}
	for key, want := range map[string][]string{
		"Ip":       {"203.0.113.7"},
		"From":     {"alice@example.org"},
		"Rcpt":     {"bob@example.com", "carol@example.com"},
		"Helo":     {"mail.example.org"},
		"User":     {"alice"},
		"Queue-Id": {"Q123"},
		"Password": {"sekret"},
	} {
		if got := req.header.Values(key); !slices.Equal(got, want) {
			t.Errorf("header %s = %q, want %q", key, got, want)
		}
	}
	if te := req.header.Get("Transfer-Encoding"); te != "" {
		t.Errorf("Transfer-Encoding %q: the request should have a Content-Length", te)
	}
}

func equalVerdict(a, b Verdict) bool {
	return a.Score == b.Score && a.Threshold == b.Threshold && a.Action == b.Action && slices.Equal(a.Symbols, b.Symbols)
}

func TestRspamdEnvelopeEdgeCases(t *testing.T) {
	got := make(chan http.Header, 1)
	srv, _ := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"score":0,"action":"no action"}`)
	})
	s := NewRspamd(srv.URL, RspamdOptions{})
	msg := Message{
		Body: strings.NewReader(testMessage), Size: int64(len(testMessage)),
		From: "", // null sender
		Rcpt: []string{"", "x@example.com\r\nInjected: yes"},
		IP:   netip.MustParseAddr("::ffff:198.51.100.1"),
		Helo: "evil\x01\x7fhelo\tname",
	}
	v, err := s.Scan(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != "no action" || v.Score != 0 || v.Threshold != 0 || len(v.Symbols) != 0 {
		t.Errorf("verdict %+v", v)
	}
	h := <-got
	for key, want := range map[string][]string{
		"Ip":       {"198.51.100.1"},
		"From":     {"<>"},
		"Rcpt":     {"x@example.com??Injected: yes"},
		"Helo":     {"evil??helo\tname"},
		"Injected": nil,
		"User":     nil,
		"Queue-Id": nil,
		"Password": nil,
	} {
		if got := h.Values(key); !slices.Equal(got, want) {
			t.Errorf("header %s = %q, want %q", key, got, want)
		}
	}

	// No IP, an empty message.
	msg = Message{Body: strings.NewReader(""), From: "a@b"}
	if _, err := s.Scan(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h.Get("Ip") != "" {
		t.Errorf("IP header %q for an unknown address", h.Get("Ip"))
	}
}

func TestRspamdSymbolsCapped(t *testing.T) {
	syms := map[string]any{}
	for i := range 60 {
		// Scores -30..29: the 50 with the largest |score| leave out -4..5.
		syms[fmt.Sprintf("SYM_%02d", i)] = map[string]any{"score": float64(i - 30)}
	}
	reply, _ := json.Marshal(map[string]any{"score": 20.5, "required_score": 15, "action": "reject", "symbols": syms})
	srv, _ := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) { w.Write(reply) })
	v, err := NewRspamd(srv.URL, RspamdOptions{}).Scan(context.Background(), testMsg(testMessage))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Symbols) != MaxSymbols || !slices.IsSorted(v.Symbols) {
		t.Fatalf("%d symbols, sorted %v: %v", len(v.Symbols), slices.IsSorted(v.Symbols), v.Symbols)
	}
	for i := 26; i <= 35; i++ { // scores -4..5
		if slices.Contains(v.Symbols, fmt.Sprintf("SYM_%02d", i)) {
			t.Errorf("SYM_%02d kept, but its score is among the smallest", i)
		}
	}
}

func TestRspamdErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "internal trouble", http.StatusInternalServerError)
		}, "500"},
		{"invalid JSON", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"score": 3.0, "action": `)
		}, "bad answer"},
		{"not JSON at all", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("\x00\xff<html>garbage</html>"))
		}, "bad answer"},
		{"wrong types", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"score": "high", "symbols": []}`)
		}, "bad answer"},
		{"error answer", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"error": "cannot parse message"}`)
		}, "cannot parse message"},
		{"no score", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"action": "no action"}`)
		}, "without a score"},
		{"empty", func(w http.ResponseWriter, r *http.Request) {}, "bad answer"},
		{"huge answer", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"score":1,"x":"`)
			w.Write(bytes.Repeat([]byte("a"), maxReply))
			io.WriteString(w, `"}`)
		}, "longer than"},
		{"connection dropped", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}, "checkv2"}, // EOF or connection reset
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := fakeRspamd(t, tc.handler)
			v, err := NewRspamd(srv.URL, RspamdOptions{}).Scan(context.Background(), testMsg(testMessage))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "rspamd: ") {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
			if !equalVerdict(v, Verdict{}) {
				t.Errorf("verdict %+v with an error", v)
			}
		})
	}
}

func TestRspamdTimeout(t *testing.T) {
	srv, _ := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server notices the client leave
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	const timeout = 100 * time.Millisecond
	s := NewRspamd(srv.URL, RspamdOptions{Timeout: timeout})
	start := time.Now()
	_, err := s.Scan(context.Background(), testMsg(testMessage))
	if elapsed := time.Since(start); elapsed > timeout+400*time.Millisecond {
		t.Errorf("Scan took %v with a %v timeout", elapsed, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}

	// The caller's context ends first.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	s = NewRspamd(srv.URL, RspamdOptions{Timeout: 10 * time.Second})
	start = time.Now()
	if _, err := s.Scan(ctx, testMsg(testMessage)); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Scan took %v after cancel", elapsed)
	}
}

func TestRspamdBadInput(t *testing.T) {
	srv, n := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, goodReply)
	})
	s := NewRspamd(srv.URL, RspamdOptions{MaxSize: 1000})

	start := time.Now()
	msg := testMsg(strings.Repeat("x", 1001))
	if _, err := s.Scan(context.Background(), msg); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1001 bytes over MaxSize 1000: err = %v, want ErrTooLarge", err)
	}
	if elapsed := time.Since(start); elapsed > 50*time.Millisecond {
		t.Errorf("ErrTooLarge took %v", elapsed)
	}
	if n.Load() != 0 {
		t.Error("rspamd was asked about a message over MaxSize")
	}
	if _, err := s.Scan(context.Background(), testMsg(strings.Repeat("x", 1000))); err != nil {
		t.Errorf("exactly MaxSize: %v", err)
	}

	short := testMsg(testMessage)
	short.Size += 10 // the body is shorter than it claims
	if _, err := s.Scan(context.Background(), short); err == nil {
		t.Error("a body shorter than Size was accepted")
	}
	if _, err := s.Scan(context.Background(), Message{Size: 3}); err == nil {
		t.Error("nil Body accepted")
	}
	if _, err := s.Scan(context.Background(), Message{Body: strings.NewReader(""), Size: -1}); err == nil {
		t.Error("negative Size accepted")
	}
	if _, err := NewRspamd("http://127.0.0.1:1", RspamdOptions{}).Scan(context.Background(), testMsg(testMessage)); err == nil {
		t.Error("no error from a closed port")
	}
	if _, err := NewRspamd("::not a url", RspamdOptions{}).Scan(context.Background(), testMsg(testMessage)); err == nil {
		t.Error("no error from a bad URL")
	}
}

// TestRspamdLargeSpooledMessage scans a 20 MB message from a Spool that
// spilled to disk; the fake rspamd checks every byte.
func TestRspamdLargeSpooledMessage(t *testing.T) {
	sp := NewSpool(t.TempDir(), 1<<20)
	defer sp.Close()
	h := sha256.New()
	w := io.MultiWriter(sp, h)
	chunk := make([]byte, 64<<10)
	for i := 0; i < 20<<20; i += len(chunk) {
		for j := range chunk {
			chunk[j] = byte(i/len(chunk) + j)
		}
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	want := fmt.Sprintf("%x", h.Sum(nil))
	srv, _ := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		if got := fmt.Sprintf("%x", h.Sum(nil)); got != want || n != 20<<20 || r.ContentLength != n {
			http.Error(w, fmt.Sprintf("got %d bytes (Content-Length %d), hash %s", n, r.ContentLength, got), http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"score":1.5,"required_score":15,"action":"no action","symbols":{}}`)
	})
	msg := testMsg("")
	msg.Body, msg.Size = sp, sp.Size()
	v, err := NewRspamd(srv.URL, RspamdOptions{MaxSize: 25 << 20}).Scan(context.Background(), msg)
	if err != nil || v.Score != 1.5 {
		t.Fatalf("Scan = %+v, %v", v, err)
	}
}

func TestScannerInterface(t *testing.T) {
	var _ Scanner = NewRspamd("http://127.0.0.1:1", RspamdOptions{})
	var _ Scanner = NewSpamd("127.0.0.1:1", 0)
}
