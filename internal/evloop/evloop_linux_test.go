//go:build linux

package evloop

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/sockio"
)

// pairFunc returns a loopback TCP connection's two ends: the server's as
// a *sockio.Conn, and the client's.
type pairFunc func(t *testing.T) (*sockio.Conn, net.Conn)

// forPairs runs a test on Go's sockets (pairNet) and on sockets whose
// descriptors the program owns (pairOwned).
func forPairs(t *testing.T, test func(*testing.T, pairFunc)) {
	t.Run("net", func(t *testing.T) { test(t, pairNet) })
	t.Run("owned", func(t *testing.T) { test(t, pairOwned) })
}

// pairOwned is pairNet with the server's socket moved into a
// sockio.Socket.
func pairOwned(t *testing.T) (*sockio.Conn, net.Conn) {
	t.Helper()
	sv, cl := pairNet(t)
	raw, _ := sv.RawTCP()
	s, err := sockio.Adopt(raw.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	c := sockio.NewOwned(s)
	ownedSockets.Store(c, s)
	t.Cleanup(func() { c.Close(); ownedSockets.Delete(c) })
	return c, cl
}

// ownedSockets maps pairOwned's Conns to their Sockets.
var ownedSockets sync.Map

// polled reports whether c is an owned socket that the runtime's poller
// has had to wait for.
func polled(c *sockio.Conn) bool {
	s, ok := ownedSockets.Load(c)
	return ok && s.(*sockio.Socket).Polled()
}

func pairNet(t *testing.T) (*sockio.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(); sv.Close() })
	return sockio.New(sv.(*net.TCPConn)).(*sockio.Conn), cl
}

