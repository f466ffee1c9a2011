package netlisten

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// serveUntil runs ServeUntil in the background; its connections arrive on
// the returned channel, its result on the other.
func serveUntil(l *Listener, stop <-chan struct{}) (<-chan *Conn, <-chan error) {
	conns := make(chan *Conn, 10)
	done := make(chan error, 1)
	go func() { done <- l.ServeUntil(stop, func(c *Conn) { conns <- c }) }()
	return conns, done
}

func dialTo(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nextConn(t *testing.T, conns <-chan *Conn, who string) *Conn {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(testTimeout):
		t.Fatalf("%s got no connection", who)
		return nil
	}
}

func returned(t *testing.T, done <-chan error, who string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("%s did not return", who)
		return nil
	}
}

// ServeUntil starts connections itself, hands the listener over to a
// second ServeUntil that waited for it, then to Accept.
func TestServeUntilHandsOver(t *testing.T) {
	l, err := Listen(context.Background(), Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stop1, stop2 := make(chan struct{}), make(chan struct{})
	conns1, done1 := serveUntil(l, stop1)
	dialTo(t, l)
	if c := nextConn(t, conns1, "the first ServeUntil"); c.ClientAddr().Addr().String() != "127.0.0.1" {
		t.Fatalf("client %v", c.ClientAddr())
	}
	// The second waits while the first serves, as a gateway's next
	// generation does before the hand-over.
	conns2, done2 := serveUntil(l, stop2)
	close(stop1)
	if err := returned(t, done1, "the first ServeUntil"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("first ServeUntil: %v, want net.ErrClosed", err)
	}
	dialTo(t, l)
	nextConn(t, conns2, "the second ServeUntil")
	select {
	case c := <-conns1:
		t.Fatalf("the handed-over ServeUntil got %v", c.ClientAddr())
	default:
	}
	close(stop2)
	if err := returned(t, done2, "the second ServeUntil"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second ServeUntil: %v, want net.ErrClosed", err)
	}
	// Nobody serves: the next connection waits for Accept.
	dialTo(t, l)
	c, err := l.AcceptUntil(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A connection that arrives while nobody serves waits for the next
// ServeUntil; a trusted peer's connection reaches start with the client
// from its PROXY header; Close ends ServeUntil.
func TestServeUntilWaitingAndProxied(t *testing.T) {
	l, err := Listen(context.Background(), Config{Listen: "127.0.0.1:0", Trusted: trust("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := dialTo(t, l)
	writeAll(t, c, proxyHeader(t, 2, "192.0.2.9:4000", "198.51.100.1:143"))
	waitFor(t, "the connection to wait for a server", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.conns.n == 1
	})
	conns, done := serveUntil(l, nil)
	if got := nextConn(t, conns, "ServeUntil").ClientAddr().String(); got != "192.0.2.9:4000" {
		t.Fatalf("client %s, want 192.0.2.9:4000", got)
	}
	l.Close()
	if err := returned(t, done, "ServeUntil"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ServeUntil after Close: %v, want net.ErrClosed", err)
	}
	if err := l.ServeUntil(nil, func(*Conn) { t.Error("start called on a closed listener") }); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ServeUntil on a closed listener: %v", err)
	}
}

// Hand-overs while connections arrive: every connection reaches exactly
// one ServeUntil, and none after that ServeUntil returned.
func TestServeUntilHandOverUnderLoad(t *testing.T) {
	l, err := Listen(context.Background(), Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const generations, each = 12, 5
	dialed := make(chan error, 1)
	go func() {
		for range generations * each {
			c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
			if err != nil {
				dialed <- err
				return
			}
			defer c.Close()
		}
		dialed <- nil
	}()
	got := make(chan *Conn, generations*each)
	for range generations {
		stop := make(chan struct{})
		var over atomic.Bool
		done := make(chan error, 1)
		go func() {
			done <- l.ServeUntil(stop, func(c *Conn) {
				if over.Load() {
					t.Error("start called after ServeUntil returned")
				}
				got <- c
			})
		}()
		// Each generation serves a few connections, then is handed over
		// while the dialer goes on.
		for i := range each {
			select {
			case c := <-got:
				c.Close()
			case <-time.After(testTimeout):
				t.Fatalf("generation got %d of %d connections", i, each)
			}
		}
		close(stop)
		err := returned(t, done, "ServeUntil")
		over.Store(true)
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ServeUntil: %v", err)
		}
	}
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		t.Fatalf("a connection delivered twice or after the last hand-over: %v", c.ClientAddr())
	default:
	}
}
