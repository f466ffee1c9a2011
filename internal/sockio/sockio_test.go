//go:build linux

package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected pair on loopback: ours (a *net.TCPConn) and the
// peer's.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-done
	if p == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); p.Close() })
	return c.(*net.TCPConn), p.(*net.TCPConn)
}

// sides runs f on a plain TCPConn, on a Conn over one and on a Socket
// that owns one's descriptor, and compares what each returned.
func sides(t *testing.T, f func(t *testing.T, c net.Conn, peer *net.TCPConn) string) {
	t.Helper()
	c1, p1 := pair(t)
	want := f(t, c1, p1)
	c2, p2 := pair(t)
	got := f(t, New(c2), p2)
	if got != want {
		t.Errorf("sockio.Conn: %s\nnet.TCPConn: %s", got, want)
	}
	c3, p3 := pair(t)
	got = f(t, own(t, c3), p3)
	if got != want {
		t.Errorf("sockio.Socket: %s\nnet.TCPConn: %s", got, want)
	}
	if !t.Failed() {
		t.Logf("all: %s", got)
	}
}

// describe renders a Read or Write's result without the addresses.
func describe(n int, err error) string {
	if err == nil {
		return fmt.Sprintf("n=%d err=nil", n)
	}
	var oe *net.OpError
	shape := fmt.Sprintf("%T", err)
	if errors.As(err, &oe) {
		shape = fmt.Sprintf("OpError{Op:%s Net:%s Err:%T %v}", oe.Op, oe.Net, oe.Err, oe.Err)
	}
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	return fmt.Sprintf("n=%d %s eof=%v timeout=%v deadline=%v closed=%v reset=%v",
		n, shape, err == io.EOF, timeout, errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET))
}

func TestNewKeepsTheSocket(t *testing.T) {
	c, _ := pair(t)
	s, ok := New(c).(*Conn)
	if !ok {
		t.Fatalf("New returned %T", New(c))
	}
	if got, ok := s.RawTCP(); !ok || got != TCPSocket(c) {
		t.Errorf("RawTCP = %v, %v; want the TCPConn", got, ok)
	}
	if Wrap(s) != net.Conn(s) {
		t.Error("Wrap of a Conn wrapped it again")
	}
	if s.LocalAddr().String() != c.LocalAddr().String() || s.RemoteAddr().String() != c.RemoteAddr().String() {
		t.Error("addresses differ from the TCPConn's")
	}
}

func TestCopiesBothWays(t *testing.T) {
	c, peer := pair(t)
	s := New(c)
	// 8 MiB each way at once: far more than the socket buffers, so writes
	// are partial and wait for writability, and reads wait for data.
	up := make([]byte, 8<<20)
	down := make([]byte, 8<<20)
	rand.Read(up)
	rand.Read(down)
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errs [4]error
	wg.Add(4)
	go func() { defer wg.Done(); _, errs[0] = s.Write(up); c.CloseWrite() }()
	go func() { defer wg.Done(); gotUp, errs[1] = io.ReadAll(peer) }()
	go func() { defer wg.Done(); _, errs[2] = peer.Write(down); peer.CloseWrite() }()
	go func() {
		defer wg.Done()
		buf := make([]byte, 3000) // odd size: many short reads
		for {
			n, err := s.Read(buf)
			gotDown = append(gotDown, buf[:n]...)
			if err == io.EOF {
				return
			}
			if err != nil {
				errs[3] = err
				return
			}
		}
	}()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if !bytes.Equal(gotUp, up) {
		t.Errorf("peer got %d bytes, not the %d written", len(gotUp), len(up))
	}
	if !bytes.Equal(gotDown, down) {
		t.Errorf("read %d bytes, not the %d the peer wrote", len(gotDown), len(down))
	}
}

func TestEndOfStream(t *testing.T) {
	sides(t, func(t *testing.T, c net.Conn, peer *net.TCPConn) string {
		peer.Write([]byte("bye"))
		peer.Close()
		buf := make([]byte, 16)
		var out []string
		for range 3 {
			n, err := c.Read(buf)
			out = append(out, describe(n, err))
			if err != nil && err != io.EOF {
				break
			}
		}
		return strings.Join(out, "; ")
	})
}

func TestZeroLengthReadAndWrite(t *testing.T) {
	sides(t, func(t *testing.T, c net.Conn, peer *net.TCPConn) string {
		n1, err1 := c.Read(nil)
		n2, err2 := c.Write(nil)
		return describe(n1, err1) + "; " + describe(n2, err2)
	})
}

