package smtpproxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/gwtest"
	"github.com/postern/postern/internal/service"
)

// writeCounter counts the writes to a connection and keeps what was written.
type writeCounter struct {
	net.Conn
	mu     sync.Mutex
	writes []string
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

func (w *writeCounter) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

// pipeSession is a session in the middle of a transaction between two
// pipes: client is the client's end, backend the backend's, and every
// write to the backend is counted.
func pipeSession(t *testing.T) (s *session, client, mta net.Conn, bw *writeCounter) {
	t.Helper()
	h := newHarness(t, baseIPS, nil, nil)
	gs, _ := h.eng.Accept(netip.MustParseAddr("127.0.0.9"), service.SMTP, func() {})
	t.Cleanup(gs.Close)
	client, cs := net.Pipe()
	bc, mta := net.Pipe()
	t.Cleanup(func() { client.Close(); cs.Close(); bc.Close(); mta.Close() })
	for _, c := range []net.Conn{client, mta} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	bw = &writeCounter{Conn: bc}
	s = &session{p: h.p, ctx: context.Background(), conn: gwtest.NewConn(cs), gs: gs,
		log: slog.New(slog.DiscardHandler), deadline: time.Now().Add(time.Minute), inTx: true, rcpts: 1}
	s.in.conn = s.conn
	s.r, s.w = bufio.NewReader(&s.in), bufio.NewWriter(s.conn)
	s.be = &backend{conn: bw, timeout: time.Minute}
	s.be.r, s.be.w = bufio.NewReader(backendIO{s.be}), bufio.NewWriter(backendIO{s.be})
	return s, client, mta, bw
}

// A message that arrives in one read leaves for the backend in one write,
// its end line included: the backend (Postfix) reads it at once instead of
// waking up again for the last three bytes.
func TestMessageEndLeavesWithLastChunk(t *testing.T) {
	s, client, backend, bw := pipeSession(t)
	msg := "Subject: one write\r\n\r\n" + strings.Repeat("..a line that was dot-stuffed\r\n", 400) // 12 kB: more than the writer's buffer
	got := make(chan string, 1)
	go func() { // the backend
		defer close(got)
		r := bufio.NewReader(backend)
		if l, _ := r.ReadString('\n'); l != "DATA\r\n" {
			t.Errorf("backend read %q, want DATA", l)
			return
		}
		io.WriteString(backend, "354 go ahead\r\n")
		var b strings.Builder
		for {
			l, err := r.ReadString('\n')
			b.WriteString(l)
			if err != nil || l == ".\r\n" {
				break
			}
		}
		io.WriteString(backend, "250 2.0.0 Ok: queued as ONE\r\n")
		got <- b.String()
	}()
	done := make(chan error, 1)
	go func() { done <- s.data(command{verb: verbDATA}) }()
	r := bufio.NewReader(client)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "354 ") {
		t.Fatalf("client read %q, want 354", l)
	}
	if _, err := io.WriteString(client, msg+".\r\n"); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.ReadString('\n'); l != "250 2.0.0 Ok: queued as ONE\r\n" {
		t.Fatalf("client read %q, want the backend's 250", l)
	}
	if err := <-done; err != nil {
		t.Fatalf("data: %v", err)
	}
	if b := <-got; b != msg+".\r\n" {
		t.Fatalf("backend received %d bytes, want the message as sent (%d bytes)", len(b), len(msg)+3)
	}
	w := bw.all()
	if len(w) != 2 || w[0] != "DATA\r\n" || w[1] != msg+".\r\n" {
		var sizes []int
		for _, x := range w {
			sizes = append(sizes, len(x))
		}
		t.Fatalf("writes to the backend of sizes %v, want DATA then the message with its end line in one", sizes)
	}
}

// A message refused by a content rule at its very end never sends its end
// line (nor its last chunk) to the backend: the backend must not accept
// it.
func TestMessageEndNotSentWhenRefusedAtTheEnd(t *testing.T) {
	s, client, backend, bw := pipeSession(t)
	s.p.cfg.ContentRules = []ContentRule{{Name: "forbidden", Body: regexp.MustCompile(`final forbidden line`)}}
	go func() { // the backend: DATA, then whatever comes until the connection closes
		r := bufio.NewReader(backend)
		r.ReadString('\n')
		io.WriteString(backend, "354 go ahead\r\n")
		io.Copy(io.Discard, r)
	}()
	done := make(chan error, 1)
	go func() { done <- s.data(command{verb: verbDATA}) }()
	r := bufio.NewReader(client)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "354 ") {
		t.Fatalf("client read %q, want 354", l)
	}
	// The rule matches the last line, which only ends with the end line.
	io.WriteString(client, "Subject: x\r\n\r\nhello\r\nfinal forbidden line\r\n.\r\n")
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "554 ") {
		t.Fatalf("client read %q, want 554", l)
	}
	<-done
	for _, w := range bw.all() {
		if bytes.Contains([]byte(w), []byte("\r\n.\r\n")) || strings.HasSuffix(w, ".\r\n") && w != "DATA\r\n" {
			t.Fatalf("the end line reached the backend: %q", w)
		}
	}
}

