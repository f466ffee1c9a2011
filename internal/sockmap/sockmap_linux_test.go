package sockmap

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// load returns a Kernel, or skips the test with the reason BPF is not
// available here.
func load(t testing.TB) *Kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sockmap: needs root (CAP_BPF, CAP_NET_ADMIN) to load the program")
	}
	k, err := Load(Options{MaxSessions: 64})
	if err != nil {
		t.Skipf("sockmap: BPF sockmap unavailable here: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// session is user ↔ (client, backend) ↔ server with the relay between.
type session struct {
	user, client, backend, server *net.TCPConn
}

func newSession(t testing.TB) session {
	var s session
	s.user, s.client = tcpPair(t)
	s.backend, s.server = tcpPair(t)
	return s
}

type result struct {
	up, down int64
	err      error
}

func (k *Kernel) start(ctx context.Context, s session, buffered []byte) chan result {
	ch := make(chan result, 1)
	go func() {
		up, down, err := k.Relay(ctx, s.client, s.backend, buffered)
		ch <- result{up, down, err}
	}()
	return ch
}

func wait(t testing.TB, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not end")
	}
	return result{}
}

func payload(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

// sendAll writes p in random-sized chunks then shuts the write side.
func sendAll(c *net.TCPConn, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), 1+rand.IntN(100_000))
		if _, err := c.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return c.CloseWrite()
}

func readAll(t testing.TB, c *net.TCPConn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return b
}

// TestIntegrityHalfClose: the user sends 8 MB and half-closes; the server
// reads all of it and only then answers 8 MB and closes. Every byte
// arrives in order (checksums) and each half-close is passed on after the
// last byte.
func TestIntegrityHalfClose(t *testing.T) {
	k := load(t)
	s := newSession(t)
	up, down := payload(8<<20, 1), payload(8<<20, 2)
	ch := k.start(context.Background(), s, nil)
	errc := make(chan error, 2)
	go func() { errc <- sendAll(s.user, up) }()
	got := readAll(t, s.server)
	if sha256.Sum256(got) != sha256.Sum256(up) {
		t.Fatalf("client → server: %d bytes, checksum differs from the %d sent", len(got), len(up))
	}
	go func() { errc <- sendAll(s.server, down) }()
	got = readAll(t, s.user)
	if sha256.Sum256(got) != sha256.Sum256(down) {
		t.Fatalf("server → client: %d bytes, checksum differs from the %d sent", len(got), len(down))
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	r := wait(t, ch)
	if r.err != nil || r.up != int64(len(up)) || r.down != int64(len(down)) {
		t.Fatalf("Relay = %d, %d, %v; want %d, %d, nil", r.up, r.down, r.err, len(up), len(down))
	}
}

// TestQueuedBeforeHandoff: bytes read into user space before the hand-off
// (buffered) and bytes queued in the client socket before it entered the
// SOCKHASH reach the server first and in order, before later ones.
func TestQueuedBeforeHandoff(t *testing.T) {
	k := load(t)
	s := newSession(t)
	buffered := []byte("a1 NOOP\r\n")
	if _, err := s.user.Write([]byte("a2 NOOP\r\n")); err != nil {
		t.Fatal(err)
	}
	// the bytes are in the client socket's receive queue before Relay
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc, _ := s.client.SyscallConn()
		var n int
		rc.Control(func(fd uintptr) { n, _ = queued(int(fd)) })
		if n == 9 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bytes never queued")
		}
		time.Sleep(time.Millisecond)
	}
	ch := k.start(context.Background(), s, buffered)
	// nothing new arrives: the queued bytes must still be passed on
	want := "a1 NOOP\r\na2 NOOP\r\n"
	got := make([]byte, len(want))
	s.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s.server, got); err != nil {
		t.Fatalf("queued bytes not passed on: %v (got %q)", err, got)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := s.user.Write([]byte("a3 LOGOUT\r\n")); err != nil {
		t.Fatal(err)
	}
	s.user.CloseWrite()
	rest := readAll(t, s.server)
	if string(rest) != "a3 LOGOUT\r\n" {
		t.Fatalf("later bytes: %q", rest)
	}
	s.server.Close()
	if b := readAll(t, s.user); len(b) != 0 {
		t.Fatalf("unexpected bytes to user: %q", b)
	}
	r := wait(t, ch)
	if r.err != nil || r.up != int64(len(want)+11) {
		t.Fatalf("Relay = %d, %d, %v", r.up, r.down, r.err)
	}
}

