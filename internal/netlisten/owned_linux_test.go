package netlisten

import (
	"io"
	"testing"

	"github.com/postern/postern/internal/sockio"
)

// With owned sockets on, the connections accepted are sockio.Sockets
// (wrapped in a sockio.Conn) that read, write, report the client and
// close as Go's do.
func TestOwnedSockets(t *testing.T) {
	s := start(t, Config{})
	s.SetOwnedSockets(true)
	// The accept loop may be waiting in Go's Accept already: the first
	// connection can be Go's; the next ones are owned.
	for i := range 2 {
		c := dial(t, s, "127.0.0.62")
		sc := s.accept(t)
		raw, ok := sc.RawTCP()
		_, owned := raw.(*sockio.Socket)
		if i == 1 && (!ok || !owned) {
			t.Fatalf("connection %d: RawTCP %T, %v; want a *sockio.Socket", i, raw, ok)
		}
		if got := sc.ClientAddr().Addr().String(); got != "127.0.0.62" {
			t.Fatalf("client %s", got)
		}
		if _, err := io.WriteString(sc, "hello\r\n"); err != nil {
			t.Fatal(err)
		}
		if l := readLine(t, c); l != "hello\r\n" {
			t.Fatalf("client read %q", l)
		}
		writeAll(t, c, []byte("back\r\n"))
		if l := readLine(t, sc); l != "back\r\n" {
			t.Fatalf("server read %q", l)
		}
		sc.Close()
		expectClosed(t, c)
	}
}

// A trusted peer's PROXY header is read from an owned socket (off any
// loop: the socket goes to the runtime's poller), and the client it names
// is the connection's.
func TestOwnedSocketsBehindAProxy(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.63")})
	s.SetOwnedSockets(true)
	for i := range 2 {
		c := dial(t, s, "127.0.0.63")
		writeAll(t, c, proxyHeader(t, 2, "203.0.113.9:4000", s.Addr().String()))
		writeAll(t, c, []byte("first line\r\n"))
		sc := s.accept(t)
		if got := sc.ClientAddr().String(); got != "203.0.113.9:4000" {
			t.Fatalf("connection %d: client %s", i, got)
		}
		if l := readLine(t, sc); l != "first line\r\n" {
			t.Fatalf("connection %d: server read %q", i, l)
		}
		sc.Close()
		expectClosed(t, c)
	}
}

// Turned off, the listener accepts Go's sockets again.
func TestOwnedSocketsOff(t *testing.T) {
	s := start(t, Config{})
	s.SetOwnedSockets(true)
	dial(t, s, "127.0.0.64")
	s.accept(t)
	s.SetOwnedSockets(false)
	dial(t, s, "127.0.0.64")
	s.accept(t) // the loop may have been waiting in the owned accept
	dial(t, s, "127.0.0.64")
	sc := s.accept(t)
	if raw, ok := sc.RawTCP(); !ok {
		t.Fatal("no socket")
	} else if _, owned := raw.(*sockio.Socket); owned {
		t.Fatalf("after SetOwnedSockets(false): %T", raw)
	}
}

// Unread on an owned socket asks it directly: bytes the client sent are
// seen and not consumed, none is seen once read, and a closed
// connection has none.
func TestOwnedSocketsUnread(t *testing.T) {
	s := start(t, Config{})
	s.SetOwnedSockets(true)
	for i := range 2 { // the first may be Go's (see TestOwnedSockets)
		c := dial(t, s, "127.0.0.63")
		sc := s.accept(t)
		raw, _ := sc.RawTCP()
		if _, owned := raw.(*sockio.Socket); !owned {
			if i == 1 {
				t.Fatalf("connection %d is not owned: %T", i, raw)
			}
			continue
		}
		unreadThenRead(t, c, sc, "EHLO direct\r\n")
		writeAll(t, c, []byte("more\r\n"))
		waitFor(t, "Unread", sc.Unread)
		sc.Close()
		if sc.Unread() {
			t.Fatal("Unread = true on a closed connection")
		}
	}
}