func TestDeadlineSlack(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	var d deadline
	const timeout = 5 * time.Minute
	steps := []struct {
		at   time.Duration // from t0
		want bool
	}{
		{0, true},                           // first: set
		{500 * time.Millisecond, false},     // later within the slack: kept
		{time.Second, false},                // at the slack: kept
		{1001 * time.Millisecond, true},     // beyond it: set
		{1500 * time.Millisecond, false},    // within the slack of the new one
		{-time.Minute, true},                // earlier: always set
		{-time.Minute, false},               // unchanged
		{-time.Minute + time.Second, false}, // within the slack
	}
	for i, st := range steps {
		if got := d.due(t0.Add(st.at), timeout); got != st.want {
			t.Fatalf("step %d (%v): due = %v, want %v", i, st.at, got, st.want)
		}
	}
	d.forget()
	if !d.due(t0, timeout) {
		t.Fatal("after forget: not due")
	}
	// A short timeout has a proportionally short slack.
	var s deadline
	s.due(t0, 640*time.Millisecond)
	if s.due(t0.Add(10*time.Millisecond), 640*time.Millisecond) || !s.due(t0.Add(11*time.Millisecond), 640*time.Millisecond) {
		t.Fatal("the slack of a 640 ms timeout is not 10 ms")
	}
}

// A buffer back from the pool holds nothing of its last session.
func TestPooledBuffersComeBackEmpty(t *testing.T) {
	var p bufPools
	p.lineSize = 100
	r := p.lineReader(strings.NewReader("EHLO one\r\nleft over\r\n"))
	r.ReadString('\n')
	w := p.writer(io.Discard)
	w.WriteString("unsent")
	p.put(r, nil, w)
	for range 3 {
		r2 := p.lineReader(strings.NewReader("EHLO two\r\n"))
		if l, _ := r2.ReadString('\n'); l != "EHLO two\r\n" || r2.Buffered() != 0 {
			t.Fatalf("reader from the pool read %q, %d buffered", l, r2.Buffered())
		}
		var out bytes.Buffer
		w2 := p.writer(&out)
		w2.WriteString("250 ok\r\n")
		w2.Flush()
		if out.String() != "250 ok\r\n" {
			t.Fatalf("writer from the pool wrote %q", out.String())
		}
		p.put(r2, nil, w2)
	}
}

// A reply's lines come back exactly as received, whatever their number,
// in two allocations.
func TestReadReplyLinesAndAllocations(t *testing.T) {
	ehlo := "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 CHUNKING\r\n"
	sr := strings.NewReader(ehlo)
	br := bufio.NewReader(sr)
	r, err := readReply(br, nil)
	want := strings.Split(strings.TrimSuffix(ehlo, "\r\n"), "\r\n")
	if err != nil || r.code != 250 || strings.Join(r.lines, "|") != strings.Join(want, "|") {
		t.Fatalf("readReply = %d %q, %v; want 250 %q", r.code, r.lines, err, want)
	}
	n := testing.AllocsPerRun(100, func() {
		sr.Reset(ehlo)
		br.Reset(sr)
		if _, err := readReply(br, nil); err != nil {
			t.Fatal(err)
		}
	})
	if n > 2 {
		t.Errorf("readReply of a %d-line reply: %v allocations, want 2", len(want), n)
	}
	long := "250-" + strings.Repeat("x", 2000) + "\r\n250 " + strings.Repeat("y", 1000) + "\r\n" // more than the array on the stack
	br.Reset(strings.NewReader(long))
	if r, err := readReply(br, nil); err != nil || len(r.lines) != 2 || len(r.lines[0]) != 2004 || len(r.lines[1]) != 1004 {
		t.Fatalf("long reply: %v, %d lines", err, len(r.lines))
	}
}

// When a client leaves without QUIT, postern says QUIT to the backend
// itself and waits at most quitTimeout for the answer, not the backend
// timeout (the deadline it set for that was replaced by the ones send and
// read set).
func TestBackendQuitBounded(t *testing.T) {
	quitSeen, closed := make(chan time.Time, 1), make(chan time.Time, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() { // a backend that never answers QUIT
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		var hdr [16]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		r.Discard(int(hdr[14])<<8 | int(hdr[15]))
		io.WriteString(c, "220 mx.example.test ESMTP\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				closed <- time.Now()
				return
			}
			if l == "QUIT\r\n" {
				quitSeen <- time.Now()
				continue
			}
			io.WriteString(c, "250 mx.example.test\r\n")
		}
	}()
	h := newHarness(t, baseIPS, func(c *Config) { c.Backend = ln.Addr().String(); c.Timeouts.Backend = time.Minute }, nil)
	cl := h.dial("127.0.0.31")
	cl.expect(220)
	cl.cmd("EHLO client.example.test", 250)
	cl.c.Close()
	var q time.Time
	select {
	case q = <-quitSeen:
	case <-time.After(10 * time.Second):
		t.Fatal("postern did not say QUIT to the backend")
	}
	select {
	case c := <-closed:
		if d := c.Sub(q); d > quitTimeout+3*time.Second {
			t.Fatalf("postern held the backend connection %v after its unanswered QUIT", d)
		}
	case <-time.After(quitTimeout + 8*time.Second):
		t.Fatal("postern still holds the backend connection long after its unanswered QUIT (backend timeout 1 m)")
	}
}
