package smtpproxy

import (
	"bufio"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/sockio"
	"github.com/postern/postern/internal/testenv"
)

// startReplyPeer starts the peer and returns a connection to it.
func startReplyPeer(t *testing.T, delay string) *net.TCPConn {
	t.Helper()
	return testenv.DialPeer(t, replyPeerEnv, delay)
}

// newTestBackend is a backend over conn as dialBackend makes it, without
// the greeting read.
func newTestBackend(conn net.Conn, timeout time.Duration) *backend {
	b := &backend{conn: relay.LimitConn(conn, func() {}), timeout: timeout}
	b.r = bufio.NewReaderSize(backendIO{b}, 4096)
	b.w = bufio.NewWriterSize(backendIO{b}, 4096)
	return b
}

// hidden hides a connection's WriteRead: the backend then writes and
// reads apart, as it does over TLS.
type hidden struct{ net.Conn }

// TestBackendCommandSavesTheEmptyRead: against a server in another process
// that answers 2 ms after each command, a command and its reply cost one
// read (the command goes out with it, sockio.Conn.WriteRead), where a
// write and then a read cost two (the first finds nothing). Every reply
// arrives, and the bytes each way are counted.
func TestBackendCommandSavesTheEmptyRead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	const rounds = 100
	counts := map[string]int{}
	for _, side := range []string{"WriteRead", "write, then read"} {
		var conn net.Conn = sockio.New(startReplyPeer(t, "2ms"))
		if side != "WriteRead" {
			conn = hidden{conn}
		}
		b := newTestBackend(conn, 30*time.Second)
		if greet, err := b.read(); err != nil || greet.code != 220 {
			t.Fatalf("%s: greeting %v, %v", side, greet, err)
		}
		b.up, b.down = 0, 0
		before := testenv.ReadCalls(t)
		for i := range rounds {
			r, err := b.cmd("NOOP")
			if err != nil || r.code != 250 {
				t.Fatalf("%s: NOOP %d: %v, %v", side, i, r, err)
			}
		}
		counts[side] = testenv.ReadCalls(t) - before
		if want := int64(rounds * len("NOOP\r\n")); b.up != want {
			t.Errorf("%s: %d bytes counted up, want %d", side, b.up, want)
		}
		if want := int64(rounds * len("250 2.0.0 Ok\r\n")); b.down != want {
			t.Errorf("%s: %d bytes counted down, want %d", side, b.down, want)
		}
		if r, err := b.cmd("QUIT"); err != nil || r.code != 221 {
			t.Errorf("%s: QUIT: %v, %v", side, r, err)
		}
		b.close()
	}
	if n := counts["WriteRead"]; n > rounds+5 {
		t.Errorf("WriteRead: %d read calls for %d commands, want about %d", n, rounds, rounds)
	}
	if n := counts["write, then read"]; n < 2*rounds-5 {
		t.Errorf("write, then read: %d read calls for %d commands, want about %d", n, rounds, 2*rounds)
	}
	t.Logf("read calls for %d commands: %v", rounds, counts)
}

// TestBackendCommandAfterServerLeft: a server that said 421 and closed
// before postern's next command. The command is written with the reply's
// first read, after the poller's record of the 421's arrival was cleared;
// the server's system answers the command with a reset, a new event, so
// the read ends at once — with the 421, as a plain read would have — and
// not at the deadline.
func TestBackendCommandAfterServerLeft(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	greeted, left := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(left)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("220 hi\r\n"))
		<-greeted
		c.Write([]byte("421 4.3.2 Shutting down\r\n"))
		c.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBackend(sockio.New(nc.(*net.TCPConn)), time.Minute)
	defer b.close()
	greet, err := b.read()
	close(greeted)
	if err != nil || greet.code != 220 {
		t.Fatalf("greeting %v, %v", greet, err)
	}
	<-left
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		var n int
		var e syscall.Errno
		rc.Control(func(fd uintptr) { n, e = sockio.Queued(fd) })
		if e == 0 && n > 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the 421 never arrived")
		}
	}
	start := time.Now()
	r, err := b.cmd("MAIL FROM:<a@example.test>")
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the command's read waited %v (its deadline is a minute away)", took)
	}
	if err == nil && r.code != 421 {
		t.Errorf("reply %v, want the 421 or an error", r)
	}
	t.Logf("reply %v, error %v", r, err)
}
