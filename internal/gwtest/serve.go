package gwtest

import (
	"context"
	"net"
	"testing"
	"time"
)

// Serve runs srv on a fresh listener of 127.0.0.1 until the test ends
// (then it stops accepting and drains for up to 2 s) and returns the
// listener's address.
func Serve(t testing.TB, srv Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, Acceptor{Listener: ln}, 2*time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// DialFrom connects to addr from the loopback source address src (e.g.
// "127.0.0.7", which the gateway takes for the client's address), with a
// 20 s deadline for the whole exchange; the connection is closed when the
// test ends.
func DialFrom(t testing.TB, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}
