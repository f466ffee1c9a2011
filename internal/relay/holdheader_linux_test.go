package relay

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/sockio"
)

// heldBackend accepts one connection and hands it to the test with its
// socket's descriptor readable by queued.
func heldBackend(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		t.Cleanup(func() { c.Close() })
		ch <- c
	}()
	return ln.Addr().String(), ch
}

// queued is what waits to be read on c's socket.
func queued(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var e syscall.Errno
	rc.Control(func(fd uintptr) { n, e = sockio.Queued(fd) })
	if e != 0 {
		t.Fatalf("queued: %v", e)
	}
	return n
}

var heldClient = netip.MustParseAddrPort("203.0.113.7:40001")

// dialHeld dials addr for heldClient with HoldHeader, local the address
// the client reached; the connection is closed at the end of the test.
func dialHeld(t *testing.T, addr, local string) net.Conn {
	t.Helper()
	d := Dialer{Addr: addr, Timeout: 10 * time.Second, HoldHeader: true}
	conn, err := d.Dial(context.Background(), heldClient, netip.MustParseAddrPort(local))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readHeader reads a PROXY header from the backend's side and checks that
// it names heldClient.
func readHeader(t *testing.T, r *bufio.Reader) {
	t.Helper()
	h, err := proxyproto.Read(r)
	if err != nil {
		t.Fatalf("the backend read no PROXY header: %v", err)
	}
	if got := h.SourceAddr.(*net.TCPAddr).AddrPort(); got != heldClient {
		t.Fatalf("PROXY header from %v, want %v", got, heldClient)
	}
}

// TestDialHoldsHeaderForTheGreeting: with HoldHeader, nothing reaches the
// backend until the first read, which sends the header and returns the
// greeting the backend answers with.
func TestDialHoldsHeaderForTheGreeting(t *testing.T) {
	addr, accepted := heldBackend(t)
	conn := dialHeld(t, addr, "127.0.0.1:143")
	be := <-accepted
	if n := queued(t, be); n != 0 {
		t.Fatalf("%d bytes reached the backend before the first read", n)
	}
	greeted := make(chan error, 1)
	go func() {
		r := bufio.NewReader(be)
		readHeader(t, r)
		_, err := be.Write([]byte("* OK ready\r\n"))
		greeted <- err
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(conn, buf, len("* OK ready\r\n"))
	if err != nil || string(buf[:n]) != "* OK ready\r\n" {
		t.Fatalf("greeting %q, %v", buf[:n], err)
	}
	if err := <-greeted; err != nil {
		t.Fatal(err)
	}
}

// TestDialHeldHeaderGoesFirst: a held header goes out before anything
// written, and before a relay takes the socket (RawTCP, WriteReaderOf),
// once.
func TestDialHeldHeaderGoesFirst(t *testing.T) {
	for _, first := range []string{"Write", "RawTCP", "WriteReaderOf"} {
		t.Run(first, func(t *testing.T) {
			addr, accepted := heldBackend(t)
			conn := dialHeld(t, addr, "127.0.0.1:25")
			var w io.Writer = conn
			switch first {
			case "RawTCP":
				tc, ok := conn.(rawTCPer).RawTCP()
				if !ok {
					t.Fatal("no socket beneath")
				}
				w = tc
			case "WriteReaderOf":
				if WriteReaderOf(conn) == nil {
					t.Fatal("no WriteRead on a plain socket")
				}
			}
			if _, err := w.Write([]byte("EHLO x\r\n")); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write([]byte("QUIT\r\n")); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(<-accepted)
			readHeader(t, r)
			for _, want := range []string{"EHLO x\r\n", "QUIT\r\n"} {
				if l, err := r.ReadString('\n'); err != nil || l != want {
					t.Fatalf("the backend read %q, %v; want %q", l, err, want)
				}
			}
		})
	}
}

// TestDialHeldHeaderBackendGone: a backend that closes at once (as one
// that refuses PROXY headers does) makes the first read end with the end
// of the stream or a reset, not wait.
func TestDialHeldHeaderBackendGone(t *testing.T) {
	addr, accepted := heldBackend(t)
	conn := dialHeld(t, addr, "127.0.0.1:110")
	(<-accepted).Close()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	start := time.Now()
	n, err := conn.Read(make([]byte, 16))
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the first read waited %v", took)
	}
	if err == nil {
		t.Fatalf("read %d bytes from a closed backend", n)
	}
	t.Logf("first read: %v", err)
}
