package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// echoAfter answers every read of peer with the same bytes after delay,
// until the connection ends.
func echoAfter(peer net.Conn, delay time.Duration) {
	go func() {
		b := make([]byte, 64<<10)
		for {
			n, err := peer.Read(b)
			if err != nil {
				return
			}
			time.Sleep(delay)
			if _, err := peer.Write(b[:n]); err != nil {
				return
			}
		}
	}()
}

// TestWriteRead: the request goes out and the answer comes back, whether
// the answer is at once or later, over and over on one connection.
func TestWriteRead(t *testing.T) {
	for _, k := range conns {
		t.Run(k.name, func(t *testing.T) { writeRead(t, k.make) })
	}
}

func writeRead(t *testing.T, mk func(testing.TB, *net.TCPConn) *Conn) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		c, peer := pair(t)
		echoAfter(peer, delay)
		s := mk(t, c)
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		for i := range 200 {
			req := []byte("request " + strconv.Itoa(i))
			nw, nr, err := s.WriteRead(req, buf, i%2 == 1)
			if err != nil || nw != len(req) || string(buf[:nr]) != string(req) {
				t.Fatalf("delay %v, round %d: wrote %d, read %q, %v", delay, i, nw, buf[:nr], err)
			}
		}
	}
}

// TestWriteReadFullSocket: a request larger than the socket takes at once
// is written to its end as Write writes it, and the answer then read.
func TestWriteReadFullSocket(t *testing.T) {
	for _, k := range conns {
		t.Run(k.name, func(t *testing.T) { writeReadFullSocket(t, k.make) })
	}
}

func writeReadFullSocket(t *testing.T, mk func(testing.TB, *net.TCPConn) *Conn) {
	c, peer := pair(t)
	s := mk(t, c)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		peer.Write([]byte("done"))
		got <- b
	}()
	s.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 16)
	nw, nr, err := s.WriteRead(big, buf, true)
	if err != nil || nw != len(big) || string(buf[:nr]) != "done" {
		t.Fatalf("wrote %d of %d, read %q, %v", nw, len(big), buf[:nr], err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer got %d bytes, not the request", len(b))
	}
}

// TestWriteReadErrors: a peer that never answers runs into the read
// deadline; an idle connection with bytes or the end of the stream
// waiting gets ErrPending and nothing is written; a closed connection
// fails the write. Deadlines and closing are reported as Write and Read
// report them.
func TestWriteReadErrors(t *testing.T) {
	c, peer := pair(t)
	s := New(c).(*Conn)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 16)
	nw, _, err := s.WriteRead([]byte("hello"), buf, true)
	var ne net.Error
	if nw != 5 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("no answer: wrote %d, %v; want 5 and a timeout", nw, err)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	peer.Write([]byte("unasked"))
	for range 2 {
		// The peer's bytes, then its end of stream, are waiting.
		waitPending(t, s)
		if nw, _, err := s.WriteRead([]byte("x"), buf, true); nw != 0 || err != ErrPending {
			t.Errorf("waiting on an idle connection: wrote %d, %v; want 0, ErrPending", nw, err)
		}
		if n, _ := s.Read(buf); n > 0 {
			peer.CloseWrite()
		}
	}
	peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := peer.Read(got); n != 0 {
		t.Errorf("the peer got %d bytes; want none", n)
	}
	s.Close()
	nw, _, err = s.WriteRead([]byte("y"), buf, false)
	if nw != 0 || !errors.Is(err, net.ErrClosed) || !strings.HasPrefix(err.Error(), "write ") {
		t.Errorf("closed: wrote %d, %v; want 0 and a closed connection's write error", nw, err)
	}
}

// waitPending waits until bytes or the end of the stream are queued on s
// (loopback hands them over in the kernel's own time).
func waitPending(t *testing.T, s *Conn) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); s.pending() == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("nothing arrived from the peer")
		}
	}
}

// readCalls returns this process's read system calls so far.
func readCalls(t *testing.T) int {
	t.Helper()
	return testenv.ReadCalls(t)
}

// TestWriteReadSavesTheEmptyRead: against a peer in another process that
// answers 2 ms after each request, Write and Read read twice a round trip
// (nothing, then the answer), WriteRead once, and so do Write and Read on
// a Waiter once a short read has emptied the socket: the Conn waits before
// it reads.
func TestWriteReadSavesTheEmptyRead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a peer process")
	}
	const rounds = 100
	counts := map[string]int{}
	for _, side := range []string{"Write and Read", "WriteRead", "Write and Read on a Waiter"} {
		var err error
		nc := startPeer(t, "2ms")
		s := New(nc).(*Conn)
		w := &pollWaiter{}
		if side == "Write and Read on a Waiter" {
			s.SetWaiter(w)
		}
		s.SetDeadline(time.Now().Add(30 * time.Second))
		req, buf := []byte("a NOOP\r\n"), make([]byte, 64)
		before := readCalls(t)
		for range rounds {
			var n int
			if side == "WriteRead" {
				_, n, err = s.WriteRead(req, buf, true)
			} else if _, err = s.Write(req); err == nil {
				n, err = s.Read(buf)
			}
			if err != nil || string(buf[:n]) != string(req) {
				t.Fatalf("%s: read %q, %v; want %q", side, buf[:n], err, req)
			}
		}
		counts[side] = readCalls(t) - before
		if side == "Write and Read on a Waiter" && w.waits < rounds {
			t.Errorf("%d waits for %d round trips", w.waits, rounds)
		}
		s.Close()
	}
	// Reading /proc/self/io is a read or two of its own; on a loaded
	// machine (the race detector, packages tested in parallel) an answer
	// can come late enough for a read to find nothing now and then. The
	// difference measured is one read a round trip.
	for side, n := range counts {
		if want := rounds; side == "Write and Read" {
			if n < 2*want-5 {
				t.Errorf("%s: %d read calls for %d round trips, want about %d", side, n, rounds, 2*want)
			}
		} else if n > want+want/5 {
			t.Errorf("%s: %d read calls for %d round trips, want about %d", side, n, rounds, want)
		}
	}
	t.Logf("read calls for %d round trips: %v", rounds, counts)
}
