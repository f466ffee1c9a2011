// Package relay connects gateways to their backends: it dials with a PROXY
// protocol header that carries the client's address, optionally over TLS,
// and after a login it copies bytes both ways untouched.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/sockio"
)

// Dialer connects to one backend.
type Dialer struct {
	Addr    string      // host:port
	Proxy   string      // "v2" (default), "v1" or "none"
	TLS     *tls.Config // non-nil: TLS right after the PROXY header (imaps, pop3s backends)
	Timeout time.Duration
	Limit   *BackendLimit // bounds the connections open at once; nil: none
	Service string        // the service it serves (smtp, imap, …), named in advice; may be empty
	// Observe, when set, is told each connection attempt's time and
	// error (not those refused by Limit), for metrics.
	Observe func(d time.Duration, err error)
	// Names, when set, resolves Addr's host name and keeps the answer
	// for a while; nil: resolved on every dial (an IP address never is).
	Names *Names
	// Relayed, when set, is told the bytes a session handed off with
	// Conns.Handoff moved over a connection from Dial (client to backend,
	// backend to client), when the session ends.
	Relayed func(up, down int64)
	// HoldHeader sends the PROXY header (without TLS) with the first read
	// of the connection — the backend's greeting — instead of on its own:
	// the read then waits for the greeting rather than first finding
	// nothing (sockio.Conn.WriteRead). For front-ends whose backend speaks
	// first and that read its greeting before anything else; a write, or
	// handing the socket to a relay, sends the header first too.
	HoldHeader bool
}

// Hop describes a connection made by d, for advice on its failures; conn
// may be nil when there is none yet.
func (d Dialer) Hop(conn net.Conn) Hop {
	h := Hop{Service: d.Service, Addr: d.Addr, Proxy: d.Proxy}
	if h.Proxy == "" {
		h.Proxy = "v2"
	}
	if conn != nil {
		if la, ok := conn.LocalAddr().(*net.TCPAddr); ok {
			h.From = la.AddrPort().Addr().Unmap()
		}
	}
	return h
}

// Dial connects so that the backend sees client as the connection's source
// and local as its destination.
func (d Dialer) Dial(ctx context.Context, client, local netip.AddrPort) (net.Conn, error) {
	if d.Observe == nil {
		return d.dial(ctx, client, local)
	}
	start := time.Now()
	c, err := d.dial(ctx, client, local)
	if !errors.Is(err, ErrBackendLimit) {
		d.Observe(time.Since(start), err)
	}
	return c, err
}

func (d Dialer) dial(ctx context.Context, client, local netip.AddrPort) (net.Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	network, counted, err := d.Limit.take(client.Addr())
	if err != nil {
		return nil, err
	}
	var limit *BackendLimit // the bound to give the place back to
	if counted {
		limit = d.Limit
	}
	raw, sock, err := dialBackend(ctx, d.Names, d.Addr, timeout)
	if err != nil {
		if limit != nil {
			limit.give(network)
		}
		return nil, fmt.Errorf("connecting to backend %s: %w", d.Addr, err)
	}
	var conn *limitedConn
	var sc net.Conn
	if sock != nil {
		// The loop's own socket: its Conn in the same allocation.
		o := new(ownedLimitedConn)
		o.sc.InitOwned(sock)
		conn, sc = &o.lc, &o.sc
	} else {
		conn, sc = new(limitedConn), sockio.Wrap(raw)
	}
	if b, ok := sc.(evloop.Bindable); ok {
		evloop.Bind(ctx, b) // on an event loop, the loop waits for it
	}
	conn.Conn, conn.limit, conn.network, conn.relayed = sc, limit, network, d.Relayed
	if !local.IsValid() {
		if la, ok := conn.LocalAddr().(*net.TCPAddr); ok {
			local = la.AddrPort()
		}
	}
	if d.Proxy != "none" {
		version := byte(2)
		if d.Proxy == "v1" {
			version = 1
		}
		if _, ok := sc.(WriteReader); ok && d.HoldHeader && d.TLS == nil {
			h, err := proxyHeader(version, client, local)
			if err != nil {
				conn.Close()
				return nil, err
			}
			conn.held, conn.heldTimeout = h, timeout
			return conn, nil
		}
		if err := WriteProxyHeader(conn, version, client, local, timeout); err != nil {
			conn.Close()
			return nil, err
		}
	}
	if d.TLS != nil {
		evloop.MayBlock(ctx) // the handshake's CPU is not the loop's
		tc := tls.Client(conn, d.TLS)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS to backend %s: %w", d.Addr, d.Hop(conn).ExplainTLS(err))
		}
		return tc, nil
	}
	return conn, nil
}

