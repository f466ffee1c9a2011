package testenv

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// proxyV2Signature opens every PROXY protocol version 2 header
// (HAProxy's proxy-protocol.txt, section 2.2).
var proxyV2Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	proxyV2CmdLocal = 0x20 // version 2 (high nibble), command LOCAL
	proxyV2CmdProxy = 0x21 // version 2, command PROXY
	proxyV2TCP4     = 0x11 // AF_INET (high nibble), SOCK_STREAM
	proxyV2TCP6     = 0x21 // AF_INET6, SOCK_STREAM
)

// ProxyV2Header returns the PROXY protocol version 2 header that announces
// a TCP connection from src to dst: the 12-byte signature, PROXY command,
// TCP over IPv4 (12 address bytes) when both addresses are IPv4, else TCP
// over IPv6 (36 bytes) with an IPv4 side written as ::ffff:a.b.c.d, as
// HAProxy does. IPv4-mapped IPv6 addresses count as IPv4; zones are
// dropped. It sends no TLVs. It panics on an invalid address: it is meant
// for tests, where that is a bug in the test.
func ProxyV2Header(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.IsValid() || !d.IsValid() {
		panic(fmt.Sprintf("testenv.ProxyV2Header: invalid address (src %v, dst %v)", src, dst))
	}
	h := make([]byte, 0, 16+36)
	h = append(h, proxyV2Signature[:]...)
	if s.Is4() && d.Is4() {
		h = append(h, proxyV2CmdProxy, proxyV2TCP4, 0, 12)
		s4, d4 := s.As4(), d.As4()
		h = append(h, s4[:]...)
		h = append(h, d4[:]...)
	} else {
		h = append(h, proxyV2CmdProxy, proxyV2TCP6, 0, 36)
		s16, d16 := s.As16(), d.As16()
		h = append(h, s16[:]...)
		h = append(h, d16[:]...)
	}
	h = binary.BigEndian.AppendUint16(h, src.Port())
	h = binary.BigEndian.AppendUint16(h, dst.Port())
	return h
}

// ProxyV2Local returns the version 2 header with the LOCAL command and no
// addresses: what a proxy sends for its own health checks. The backend
// then uses the real peer address.
func ProxyV2Local() []byte {
	h := make([]byte, 0, 16)
	h = append(h, proxyV2Signature[:]...)
	return append(h, proxyV2CmdLocal, 0x00, 0, 0)
}

// ProxyV1Header returns the text (version 1) header for a TCP connection
// from src to dst, e.g. "PROXY TCP4 203.0.113.7 127.0.0.1 40000 12143\r\n".
// Both addresses must be of one family in version 1, so when either is
// IPv6 the line says TCP6 and an IPv4 side is written as ::ffff:a.b.c.d.
// It panics on an invalid address.
func ProxyV1Header(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
	if !s.IsValid() || !d.IsValid() {
		panic(fmt.Sprintf("testenv.ProxyV1Header: invalid address (src %v, dst %v)", src, dst))
	}
	family := "TCP4"
	if !s.Is4() || !d.Is4() {
		family = "TCP6"
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", family, s, d, src.Port(), dst.Port())
}
