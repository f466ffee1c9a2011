package testenv_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// unhex reads hex with spaces and newlines between bytes.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The expected bytes are laid out by hand from HAProxy's proxy-protocol.txt
// section 2.2: 12-byte signature, version+command, family+protocol, a
// 16-bit big-endian length of what follows, source address, destination
// address, source port, destination port.
func TestProxyV2HeaderBytes(t *testing.T) {
	const sig = "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a"
	cases := []struct {
		name     string
		src, dst string
		want     string
	}{{
		name: "TCP over IPv4",
		src:  "203.0.113.7:40000", dst: "127.0.0.1:12143",
		want: sig + ` 21 11 00 0c
			cb 00 71 07   7f 00 00 01
			9c 40         2f 6f`,
	}, {
		name: "TCP over IPv6",
		src:  "[2001:db8::7]:40001", dst: "[::1]:12025",
		want: sig + ` 21 21 00 24
			20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 07
			00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01
			9c 41         2e f9`,
	}, {
		name: "IPv4 client to an IPv6 address: IPv6 with ::ffff:a.b.c.d",
		src:  "203.0.113.7:1", dst: "[::1]:65535",
		want: sig + ` 21 21 00 24
			00 00 00 00 00 00 00 00 00 00 ff ff cb 00 71 07
			00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01
			00 01         ff ff`,
	}, {
		name: "IPv4-mapped IPv6 addresses count as IPv4",
		src:  "[::ffff:198.51.100.9]:40000", dst: "[::ffff:127.0.0.1]:12110",
		want: sig + ` 21 11 00 0c
			c6 33 64 09   7f 00 00 01
			9c 40         2f 4e`,
	}, {
		name: "zone is dropped",
		src:  "[fe80::1%eth0]:40000", dst: "[::1]:12143",
		want: sig + ` 21 21 00 24
			fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 01
			00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01
			9c 40         2f 6f`,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := testenv.ProxyV2Header(netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst))
			if want := unhex(t, c.want); !bytes.Equal(got, want) {
				t.Errorf("ProxyV2Header(%s, %s)\n got % x\nwant % x", c.src, c.dst, got, want)
			}
		})
	}
}

func TestProxyV2Local(t *testing.T) {
	// LOCAL command (0x20), AF_UNSPEC/UNSPEC (0x00), no address bytes.
	want := unhex(t, "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a  20 00 00 00")
	if got := testenv.ProxyV2Local(); !bytes.Equal(got, want) {
		t.Errorf("ProxyV2Local()\n got % x\nwant % x", got, want)
	}
}

