package relay

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// chanDispatcher is a chanAcceptor that starts the handlers itself; its
// Accept fails the test.
type chanDispatcher struct {
	*chanAcceptor
	t *testing.T
}

func (d chanDispatcher) Accept() (Conn, error) {
	d.t.Error("Serve called Accept on a Dispatcher")
	return nil, errors.New("Accept on a Dispatcher")
}

func (d chanDispatcher) Dispatch(start func(Conn)) error {
	for {
		select {
		case c := <-d.conns:
			start(plainConn{c})
		case <-d.closed:
			return net.ErrClosed
		}
	}
}

// Serve lets a Dispatcher start the handlers; they are tracked and
// drained as with Accept, and Serve returns when ctx ends.
func TestServeDispatcher(t *testing.T) {
	var conns Conns
	ln := chanDispatcher{
		chanAcceptor: &chanAcceptor{conns: make(chan net.Conn), closed: make(chan struct{})},
		t:            t,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handled := make(chan Conn, 1)
	served := make(chan error, 1)
	go func() {
		served <- conns.Serve(ctx, ln, 100*time.Millisecond, func(ctx context.Context, c Conn) {
			handled <- c
			<-ctx.Done()
		})
	}()
	client, pa := tcpPair(t)
	defer client.Close()
	ln.conns <- pa
	select {
	case <-handled:
	case <-time.After(5 * time.Second):
		t.Fatal("no handler started")
	}
	if n := conns.Live(); n != 1 {
		t.Fatalf("Live = %d with one handler running", n)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
	if n := conns.Live(); n != 0 {
		t.Fatalf("Live = %d after Serve returned", n)
	}
}