func start(t *testing.T, n int) *Group {
	t.Helper()
	g, err := Start(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// A line dialogue on many connections at once: every handler waits for its
// client on the loop and answers each line.
func TestDialogues(t *testing.T) { forPairs(t, dialogues) }

func dialogues(t *testing.T, pair pairFunc) {
	g := start(t, 2)
	const conns, lines = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*conns)
	for i := range conns {
		sv, cl := pair(t)
		wg.Add(2)
		g.Go(context.Background(), sv, func(ctx context.Context) {
			defer wg.Done()
			defer sv.Close()
			if !OnLoop(ctx) {
				errs <- errors.New("handler not on a loop")
				return
			}
			r := bufio.NewReader(sv)
			for {
				l, err := r.ReadString('\n')
				if err == io.EOF {
					// On the loop, an owned socket never needs the
					// runtime's poller.
					if polled(sv) {
						errs <- errors.New("an owned socket served on the loop went to the runtime's poller")
					}
					return
				}
				if err != nil {
					errs <- fmt.Errorf("server read: %w", err)
					return
				}
				if _, err := io.WriteString(sv, "re: "+l); err != nil {
					errs <- fmt.Errorf("server write: %w", err)
					return
				}
			}
		})
		go func() {
			defer wg.Done()
			defer cl.Close()
			r := bufio.NewReader(cl)
			for j := range lines {
				msg := fmt.Sprintf("conn %d line %d\n", i, j)
				if _, err := io.WriteString(cl, msg); err != nil {
					errs <- err
					return
				}
				got, err := r.ReadString('\n')
				if err != nil || got != "re: "+msg {
					errs <- fmt.Errorf("client %d: got %q, %v", i, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A read deadline ends a wait on the loop with a timeout.
func TestDeadline(t *testing.T) { forPairs(t, deadline) }

func deadline(t *testing.T, pair pairFunc) {
	g := start(t, 1)
	sv, _ := pair(t)
	got := make(chan error, 1)
	g.Go(context.Background(), sv, func(ctx context.Context) {
		sv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := sv.Read(make([]byte, 10))
		got <- err
	})
	err := <-got
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
}

// Closing the connection from another goroutine ends the handler's wait,
// with net.ErrClosed wherever the close falls: before the handler's read,
// between its step and its wait (the loop cannot watch the closed
// descriptor), or during the wait. Many rounds hit each case.
func TestCloseWakes(t *testing.T) {
	forPairs(t, func(t *testing.T, pair pairFunc) {
		for i := range 300 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				err := interruptedRead(t, pair, func(sv *sockio.Conn) { sv.Close() })
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("read of a closed connection: %v, want net.ErrClosed", err)
				}
			})
		}
	})
}

// A deadline set in the past by another goroutine ends a handler's wait
// on the loop at once, as it ends a read waiting in the runtime's poller
// (net.Conn's way to interrupt a read).
func TestPastDeadlineWakes(t *testing.T) {
	forPairs(t, func(t *testing.T, pair pairFunc) {
		err := interruptedRead(t, pair, func(sv *sockio.Conn) { sv.SetReadDeadline(time.Unix(1, 0)) })
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after a past deadline: %v, want os.ErrDeadlineExceeded", err)
		}
	})
}

// interruptedRead returns the error of a handler's read on a loop (no
// deadline: it waits until interrupted) that another goroutine
// interrupts once the handler runs.
func interruptedRead(t *testing.T, pair pairFunc, interrupt func(sv *sockio.Conn)) error {
	t.Helper()
	g := start(t, 1)
	sv, _ := pair(t)
	waiting := make(chan struct{})
	got := make(chan error, 1)
	g.Go(context.Background(), sv, func(ctx context.Context) {
		close(waiting)
		_, err := sv.Read(make([]byte, 10))
		got <- err
	})
	<-waiting
	interrupt(sv)
	select {
	case err := <-got:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still waits")
		return nil
	}
}

// A handler that may block leaves the loop, and the loop goes on serving
// others meanwhile.
func TestMayBlock(t *testing.T) { forPairs(t, mayBlock) }

func mayBlock(t *testing.T, pair pairFunc) {
	g := start(t, 1)
	sv1, cl1 := pair(t)
	sv2, cl2 := pair(t)
	release := make(chan struct{})
	done1 := make(chan string, 1)
	g.Go(context.Background(), sv1, func(ctx context.Context) {
		MayBlock(ctx)
		if OnLoop(ctx) {
			done1 <- "still on the loop after MayBlock"
			return
		}
		<-release // would hold the loop if it were still on it
		b := make([]byte, 5)
		n, err := io.ReadFull(sv1, b)
		done1 <- fmt.Sprintf("%q %v", b[:n], err)
	})
	g.Go(context.Background(), sv2, func(ctx context.Context) {
		b := make([]byte, 5)
		io.ReadFull(sv2, b)
		sv2.Write(b)
	})
	cl2.Write([]byte("hello"))
	b := make([]byte, 5)
	cl2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(cl2, b); err != nil || string(b) != "hello" {
		t.Fatalf("second handler: %q %v", b, err)
	}
	close(release)
	cl1.Write([]byte("world"))
	if got := <-done1; got != `"world" <nil>` {
		t.Fatalf("detached handler: %s", got)
	}
}

// ConnectControl connects on the loop: IPv4, IPv6, and a refused
// connect fails as the Dialer's own would.
func TestConnectControl(t *testing.T) {
	g := start(t, 1)
	dial := func(addr string) error {
		got := make(chan error, 1)
		g.Go(context.Background(), nil, func(ctx context.Context) {
			ctrl := ConnectControl(ctx, time.Now().Add(5*time.Second))
			if ctrl == nil {
				got <- errors.New("ConnectControl on a loop returned nil")
				return
			}
			d := net.Dialer{Control: ctrl}
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				c.Close()
			}
			got <- err
		})
		return <-got
	}
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("%s: %v", network, err) // no IPv6 here
			continue
		}
		accepted := make(chan struct{})
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
			close(accepted)
		}()
		if err := dial(ln.Addr().String()); err != nil {
			t.Errorf("connect to %s: %v", ln.Addr(), err)
		}
		<-accepted
		addr := ln.Addr().String()
		ln.Close()
		if err := dial(addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect to the closed %s: %v, want ECONNREFUSED", addr, err)
		}
	}
	// Off a loop there is nothing to do.
	if ConnectControl(context.Background(), time.Time{}) != nil {
		t.Error("ConnectControl off a loop is not nil")
	}
}