// decodeV2 parses a v2 header as a receiver would, independently of the
// encoder, and returns the addresses and the header length.
func decodeV2(t *testing.T, b []byte) (src, dst netip.AddrPort, n int) {
	t.Helper()
	if len(b) < 16 || string(b[:12]) != "\r\n\r\n\x00\r\nQUIT\n" {
		t.Fatalf("no v2 signature: % x", b)
	}
	if b[12] != 0x21 {
		t.Fatalf("version/command %#x, want 0x21", b[12])
	}
	length := int(binary.BigEndian.Uint16(b[14:16]))
	if len(b) != 16+length {
		t.Fatalf("length field %d, header has %d bytes after it", length, len(b)-16)
	}
	a := b[16:]
	switch b[13] {
	case 0x11:
		if length != 12 {
			t.Fatalf("TCP4 length %d", length)
		}
		s, d := netip.AddrFrom4([4]byte(a[0:4])), netip.AddrFrom4([4]byte(a[4:8]))
		return netip.AddrPortFrom(s, binary.BigEndian.Uint16(a[8:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(a[10:])), len(b)
	case 0x21:
		if length != 36 {
			t.Fatalf("TCP6 length %d", length)
		}
		s, d := netip.AddrFrom16([16]byte(a[0:16])), netip.AddrFrom16([16]byte(a[16:32]))
		return netip.AddrPortFrom(s, binary.BigEndian.Uint16(a[32:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(a[34:])), len(b)
	}
	t.Fatalf("family/protocol %#x", b[13])
	return
}

func TestProxyV2RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addr := func(v6 bool) netip.Addr {
		if v6 {
			var a [16]byte
			for i := range a {
				a[i] = byte(r.IntN(256))
			}
			a[0] = 0x20 // never an IPv4-mapped address
			return netip.AddrFrom16(a)
		}
		return netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	for range 2000 {
		src := netip.AddrPortFrom(addr(r.IntN(2) == 0), uint16(r.IntN(65536)))
		dst := netip.AddrPortFrom(addr(r.IntN(2) == 0), uint16(r.IntN(65536)))
		gs, gd, _ := decodeV2(t, testenv.ProxyV2Header(src, dst))
		if src.Addr().Is4() != dst.Addr().Is4() { // mixed: both sent as IPv6
			gs = netip.AddrPortFrom(gs.Addr().Unmap(), gs.Port())
			gd = netip.AddrPortFrom(gd.Addr().Unmap(), gd.Port())
		}
		if gs != src || gd != dst {
			t.Fatalf("ProxyV2Header(%v, %v) decodes to (%v, %v)", src, dst, gs, gd)
		}
	}
}

func TestProxyV2HeaderPanicsOnInvalidAddress(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for an invalid source address")
		}
	}()
	testenv.ProxyV2Header(netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:1"))
}

// Version 1 (proxy-protocol.txt section 2.1): "PROXY", a space, TCP4 or
// TCP6, source and destination address, source and destination port,
// single spaces between, CRLF; at most 107 bytes.
func TestProxyV1Header(t *testing.T) {
	const long = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	cases := []struct{ src, dst, want string }{
		{"203.0.113.7:40000", "127.0.0.1:12143", "PROXY TCP4 203.0.113.7 127.0.0.1 40000 12143\r\n"},
		{"[2001:db8::7]:40000", "[::1]:12025", "PROXY TCP6 2001:db8::7 ::1 40000 12025\r\n"},
		{"203.0.113.7:40000", "[::1]:12025", "PROXY TCP6 ::ffff:203.0.113.7 ::1 40000 12025\r\n"},
		{"[::ffff:203.0.113.7]:1", "127.0.0.1:2", "PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n"},
		// The spec's longest lines.
		{"255.255.255.255:65535", "255.255.255.255:65535", "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"},
		{"[" + long + "]:65535", "[" + long + "]:65535", "PROXY TCP6 " + long + " " + long + " 65535 65535\r\n"},
	}
	for _, c := range cases {
		got := string(testenv.ProxyV1Header(netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)))
		if got != c.want {
			t.Errorf("ProxyV1Header(%s, %s) = %q, want %q", c.src, c.dst, got, c.want)
		}
		if len(got) > 107 {
			t.Errorf("%q is %d bytes, over the spec's 107", got, len(got))
		}
	}
}

// pxclient.py (verify.sh's Python client) and ProxyV2Header must agree.
func TestProxyV2MatchesPxclient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "test", "backends", "pxclient.py"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Skip(err)
	}
	for _, c := range [][2]string{
		{"203.0.113.7:40000", "127.0.0.1:12143"},
		{"[2001:db8::7]:40001", "[::1]:12025"},
		{"203.0.113.7:40002", "[::1]:12110"},
	} {
		out, err := exec.Command(py, script, "hex", c[0], c[1]).CombinedOutput()
		if err != nil {
			t.Fatalf("pxclient.py hex %s %s: %v\n%s", c[0], c[1], err, out)
		}
		want := unhex(t, string(out))
		got := testenv.ProxyV2Header(netip.MustParseAddrPort(c[0]), netip.MustParseAddrPort(c[1]))
		if !bytes.Equal(got, want) {
			t.Errorf("%s -> %s: Go % x\npxclient.py % x", c[0], c[1], got, want)
		}
	}
}