func TestReadDeadline(t *testing.T) {
	sides(t, func(t *testing.T, c net.Conn, peer *net.TCPConn) string {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := c.Read(make([]byte, 8))
		first := describe(n, err)
		// A deadline in the past fails even with bytes waiting, as net's.
		peer.Write([]byte("x"))
		c.SetReadDeadline(time.Unix(1, 0))
		n, err = c.Read(make([]byte, 8))
		second := describe(n, err)
		c.SetReadDeadline(time.Time{})
		n, err = c.Read(make([]byte, 8))
		return first + "; " + second + "; " + describe(n, err)
	})
}

func TestWriteDeadlineMidWrite(t *testing.T) {
	sides(t, func(t *testing.T, c net.Conn, peer *net.TCPConn) string {
		// The peer reads nothing: the write fills both socket buffers and
		// times out having written part of p.
		big := make([]byte, 64<<20) // before the deadline: slow under -race
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Write(big)
		if n <= 0 || n >= 64<<20 {
			t.Errorf("wrote %d bytes; want part of 64 MiB", n)
		}
		return describe(0, err) // n differs between runs
	})
}

func TestCloseWakesAReader(t *testing.T) {
	sides(t, func(t *testing.T, c net.Conn, peer *net.TCPConn) string {
		res := make(chan string, 1)
		started := make(chan struct{})
		go func() {
			close(started)
			n, err := c.Read(make([]byte, 8))
			res <- describe(n, err)
		}()
		<-started
		// The reader may or may not be waiting yet: either way it fails
		// with net.ErrClosed.
		c.Close()
		select {
		case r := <-res:
			n, err := c.Read(make([]byte, 8))
			return r + "; " + describe(n, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not wake the reader")
			return ""
		}
	})
}

func TestReset(t *testing.T) {
	sides(t, func(t *testing.T, c net.Conn, peer *net.TCPConn) string {
		c.Write([]byte("unread by the peer"))
		peer.SetLinger(0)
		peer.Close() // RST
		n, err := c.Read(make([]byte, 8))
		first := describe(n, err)
		// Write to a reset connection: EPIPE, and no SIGPIPE kills the
		// process.
		var werr error
		for range 3 {
			if _, werr = c.Write([]byte("more")); werr != nil {
				break
			}
		}
		return first + "; " + describe(0, werr)
	})
}

// conns makes a Conn over a TCPConn's socket: Go's (New) or moved into
// an owned Socket (NewOwned), for the tests that run on both.
var conns = []struct {
	name string
	make func(t testing.TB, c *net.TCPConn) *Conn
}{
	{"net", func(_ testing.TB, c *net.TCPConn) *Conn { return New(c).(*Conn) }},
	{"owned", func(t testing.TB, c *net.TCPConn) *Conn { return NewOwned(own(t, c)) }},
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	for _, k := range conns {
		t.Run(k.name, func(t *testing.T) {
			c, peer := pair(t)
			concurrentReadersAndWriters(t, k.make(t, c), peer)
		})
	}
}

func concurrentReadersAndWriters(t *testing.T, s *Conn, peer *net.TCPConn) {
	const writers, each = 4, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte{byte('a' + w), byte('a' + w), byte('a' + w), byte('a' + w)}
			for range each {
				if _, err := s.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); s.CloseWrite() }()
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*each*4 {
		t.Fatalf("peer got %d bytes, want %d", len(got), writers*each*4)
	}
	// Each Write is whole: no 4-byte message is interleaved with another.
	for i := 0; i < len(got); i += 4 {
		if got[i] != got[i+1] || got[i] != got[i+2] || got[i] != got[i+3] {
			t.Fatalf("message at %d interleaved: %q", i, got[i:i+4])
		}
	}
	// Two readers at once share what the peer sends.
	go func() { peer.Write(bytes.Repeat([]byte("z"), 1<<20)); peer.CloseWrite() }()
	var mu sync.Mutex
	total := 0
	var rg sync.WaitGroup
	for range 2 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := s.Read(buf)
				mu.Lock()
				total += n
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	rg.Wait()
	if total != 1<<20 {
		t.Errorf("readers got %d bytes, want %d", total, 1<<20)
	}
}

func TestNoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, k := range conns {
		t.Run(k.name, func(t *testing.T) {
			c, peer := pair(t)
			noAllocations(t, k.make(t, c), peer)
		})
	}
}

func noAllocations(t *testing.T, s *Conn, peer *net.TCPConn) {
	buf := make([]byte, 64)
	msg := []byte("ping")
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:4]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:4]); err != nil {
			t.Fatal(err)
		}
		if s.FD() < 0 { // asked by an event loop's relay at every turn
			t.Fatal("FD of an open connection: -1")
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per round trip; want 0", allocs)
	}
	fd := s.FD()
	s.Close()
	if got := s.FD(); got != -1 {
		t.Errorf("FD after Close: %d (was %d); want -1", got, fd)
	}
}
