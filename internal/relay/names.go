package relay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/sockio"
)

// DefaultNameTTL is how long Names keeps an answer when its TTL is zero.
const DefaultNameTTL = 30 * time.Second

// maxNames bounds the host names a Names keeps: a gateway dials a handful
// of backends.
const maxNames = 64

// Names resolves backend host names for Dialer and keeps each answer for
// a bounded time, so that a login does not ask the resolver (hosts file,
// DNS) again: a backend's new address is seen within TTL. A failed lookup
// is not kept, and a host whose addresses all failed to connect is looked
// up again on the next dial. The zero value is ready; it is safe for
// concurrent use.
type Names struct {
	// TTL is how long an answer is kept; 0: DefaultNameTTL.
	TTL time.Duration
	// Lookup resolves a host name; nil: the system's resolver.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]nameEntry
}

type nameEntry struct {
	addrs   []netip.Addr
	expires time.Time
}

func (n *Names) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}

// resolve returns host's addresses, from the cache while they are fresh.
func (n *Names) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	now := n.now()
	n.mu.Lock()
	e, ok := n.m[host]
	n.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.addrs, nil
	}
	lookup := n.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolving %s: no address", host)
	}
	ttl := n.TTL
	if ttl <= 0 {
		ttl = DefaultNameTTL
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = make(map[string]nameEntry)
	}
	if _, ok := n.m[host]; !ok && len(n.m) >= maxNames {
		for h, e := range n.m {
			if !now.Before(e.expires) {
				delete(n.m, h)
			}
		}
		if len(n.m) >= maxNames {
			clear(n.m)
		}
	}
	n.m[host] = nameEntry{addrs: addrs, expires: now.Add(ttl)}
	return addrs, nil
}

// forget drops host's answer (its addresses did not connect).
func (n *Names) forget(host string) {
	n.mu.Lock()
	delete(n.m, host)
	n.mu.Unlock()
}

// dialBackend connects to addr (host:port), giving up after timeout: an
// IP address directly, a host name through names when it is set (each
// address in turn, as the resolver answered), else through Go's resolver.
// On an event loop it returns the loop's own socket (s), for the caller
// to read and write through a sockio.Conn of its own (c nil then).
func dialBackend(ctx context.Context, names *Names, addr string, timeout time.Duration) (c net.Conn, s *sockio.Socket, err error) {
	ap, perr := netip.ParseAddrPort(addr)
	if perr == nil {
		// On an event loop: a socket of the loop's own, connected there.
		if s, on, err := evloop.DialSocket(ctx, ap, time.Now().Add(timeout), ownedDialControl(ap)); on {
			return nil, s, err
		}
	}
	c, err = dialGo(ctx, names, addr, timeout, perr)
	return c, nil, err
}

// dialGo is dialBackend with Go's sockets; perr is addr's parse as an IP
// address and port (an error: a host name).
func dialGo(ctx context.Context, names *Names, addr string, timeout time.Duration, perr error) (net.Conn, error) {
	if perr == nil || names == nil {
		nd := backendDialer(addr, timeout)
		if nd.ControlContext == nil {
			// On an event loop, the loop waits for the connect.
			nd.Control = evloop.ConnectControl(ctx, time.Now().Add(timeout))
		}
		return nd.DialContext(ctx, "tcp", addr)
	}
	evloop.MayBlock(ctx) // a name lookup
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := names.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs error
	for _, a := range addrs {
		target := netip.AddrPortFrom(a.Unmap(), uint16(p)).String()
		nd := backendDialer(target, timeout)
		c, err := nd.DialContext(ctx, "tcp", target)
		if err == nil {
			return c, nil
		}
		if errs == nil {
			errs = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	names.forget(host)
	return nil, errs
}
