package netlisten

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

func TestProxyHeaderFromTrustedPeer(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.1")})
	tests := []struct {
		name       string
		version    byte
		src, dst   string
		wantClient string
		wantLocal  string
	}{
		{"v1 IPv4", 1, "203.0.113.7:40000", "192.0.2.1:25", "203.0.113.7:40000", "192.0.2.1:25"},
		{"v2 IPv4", 2, "203.0.113.7:40000", "192.0.2.1:25", "203.0.113.7:40000", "192.0.2.1:25"},
		{"v1 IPv6", 1, "[2001:db8::7]:40000", "[2001:db8::1]:587", "[2001:db8::7]:40000", "[2001:db8::1]:587"},
		{"v2 IPv6", 2, "[2001:db8::7]:40000", "[2001:db8::1]:587", "[2001:db8::7]:40000", "[2001:db8::1]:587"},
		{"v2 IPv4-mapped", 2, "[::ffff:203.0.113.9]:1234", "[2001:db8::1]:143", "203.0.113.9:1234", "[2001:db8::1]:143"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s, "127.0.0.1")
			// The header and the first command arrive in one segment: the
			// command must not be lost in the header reader's buffer.
			writeAll(t, c, append(proxyHeader(t, tt.version, tt.src, tt.dst), "EHLO x\r\n"...))
			sc := s.accept(t)
			if got := sc.ClientAddr().String(); got != tt.wantClient {
				t.Errorf("ClientAddr = %s, want %s", got, tt.wantClient)
			}
			if got := sc.RemoteAddr().String(); got != tt.wantClient {
				t.Errorf("RemoteAddr = %s, want %s", got, tt.wantClient)
			}
			if got := sc.LocalAddrPort().String(); got != tt.wantLocal {
				t.Errorf("LocalAddrPort = %s, want %s", got, tt.wantLocal)
			}
			if !sc.Proxied() {
				t.Error("Proxied = false")
			}
			if got := readLine(t, sc); got != "EHLO x\r\n" {
				t.Errorf("server read %q after the header", got)
			}
			writeAll(t, sc, []byte("250 ok\r\n"))
			if got := readLine(t, c); got != "250 ok\r\n" {
				t.Errorf("client read %q", got)
			}
			if live, _ := s.Stats(); live != 1 {
				t.Errorf("Stats live = %d, want 1", live)
			}
		})
	}
}

// The trap: with an optional-header policy a server-speaks-first protocol
// would get its greeting held for the header timeout.
func TestUntrustedPeerGetsGreetingAtOnce(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.2"), ProxyHeaderTimeout: 5 * time.Second})
	go func() {
		for c := range s.conns {
			c.Write([]byte("220 postern ESMTP\r\n"))
			c.Close()
		}
	}()
	begin := time.Now()
	c := dial(t, s, "127.0.0.3")
	got := readLine(t, c)
	elapsed := time.Since(begin)
	if got != "220 postern ESMTP\r\n" {
		t.Fatalf("greeting %q", got)
	}
	if elapsed > 200*time.Millisecond {
		t.Fatalf("greeting took %v: held waiting for a PROXY header?", elapsed)
	}
}

