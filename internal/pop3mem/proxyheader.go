package pop3mem

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// PROXY protocol (HAProxy's proxy-protocol.txt) constants.
const (
	proxyV1MaxLen = 107 // longest v1 header, CRLF included
	proxyV2HdrLen = 16  // signature, version/command, family, length
)

// proxyV2Sig opens every version 2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// errProxyHeader marks a missing or malformed PROXY header.
var errProxyHeader = errors.New("malformed PROXY header")

// readProxyHeader reads a PROXY protocol header, version 1 or 2, from r.
// It returns the source address it announces, or ok false when the header
// carries none to use (v1 UNKNOWN, v2 LOCAL, or a family that is not
// IPv4/IPv6), in which case the peer's address stands. Bytes after the
// header stay in r.
func readProxyHeader(r *bufio.Reader) (src netip.AddrPort, ok bool, err error) {
	first, err := r.Peek(1)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("reading PROXY header: %w", err)
	}
	switch first[0] {
	case 'P':
		return readProxyV1(r)
	case '\r':
		return readProxyV2(r)
	}
	return netip.AddrPort{}, false, fmt.Errorf("%w: no PROXY header (first byte %q)", errProxyHeader, first[0])
}

// readProxyV1 reads "PROXY TCP4|TCP6 src dst sport dport\r\n" or
// "PROXY UNKNOWN ...\r\n".
func readProxyV1(r *bufio.Reader) (netip.AddrPort, bool, error) {
	var buf [proxyV1MaxLen]byte
	n := 0
	for {
		if n == len(buf) {
			return netip.AddrPort{}, false, fmt.Errorf("%w: v1 header longer than %d bytes", errProxyHeader, proxyV1MaxLen)
		}
		b, err := r.ReadByte()
		if err != nil {
			return netip.AddrPort{}, false, fmt.Errorf("reading PROXY v1 header: %w", err)
		}
		buf[n] = b
		n++
		if b == '\n' {
			break
		}
	}
	line, found := bytes.CutSuffix(buf[:n], []byte("\r\n"))
	if !found {
		return netip.AddrPort{}, false, fmt.Errorf("%w: v1 header not ended by CRLF", errProxyHeader)
	}
	f := strings.Split(string(line), " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: v1 header %q", errProxyHeader, line)
	}
	if f[1] == "UNKNOWN" {
		return netip.AddrPort{}, false, nil
	}
	if (f[1] != "TCP4" && f[1] != "TCP6") || len(f) != 6 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: v1 header %q", errProxyHeader, line)
	}
	srcIP, err1 := netip.ParseAddr(f[2])
	dstIP, err2 := netip.ParseAddr(f[3])
	sport, err3 := parsePort(f[4])
	_, err4 := parsePort(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: v1 header %q: %v", errProxyHeader, line, err)
	}
	want4 := f[1] == "TCP4"
	for _, a := range []netip.Addr{srcIP, dstIP} {
		if a.Is4() != want4 || a.Zone() != "" {
			return netip.AddrPort{}, false, fmt.Errorf("%w: v1 header %q: address family does not match %s", errProxyHeader, line, f[1])
		}
	}
	return netip.AddrPortFrom(srcIP.Unmap(), sport), true, nil
}

// parsePort parses a decimal port number, 0 to 65535, digits only.
func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// readProxyV2 reads a binary version 2 header, skipping any TLVs.
func readProxyV2(r *bufio.Reader) (netip.AddrPort, bool, error) {
	var hdr [proxyV2HdrLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("reading PROXY v2 header: %w", err)
	}
	if !bytes.Equal(hdr[:12], proxyV2Sig) {
		return netip.AddrPort{}, false, fmt.Errorf("%w: bad v2 signature", errProxyHeader)
	}
	if hdr[12]>>4 != 2 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: v2 version %d", errProxyHeader, hdr[12]>>4)
	}
	cmd := hdr[12] & 0x0f
	fam, proto := hdr[13]>>4, hdr[13]&0x0f
	length := int(binary.BigEndian.Uint16(hdr[14:16]))
	if cmd > 1 || fam > 3 || proto > 2 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: v2 command %#x, family/protocol %#x", errProxyHeader, cmd, hdr[13])
	}

	var src netip.AddrPort
	ok := false
	used := 0
	if cmd == 1 { // PROXY; LOCAL (0) carries nothing to use
		switch fam {
		case 1: // AF_INET: src 4, dst 4, sport 2, dport 2
			var a [12]byte
			if length < len(a) {
				return netip.AddrPort{}, false, fmt.Errorf("%w: v2 IPv4 block of %d bytes", errProxyHeader, length)
			}
			if _, err := io.ReadFull(r, a[:]); err != nil {
				return netip.AddrPort{}, false, fmt.Errorf("reading PROXY v2 addresses: %w", err)
			}
			src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
			ok, used = true, len(a)
		case 2: // AF_INET6: src 16, dst 16, sport 2, dport 2
			var a [36]byte
			if length < len(a) {
				return netip.AddrPort{}, false, fmt.Errorf("%w: v2 IPv6 block of %d bytes", errProxyHeader, length)
			}
			if _, err := io.ReadFull(r, a[:]); err != nil {
				return netip.AddrPort{}, false, fmt.Errorf("reading PROXY v2 addresses: %w", err)
			}
			src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34]))
			ok, used = true, len(a)
		}
	}
	// Skip the rest: TLVs, or addresses of a family not used.
	if _, err := io.CopyN(io.Discard, r, int64(length-used)); err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("reading PROXY v2 header: %w", err)
	}
	return src, ok, nil
}
