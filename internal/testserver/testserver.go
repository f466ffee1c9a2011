// Package testserver runs the small fake servers tests put behind postern
// or in front of its clients: a listener on loopback (or a unix socket)
// that hands each connection to a function, one at a time, until the test
// ends.
package testserver

import (
	"net"
	"testing"
	"time"
)

// Deadline bounds each connection a fake server handles.
const Deadline = 5 * time.Second

// TCP serves each connection to 127.0.0.1:0 with handle (its deadline set
// to Deadline) and closes it when handle returns; it returns the address.
// The server stops, and its goroutine has ended, when the test ends.
func TCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	return serve(t, "tcp", "127.0.0.1:0", handle)
}

// Unix is TCP on a unix socket at path.
func Unix(t testing.TB, path string, handle func(net.Conn)) string {
	t.Helper()
	return serve(t, "unix", path, handle)
}

func serve(t testing.TB, network, addr string, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(Deadline))
			if handle != nil {
				handle(c)
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}
