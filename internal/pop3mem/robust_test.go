package pop3mem

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLineLimitsAndBadInput(t *testing.T) {
	srv := startServer(t, Options{AllowPlaintextAuth: true})
	c := dial(t, srv.addr)
	c.expect(strings.Repeat("A", maxLine), "-ERR Unknown command.") // at the limit
	c.expect(strings.Repeat("A", maxLine+1), "-ERR Line too long")
	c.expect(strings.Repeat("B", 100000), "-ERR Line too long") // far over the read buffer
	c.expect("NOOP\x00", "-ERR NUL bytes are not allowed in commands.")
	c.expect("", "-ERR Unknown command.")
	c.expect("STAT", "-ERR Command not valid before login.")

	// A too long SASL response ends the exchange.
	c.expect("AUTH PLAIN", "+ ")
	c.expect(strings.Repeat("C", 5000), "-ERR Line too long")

	// Bare LF line ends and lower-case commands are accepted.
	c.write("user alice\npass pw\n")
	if a, b := c.line(), c.line(); a != "+OK" || b != "+OK Logged in." {
		t.Fatalf("USER/PASS with LF: %q %q", a, b)
	}
	// Pipelined commands are all answered, in order.
	c.write("NOOP\r\nLIST 1\r\nSTAT\r\nDELE 3\r\nRSET\r\n")
	for _, want := range []string{"+OK", fmt.Sprintf("+OK 1 %d", len(msg1)), "+OK 3 ", "+OK Marked to be deleted.", "+OK maildrop has 3 messages"} {
		if got := c.line(); !strings.HasPrefix(got, want) {
			t.Errorf("pipelined reply %q, want prefix %q", got, want)
		}
	}
	c.expect(strings.Repeat("D", 2000), "-ERR Line too long")
	c.expect("QUIT", "+OK Logging out.")
	c.eof()
}

func TestIdleTimeout(t *testing.T) {
	srv := startServer(t, Options{IdleTimeout: 200 * time.Millisecond})
	c := dial(t, srv.addr)
	start := time.Now()
	if got := c.line(); got != "-ERR Disconnected for inactivity." {
		t.Errorf("after idling: %q", got)
	}
	c.eof()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle disconnect after %v", d)
	}
}

func TestConcurrentSessions(t *testing.T) {
	srv := startServer(t, Options{AllowPlaintextAuth: true})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := srv.AddMessage("alice", []byte(fmt.Sprintf("Subject: %d\r\n\r\nx\r\n", i))); err != nil {
				t.Error(err)
				return
			}
			srv.Messages("alice")
			srv.Logins()
			srv.Sessions()
			time.Sleep(time.Millisecond)
		}
	})
	var clients sync.WaitGroup
	for range 8 {
		clients.Go(func() {
			for range 5 {
				c := dialRaw(t, srv.addr)
				c.bg = true
				c.line()
				c.expect("USER alice", "+OK")
				c.expect("PASS pw", "+OK Logged in.")
				if got := c.cmd("STAT"); !strings.HasPrefix(got, "+OK ") {
					t.Errorf("STAT: %q", got)
				}
				c.expect("RETR 2", fmt.Sprintf("+OK %d octets", len(msgDots)))
				if raw := c.multiRaw(); string(raw) != stuff(msgDots) {
					t.Errorf("RETR 2: %q", raw)
				}
				c.expect("QUIT", "+OK Logging out.")
				c.conn.Close()
			}
		})
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	if n := len(srv.Logins()); n != 40 {
		t.Errorf("%d logins recorded, want 40", n)
	}
}

// TestCloseEndsEverything closes a server with connections in every kind
// of wait and checks that Close returns promptly and leaves no goroutines.
func TestCloseEndsEverything(t *testing.T) {
	serverTLS, clientTLS, _ := selfSigned(t)
	before := runtime.NumGoroutine()

	srv := New(Options{TLS: serverTLS, AllowPlaintextAuth: true})
	srv.AddUser("alice", "pw")
	srv.AddMessage("alice", []byte(strings.Repeat("big line of a large message\r\n", 200000)))
	proxied := New(Options{RequireProxyHeader: true})
	serve := func(s *Server) (string, chan error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- s.Serve(ln) }()
		return ln.Addr().String(), errc
	}
	addr, errc := serve(srv)
	paddr, perrc := serve(proxied)

	var conns []*client
	add := func(c *client) *client { conns = append(conns, c); return c }

	add(dial(t, addr)).login("alice", "pw") // logged in, idle
	add(dial(t, addr)).expect("AUTH PLAIN", "+ ")
	add(dial(t, addr)).write("NOO") // half a command
	c := add(dial(t, addr))
	c.startTLS(clientTLS)
	c.login("alice", "pw")
	add(dial(t, addr)).expect("STLS", "+OK Begin TLS negotiation now.") // handshake never starts
	// A RETR of a large message the client does not read: the server is
	// blocked writing.
	add(dial(t, addr)).login("alice", "pw")
	conns[len(conns)-1].send("RETR 1")
	add(dialRaw(t, addr)) // greeting not read
	add(dialRaw(t, paddr)).write("PROXY TCP4 ")
	add(dialRaw(t, paddr)) // nothing sent

	// Let the server reach its waits.
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.Sessions()) < 7 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)

	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := proxied.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	for _, ch := range []chan error{errc, perrc} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("Serve after Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
	}
	for i, c := range conns {
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		// Drain whatever was sent, then expect the end of the stream.
		var buf [32 << 10]byte
		for {
			if _, err := c.r.Read(buf[:]); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Errorf("connection %d still open after Close", i)
				}
				break
			}
		}
		c.conn.Close()
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Serve after Close returns nil at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); err != nil {
		t.Errorf("Serve after Close: %v", err)
	}

	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := stacks(); bytes.Contains(st, []byte("pop3mem.(*session)")) || bytes.Contains(st, []byte("pop3mem.(*Server)")) {
		t.Errorf("pop3mem goroutines left:\n%s", st)
	}
}

func stacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}
