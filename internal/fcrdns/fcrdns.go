// Package fcrdns finds a client's forward-confirmed reverse DNS name: the
// name its address's PTR record gives, accepted only when a forward lookup
// (A for IPv4, AAAA for IPv6) of that name returns the address again. A
// name that anyone controlling a reverse zone could claim is never used.
// Answers, positive and negative, are cached for a bounded time in a
// bounded cache, and every lookup has a deadline.
package fcrdns

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/internal/evloop"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultTTL         = 10 * time.Minute
	DefaultNegativeTTL = time.Minute
	DefaultCacheSize   = 10_000
	// MaxNames bounds how many PTR names of one address are tried.
	MaxNames = 4
)

// Reasons a client has no verified name. Errors returned by VerifiedName
// wrap one of them (errors.Is).
var (
	ErrNoPTR        = errors.New("no PTR record")
	ErrNotConfirmed = errors.New("not confirmed by the forward lookup")
	ErrTimeout      = errors.New("DNS timeout")
	ErrDNS          = errors.New("DNS failure")
)

// Options configures a Resolver.
type Options struct {
	// Server is the "host:port" of the DNS server to ask (port 53 when it
	// is missing). Empty means the first nameserver of /etc/resolv.conf.
	Server string
	// Timeout bounds one whole verification, PTR and forward lookups
	// together (default DefaultTimeout).
	Timeout time.Duration
	// TTL is how long a verified name is kept (default DefaultTTL).
	TTL time.Duration
	// NegativeTTL is how long "no verified name" is kept — no PTR, not
	// confirmed, the server's failure or our timeout (default
	// DefaultNegativeTTL, never longer than TTL).
	NegativeTTL time.Duration
	// CacheSize bounds the cached answers (default DefaultCacheSize); when
	// it is full the oldest goes first.
	CacheSize int
	// Clock returns the current time (default time.Now).
	Clock func() time.Time
}

// Resolver verifies client names. It is safe for concurrent use; lookups of
// one address at the same time share one query.
type Resolver struct {
	server      string
	timeout     time.Duration
	ttl, negTTL time.Duration
	now         func() time.Time
	client      *dns.Client

	mu      sync.Mutex
	max     int
	order   *list.List // of *entry, oldest first
	byAddr  map[netip.Addr]*list.Element
	flights map[netip.Addr]*flight
	queries int // DNS queries sent, for tests and statistics
}

type entry struct {
	addr    netip.Addr
	expires time.Time
	name    string
	err     error
}

type flight struct {
	done chan struct{}
	name string
	err  error
}

// New returns a Resolver for opts.
func New(opts Options) (*Resolver, error) {
	r := &Resolver{
		timeout: opts.Timeout, ttl: opts.TTL, negTTL: opts.NegativeTTL, now: opts.Clock, max: opts.CacheSize,
		order: list.New(), byAddr: make(map[netip.Addr]*list.Element), flights: make(map[netip.Addr]*flight),
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.ttl <= 0 {
		r.ttl = DefaultTTL
	}
	if r.negTTL <= 0 {
		r.negTTL = DefaultNegativeTTL
	}
	r.negTTL = min(r.negTTL, r.ttl)
	if r.max <= 0 {
		r.max = DefaultCacheSize
	}
	if r.now == nil {
		r.now = time.Now
	}
	server := opts.Server
	if server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("reverse DNS: no dns.resolver configured and /etc/resolv.conf is unusable: %w", err)
		}
		if len(conf.Servers) == 0 {
			return nil, errors.New("reverse DNS: no dns.resolver configured and /etc/resolv.conf lists no nameserver")
		}
		server = net.JoinHostPort(conf.Servers[0], conf.Port)
	} else if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	r.server = server
	r.client = &dns.Client{Net: "udp", Timeout: r.timeout}
	return r, nil
}

// Server returns the DNS server asked.
func (r *Resolver) Server() string { return r.server }

// Queries returns how many DNS queries have been sent.
func (r *Resolver) Queries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queries
}

// VerifiedName returns addr's forward-confirmed name, lower case without
// the trailing dot, or an error wrapping ErrNoPTR, ErrNotConfirmed,
// ErrTimeout or ErrDNS that says why there is none. A cached answer is
// returned without a query. It waits at most Options.Timeout, less if ctx
// ends first (that outcome is not cached).
func (r *Resolver) VerifiedName(ctx context.Context, addr netip.Addr) (string, error) {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return "", fmt.Errorf("%w: invalid address", ErrDNS)
	}
	r.mu.Lock()
	if name, err, ok := r.cached(addr); ok {
		r.mu.Unlock()
		return name, err
	}
	// A session on an event loop leaves it before waiting for DNS.
	if f, ok := r.flights[addr]; ok {
		r.mu.Unlock()
		evloop.MayBlock(ctx)
		select {
		case <-f.done:
			return f.name, f.err
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %v", ErrTimeout, ctx.Err())
		}
	}
	f := &flight{done: make(chan struct{})}
	r.flights[addr] = f
	r.mu.Unlock()
	evloop.MayBlock(ctx)

	ours := time.Now().Add(r.timeout)
	lctx, cancel := context.WithDeadline(ctx, ours)
	f.name, f.err = r.verify(lctx, addr)
	cancel()
	// A timeout under the caller's deadline, shorter than ours, or the
	// caller giving up says nothing about addr: it is not cached.
	dl, hasDL := ctx.Deadline()
	callers := ctx.Err() != nil || f.err != nil && errors.Is(f.err, ErrTimeout) && hasDL && dl.Before(ours)

	r.mu.Lock()
	delete(r.flights, addr)
	if !callers {
		r.store(addr, f.name, f.err)
	}
	r.mu.Unlock()
	close(f.done)
	return f.name, f.err
}