// WriteProxyHeader writes a PROXY v1 or v2 header for a TCP connection from
// src to dst. Mixed address families are expressed in src's family.
//
// A client address that is not a real one (invalid or unspecified) is an
// error: the PROXY library would quietly write a LOCAL header instead, and
// the backend would take postern's own address for the client's.
func WriteProxyHeader(w net.Conn, version byte, src, dst netip.AddrPort, timeout time.Duration) error {
	h, err := proxyHeader(version, src, dst)
	if err != nil {
		return err
	}
	return writeHeader(w, h, timeout)
}

// proxyHeader is WriteProxyHeader's header.
func proxyHeader(version byte, src, dst netip.AddrPort) ([]byte, error) {
	// Unmapped first: ::ffff:0.0.0.0 is no client address either.
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !src.Addr().IsValid() || src.Addr().IsUnspecified() || !dst.Addr().IsValid() {
		return nil, fmt.Errorf("sending PROXY header to backend: no client address (%v → %v)", src, dst)
	}
	if src.Addr().Is4() != dst.Addr().Is4() {
		unspec := netip.IPv6Unspecified()
		if src.Addr().Is4() {
			unspec = netip.IPv4Unspecified()
		}
		dst = netip.AddrPortFrom(unspec, dst.Port())
	}
	if version == 2 {
		return appendProxyV2(make([]byte, 0, 16+36), src, dst), nil
	}
	h, err := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst)).Format()
	if err != nil {
		return nil, fmt.Errorf("sending PROXY header to backend: %w", err)
	}
	return h, nil
}

// proxyV2Sig is the signature a PROXY v2 header starts with.
const proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// appendProxyV2 appends the PROXY v2 header of a TCP connection from src
// to dst, both unmapped and of one family, without TLVs: the bytes
// go-proxyproto's Format writes for it (TestProxyV2SameAsLibrary), in one
// allocation where the library makes several a connection.
func appendProxyV2(b []byte, src, dst netip.AddrPort) []byte {
	if src.Addr().Is4() {
		b = append(b, proxyV2Sig+"\x21\x11\x00\x0c"...) // version 2, PROXY; TCP over IPv4; 12 bytes
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		b = append(b, proxyV2Sig+"\x21\x21\x00\x24"...) // TCP over IPv6; 36 bytes
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	return append(b, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()))
}

// writeHeader writes a PROXY header within timeout.
func writeHeader(w net.Conn, h []byte, timeout time.Duration) error {
	w.SetWriteDeadline(time.Now().Add(timeout))
	defer w.SetWriteDeadline(time.Time{})
	if _, err := w.Write(h); err != nil {
		return fmt.Errorf("sending PROXY header to backend: %w", err)
	}
	return nil
}

// Splice copies bytes between client and backend in both directions until
// either side closes or ctx is done, then closes both. buffered holds bytes
// already read from the client (pipelined after the login) and is sent to
// the backend first. Between two plain TCP connections the kernel moves the
// bytes (splice(2)); nothing is parsed or kept, and an idle session holds
// no buffer and no pipe (see pumpTCP).
func Splice(ctx context.Context, client, backend net.Conn, buffered []byte) (up, down int64, err error) {
	client.SetDeadline(time.Time{})
	backend.SetDeadline(time.Time{})
	if len(buffered) > 0 {
		if _, err := backend.Write(buffered); err != nil {
			client.Close()
			backend.Close()
			return 0, 0, fmt.Errorf("writing to backend: %w", err)
		}
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			backend.Close()
		})
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	var upErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		up, upErr = pump(backend, client)
		closeBoth() // the client is gone: so is the session
	}()
	var downErr error
	down, downErr = pump(client, backend)
	closeBoth()
	<-done
	err = errors.Join(quiet(upErr), quiet(downErr))
	return up + int64(len(buffered)), down, err
}

// quiet drops the errors of a connection closed on purpose.
func quiet(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
