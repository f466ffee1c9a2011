package netlisten

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/sockio"
)

// serveTrusted reads the PROXY header of a connection from a trusted peer,
// in a goroutine of its own so that a slow peer never delays Accept, then
// dispatches the connection. A missing or bad header closes it.
func (l *Listener) serveTrusted(raw net.Conn, peer, local netip.AddrPort) {
	defer l.wg.Done()
	defer func() {
		// A header that made the parser panic closes its connection only.
		if v := recover(); v != nil {
			raw.Close()
			l.log.Error("netlisten: PROXY header reader panicked: connection closed", "peer", peer.String(), "panic", fmt.Sprint(v))
		}
	}()
	// Stopping the listener interrupts the header read.
	stop := context.AfterFunc(l.stop, func() { raw.Close() })
	start := time.Now()
	pc := proxyproto.NewConn(sockio.Wrap(raw),
		proxyproto.WithPolicy(proxyproto.REQUIRE),
		proxyproto.ValidateHeader(validateHeader),
		proxyproto.SetReadHeaderTimeout(l.cfg.ProxyHeaderTimeout),
	)
	h := pc.ProxyHeader() // reads the header: nil on any error
	if !stop() {
		raw.Close()
		return
	}
	if h == nil {
		_, err := pc.Read(nil) // the header error, without I/O: it is already known
		if err == nil {
			err = errors.New("no header")
		}
		if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			err = fmt.Errorf("%w (waited %v)", err, time.Since(start).Round(time.Millisecond))
		}
		why := "its PROXY header was not valid"
		if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			why = "it sent no PROXY header: it is in trusted_upstreams, so postern reads one first; make it send one " +
				"(HAProxy: send-proxy-v2; nginx stream: proxy_protocol on) or remove it from trusted_upstreams " +
				"(a client connecting directly from a trusted address gets the same)"
		}
		msg := "netlisten: closing connection from trusted peer: missing or bad PROXY header"
		if l.firstWarning(peer.Addr()) {
			l.log.Warn(msg, "listen", l.addr, "peer", peer, "why", why, "err", err,
				"note", "logged once for this peer; its next such connections at debug level")
		} else {
			l.log.Debug(msg, "listen", l.addr, "peer", peer, "err", err)
		}
		raw.Close()
		return
	}
	client, dst, proxied := peer, local, false
	if !h.Command.IsLocal() {
		// validateHeader has checked these.
		src, d, _ := h.TCPAddrs()
		client, dst, proxied = unmap(src.AddrPort()), unmap(d.AddrPort()), true
	}
	l.dispatch(context.Background(), newConn(raw, takeBuffered(pc, raw), client, dst, proxied, l.tls.Load()))
}

// validateHeader accepts a LOCAL header (the load balancer speaking for
// itself: health checks) and a PROXY header for a TCP connection from a
// unicast client address.
func validateHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	if h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6 {
		return fmt.Errorf("netlisten: PROXY header for transport 0x%02x: only TCP over IPv4 or IPv6 is accepted", byte(h.TransportProtocol))
	}
	src, dst, ok := h.TCPAddrs()
	if !ok || src == nil || dst == nil {
		return errors.New("netlisten: PROXY header without TCP addresses")
	}
	s := unmap(src.AddrPort()).Addr()
	if !s.IsValid() || s.IsUnspecified() || s.IsMulticast() || s == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("netlisten: PROXY header source %v is not a client address", src)
	}
	if d := unmap(dst.AddrPort()).Addr(); !d.IsValid() {
		return fmt.Errorf("netlisten: PROXY header destination %v is not an address", dst)
	}
	return nil
}

// unmap returns ap with an IPv4-mapped IPv6 address as IPv4 and no zone.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// tcpAddrPort returns the address of a TCP endpoint, unmapped.
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := unmap(ta.AddrPort())
	return ap, ap.Addr().IsValid()
}

// maxWarnedPeers bounds the peers remembered by firstWarning; when full,
// the set starts again (a peer may then be warned about once more).
const maxWarnedPeers = 1024

// firstWarning reports whether a header failure of peer is the first one
// since the listener started: trusted peers are few, and one that never
// sends a header would otherwise fill the log with one warning per
// connection.
func (l *Listener) firstWarning(peer netip.Addr) bool {
	l.warnMu.Lock()
	defer l.warnMu.Unlock()
	if _, seen := l.warned[peer]; seen {
		return false
	}
	if l.warned == nil || len(l.warned) >= maxWarnedPeers {
		l.warned = make(map[netip.Addr]struct{})
	}
	l.warned[peer] = struct{}{}
	return true
}