func TestUntrustedPeerAddressAndHeaderAsData(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.2")})
	for _, version := range []byte{1, 2} {
		hdr := proxyHeader(t, version, "203.0.113.7:40000", "192.0.2.1:25")
		c := dial(t, s, "127.0.0.3")
		writeAll(t, c, append(hdr, "QUIT\r\n"...))
		sc := s.accept(t)
		if got, want := sc.ClientAddr().Addr(), netip.MustParseAddr("127.0.0.3"); got != want {
			t.Errorf("v%d: ClientAddr = %v, want the real peer %v", version, got, want)
		}
		if sc.Proxied() {
			t.Errorf("v%d: Proxied = true for an untrusted peer", version)
		}
		if got, want := sc.LocalAddrPort().String(), s.Addr().String(); got != want {
			t.Errorf("v%d: LocalAddrPort = %s, want %s", version, got, want)
		}
		want := append(hdr, "QUIT\r\n"...)
		got := make([]byte, len(want))
		sc.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadFull(sc, got); err != nil {
			t.Fatalf("v%d: reading: %v", version, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("v%d: server read %q, want the header as plain bytes %q", version, got, want)
		}
	}
}

func TestSilentTrustedPeerDoesNotBlockAccept(t *testing.T) {
	const timeout = time.Second
	s := start(t, Config{Trusted: trust("127.0.0.1"), ProxyHeaderTimeout: timeout})
	begin := time.Now()
	silent := dial(t, s, "127.0.0.1")

	// Another client is accepted while the silent peer holds its header
	// slot.
	other := dial(t, s, "127.0.0.3")
	sc := s.accept(t)
	if d := time.Since(begin); d > timeout/2 {
		t.Errorf("accepting another client took %v", d)
	}
	if got := sc.ClientAddr().Addr(); got != netip.MustParseAddr("127.0.0.3") {
		t.Errorf("accepted %v, want 127.0.0.3", got)
	}
	_ = other

	// The silent peer is closed after the header timeout.
	expectClosed(t, silent)
	if d := time.Since(begin); d < timeout-100*time.Millisecond {
		t.Errorf("silent peer closed after %v, before the header timeout %v", d, timeout)
	}
	s.logs.waitLog(t, "missing or bad PROXY header")
	s.noAccept(t)
}

func TestBadHeaderFromTrustedPeer(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.1"), ProxyHeaderTimeout: 2 * time.Second})
	udp := proxyproto.HeaderProxyFromAddrs(2,
		&net.UDPAddr{IP: net.ParseIP("203.0.113.7"), Port: 53},
		&net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 53})
	var udpHdr bytes.Buffer
	if _, err := udp.WriteTo(&udpHdr); err != nil {
		t.Fatal(err)
	}
	v2 := proxyHeader(t, 2, "203.0.113.7:40000", "192.0.2.1:25")
	truncated := v2[:len(v2)-3]
	tests := []struct {
		name string
		data []byte
	}{
		{"no header", []byte("EHLO x\r\n")},
		{"v1 bad address", []byte("PROXY TCP4 not-an-ip 192.0.2.1 40000 25\r\n")},
		{"v1 bad port", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 99999 25\r\n")},
		{"v1 no CRLF", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\n")},
		{"v1 too long", append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 200)...)},
		{"v1 unspecified source", []byte("PROXY TCP4 0.0.0.0 192.0.2.1 40000 25\r\n")},
		{"v1 broadcast source", []byte("PROXY TCP4 255.255.255.255 192.0.2.1 40000 25\r\n")},
		{"v2 multicast source", proxyHeader(t, 2, "[ff02::1]:40000", "[2001:db8::1]:25")},
		{"v2 unspecified source", proxyHeader(t, 2, "[::]:40000", "[2001:db8::1]:25")},
		{"v2 UDP", udpHdr.Bytes()},
		{"v2 truncated", truncated},
		{"v2 bad version", append(append([]byte{}, v2[:12]...), 0x31, 0x11, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s, "127.0.0.1")
			writeAll(t, c, tt.data)
			if tt.name == "v2 truncated" {
				// Half a header, then end of stream.
				c.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, c)
			s.noAccept(t)
		})
	}
	s.logs.waitLog(t, "not a client address")
	s.logs.waitLog(t, "only TCP over IPv4 or IPv6")

	// The listener still serves good connections.
	c := dial(t, s, "127.0.0.1")
	writeAll(t, c, proxyHeader(t, 1, "203.0.113.8:1", "192.0.2.1:25"))
	if got := s.accept(t).ClientAddr().String(); got != "203.0.113.8:1" {
		t.Errorf("ClientAddr = %s", got)
	}
	if live, _ := s.Stats(); live != 1 {
		t.Errorf("Stats live = %d after bad headers, want 1", live)
	}
}

// A LOCAL header (v2 LOCAL, v1 UNKNOWN) is the load balancer speaking for
// itself, as in health checks.
func TestLocalHeader(t *testing.T) {
	s := start(t, Config{Trusted: trust("127.0.0.1")})
	local := proxyproto.HeaderProxyFromAddrs(2, nil, nil) // LOCAL
	var v2 bytes.Buffer
	if _, err := local.WriteTo(&v2); err != nil {
		t.Fatal(err)
	}
	for name, hdr := range map[string][]byte{"v2 LOCAL": v2.Bytes(), "v1 UNKNOWN": []byte("PROXY UNKNOWN\r\n")} {
		c := dial(t, s, "127.0.0.1")
		writeAll(t, c, hdr)
		sc := s.accept(t)
		if sc.Proxied() {
			t.Errorf("%s: Proxied = true", name)
		}
		if got := sc.ClientAddr(); got.String() != c.LocalAddr().String() {
			t.Errorf("%s: ClientAddr = %v, want the load balancer %v", name, got, c.LocalAddr())
		}
	}
}
