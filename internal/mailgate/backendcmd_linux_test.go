package mailgate

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/sockio"
)

// backendSession is a Session with only its backend side: a connection
// from this process to serve, as Dialer.Dial returns it.
func backendSession(t *testing.T, serve func(c net.Conn)) *Session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		serve(c)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{Gate: &Gate{Cfg: Config{BackendTimeout: time.Minute}}}
	s.SetBackend(relay.LimitConn(sockio.New(nc.(*net.TCPConn)), func() {}), bufio.NewReaderSize(nil, 4096))
	t.Cleanup(func() { s.BE.Close(); <-done })
	return s
}

// TestBackendCommand: each command reaches the backend once and in order,
// whether it goes out with the first read of its answer (nothing read
// ahead), or is written first because lines of the backend's are already
// buffered (they are read first, as before); a command's held copy is
// wiped once sent.
func TestBackendCommand(t *testing.T) {
	got := make(chan string, 10)
	s := backendSession(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		c.Write([]byte("* OK ready\r\n"))
		for i := 0; ; i++ {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			got <- strings.TrimRight(line, "\r\n")
			answer := "a" + line[1:2] + " OK done\r\n"
			if i == 1 {
				answer = "* extra\r\n" + answer // an untagged line before the tagged one
			}
			c.Write([]byte(answer))
		}
	})
	if l, err := s.BackendLine(); err != nil || l != "* OK ready" {
		t.Fatalf("greeting %q, %v", l, err)
	}
	for i, want := range []string{"a1 OK done", "* extra", "a3 OK done"} {
		cmd := "a" + string(rune('1'+i)) + " NOOP"
		l, err := s.BackendCommand(cmd)
		if err != nil || l != want {
			t.Fatalf("%s: %q, %v; want %q", cmd, l, err, want)
		}
		if i == 1 {
			// "a2 OK done" is buffered: the next command is written
			// first, its answer read after it.
			if l, err := s.BackendLine(); err != nil || l != "a2 OK done" {
				t.Fatalf("after the untagged line: %q, %v", l, err)
			}
		}
		if c := <-got; c != cmd {
			t.Fatalf("the backend read %q, want %q", c, cmd)
		}
	}
	if s.heldBuf == nil {
		t.Fatal("no command went out with the first read of its answer")
	}
	for _, b := range s.heldBuf {
		if b != 0 {
			t.Fatalf("the held command stays in memory: %q", s.heldBuf)
		}
	}
	select {
	case c := <-got:
		t.Fatalf("the backend read %q more", c)
	default:
	}
}

// TestBackendCommandAfterBackendLeft: a backend that said BYE and closed
// before the next command. The command goes out with the answer's read
// after the poller's record of the BYE was cleared; the backend's system
// answers it with a reset, a new event, so the read ends at once (with the
// BYE, or the reset) and not at the deadline a minute away.
func TestBackendCommandAfterBackendLeft(t *testing.T) {
	greeted := make(chan struct{})
	left := make(chan struct{})
	s := backendSession(t, func(c net.Conn) {
		defer close(left)
		c.Write([]byte("* OK ready\r\n"))
		<-greeted
		c.Write([]byte("* BYE shutting down\r\n"))
		c.Close()
	})
	l, err := s.BackendLine()
	close(greeted)
	if err != nil || l != "* OK ready" {
		t.Fatalf("greeting %q, %v", l, err)
	}
	<-left
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		n, err := s.BE.(interface {
			RawTCP() (sockio.TCPSocket, bool)
		}).RawTCP()
		if !err {
			t.Fatal("no socket beneath")
		}
		var queued int
		rc, _ := n.SyscallConn()
		rc.Control(func(fd uintptr) { queued, _ = sockio.Queued(fd) })
		if queued > 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the BYE never arrived")
		}
	}
	start := time.Now()
	l, err = s.BackendCommand("a1 CAPABILITY")
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the command's read waited %v (its deadline is a minute away)", took)
	}
	if err == nil && l != "* BYE shutting down" {
		t.Errorf("answer %q, want the BYE or an error", l)
	}
	t.Logf("answer %q, error %v", l, err)
}
