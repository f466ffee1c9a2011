package netlisten

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/evloop"
)

// startLoops starts two event loops, stopped after the test's other
// clean-ups (listeners first).
func startLoops(t *testing.T) *evloop.Group {
	t.Helper()
	g, err := evloop.Start(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// A listener accepting on an event loop starts each connection's handler
// on that same loop; AcceptOn(nil) moves the accepting back to a goroutine
// and AcceptOn(g) onto the loops again; closing the listener ends the
// acceptor on its loop.
func TestAcceptOnLoop(t *testing.T) {
	g := startLoops(t)
	l, err := Listen(context.Background(), Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetOwnedSockets(true)
	l.AcceptOn(g)
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- l.ServeUntil(stop, func(c *Conn) {
			g.GoAt(c.Place(), context.Background(), c, func(ctx context.Context) {
				defer c.Close()
				where := "goroutine"
				switch p := c.Place(); {
				case p != (evloop.Place{}) && evloop.PlaceOf(ctx) == p:
					where = "beside"
				case p != (evloop.Place{}):
					where = "elsewhere"
				}
				c.SetDeadline(time.Now().Add(testTimeout))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %s", where, line)
			})
		})
	}()
	// where sends a line on a new connection and returns where its handler
	// ran: beside the acceptor on its loop, or accepted by a goroutine.
	n := 0
	where := func() string {
		t.Helper()
		n++
		c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		fmt.Fprintf(c, "line %d\n", n)
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("connection %d: %v", n, err)
		}
		w, line, _ := strings.Cut(string(got), " ")
		if line != fmt.Sprintf("line %d\n", n) {
			t.Fatalf("connection %d: answer %q", n, got)
		}
		return w
	}
	// until dials until a connection's handler runs at want (the move
	// takes effect with the acceptor's next wait), then checks that the
	// next ones do too.
	until := func(want string) {
		t.Helper()
		deadline := time.Now().Add(testTimeout)
		for w := where(); w != want; w = where() {
			if w != "beside" && w != "goroutine" || time.Now().After(deadline) {
				t.Fatalf("handler ran %s, want %s", w, want)
			}
		}
		for range 5 {
			if w := where(); w != want {
				t.Fatalf("handler ran %s after the move, want %s", w, want)
			}
		}
	}
	until("beside")
	l.AcceptOn(nil)
	until("goroutine")
	if g.Stats().Detached.Load() == 0 {
		t.Fatal("the acceptor did not leave its loop")
	}
	l.AcceptOn(g)
	until("beside")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err == nil {
			t.Fatal("ServeUntil returned no error after Close")
		}
	case <-time.After(testTimeout):
		t.Fatal("ServeUntil did not return after Close")
	}
	// Shutdown waited for the acceptor; the loops run nothing.
	st := g.Stats()
	if live := st.Started.Load() - st.Ended.Load() - st.Detached.Load(); live != 0 {
		t.Fatalf("%d handlers still on the loops after Shutdown", live)
	}
	close(stop)
}

// With no ServeUntil, Accept takes the connections an acceptor on a loop
// accepted: the acceptor waits for it off the loop, then goes back.
func TestAcceptOnLoopToAccept(t *testing.T) {
	g := startLoops(t)
	s := start(t, Config{})
	s.SetOwnedSockets(true)
	s.AcceptOn(g)
	for i := range 4 {
		c := dial(t, s, "127.0.0.65")
		sc := s.accept(t)
		if _, err := io.WriteString(sc, "hello\r\n"); err != nil {
			t.Fatal(err)
		}
		if l := readLine(t, c); l != "hello\r\n" {
			t.Fatalf("connection %d: client read %q", i, l)
		}
		sc.Close()
		expectClosed(t, c)
	}
	waitFor(t, "the acceptor on a loop", func() bool { return g.Stats().Started.Load() > 1 })
}
