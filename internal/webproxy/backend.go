package webproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/sockio"
)

// backendHost is the host name requests are sent to; the dialer maps it to
// the real backends, so one connection pool serves them all.
const backendHost = "backend.postern.invalid"

// downFor is how long a backend that refused a connection is passed over
// while another is up.
const downFor = 5 * time.Second

// backends dials the configured backends round-robin, trying the next one
// when a dial fails.
type backends struct {
	addrs   []string // host:port
	names   []string // host names for TLS
	tls     *tls.Config
	timeout time.Duration
	relayed func(toBackend, toClient int64) // Config.Relayed; nil: not counted
	next    atomic.Uint32
	down    []atomic.Int64 // unix nanoseconds until which a backend is passed over
}

func newBackends(us []*url.URL, tlsCfg *tls.Config, timeout time.Duration) *backends {
	b := &backends{tls: tlsCfg, timeout: timeout, down: make([]atomic.Int64, len(us))}
	for _, u := range us {
		port := u.Port()
		if port == "" {
			port = "80"
			if u.Scheme == "https" {
				port = "443"
			}
		}
		b.addrs = append(b.addrs, net.JoinHostPort(u.Hostname(), port))
		b.names = append(b.names, u.Hostname())
	}
	return b
}

// dial connects to a backend: the next in turn that is not marked down,
// then the others; every backend is tried once.
func (b *backends) dial(ctx context.Context, useTLS bool) (net.Conn, error) {
	n := len(b.addrs)
	start := int(b.next.Add(1)-1) % n
	now := time.Now().UnixNano()
	order := make([]int, 0, n)
	var later []int
	for i := range n {
		k := (start + i) % n
		if b.down[k].Load() > now {
			later = append(later, k)
		} else {
			order = append(order, k)
		}
	}
	order = append(order, later...)
	var errs []error
	for _, k := range order {
		c, err := b.dialOne(ctx, k, useTLS)
		if err == nil {
			b.down[k].Store(0)
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		b.down[k].Store(time.Now().Add(downFor).UnixNano())
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no backend reachable: %w", errors.Join(errs...))
}

func (b *backends) dialOne(ctx context.Context, k int, useTLS bool) (net.Conn, error) {
	d := net.Dialer{Timeout: b.timeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", b.addrs[k])
	if err != nil {
		return nil, err
	}
	c = sockio.Wrap(c)
	if b.relayed != nil { // beneath TLS: the transport still sees its *tls.Conn
		c = &countedConn{Conn: c, relayed: b.relayed}
	}
	if !useTLS {
		return c, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.tls != nil {
		cfg = b.tls.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = b.names[k]
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS to backend %s: %w", b.addrs[k], err)
	}
	return tc, nil
}

// countedConn counts the bytes of a backend connection (one per
// connection, kept alive across requests: nothing per request).
type countedConn struct {
	net.Conn
	relayed func(toBackend, toClient int64)
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.relayed(0, int64(n))
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.relayed(int64(n), 0)
	}
	return n, err
}

// WriteRead is the connection's WriteRead (see limitReader), counted.
func (c *countedConn) WriteRead(w, r []byte, idle bool) (nw, nr int, err error) {
	if wr, ok := c.Conn.(writeReader); ok {
		nw, nr, err = wr.WriteRead(w, r, idle)
	} else if nw, err = c.Conn.Write(w); err == nil {
		nr, err = c.Conn.Read(r)
	}
	if nw > 0 || nr > 0 {
		c.relayed(int64(nw), int64(nr))
	}
	return nw, nr, err
}

// transport returns the round tripper to the backends.
func (b *backends) transport(responseTimeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return b.dial(ctx, false)
		},
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return b.dial(ctx, true)
		},
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: responseTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ReadBufferSize:        32 << 10, // fewer reads for page-sized answers
		WriteBufferSize:       8 << 10,
	}
}
