package netlisten

import (
	"bufio"
	"net"
	"runtime"
	"testing"
)

// Unread sees bytes a client sent before the server spoke, whether they
// came in with the PROXY header or on their own, and consumes nothing.
func TestUnread(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no MSG_PEEK")
	}
	s := start(t, Config{Trusted: trust("127.0.0.1")})
	hdr := func() []byte { return proxyHeader(t, 2, "203.0.113.7:40000", "192.0.2.1:25") }

	t.Run("with the header", func(t *testing.T) {
		c := dial(t, s, "127.0.0.1")
		writeAll(t, c, append(hdr(), "EHLO early\r\n"...))
		sc := s.accept(t)
		if !sc.Unread() {
			t.Fatal("Unread = false for a command sent with the header")
		}
		if got := readLine(t, sc); got != "EHLO early\r\n" {
			t.Fatalf("read %q after Unread", got)
		}
		if sc.Unread() {
			t.Fatal("Unread = true once everything is read")
		}
	})
	t.Run("after the header", func(t *testing.T) {
		c := dial(t, s, "127.0.0.1")
		writeAll(t, c, hdr())
		unreadThenRead(t, c, s.accept(t), "EHLO later\r\n")
	})
	t.Run("without a header", func(t *testing.T) {
		c := dial(t, s, "127.0.0.2") // not trusted: no header expected
		unreadThenRead(t, c, s.accept(t), "EHLO direct\r\n")
	})
}

// unreadThenRead checks Unread on sc, a connection whose client c has
// sent nothing yet (or only its PROXY header): false while c is silent,
// true once c sent line, which is then read whole, and false again once
// it is.
func unreadThenRead(t *testing.T, c net.Conn, sc *Conn, line string) {
	t.Helper()
	if sc.Unread() {
		t.Fatal("Unread = true for a client that sent nothing yet")
	}
	writeAll(t, c, []byte(line))
	waitFor(t, "Unread", sc.Unread)
	if got := readLine(t, sc); got != line {
		t.Fatalf("read %q after Unread", got)
	}
	if sc.Unread() {
		t.Fatal("Unread = true once everything is read")
	}
}

// SpokeFirst asks a *Conn without waiting, and counts bytes already
// buffered by the caller's reader.
func TestSpokeFirst(t *testing.T) {
	s := start(t, Config{})
	c := dial(t, s, "127.0.0.3")
	sc := s.accept(t)
	r := bufio.NewReader(sc)
	if SpokeFirst(sc, r) {
		t.Fatal("SpokeFirst = true for a silent client")
	}
	writeAll(t, c, []byte("EHLO early\r\n"))
	waitFor(t, "SpokeFirst", func() bool { return SpokeFirst(sc, r) })
	if _, err := r.Peek(1); err != nil { // now the bytes sit in r
		t.Fatal(err)
	}
	if !SpokeFirst(sc, r) {
		t.Fatal("SpokeFirst = false with bytes buffered in the reader")
	}
}