// TestCancelClosesBoth: cancelling the context (close_all, the end of a
// drain) closes both connections of an idle session at once.
func TestCancelClosesBoth(t *testing.T) {
	k := load(t)
	s := newSession(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := k.start(ctx, s, nil)
	// the session works
	if _, err := s.user.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	s.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s.server, b); err != nil {
		t.Fatal(err)
	}
	cancel()
	r := wait(t, ch)
	if r.err != nil {
		t.Fatalf("Relay: %v", r.err)
	}
	for _, c := range []*net.TCPConn{s.user, s.server} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(b); err == nil {
			t.Fatal("peer still open after cancel")
		}
	}
	if n := k.count(t); n != 0 {
		t.Fatalf("%d peer entries left", n)
	}
}

// TestResetPassedOn: a reset from the server ends the session and closes
// the client side.
func TestResetPassedOn(t *testing.T) {
	k := load(t)
	s := newSession(t)
	ch := k.start(context.Background(), s, nil)
	// the session is in the kernel once a byte went through
	if _, err := s.user.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	s.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s.server, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	s.server.SetLinger(0)
	s.server.Close()
	r := wait(t, ch)
	if !errors.Is(r.err, syscall.ECONNRESET) {
		t.Errorf("Relay = %d, %d, %v; want the reset", r.up, r.down, r.err)
	}
	s.user.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.user.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client not closed after the server's reset: %v", err)
	}
}

// count returns the peer entries in the map.
func (k *Kernel) count(t testing.TB) int {
	var key uint64
	var v [valueSize]byte
	n := 0
	it := k.peers.Iterate()
	for it.Next(&key, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSlowReader: the server writes while the client reads nothing, then
// the client reads: every byte should arrive in order. It logs how much
// the kernel took in meanwhile. On Linux 6.18 it shows one of two faults
// from run to run (see docs/benchmarks/issue17-bpf.md): the whole payload
// taken in (a redirect to a peer's egress has no backpressure: kernel
// memory that no socket buffer limit bounds), or about 4 MB taken in and
// the session stalled once the client reads.
// POSTERN_SOCKMAP_HOLD_MB sets the payload (default 32).
func TestSlowReader(t *testing.T) {
	if os.Getenv("POSTERN_SOCKMAP_SLOW") != "1" {
		t.Skip("shows a kernel limitation that rules the kernel relay out (no backpressure, or a stall): POSTERN_SOCKMAP_SLOW=1 runs it")
	}
	k := load(t)
	s := newSession(t)
	size := 32
	if v, err := strconv.Atoi(os.Getenv("POSTERN_SOCKMAP_HOLD_MB")); err == nil && v > 0 {
		size = v
	}
	p := payload(size<<20, 3)
	ch := k.start(context.Background(), s, nil)
	avail := memAvailable(t)
	s.server.SetWriteDeadline(time.Now().Add(2 * time.Second))
	n, err := s.server.Write(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	t.Logf("taken in with the client not reading: %d of %d bytes, MemAvailable fell by %d MB",
		n, len(p), (avail-memAvailable(t))>>20)
	s.server.SetWriteDeadline(time.Time{})
	go func() {
		if n < len(p) {
			s.server.Write(p[n:])
		}
		s.server.Close()
	}()
	got := readAll(t, s.user)
	if sha256.Sum256(got) != sha256.Sum256(p) {
		t.Fatalf("client got %d bytes, checksum differs from the %d sent", len(got), len(p))
	}
	s.user.Close()
	wait(t, ch)
}

func memAvailable(t testing.TB) int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.Atoi(f[1])
			return kb << 10
		}
	}
	t.Fatal("no MemAvailable")
	return 0
}

