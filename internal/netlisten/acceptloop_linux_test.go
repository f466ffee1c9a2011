package netlisten

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/sockio"
)

// With SetAcceptOnLoop, the accept loop moves to an event loop after the
// first connection and accepts owned sockets there; it leaves the loop
// for a goroutine while a connection waits for the next server (a
// reload's hand-over) and comes back at the next connection; Close ends
// it on its loop.
func TestAcceptOnLoop(t *testing.T) {
	grp, err := evloop.Start(1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Skipf("no event loops here: %v", err)
	}
	defer grp.Close()
	l, err := Listen(context.Background(), Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan *Conn, 100)
	serve := func() (stop chan struct{}, served chan error) {
		stop, served = make(chan struct{}), make(chan error, 1)
		go func() { served <- l.ServeUntil(stop, func(c *Conn) { conns <- c }) }()
		return stop, served
	}
	take := func(i int) *Conn {
		t.Helper()
		select {
		case c := <-conns:
			return c
		case <-time.After(testTimeout):
			t.Fatalf("connection %d not served", i)
			return nil
		}
	}
	dialOne := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	st := grp.Stats()
	waitStat := func(what string, get func() int64, want int64) {
		t.Helper()
		for deadline := time.Now().Add(testTimeout); get() != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d, want %d", what, get(), want)
			}
		}
	}
	stop, served := serve()
	// A first connection, on the goroutine: ServeUntil runs from then on.
	c := dialOne()
	take(-1).Close()
	c.Close()
	l.SetOwnedSockets(true)
	l.SetAcceptOnLoop(func(h func(context.Context)) { grp.Go(context.Background(), nil, h) })
	for i := range 20 {
		c := dialOne()
		sc := take(i)
		raw, _ := sc.RawTCP()
		if _, owned := raw.(*sockio.Socket); i > 0 && !owned {
			t.Fatalf("connection %d: %T, want an owned socket", i, raw)
		}
		if _, err := io.WriteString(sc, "hello\r\n"); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(testTimeout))
		if l := readLine(t, c); l != "hello\r\n" {
			t.Fatalf("connection %d: client read %q", i, l)
		}
		sc.Close()
		c.Close()
	}
	if st.Started.Load() != 1 || st.Detached.Load() != 0 {
		t.Fatalf("after 20 connections: %d handlers started on the loop, %d left it; want 1 (the accept loop) and 0", st.Started.Load(), st.Detached.Load())
	}

	// A hand-over: no server for a moment. The connection that comes
	// then waits, off the loop, and goes to the next server.
	close(stop)
	if err := <-served; err == nil {
		t.Fatal("ServeUntil returned no error when stopped")
	}
	c = dialOne()
	defer c.Close()
	waitStat("handlers that left the loop", st.Detached.Load, 1)
	stop, served = serve()
	take(20).Close()
	c = dialOne()
	defer c.Close()
	take(21).Close()
	waitStat("handlers started on the loop", st.Started.Load, 2) // back on the loop

	// Close ends the accept loop on its loop, and ServeUntil.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := l.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitStat("handlers ended on the loop", st.Ended.Load, 1)
	select {
	case <-served:
	case <-time.After(testTimeout):
		t.Fatal("ServeUntil did not return after Close")
	}
	close(stop)
}

// Turned off, the accept loop leaves its event loop and accepts on a
// goroutine again.
func TestAcceptOnLoopOff(t *testing.T) {
	grp, err := evloop.Start(1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Skipf("no event loops here: %v", err)
	}
	defer grp.Close()
	s := start(t, Config{})
	s.SetOwnedSockets(true)
	s.SetAcceptOnLoop(func(h func(context.Context)) { grp.Go(context.Background(), nil, h) })
	for range 3 { // through Accept: each connection leaves the loop to wait for it
		dial(t, s, "127.0.0.65")
		s.accept(t)
	}
	s.SetAcceptOnLoop(nil)
	before := grp.Stats().Started.Load()
	for range 3 {
		dial(t, s, "127.0.0.65")
		s.accept(t)
	}
	// One more handler at most: the accept loop may have been on a loop,
	// waiting, when it was turned off.
	if n := grp.Stats().Started.Load(); n > before+1 {
		t.Fatalf("after SetAcceptOnLoop(nil): %d handlers started on the loop, want at most %d", n, before+1)
	}
}
