package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/sockio"
)

// loopPair returns both ends of a loopback TCP connection, the accepted one
// as a *sockio.Conn.
func loopPair(t *testing.T) (*sockio.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	far, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	near, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close(); near.Close() })
	return sockio.New(near.(*net.TCPConn)).(*sockio.Conn), far
}

// loopResult is what relayOnLoop returned.
type loopResult struct{ ended, ran bool }

// startLoopRelay runs relayOnLoop on a loop of its own between two
// loopback connections, and returns their far ends (the client, the
// backend), their near ends and where relayOnLoop's result will come.
func startLoopRelay(t *testing.T, buffered []byte, done func()) (cl, be *sockio.Conn, clFar, beFar net.Conn, res <-chan loopResult) {
	t.Helper()
	loops, err := evloop.Start(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loops.Close)
	cl, clFar = loopPair(t) // the client's connection; clFar is the client
	be, beFar = loopPair(t) // the backend connection; beFar is the backend
	ch := make(chan loopResult, 1)
	var s Conns
	loops.Go(context.Background(), nil, func(ctx context.Context) {
		evloop.Bind(ctx, cl)
		evloop.Bind(ctx, be)
		ended, ran := s.relayOnLoop(ctx, cl, be, buffered, done)
		ch <- loopResult{ended, ran}
	})
	return cl, be, clFar, beFar, ch
}

// awaitLoopRelay waits up to timeout for the relay's result: it must have
// run, and ended the session (ended) or given it back (not ended); stuck
// is the failure when no result comes.
func awaitLoopRelay(t *testing.T, res <-chan loopResult, ended bool, timeout time.Duration, stuck string) {
	t.Helper()
	select {
	case r := <-res:
		if r.ended != ended || !r.ran {
			t.Fatalf("relay: ended %v ran %v, want ended %v and ran", r.ended, r.ran, ended)
		}
	case <-time.After(timeout):
		t.Fatal(stuck)
	}
}

// The relay on a loop moves megabytes both ways at once, through full
// sockets (a peer that reads slowly), intact, and ends with the stream.
func TestRelayOnLoop(t *testing.T) {
	// Not idle between the transfer and the backend's end, however slow
	// the machine.
	defer func(g time.Duration) { loopGrace = g }(loopGrace)
	loopGrace = time.Minute
	// And not handed over as bulk: this test is of the loop's own copy.
	defer func(n int) { loopBulkReads = n }(loopBulkReads)
	loopBulkReads = 1 << 30
	upData := make([]byte, 4<<20)
	downData := make([]byte, 4<<20)
	rand.Read(upData)
	rand.Read(downData)
	buffered := []byte("buffered after login\r\n")
	var doneCalled sync.WaitGroup
	doneCalled.Add(1)
	_, _, clFar, beFar, res := startLoopRelay(t, buffered, doneCalled.Done)
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	wg.Add(3)
	go func() { defer wg.Done(); clFar.Write(upData) }()
	go func() { defer wg.Done(); beFar.Write(downData) }()
	go func() {
		defer wg.Done()
		// The client reads slowly at first: the relay's writes to it fill
		// the socket and wait.
		time.Sleep(50 * time.Millisecond)
		gotDown = make([]byte, len(downData))
		io.ReadFull(clFar, gotDown)
	}()
	gotUp = make([]byte, len(buffered)+len(upData))
	if _, err := io.ReadFull(beFar, gotUp); err != nil {
		t.Fatalf("backend read: %v", err)
	}
	wg.Wait()
	if !bytes.Equal(gotUp, append(append([]byte(nil), buffered...), upData...)) {
		t.Error("bytes up differ")
	}
	if !bytes.Equal(gotDown, downData) {
		t.Error("bytes down differ")
	}
	beFar.Close() // the backend ends the session
	awaitLoopRelay(t, res, true, 10*time.Second, "the relay did not end with the backend's stream")
	doneCalled.Wait()
	if _, err := clFar.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client side after the end: %v, want EOF", err)
	}
}

// An idle relay gives the session back after activeGrace, with nothing
// pending, and the connections open.
func TestRelayOnLoopIdle(t *testing.T) {
	cl, be, clFar, beFar, res := startLoopRelay(t, nil, nil)
	clFar.Write([]byte("a NOOP\r\n"))
	b := make([]byte, 8)
	if _, err := io.ReadFull(beFar, b); err != nil || string(b) != "a NOOP\r\n" {
		t.Fatalf("relayed %q %v", b, err)
	}
	awaitLoopRelay(t, res, false, 10*time.Second, "the idle relay did not give the session back")
	// Both connections still open, nothing left unread.
	for _, c := range []struct {
		far  net.Conn
		near *sockio.Conn
	}{{clFar, cl}, {beFar, be}} {
		c.far.Write([]byte("ok\r\n"))
		c.near.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 4)
		if _, err := io.ReadFull(c.near, got); err != nil || string(got) != "ok\r\n" {
			t.Fatalf("after the relay: %q %v", got, err)
		}
	}
}

