package sockio

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// own moves c's socket into a Socket (Adopt) that the test's end closes.
func own(t testing.TB, c *net.TCPConn) *Socket {
	t.Helper()
	s, err := Adopt(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestNewSocketRefusesABlockingDescriptor(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := NewSocket(p[0], netip.AddrPort{}, netip.AddrPort{}); err == nil || !strings.Contains(err.Error(), "blocking") {
		t.Fatalf("NewSocket of a blocking descriptor: %v", err)
	}
	// The descriptor is still open: the caller keeps it.
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the refused descriptor was closed: %v", err)
	}
}

func TestSocketAddresses(t *testing.T) {
	c, _ := pair(t)
	local, remote := c.LocalAddr().String(), c.RemoteAddr().String()
	s := own(t, c)
	if s.LocalAddr().String() != local || s.RemoteAddr().String() != remote {
		t.Fatalf("addresses %s %s; want %s %s", s.LocalAddr(), s.RemoteAddr(), local, remote)
	}
}

// A Close during a system call on the descriptor closes it only when
// that call ends, so that its number cannot be reused under the call.
func TestSocketClosesAfterTheCallInProgress(t *testing.T) {
	c, peer := pair(t)
	s := own(t, c)
	rc, _ := s.SyscallConn()
	var inCall error
	err := rc.Control(func(fd uintptr) {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		_, inCall = unix.FcntlInt(fd, unix.F_GETFD, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if inCall != nil {
		t.Fatalf("the descriptor was closed during the call: %v", inCall)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the peer read %d, %v after the call; want the end of stream", n, err)
	}
	if err := rc.Control(func(uintptr) { t.Error("Control ran after Close") }); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Control after Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// A Read that has to wait hands the socket to the runtime's poller, where
// it waits for bytes, deadlines and Close as a net.Conn's read does.
func TestSocketWaitsInThePoller(t *testing.T) {
	c, peer := pair(t)
	s := own(t, c)
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 16)
		n, err := s.Read(b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b[:n])
	}()
	// Wait until the reader has handed the socket to the poller.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		filed := s.file != nil
		s.mu.Unlock()
		if filed {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the reader did not go to the poller")
		}
	}
	peer.Write([]byte("hello"))
	if g := <-got; g != "hello" {
		t.Fatalf("read %q", g)
	}
	// The deadline now reaches the file.
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := s.Read(make([]byte, 4)); done <- err }()
	time.Sleep(10 * time.Millisecond) // let the reader wait (either way it must fail)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the reader")
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the peer after Close: %v", err)
	}
}

// With the leak guard (test builds: the race detector, or the tag
// postern_leakguard), a Socket dropped without Close has its descriptor
// closed when it is collected, as a net.Conn's is, and counted.
func TestSocketLostIsClosed(t *testing.T) {
	if !leakGuard {
		t.Skip("a release build has no leak guard: run with -race or -tags postern_leakguard")
	}
	before := LeakedSockets()
	c, peer := pair(t)
	if _, err := Adopt(c); err != nil { // and dropped
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	for end := time.Now().Add(10 * time.Second); ; {
		runtime.GC()
		_, err := peer.Read(make([]byte, 1))
		if err == io.EOF {
			// Counted once the cleanup has closed it.
			for LeakedSockets() == before {
				if time.Now().After(end) {
					t.Fatal("the lost socket was closed but not counted")
				}
				runtime.Gosched()
			}
			return
		}
		if time.Now().After(end) {
			t.Fatalf("the lost socket's peer: %v", err)
		}
		peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	}
}

// Concurrent readers, writers and a Close: every call ends, and no call
// touches a descriptor after it was closed (the race detector and the
// reference count).
func TestSocketConcurrentClose(t *testing.T) {
	for range 50 {
		c, peer := pair(t)
		s := own(t, c)
		go io.Copy(io.Discard, peer)
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for {
					if _, err := s.Write([]byte("data")); err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				if _, err := s.Read(make([]byte, 8)); err == nil {
					t.Error("read without bytes from the peer")
				}
			})
		}
		time.Sleep(time.Millisecond)
		s.Close()
		wg.Wait()
		peer.Close()
	}
}

// A Conn over a socket of the program's own is one allocation, and its
// steps that never wait (ReadNow, WriteNow, and a Waiter's reads and
// writes) run on the descriptor directly: no allocation, and no RawConn
// function made for them.
func TestOwnedConnSteps(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c, peer := pair(t)
	s := own(t, c)
	if n := testing.AllocsPerRun(100, func() { NewOwned(s) }); n != 1 {
		t.Errorf("NewOwned: %v allocations; want 1 (the Conn)", n)
	}
	// Its first Waiter is kept in it; a later one is allocated.
	w := new(pollWaiter)
	if n := testing.AllocsPerRun(100, func() { NewOwned(s).SetWaiter(w) }); n != 1 {
		t.Errorf("NewOwned and SetWaiter: %v allocations; want 1", n)
	}
	wc := NewOwned(s)
	wc.SetWaiter(w)
	wc.SetWaiter(nil)
	wc.SetWaiter(&pollWaiter{waits: 1})
	if r := wc.waiter.Load(); r == nil || r.w.(*pollWaiter).waits != 1 || wc.firstWaiter.w != Waiter(w) {
		t.Error("a second Waiter replaced the first one's slot, or was not set")
	}
	oc := NewOwned(s)
	buf := make([]byte, 64)
	msg := []byte("ping")
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := oc.WriteNow(msg); n != 4 || err != nil {
			t.Fatalf("WriteNow: %d, %v", n, err)
		}
		if _, err := io.ReadFull(peer, buf[:4]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 4; {
			n, err := oc.ReadNow(buf[got:4])
			if err != nil && err != ErrWouldBlock {
				t.Fatalf("ReadNow: %v", err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per round trip; want 0", allocs)
	}
	if oc.tryReadFn != nil || oc.tryWriteFn != nil {
		t.Error("the RawConn's step functions were made for an owned socket")
	}
	// Past the read deadline, a step fails as the RawConn's does.
	s.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := oc.ReadNow(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadNow past the deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})
	oc.Close()
	if _, err := oc.ReadNow(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadNow after Close: %v", err)
	}
}

// One Acceptor takes connection after connection, each with its own
// addresses, allocating only the Socket.
func TestAcceptorReused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ListenerFile(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	a := NewAcceptor(rc)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for i := range 3 {
		c := dial()
		s, err := a.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if s.RemoteAddrPort().String() != c.LocalAddr().String() || s.LocalAddrPort().String() != ln.Addr().String() {
			t.Errorf("connection %d: accepted %s → %s, dialed %s → %s", i, s.RemoteAddrPort(), s.LocalAddrPort(), c.LocalAddr(), ln.Addr())
		}
		s.Close()
		c.Close()
	}
	conns := make(chan net.Conn, 200)
	for range cap(conns) {
		conns <- dial()
	}
	n := testing.AllocsPerRun(100, func() {
		s, err := a.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
	close(conns)
	for c := range conns {
		c.Close()
	}
	if want := 1.0; n > want && !leakGuard && !raceEnabled { // the leak guard's cleanup allocates too
		t.Errorf("%v allocations an accept, want %v (the Socket)", n, want)
	}
}
