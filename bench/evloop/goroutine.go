package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/pires/go-proxyproto"
)

// runGoroutines relays every service the way Go programs usually do: one
// goroutine per connection (two for a TCP relay), reads and writes through
// the runtime's network poller. It returns when ctx ends.
func runGoroutines(ctx context.Context, svcs []service) error {
	var wg sync.WaitGroup
	var lns []net.Listener
	for _, s := range svcs {
		ln, err := net.Listen("tcp", s.listen.String())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("service %s: %w", s.name, err)
		}
		lns = append(lns, ln)
		wg.Go(func() { serveGoroutines(ln, s) })
	}
	ready()
	<-ctx.Done()
	for _, l := range lns {
		l.Close()
	}
	wg.Wait()
	return ctx.Err()
}

// serveGoroutines accepts until ln is closed. The connections it starts
// end with their peers.
func serveGoroutines(ln net.Listener, s service) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if s.http {
			go relayHTTP(c, func() (conn, error) {
				b, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.backend))
				if err != nil {
					return nil, err
				}
				return b, nil
			})
		} else {
			go relayTCP(c.(*net.TCPConn), s)
		}
	}
}

// relayTCP connects to the backend, sends the PROXY v2 header and copies
// both ways (splice(2) on Linux), passing each end's half-close on.
func relayTCP(c *net.TCPConn, s service) {
	defer c.Close()
	b, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.backend))
	if err != nil {
		return
	}
	defer b.Close()
	if _, err := proxyproto.HeaderProxyFromAddrs(2, c.RemoteAddr(), c.LocalAddr()).WriteTo(b); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(b, c)
		b.CloseWrite()
		close(done)
	}()
	io.Copy(c, b)
	c.CloseWrite()
	<-done
}

// conn is what the HTTP relay reads and writes: a *net.TCPConn, or a
// socket of the goroutine-own mode's poller.
type conn interface {
	io.ReadWriteCloser
}

// relayHTTP relays keep-alive HTTP/1.1 requests without a body to a
// backend connection of this client's own (made with dial on the first
// request), until either end closes or sends what checkRequest or bodyLen
// do not accept.
func relayHTTP(c conn, dial func() (conn, error)) {
	defer c.Close()
	var b conn
	defer func() {
		if b != nil {
			b.Close()
		}
	}()
	in, bin := make([]byte, 0, maxHead), make([]byte, 32<<10)
	for {
		n, err := readHead(c, &in)
		if err != nil {
			return
		}
		isHead, err := checkRequest(in[:n])
		if err != nil {
			return
		}
		if b == nil {
			if b, err = dial(); err != nil {
				return
			}
		}
		if _, err := b.Write(in[:n]); err != nil {
			return
		}
		in = in[:copy(in, in[n:])]
		// The answer: its head, then its body, written on as read.
		got := 0
		hl := 0
		for hl == 0 {
			if got == len(bin) {
				return
			}
			m, err := b.Read(bin[got:])
			if err != nil {
				return
			}
			got += m
			hl = headLen(bin[:got])
		}
		bd, err := newBody(bin[:hl], isHead)
		if err != nil {
			return
		}
		done, err := bd.take(bin[hl:got])
		if err != nil {
			return
		}
		if _, err := c.Write(bin[:got]); err != nil {
			return
		}
		for !done {
			m, err := b.Read(bin)
			if err != nil {
				return
			}
			if done, err = bd.take(bin[:m]); err != nil {
				return
			}
			if _, err := c.Write(bin[:m]); err != nil {
				return
			}
		}
	}
}

// readHead reads from c into *in until it holds a whole head and returns
// its length.
func readHead(c io.Reader, in *[]byte) (int, error) {
	for {
		if n := headLen(*in); n > 0 {
			return n, nil
		}
		if len(*in) == cap(*in) {
			return 0, errors.New("request head too long")
		}
		m, err := c.Read((*in)[len(*in):cap(*in)])
		*in = (*in)[:len(*in)+m]
		if err != nil {
			return 0, err
		}
	}
}
