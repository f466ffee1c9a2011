package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func rawOf(t testing.TB, c *net.TCPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// openFDs counts the process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestSpliceMovesExactly: a splice of n bytes moves n of the bytes queued,
// across many chunks when n is large, and leaves the rest readable.
func TestSpliceMovesExactly(t *testing.T) {
	in, inPeer := pair(t)   // the peer writes, in is spliced from
	out, outPeer := pair(t) // out is spliced to, its peer reads
	data := make([]byte, 5<<20+123)
	rand.Read(data)
	go func() { inPeer.Write(data); inPeer.Write([]byte("rest")) }()
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(data))
		_, err := io.ReadFull(outPeer, b)
		if err != nil {
			b = nil
		}
		got <- b
	}()
	n, err := Splice(rawOf(t, out), rawOf(t, in), int64(len(data)))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Splice = %d, %v; want %d, nil", n, err, len(data))
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatal("the bytes delivered differ from the bytes sent")
	}
	rest := make([]byte, 4)
	in.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(in, rest); err != nil || string(rest) != "rest" {
		t.Fatalf("after the splice the source reads %q, %v; want the 4 bytes beyond n", rest, err)
	}
}

func TestSpliceEndOfStream(t *testing.T) {
	in, inPeer := pair(t)
	out, outPeer := pair(t)
	inPeer.Write([]byte("short"))
	inPeer.Close()
	n, err := Splice(rawOf(t, out), rawOf(t, in), 1000)
	if err != nil || n != 5 {
		t.Fatalf("Splice = %d, %v; want 5, nil (end of stream after 5 bytes)", n, err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(outPeer, b); err != nil || string(b) != "short" {
		t.Fatalf("peer read %q, %v", b, err)
	}
	if n, err := Splice(rawOf(t, out), rawOf(t, in), 1000); n != 0 || err != nil {
		t.Fatalf("Splice at end of stream = %d, %v; want 0, nil", n, err)
	}
}

func TestSpliceDeadline(t *testing.T) {
	in, _ := pair(t)
	out, _ := pair(t)
	in.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := Splice(rawOf(t, out), rawOf(t, in), 10)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Splice = %d, %v; want 0 and a deadline error", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v is not a timeout net.Error", err)
	}
}

// TestSpliceToResetPeer: the destination's peer is gone; the splice fails
// with the reset or broken pipe, and the pipe holding the undelivered
// bytes is closed, not pooled: no descriptor leaks over many such
// failures.
func TestSpliceToResetPeer(t *testing.T) {
	before := openFDs(t)
	for range 20 {
		in, inPeer := pair(t)
		out, outPeer := pair(t)
		outPeer.SetLinger(0)
		outPeer.Close()
		// Let the RST arrive: a write then fails.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := out.Write([]byte("x")); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("writes to a reset peer keep succeeding")
			}
			time.Sleep(time.Millisecond)
		}
		inPeer.Write(bytes.Repeat([]byte("y"), 100000))
		_, err := Splice(rawOf(t, out), rawOf(t, in), 100000)
		if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Splice to a reset peer: %v; want EPIPE or ECONNRESET", err)
		}
		in.Close()
		inPeer.Close()
		out.Close()
	}
	// Pooled pipes may stay open (a few); 20 leaked pipes would be 40.
	if after := openFDs(t); after > before+8 {
		t.Errorf("%d descriptors open after 20 failed splices, %d before", after, before)
	}
}

func TestSpliceConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for range 8 {
		in, inPeer := pair(t)
		out, outPeer := pair(t)
		data := make([]byte, 300000)
		rand.Read(data)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() { inPeer.Write(data); inPeer.CloseWrite() }()
			got := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(outPeer); got <- b }()
			var total int64
			for {
				n, err := Splice(rawOf(t, out), rawOf(t, in), 65536)
				total += n
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					break
				}
			}
			out.CloseWrite()
			if b := <-got; !bytes.Equal(b, data) || total != int64(len(data)) {
				t.Errorf("moved %d bytes, peer got %d; want %d, equal", total, len(b), len(data))
			}
		}()
	}
	wg.Wait()
}

func TestPeekAndQueued(t *testing.T) {
	c, peer := pair(t)
	rc := rawOf(t, c)
	check := func(wantN int, wantErr syscall.Errno, wantQueued int) {
		t.Helper()
		var n, q int
		var e1, e2 syscall.Errno
		rc.Control(func(fd uintptr) { n, e1 = Peek(fd); q, e2 = Queued(fd) })
		if n != wantN || e1 != wantErr || q != wantQueued || e2 != 0 {
			t.Errorf("Peek = %d, %v; Queued = %d, %v; want %d, %v; %d", n, e1, q, e2, wantN, wantErr, wantQueued)
		}
	}
	check(0, syscall.EAGAIN, 0)
	peer.Write([]byte("hello"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		var q int
		rc.Control(func(fd uintptr) { q, _ = Queued(fd) })
		if q == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	check(1, 0, 5)
	b := make([]byte, 5)
	io.ReadFull(c, b)
	peer.Close()
	deadline = time.Now().Add(5 * time.Second)
	for {
		var n int
		var e syscall.Errno
		rc.Control(func(fd uintptr) { n, e = Peek(fd) })
		if e == 0 && n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	check(0, 0, 0) // end of stream
}

func TestEpollEvents(t *testing.T) {
	c, peer := pair(t)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	rc := rawOf(t, c)
	rc.Control(func(fd uintptr) {
		err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 42})
	})
	if err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 4)
	if n, e := EpollEvents(uintptr(ep), events); n != 0 || e != 0 {
		t.Fatalf("EpollEvents before any byte = %d, %v", n, e)
	}
	peer.Write([]byte("x"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, e := EpollEvents(uintptr(ep), events)
		if e != 0 {
			t.Fatal(e)
		}
		if n == 1 {
			if events[0].Fd != 42 || events[0].Events&unix.EPOLLIN == 0 {
				t.Fatalf("event %+v", events[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no event for a readable socket")
		}
		time.Sleep(time.Millisecond)
	}
}
