package relay

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"
)

// The PROXY v2 header postern writes itself is byte for byte the one
// go-proxyproto formats, for IPv4 and IPv6 clients, mapped addresses and
// a client of the other family than the address it connected to; and
// the library reads it back as the same addresses.
func TestProxyV2SameAsLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addr := func(v6 bool) netip.AddrPort {
		if v6 {
			var a [16]byte
			for i := range a {
				a[i] = byte(r.IntN(256))
			}
			return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(r.IntN(65536)))
		}
		var a [4]byte
		for i := range a {
			a[i] = byte(r.IntN(256))
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(r.IntN(65536)))
	}
	cases := [][2]netip.AddrPort{
		{netip.MustParseAddrPort("[::ffff:192.0.2.7]:40000"), netip.MustParseAddrPort("127.0.0.1:143")},
		{netip.MustParseAddrPort("192.0.2.7:1"), netip.MustParseAddrPort("[2001:db8::1]:993")},
		{netip.MustParseAddrPort("[2001:db8::7]:65535"), netip.MustParseAddrPort("127.0.0.1:25")},
		{netip.MustParseAddrPort("0.0.0.1:0"), netip.MustParseAddrPort("255.255.255.255:65535")},
	}
	for range 500 {
		cases = append(cases, [2]netip.AddrPort{addr(r.IntN(2) == 0), addr(r.IntN(2) == 0)})
	}
	for _, c := range cases {
		src, dst := c[0], c[1]
		if src.Addr().Unmap().IsUnspecified() {
			continue // refused before any header (TestWriteProxyHeader)
		}
		got, err := proxyHeader(2, src, dst)
		if err != nil {
			t.Fatalf("%v → %v: %v", src, dst, err)
		}
		// What proxyHeader gave the library before: the same families.
		s := netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		d := netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		if s.Addr().Is4() != d.Addr().Is4() {
			if s.Addr().Is4() {
				d = netip.AddrPortFrom(netip.IPv4Unspecified(), d.Port())
			} else {
				d = netip.AddrPortFrom(netip.IPv6Unspecified(), d.Port())
			}
		}
		want, err := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(s), net.TCPAddrFromAddrPort(d)).Format()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%v → %v:\n got %x\nwant %x", src, dst, got, want)
		}
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(got)))
		if err != nil {
			t.Fatalf("%v → %v: the library cannot read it back: %v", src, dst, err)
		}
		ha, _ := h.SourceAddr.(*net.TCPAddr)
		if ha == nil || ha.AddrPort() != s && netip.AddrPortFrom(ha.AddrPort().Addr().Unmap(), ha.AddrPort().Port()) != s {
			t.Fatalf("%v → %v: read back from %v", src, dst, h.SourceAddr)
		}
	}
}

// BenchmarkProxyV2 is the header a backend connection starts with.
func BenchmarkProxyV2(b *testing.B) {
	src, dst := netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort("127.0.0.1:143")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proxyHeader(2, src, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzProxyV2 compares the header postern writes with the library's for
// any pair of addresses.
func FuzzProxyV2(f *testing.F) {
	f.Add([]byte{192, 0, 2, 7}, uint16(40000), []byte{127, 0, 0, 1}, uint16(143))
	f.Add(make([]byte, 16), uint16(1), []byte{32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(993))
	f.Fuzz(func(t *testing.T, sa []byte, sp uint16, da []byte, dp uint16) {
		s, ok1 := netip.AddrFromSlice(sa)
		d, ok2 := netip.AddrFromSlice(da)
		if !ok1 || !ok2 {
			return
		}
		src, dst := netip.AddrPortFrom(s, sp), netip.AddrPortFrom(d, dp)
		got, err := proxyHeader(2, src, dst)
		if s.Unmap().IsUnspecified() {
			if err == nil {
				t.Fatalf("%v → %v: a header for an unspecified client", src, dst)
			}
			return
		}
		if err != nil {
			t.Fatalf("%v → %v: %v", src, dst, err)
		}
		su := netip.AddrPortFrom(s.Unmap(), sp)
		du := netip.AddrPortFrom(d.Unmap(), dp)
		if su.Addr().Is4() != du.Addr().Is4() {
			if su.Addr().Is4() {
				du = netip.AddrPortFrom(netip.IPv4Unspecified(), dp)
			} else {
				du = netip.AddrPortFrom(netip.IPv6Unspecified(), dp)
			}
		}
		want, err := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(su), net.TCPAddrFromAddrPort(du)).Format()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%v → %v:\n got %x\nwant %x", src, dst, got, want)
		}
	})
}