// A panicking handler is logged and the loop goes on.
func TestPanic(t *testing.T) {
	g := start(t, 1)
	g.Go(context.Background(), nil, func(ctx context.Context) { panic("boom") })
	done := make(chan struct{})
	g.Go(context.Background(), nil, func(ctx context.Context) { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop stopped after a panic")
	}
}

// A handler that closes a socket (telling its Waiter, as sockio.Conn's
// Close does) and then waits on another socket under the same number gets
// the new one watched: its wait ends when data comes.
func TestDescriptorReused(t *testing.T) {
	g := start(t, 1)
	got := make(chan string, 1)
	g.Go(context.Background(), nil, func(ctx context.Context) {
		tk := ctx.Value(ctxKey{}).(*task)
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			got <- err.Error()
			return
		}
		defer unix.Close(p[1])
		// Watched, nothing to read: the wait times out.
		if _, err := tk.Wait(p[0], false, sockio.Mono(time.Now().Add(10*time.Millisecond))); !errors.Is(err, os.ErrDeadlineExceeded) {
			got <- fmt.Sprintf("first wait: %v", err)
			return
		}
		num := p[0]
		unix.Close(num)
		tk.Wake(num)
		q, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			got <- err.Error()
			return
		}
		defer unix.Close(q[1])
		// The new socket under the old number (the lowest free one is
		// often the old number already).
		if q[0] != num {
			if err := unix.Dup3(q[0], num, unix.O_CLOEXEC); err != nil {
				got <- err.Error()
				return
			}
			unix.Close(q[0])
		}
		defer unix.Close(num)
		unix.Write(q[1], []byte("x"))
		if _, err := tk.Wait(num, false, sockio.Mono(time.Now().Add(5*time.Second))); err != nil {
			got <- fmt.Sprintf("wait on the new socket: %v", err)
			return
		}
		got <- "ok"
	})
	if s := <-got; s != "ok" {
		t.Fatal(s)
	}
}

// BenchmarkSwitch is what a wait costs a handler on a loop against a
// goroutine: a coroutine's round trip (iter.Pull, as the loops use) and a
// round trip between two goroutines over channels.
func BenchmarkSwitch(b *testing.B) {
	b.Run("coroutine", func(b *testing.B) {
		next, stop := iter.Pull(func(yield func(int) bool) {
			for i := 0; ; i++ {
				if !yield(i) {
					return
				}
			}
		})
		defer stop()
		for b.Loop() {
			next()
		}
	})
	b.Run("goroutines", func(b *testing.B) {
		ping, pong := make(chan int), make(chan int)
		go func() {
			for v := range ping {
				pong <- v
			}
		}()
		defer close(ping)
		for b.Loop() {
			ping <- 1
			<-pong
		}
	})
}

// A read on a loop after one that emptied the socket waits first (no read
// that finds nothing); whatever the order of the bytes' arrival and the
// reads, no byte is left waiting: bytes still queued after a read that
// filled its buffer, bytes that arrive while the handler runs, bytes that
// arrive while it waits, and the end of the stream.
func TestDrainedReads(t *testing.T) { forPairs(t, drainedReads) }

