package netlisten

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// AcceptUntil returns once its stop channel closes while the listener
// keeps accepting for the next caller: the connection that arrives after
// the hand-over goes to the new acceptor.
func TestAcceptUntilHandsOver(t *testing.T) {
	l, err := Listen(context.Background(), Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stop := make(chan struct{})
	old := make(chan error, 1)
	go func() {
		_, err := l.AcceptUntil(stop)
		old <- err
	}()
	close(stop)
	select {
	case err := <-old:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("AcceptUntil after stop: %v, want net.ErrClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("AcceptUntil did not return after stop")
	}
	c, err := net.DialTimeout("tcp", l.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan *Conn, 1)
	go func() {
		sc, err := l.AcceptUntil(make(chan struct{}))
		if err != nil {
			t.Error(err)
		}
		got <- sc
	}()
	select {
	case sc := <-got:
		if sc == nil || sc.ClientAddr().Addr().String() != "127.0.0.1" {
			t.Fatalf("accepted %v", sc)
		}
		sc.Close()
	case <-time.After(testTimeout):
		t.Fatal("the new acceptor got no connection")
	}
}

// SetLimits applies to connections admitted afterwards.
func TestSetLimits(t *testing.T) {
	s := start(t, Config{MaxPerAddr: 1})
	refused := refuser(s)
	dial(t, s, "127.0.0.7")
	s.accept(t)
	dial(t, s, "127.0.0.7")
	if r := nextRefusal(t, refused); r.reason != ReasonMaxPerAddr {
		t.Fatalf("refusal %+v, want %s", r, ReasonMaxPerAddr)
	}
	if err := s.SetLimits(0, 2); err != nil {
		t.Fatal(err)
	}
	dial(t, s, "127.0.0.7")
	s.accept(t)
	if err := s.SetLimits(-1, 0); err == nil {
		t.Error("SetLimits accepted a negative limit")
	}
}

// SetTLS swaps the certificate of an implicit-TLS listener; it cannot turn
// TLS on or off.
func TestSetTLS(t *testing.T) {
	first, _ := testCerts(t)
	second, cliCfg := testCerts(t)
	s := start(t, Config{TLS: first})
	if err := s.SetTLS(nil); err == nil {
		t.Error("SetTLS(nil) on a TLS listener succeeded")
	}
	if err := s.SetTLS(second); err != nil {
		t.Fatal(err)
	}
	raw := dial(t, s, "127.0.0.3")
	// cliCfg trusts only the second certificate: the handshake proves
	// the swap.
	greetOverTLS(t, s.accept(t), tls.Client(raw, cliCfg))

	plain := start(t, Config{})
	if err := plain.SetTLS(second); err == nil {
		t.Error("SetTLS on a plaintext listener succeeded")
	}
}
