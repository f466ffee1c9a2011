package pop3mem

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// v2Header builds a PROXY v2 header by hand: signature, version/command,
// family/protocol, length, address block, then tlvs.
func v2Header(cmd, fam byte, addrs []byte, tlvs []byte) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x20|cmd, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(addrs)+len(tlvs)))
	h = append(h, addrs...)
	return append(h, tlvs...)
}

// v2Addrs is the address block for src and dst (both IPv4 or both IPv6).
func v2Addrs(src, dst netip.AddrPort) []byte {
	var b []byte
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func TestReadProxyHeader(t *testing.T) {
	v4src := netip.MustParseAddrPort("198.51.100.9:51000")
	v4dst := netip.MustParseAddrPort("192.0.2.1:110")
	v6src := netip.MustParseAddrPort("[2001:db8::7]:40001")
	v6dst := netip.MustParseAddrPort("[2001:db8::1]:110")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(v4src.Addr().As16()), 7)
	tlv := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c'} // PP2_TYPE_NOOP
	unix := make([]byte, 216)

	good := []struct {
		name string
		in   string
		src  netip.AddrPort
		ok   bool
	}{
		{"v1 TCP4", "PROXY TCP4 198.51.100.9 192.0.2.1 51000 110\r\n", v4src, true},
		{"v1 TCP6", "PROXY TCP6 2001:db8::7 2001:db8::1 40001 110\r\n", v6src, true},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", netip.AddrPort{}, false},
		{"v1 UNKNOWN with addresses", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", netip.AddrPort{}, false},
		{"v2 TCP4", string(v2Header(1, 0x11, v2Addrs(v4src, v4dst), nil)), v4src, true},
		{"v2 TCP4 with TLV", string(v2Header(1, 0x11, v2Addrs(v4src, v4dst), tlv)), v4src, true},
		{"v2 TCP6", string(v2Header(1, 0x21, v2Addrs(v6src, v6dst), nil)), v6src, true},
		{"v2 TCP6 IPv4-mapped", string(v2Header(1, 0x21, v2Addrs(mapped, v6dst), nil)), netip.AddrPortFrom(v4src.Addr(), 7), true},
		{"v2 LOCAL", string(v2Header(0, 0x00, nil, nil)), netip.AddrPort{}, false},
		{"v2 LOCAL with addresses", string(v2Header(0, 0x11, v2Addrs(v4src, v4dst), nil)), netip.AddrPort{}, false},
		{"v2 UNSPEC", string(v2Header(1, 0x00, nil, tlv)), netip.AddrPort{}, false},
		{"v2 UNIX", string(v2Header(1, 0x31, unix, nil)), netip.AddrPort{}, false},
	}
	for _, tc := range good {
		r := bufio.NewReader(strings.NewReader(tc.in + "CAPA\r\n"))
		src, ok, err := readProxyHeader(r)
		if err != nil || ok != tc.ok || src != tc.src {
			t.Errorf("%s: got %v %v %v, want %v %v", tc.name, src, ok, err, tc.src, tc.ok)
			continue
		}
		if rest, _ := r.ReadString('\n'); rest != "CAPA\r\n" {
			t.Errorf("%s: after the header %q, want the next command", tc.name, rest)
		}
	}

	bad := []struct{ name, in string }{
		{"no header", "CAPA\r\n"},
		{"empty", ""},
		{"v1 LF only", "PROXY TCP4 198.51.100.9 192.0.2.1 51000 110\n"},
		{"v1 no line end", "PROXY TCP4 198.51.100.9 192.0.2.1 51000 110"},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n"},
		{"v1 lower case", "proxy TCP4 198.51.100.9 192.0.2.1 51000 110\r\n"},
		{"v1 only PROXY", "PROXY\r\n"},
		{"v1 bad protocol", "PROXY UDP4 198.51.100.9 192.0.2.1 51000 110\r\n"},
		{"v1 missing port", "PROXY TCP4 198.51.100.9 192.0.2.1 51000\r\n"},
		{"v1 extra field", "PROXY TCP4 198.51.100.9 192.0.2.1 51000 110 1\r\n"},
		{"v1 double space", "PROXY TCP4  198.51.100.9 192.0.2.1 51000 110\r\n"},
		{"v1 bad address", "PROXY TCP4 198.51.100.999 192.0.2.1 51000 110\r\n"},
		{"v1 TCP4 with IPv6", "PROXY TCP4 2001:db8::7 192.0.2.1 51000 110\r\n"},
		{"v1 TCP6 with IPv4", "PROXY TCP6 198.51.100.9 2001:db8::1 51000 110\r\n"},
		{"v1 port too big", "PROXY TCP4 198.51.100.9 192.0.2.1 65536 110\r\n"},
		{"v1 port signed", "PROXY TCP4 198.51.100.9 192.0.2.1 +5 110\r\n"},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + strings.Repeat("\x00", 12)},
		{"v2 version 1", string(append([]byte("\r\n\r\n\x00\r\nQUIT\n\x11\x11\x00\x0c"), v2Addrs(v4src, v4dst)...))},
		{"v2 command 2", string(v2Header(2, 0x11, v2Addrs(v4src, v4dst), nil))},
		{"v2 family 4", string(v2Header(1, 0x41, v2Addrs(v4src, v4dst), nil))},
		{"v2 protocol 3", string(v2Header(1, 0x13, v2Addrs(v4src, v4dst), nil))},
		{"v2 IPv4 block short", string(v2Header(1, 0x11, make([]byte, 8), nil))},
		{"v2 IPv6 block short", string(v2Header(1, 0x21, v2Addrs(v4src, v4dst), nil))},
		{"v2 truncated header", "\r\n\r\n\x00\r\nQUIT\n\x21"},
		{"v2 truncated addresses", string(v2Header(1, 0x11, v2Addrs(v4src, v4dst), nil)[:20])},
		{"v2 truncated TLV", string(v2Header(1, 0x11, v2Addrs(v4src, v4dst), tlv)[:30])},
	}
	for _, tc := range bad {
		src, ok, err := readProxyHeader(bufio.NewReader(strings.NewReader(tc.in)))
		if err == nil {
			t.Errorf("%s: accepted (%v %v)", tc.name, src, ok)
		}
	}
}