// TestBusyBackend: bytes already queued from the backend at hand-off
// could be overtaken by later ones in the kernel: Relay refuses before
// touching anything and the caller relays in user space.
func TestBusyBackend(t *testing.T) {
	k := load(t)
	s := newSession(t)
	if _, err := s.server.Write([]byte("* 3 EXISTS\r\n")); err != nil {
		t.Fatal(err)
	}
	rc, _ := s.backend.SyscallConn()
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; n == 0; {
		rc.Control(func(fd uintptr) { n, _ = queued(int(fd)) })
		if time.Now().After(deadline) {
			t.Fatal("bytes never queued")
		}
	}
	_, _, err := k.Relay(context.Background(), s.client, s.backend, []byte("x"))
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Relay = %v, want ErrBusy", err)
	}
	if n := k.count(t); n != 0 {
		t.Fatalf("%d peer entries left", n)
	}
	// both connections still work and nothing was written
	b := make([]byte, 12)
	s.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s.backend, b); err != nil || string(b) != "* 3 EXISTS\r\n" {
		t.Fatalf("backend bytes: %q, %v", b, err)
	}
}

// TestAfterPrivilegeDrop: the maps and program are made as root, then the
// process becomes nobody (no capability left) and still relays sessions:
// updating the SOCKHASH through a held descriptor needs no privilege.
func TestAfterPrivilegeDrop(t *testing.T) {
	if os.Getenv("POSTERN_SOCKMAP_DROPPED") == "1" {
		k := load(t)
		if err := syscall.Setgid(65534); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setuid(65534); err != nil {
			t.Fatal(err)
		}
		s := newSession(t)
		ch := k.start(context.Background(), s, []byte("hello "))
		// the session is in the kernel once a byte went through
		if _, err := s.user.Write([]byte("w")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 7)
		s.server.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(s.server, b); err != nil || string(b) != "hello w" {
			t.Fatalf("got %q, %v", b, err)
		}
		go sendAll(s.user, []byte("orld"))
		if got := readAll(t, s.server); string(got) != "orld" {
			t.Fatalf("got %q", got)
		}
		s.server.Close()
		if r := wait(t, ch); r.err != nil || r.up != 11 {
			t.Fatalf("Relay = %d, %d, %v", r.up, r.down, r.err)
		}
		return
	}
	load(t) // skips where BPF is unavailable
	cmd := exec.Command(os.Args[0], "-test.run=^TestAfterPrivilegeDrop$", "-test.v")
	cmd.Env = append(os.Environ(), "POSTERN_SOCKMAP_DROPPED=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("relay after dropping privileges: %v\n%s", err, out)
	}
}

// TestHandoffRace: the client sends and closes while its session enters
// the kernel; every byte still arrives, in order, after the buffered ones,
// through the kernel or, when the client's FIN came first (the SOCKHASH
// takes only established sockets), through the user-space fallback.
func TestHandoffRace(t *testing.T) {
	k := load(t)
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	kernel := 0
	for i := range rounds {
		s := newSession(t)
		go sendAll(s.user, []byte("world"))
		ch := make(chan result, 1)
		go func() {
			buffered := []byte("hello ")
			up, down, err := k.Relay(context.Background(), s.client, s.backend, buffered)
			if errors.Is(err, ErrFallback) {
				var u int64
				u, down, err = userRelay(s.client, s.backend, buffered[up:])
				up += u
			} else {
				kernel++
			}
			ch <- result{up, down, err}
		}()
		if got := readAll(t, s.server); string(got) != "hello world" {
			r := wait(t, ch)
			t.Fatalf("round %d: got %q; Relay = %d, %d, %v", i, got, r.up, r.down, r.err)
		}
		s.server.Close()
		if r := wait(t, ch); r.err != nil || r.up != 11 {
			t.Fatalf("round %d: Relay = %d, %d, %v", i, r.up, r.down, r.err)
		}
		s.user.Close()
	}
	t.Logf("%d of %d sessions went through the kernel", kernel, rounds)
}

// userRelay is the user-space fallback of the tests: copy both ways,
// passing on half-closes.
func userRelay(client, backend *net.TCPConn, buffered []byte) (int64, int64, error) {
	if _, err := backend.Write(buffered); err != nil {
		return 0, 0, err
	}
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(backend, client)
		backend.CloseWrite()
		done <- n
	}()
	down, _ := io.Copy(client, backend)
	client.CloseWrite()
	up := <-done
	client.Close()
	backend.Close()
	return up + int64(len(buffered)), down, nil
}