// cached returns the live cached answer for addr; r.mu is held.
func (r *Resolver) cached(addr netip.Addr) (string, error, bool) {
	e, ok := r.byAddr[addr]
	if !ok {
		return "", nil, false
	}
	ent := e.Value.(*entry)
	if !r.now().Before(ent.expires) {
		r.order.Remove(e)
		delete(r.byAddr, addr)
		return "", nil, false
	}
	return ent.name, ent.err, true
}

// store caches an answer; r.mu is held. Entries are kept in insertion
// order: expired ones are dropped from the front, and the oldest goes when
// the cache is full.
func (r *Resolver) store(addr netip.Addr, name string, err error) {
	now := r.now()
	ttl := r.ttl
	if err != nil {
		ttl = r.negTTL
	}
	if e, ok := r.byAddr[addr]; ok {
		r.order.Remove(e)
		delete(r.byAddr, addr)
	}
	for e := r.order.Front(); e != nil; e = r.order.Front() {
		ent := e.Value.(*entry)
		if now.Before(ent.expires) && r.order.Len() < r.max {
			break
		}
		r.order.Remove(e)
		delete(r.byAddr, ent.addr)
	}
	r.byAddr[addr] = r.order.PushBack(&entry{addr: addr, expires: now.Add(ttl), name: name, err: err})
}

// CacheLen returns the number of cached answers, live or not yet swept.
func (r *Resolver) CacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.order.Len()
}

// verify does the PTR lookup and the forward lookups of up to MaxNames
// names (in sorted order), returning the first name that resolves to addr.
func (r *Resolver) verify(ctx context.Context, addr netip.Addr) (string, error) {
	rev, err := dns.ReverseAddr(addr.String())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDNS, err)
	}
	names, err := r.query(ctx, rev, dns.TypePTR)
	if err != nil {
		return "", fmt.Errorf("PTR lookup of %s: %w", addr, err)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("%w for %s", ErrNoPTR, addr)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > MaxNames {
		names = names[:MaxNames]
	}
	qtype := dns.TypeA
	if addr.Is6() {
		qtype = dns.TypeAAAA
	}
	var firstErr error
	for _, name := range names {
		addrs, err := r.query(ctx, name, qtype)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("forward lookup of %s: %w", strings.TrimSuffix(name, "."), err)
			}
			if errors.Is(err, ErrTimeout) {
				break
			}
			continue
		}
		for _, a := range addrs {
			if b, perr := netip.ParseAddr(a); perr == nil && b.Unmap() == addr {
				return strings.TrimSuffix(name, "."), nil
			}
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	shown := make([]string, len(names))
	for i, n := range names {
		shown[i] = strings.TrimSuffix(n, ".")
	}
	return "", fmt.Errorf("%w: %s does not resolve back to %s", ErrNotConfirmed, strings.Join(shown, ", "), addr)
}

// query asks the server for one name and type and returns the answers of
// that type, lower-cased (names fully qualified, addresses as text). An
// NXDOMAIN or empty answer is no error and no record.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	r.mu.Lock()
	r.queries++
	r.mu.Unlock()
	in, _, err := r.client.ExchangeContext(ctx, m, r.server)
	if err == nil && in.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: r.timeout}
		in, _, err = tcp.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w (%s)", ErrTimeout, r.server)
		}
		return nil, fmt.Errorf("%w: %v", ErrDNS, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, fmt.Errorf("%w: %s answered %s", ErrDNS, r.server, dns.RcodeToString[in.Rcode])
	}
	var out []string
	for _, rr := range in.Answer {
		switch v := rr.(type) {
		case *dns.PTR:
			if qtype == dns.TypePTR && validName(v.Ptr) {
				out = append(out, strings.ToLower(v.Ptr))
			}
		case *dns.A:
			if qtype == dns.TypeA {
				out = append(out, v.A.String())
			}
		case *dns.AAAA:
			if qtype == dns.TypeAAAA {
				out = append(out, v.AAAA.String())
			}
		}
	}
	return out, nil
}

// validName reports whether a PTR target is a plain host name: letters,
// digits, '-', '_' and dots, at most 254 characters with the final dot.
// Anything else (a '*', control characters) is ignored, never matched.
func validName(name string) bool {
	if name == "" || name == "." || len(name) > 254 {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