func drainedReads(t *testing.T, pair pairFunc) {
	g := start(t, 1)
	sv, cl := pair(t)
	step := make(chan string)
	got := make(chan string)
	done := make(chan error, 1)
	g.Go(context.Background(), sv, func(ctx context.Context) {
		sv.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4)
		for want := range step {
			var s []byte
			for len(s) < len(want) {
				n, err := sv.Read(buf)
				if err != nil {
					done <- fmt.Errorf("reading %q: after %q: %w", want, s, err)
					return
				}
				s = append(s, buf[:n]...)
			}
			got <- string(s)
		}
		n, err := sv.Read(buf)
		if n != 0 || !errors.Is(err, io.EOF) {
			done <- fmt.Errorf("after the peer closed: %d, %v; want io.EOF", n, err)
			return
		}
		done <- nil
	})
	say := func(when string, parts ...string) {
		t.Helper()
		var all string
		for _, p := range parts {
			all += p
		}
		if when == "before" {
			for _, p := range parts {
				if _, err := cl.Write([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			step <- all
		} else {
			step <- all
			for _, p := range parts {
				if _, err := cl.Write([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
		}
		select {
		case s := <-got:
			if s != all {
				t.Fatalf("%s: read %q, want %q", when, s, all)
			}
		case err := <-done:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the handler still waits for %q", when, all)
		}
	}
	say("before", "abc")              // a short read: the socket is empty
	say("after", "de")                // waits first, then reads
	say("before", "fghijklmno")       // reads that fill the buffer leave bytes queued
	say("after", "pq", "rstu", "vwx") // several arrivals during the reads
	say("before", "yz")
	say("after", "0123")  // a read that fills the buffer exactly
	say("before", "4567") // and one more
	close(step)
	cl.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still waits after the peer closed")
	}
}

// dialOwned is DialSocket with the socket's Conn, as the relay reads it.
func dialOwned(ctx context.Context, ap netip.AddrPort, deadline time.Time, control func(fd int) error) (net.Conn, bool, error) {
	s, on, err := DialSocket(ctx, ap, deadline, control)
	if s == nil {
		return nil, on, err
	}
	return sockio.NewOwned(s), true, nil
}

// DialSocket connects on the loop with a socket of the loop's own: a
// dialogue on it never needs the runtime's poller; IPv4 and IPv6; control
// runs before the connect; a refused connect and one past its deadline
// fail as net.Dialer's do (the same error text).
func TestDialOwned(t *testing.T) {
	g := start(t, 1)
	type result struct {
		reply   string
		polled  bool
		err     error
		control int
	}
	dial := func(addr string, deadline time.Time) result {
		got := make(chan result, 1)
		g.Go(context.Background(), nil, func(ctx context.Context) {
			var r result
			defer func() { got <- r }()
			c, on, err := dialOwned(ctx, netip.MustParseAddrPort(addr), deadline, func(fd int) error {
				r.control = fd
				return nil
			})
			if !on {
				r.err = errors.New("DialOwned on a loop did nothing")
				return
			}
			if err != nil {
				r.err = err
				return
			}
			defer c.Close()
			sc := c.(*sockio.Conn)
			if !Bind(ctx, sc) {
				r.err = errors.New("Bind failed")
				return
			}
			if _, err := io.WriteString(sc, "ping\n"); err != nil {
				r.err = err
				return
			}
			line, err := bufio.NewReader(sc).ReadString('\n')
			r.reply, r.err = line, err
			raw, _ := sc.RawTCP()
			s, ok := raw.(*sockio.Socket)
			r.polled = !ok || s.Polled()
		})
		return <-got
	}
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("%s: %v", network, err) // no IPv6 here
			continue
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			l, _ := bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "re: "+l)
		}()
		r := dial(ln.Addr().String(), time.Now().Add(5*time.Second))
		if r.err != nil || r.reply != "re: ping\n" || r.polled || r.control <= 0 {
			t.Errorf("%s: reply %q, polled %v, control saw fd %d, %v", ln.Addr(), r.reply, r.polled, r.control, r.err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, want := net.Dial("tcp", addr)
		if r := dial(addr, time.Now().Add(5*time.Second)); !errors.Is(r.err, syscall.ECONNREFUSED) || want == nil || r.err.Error() != want.Error() {
			t.Errorf("connect to the closed %s: %v, want %v", addr, r.err, want)
		}
	}
	// A deadline already past: the dial times out as net.Dialer's does.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Deadline: time.Unix(1, 0)}
	_, want := d.Dial("tcp", ln.Addr().String())
	if r := dial(ln.Addr().String(), time.Unix(1, 0)); !errors.Is(r.err, os.ErrDeadlineExceeded) || want == nil || r.err.Error() != want.Error() {
		t.Errorf("dial past its deadline: %v, want %v", r.err, want)
	}
	// Off a loop there is nothing to do.
	if c, on, err := dialOwned(context.Background(), netip.MustParseAddrPort(ln.Addr().String()), time.Time{}, nil); on || c != nil || err != nil {
		t.Errorf("DialOwned off a loop: %v %v %v", c, on, err)
	}
}

// A connect that the peer does not answer at once, to a listener whose
// queue is full (its SYN dropped), waits on the loop: until its deadline,
// failing as net.Dialer does, or until the handshake ends once the
// queue has room (the SYN sent again about a second later; not with
// -short).
func TestDialOwnedSlowHandshake(t *testing.T) {
	g := start(t, 1)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one connection
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	// Fill the queue: connections are made until one is not.
	var queued []net.Conn
	defer func() {
		for _, c := range queued {
			c.Close()
		}
	}()
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		queued = append(queued, c)
		if len(queued) > 8 {
			t.Fatal("the listener's queue never filled")
		}
	}
	type result struct {
		err    error
		polled bool
	}
	dial := func(deadline time.Time) <-chan result {
		got := make(chan result, 1)
		g.Go(context.Background(), nil, func(ctx context.Context) {
			c, on, err := dialOwned(ctx, netip.MustParseAddrPort(addr), deadline, nil)
			if !on {
				err = errors.New("DialOwned on a loop did nothing")
			}
			if err != nil {
				got <- result{err: err}
				return
			}
			defer c.Close()
			raw, _ := c.(*sockio.Conn).RawTCP()
			s, ok := raw.(*sockio.Socket)
			got <- result{polled: !ok || s.Polled()}
		})
		return got
	}
	d := net.Dialer{Deadline: time.Now().Add(300 * time.Millisecond)}
	_, want := d.Dial("tcp", addr)
	start := time.Now()
	r := <-dial(start.Add(300 * time.Millisecond))
	if !errors.Is(r.err, os.ErrDeadlineExceeded) || want == nil || r.err.Error() != want.Error() {
		t.Fatalf("connect to a full queue: %v, want %v", r.err, want)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Fatalf("connect to a full queue ended after %v, before its deadline", waited)
	}
	if testing.Short() {
		return
	}
	got := dial(time.Now().Add(10 * time.Second))
	// Once the connect is under way (its socket in SYN_SENT: its SYN
	// dropped), room in the queue; the connect is made when its SYN comes
	// again.
	port := ln.Addr().(*net.TCPAddr).Port
	for deadline := time.Now().Add(10 * time.Second); !synSent(t, port); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no connect under way")
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	select {
	case r := <-got:
		if r.err != nil || r.polled {
			t.Fatalf("connect once the queue had room: polled %v, %v", r.polled, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the connect did not end")
	}
}

// synSent reports whether a socket of this host is connecting to port on
// 127.0.0.1 (SYN_SENT in /proc/net/tcp).
func synSent(t *testing.T, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0100007F:%04X 02", port)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2]+" "+f[3] == want {
			return true
		}
	}
	return false
}

// The local address DialSocket reads is the kernel's, as net's.
func TestDialOwnedLocalAddress(t *testing.T) {
	g := start(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer c.Close()
		peer <- c.RemoteAddr().String()
	}()
	got := make(chan string, 1)
	g.Go(context.Background(), nil, func(ctx context.Context) {
		c, _, err := dialOwned(ctx, netip.MustParseAddrPort(ln.Addr().String()), time.Now().Add(5*time.Second), nil)
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		got <- c.LocalAddr().String() + " → " + c.RemoteAddr().String()
	})
	if g, p := <-got, <-peer; g != p+" → "+ln.Addr().String() {
		t.Fatalf("DialOwned's addresses %s; the listener saw %s", g, p)
	}
}

// Handlers that end on the loop leave their coroutine to the next ones:
// twenty handlers one after another, one of them panicking and one
// waiting for a socket, run on one coroutine; one that leaves the loop
// (MayBlock) takes its coroutine with it.
func TestCoroutinesReused(t *testing.T) {
	g := start(t, 1)
	run := func(c Bindable, handle func(ctx context.Context)) {
		t.Helper()
		ended := g.Stats().Ended.Load() + g.Stats().Detached.Load()
		done := make(chan struct{})
		g.Go(context.Background(), c, func(ctx context.Context) {
			defer close(done)
			handle(ctx)
		})
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("handler did not end")
		}
		// The coroutine is free once the loop has seen the handler end.
		deadline := time.Now().Add(10 * time.Second)
		for g.Stats().Ended.Load()+g.Stats().Detached.Load() == ended {
			if time.Now().After(deadline) {
				t.Fatal("the loop did not see the handler end")
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 20 {
		switch i {
		case 5:
			run(nil, func(context.Context) { panic("boom") })
		case 9:
			sv, cl := pairOwned(t)
			go cl.Write([]byte("x"))
			run(sv, func(ctx context.Context) {
				b := make([]byte, 1)
				if _, err := sv.Read(b); err != nil || b[0] != 'x' {
					t.Errorf("read %q, %v", b, err)
				}
				if !OnLoop(ctx) {
					t.Error("the handler left the loop")
				}
			})
		default:
			run(nil, func(context.Context) {})
		}
	}
	if n := g.Stats().Coroutines.Load(); n != 1 {
		t.Fatalf("20 handlers one after another made %d coroutines, want 1", n)
	}
	run(nil, func(ctx context.Context) { MayBlock(ctx) })
	run(nil, func(context.Context) {})
	if n := g.Stats().Coroutines.Load(); n != 2 {
		t.Fatalf("after a handler left the loop: %d coroutines, want 2", n)
	}
}

// Close ends the coroutines a loop keeps.
func TestCloseEndsCoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	g, err := Start(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		g.Go(context.Background(), nil, func(context.Context) { wg.Done() })
	}
	wg.Wait()
	g.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before Start:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// Bytes and the peer's close that arrive together make one readiness
// event: after a short read of the bytes, the next read still finds the
// end of the stream at once, not at its deadline.
func TestEndWithTheLastBytes(t *testing.T) { forPairs(t, endWithTheLastBytes) }

func endWithTheLastBytes(t *testing.T, pair pairFunc) {
	g := start(t, 1)
	sv, cl := pair(t)
	// Both arrive before the handler starts (and so before the loop
	// watches the socket).
	if _, err := cl.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	cl.(*net.TCPConn).CloseWrite()
	done := make(chan error, 1)
	g.Go(context.Background(), sv, func(ctx context.Context) {
		sv.SetReadDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, 64)
		n, err := sv.Read(buf)
		if err != nil || string(buf[:n]) != "last words" {
			done <- fmt.Errorf("first read: %q, %v", buf[:n], err)
			return
		}
		n, err = sv.Read(buf)
		if n != 0 || !errors.Is(err, io.EOF) {
			done <- fmt.Errorf("second read: %d, %v; want io.EOF", n, err)
			return
		}
		if !OnLoop(ctx) {
			done <- errors.New("the handler left the loop")
			return
		}
		done <- nil
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second read still waits: the peer's close, queued with the bytes, went unseen")
	}
}

// The loop's timerfd follows its earliest deadline: a wait whose deadline
// is earlier than the one armed (an hour ahead, left by a wait that ended
// at once) fires on time, and so do later and earlier ones after it,
// never before their time.
func TestDeadlinesRearm(t *testing.T) {
	g := start(t, 1)
	got := make(chan string, 1)
	g.Go(context.Background(), nil, func(ctx context.Context) {
		tk := ctx.Value(ctxKey{}).(*task)
		l := tk.l
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			got <- err.Error()
			return
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		wait := func(d time.Duration) (time.Duration, error) {
			start := time.Now()
			_, err := tk.Wait(p[0], false, sockio.Mono(start.Add(d)))
			return time.Since(start), err
		}
		// Data ready at once: the wait ends an hour before its deadline.
		unix.Write(p[1], []byte("x"))
		if _, err := wait(time.Hour); err != nil {
			got <- fmt.Sprintf("wait with data ready: %v", err)
			return
		}
		var b [8]byte
		unix.Read(p[0], b[:])
		// Nothing to read: each deadline fires, not before its time,
		// whether it is earlier or later than the one before.
		for _, d := range []time.Duration{200 * time.Millisecond, 20 * time.Millisecond, 300 * time.Millisecond, 5 * time.Millisecond} {
			took, err := wait(d)
			if !errors.Is(err, os.ErrDeadlineExceeded) || took < d {
				got <- fmt.Sprintf("wait of %v: %v after %v, want os.ErrDeadlineExceeded no sooner", d, err, took)
				return
			}
		}
		if l.armed != 0 && len(l.timers) == 0 {
			// Checked on the loop: with no deadline left, what is armed
			// is the last expiry not yet read, at most.
			if d := time.Duration(l.armed - sockio.MonoNow()); d > 0 {
				got <- fmt.Sprintf("timerfd armed %v ahead with no deadline", d)
				return
			}
		}
		got <- "ok"
	})
	select {
	case s := <-got:
		if s != "ok" {
			t.Fatal(s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a deadline never fired")
	}
}

type testKey struct{}

// A handler's context is its parent's: the parent's values, deadline and
// end, and context.AfterFunc on it; and OnLoop knows it.
func TestHandlerContext(t *testing.T) {
	g, err := Start(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	deadline := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.WithValue(context.Background(), testKey{}, "v"), deadline)
	type seen struct {
		value  any
		dl     time.Time
		onLoop bool
		ended  chan struct{}
		ctx    context.Context
	}
	got := make(chan seen, 1)
	g.Go(parent, nil, func(ctx context.Context) {
		ended := make(chan struct{})
		context.AfterFunc(ctx, func() { close(ended) })
		dl, _ := ctx.Deadline()
		got <- seen{value: ctx.Value(testKey{}), dl: dl, onLoop: OnLoop(ctx), ended: ended, ctx: ctx}
	})
	s := <-got
	if s.value != "v" || !s.dl.Equal(deadline) || !s.onLoop {
		t.Fatalf("value %v, deadline %v, on the loop %v", s.value, s.dl, s.onLoop)
	}
	if s.ctx.Err() != nil {
		t.Fatal("ended before its parent")
	}
	cancel()
	select {
	case <-s.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc on the handler's context did not run when its parent ended")
	}
	if !errors.Is(s.ctx.Err(), context.Canceled) {
		t.Fatalf("Err after the parent's end: %v", s.ctx.Err())
	}
	if OnLoop(parent) {
		t.Fatal("OnLoop true for a context that is not a handler's")
	}
}

// TestPostsWake: tasks posted from several goroutines at once, while the
// loop runs, parks, or is about to park, all start: a wake (a past read
// deadline on the loop's epoll file) is never lost, and a wake with
// nothing left to start only costs the loop a turn.
func TestPostsWake(t *testing.T) {
	g := start(t, 1)
	const posters, each = 4, 500
	var ran atomic.Int64
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for i := range each {
				g.Go(context.Background(), nil, func(context.Context) { ran.Add(1) })
				if (i+p)%7 == 0 {
					time.Sleep(50 * time.Microsecond) // let the loop park now and then
				} else {
					runtime.Gosched()
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for ran.Load() < posters*each {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d posted tasks ran", ran.Load(), posters*each)
		}
		time.Sleep(time.Millisecond)
	}
	// A loop woken for nothing parks again and still answers.
	g.loops[0].wake()
	done := make(chan struct{})
	g.Go(context.Background(), nil, func(context.Context) { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a task posted after a spare wake did not run")
	}
}