// A bulk transfer (a large FETCH) leaves the loop: the relay gives the
// session back long before loopGrace, with nothing pending, and every byte
// relayed so far and after (by a plain copy here, splice in Handoff)
// arrives intact and in order.
func TestRelayOnLoopBulk(t *testing.T) {
	defer func(g time.Duration) { loopGrace = g }(loopGrace)
	loopGrace = time.Minute
	cl, be, clFar, beFar, res := startLoopRelay(t, nil, nil)
	down := make([]byte, 8<<20)
	rand.Read(down)
	go beFar.Write(down)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(down))
		n, _ := io.ReadFull(clFar, b)
		got <- b[:n]
	}()
	awaitLoopRelay(t, res, false, 30*time.Second, "the relay kept a bulk transfer on the loop")
	// What the loop did not move, a copy off the loop does.
	cl.SetDeadline(time.Time{})
	be.SetDeadline(time.Time{})
	go io.Copy(cl, be)
	select {
	case b := <-got:
		if !bytes.Equal(b, down) {
			t.Fatalf("the client got %d bytes, not the %d sent intact", len(b), len(down))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client did not get the transfer")
	}
}

// A dialogue through the relay on a loop, each side answering the other
// in turn (the relay reads a side only when the loop reports it ready
// after a read that emptied it), ends when the backend closes right after
// its last answer: the answer and the close arrive together, and the
// relay still sees the end at once, not at the end of its grace period.
func TestRelayOnLoopDialogue(t *testing.T) {
	defer func(g time.Duration) { loopGrace = g }(loopGrace)
	loopGrace = time.Minute
	_, _, clFar, beFar, res := startLoopRelay(t, nil, nil)
	clFar.SetDeadline(time.Now().Add(10 * time.Second))
	beFar.SetDeadline(time.Now().Add(10 * time.Second))
	readN := func(c net.Conn, want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	for _, step := range []struct{ up, down string }{
		{"a NOOP\r\n", "a OK NOOP\r\n"},
		{"b SELECT INBOX\r\n", "* 3 EXISTS\r\nb OK [READ-WRITE] SELECT\r\n"},
		{"c NOOP\r\n", "c OK\r\n"},
	} {
		clFar.Write([]byte(step.up))
		readN(beFar, step.up)
		beFar.Write([]byte(step.down))
		readN(clFar, step.down)
	}
	clFar.Write([]byte("d LOGOUT\r\n"))
	readN(beFar, "d LOGOUT\r\n")
	beFar.Write([]byte("* BYE\r\nd OK LOGOUT\r\n"))
	beFar.Close()
	readN(clFar, "* BYE\r\nd OK LOGOUT\r\n")
	if n, err := clFar.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client after the backend's close: %d, %v; want EOF", n, err)
	}
	awaitLoopRelay(t, res, true, 10*time.Second, "the relay did not end with the backend's close")
}

// A relay on a loop of a session Conns tracks ends when Serve's context
// ends (closeWithCtx, which Serve runs then), without a registration of
// its own with that context; one of a session Conns does not track ends
// with the context it was given.
func TestRelayOnLoopEndsWithServe(t *testing.T) {
	defer func(g time.Duration) { loopGrace = g }(loopGrace)
	loopGrace = time.Minute // not idle before the end
	for _, tracked := range []bool{true, false} {
		loops, err := evloop.Start(1, nil)
		if err != nil {
			t.Fatal(err)
		}
		cl, clFar := loopPair(t)
		be, beFar := loopPair(t)
		var s Conns
		if tracked {
			s.track(cl, true)
		}
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan loopResult, 1)
		loops.Go(ctx, nil, func(ctx context.Context) {
			evloop.Bind(ctx, cl)
			evloop.Bind(ctx, be)
			ended, ran := s.relayOnLoop(ctx, cl, be, nil, nil)
			res <- loopResult{ended, ran}
		})
		clFar.Write([]byte("a1 NOOP\r\n"))
		if got := readN(t, beFar, 9); string(got) != "a1 NOOP\r\n" {
			t.Fatalf("backend read %q", got)
		}
		if tracked {
			s.mu.Lock()
			marked := s.conns[cl]
			s.mu.Unlock()
			if !marked {
				t.Fatal("the relayed session is not marked to end with Serve's context")
			}
			s.closeWithCtx()
		} else {
			cancel()
		}
		awaitLoopRelay(t, res, true, 5*time.Second, "the relay did not end with the gateway")
		cancel()
		loops.Close()
	}
}

// Once Serve's context has ended, a session marked to end with it is
// closed at once; a connection Conns does not track is not marked.
func TestEndsWithCtx(t *testing.T) {
	var s Conns
	a, _ := tcpPair(t)
	if s.endsWithCtx(a) {
		t.Fatal("an untracked connection was marked")
	}
	s.track(a, true)
	s.closeWithCtx()
	if !s.endsWithCtx(a) {
		t.Fatal("a tracked connection was not taken")
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after the context's end: %v, want the connection closed", err)
	}
}