func TestProxyHeaderConnections(t *testing.T) {
	srv := startServer(t, Options{RequireProxyHeader: true, AllowPlaintextAuth: true})
	dst := netip.MustParseAddrPort("192.0.2.1:110")

	login := func(header []byte, wantClient func(c *client) netip.AddrPort) {
		t.Helper()
		c := dialRaw(t, srv.addr)
		// The header and the first command in one segment: bytes after the
		// header must not be lost.
		c.write(string(header) + "CAPA\r\n")
		if g := c.line(); g != "+OK pop3mem POP3 ready." {
			t.Fatalf("greeting %q", g)
		}
		if got := c.line(); got != "+OK Capability list follows" {
			t.Fatalf("CAPA: %q", got)
		}
		c.multiRaw()
		c.expect("AUTH PLAIN "+b64("\x00alice\x00pw"), "+OK Logged in.")
		c.expect("QUIT", "+OK Logging out.")
		l := srv.Logins()
		want := wantClient(c)
		if got := l[len(l)-1]; got.Client != want || !got.OK {
			t.Errorf("login record %+v, want client %v", got, want)
		}
	}
	fixed := func(ap string) func(*client) netip.AddrPort {
		return func(*client) netip.AddrPort { return netip.MustParseAddrPort(ap) }
	}
	peer := func(c *client) netip.AddrPort { return c.conn.LocalAddr().(*net.TCPAddr).AddrPort() }

	login([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 40000 110\r\n"), fixed("203.0.113.7:40000"))
	login([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 40001 110\r\n"), fixed("[2001:db8::7]:40001"))
	login([]byte("PROXY UNKNOWN\r\n"), peer)
	login(v2Header(1, 0x11, v2Addrs(netip.MustParseAddrPort("198.51.100.9:51000"), dst), []byte{0x04, 0, 1, 0}), fixed("198.51.100.9:51000"))
	login(v2Header(1, 0x21, v2Addrs(netip.MustParseAddrPort("[2001:db8::9]:51001"), netip.MustParseAddrPort("[2001:db8::1]:110")), nil), fixed("[2001:db8::9]:51001"))
	login(v2Header(0, 0x00, nil, nil), peer)

	sessions := srv.Sessions()
	if len(sessions) != 6 || sessions[0].Client != netip.MustParseAddrPort("203.0.113.7:40000") || sessions[0].User != "alice" {
		t.Errorf("Sessions: %+v", sessions)
	}

	// A connection without a header, or with a malformed one, is closed
	// without a greeting.
	for _, in := range []string{
		"CAPA\r\n",
		"PROXY TCP4 203.0.113.7 192.0.2.1 40000\r\n",
		string(v2Header(2, 0x11, v2Addrs(netip.MustParseAddrPort("198.51.100.9:51000"), dst), nil)),
	} {
		c := dialRaw(t, srv.addr)
		c.write(in)
		c.eof()
	}
	if n := len(srv.Sessions()); n != 6 {
		t.Errorf("%d sessions, want 6 (refused connections are not sessions)", n)
	}
}
