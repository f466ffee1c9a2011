package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout   = 2 * time.Second
	DefaultCacheTTL  = 10 * time.Minute
	DefaultCacheSize = 100_000
)

// maxReasonLen bounds Result.Reason, which ends up in SMTP replies and logs.
const maxReasonLen = 300

// ErrRefused means the zone answered with a code saying it refuses the
// query (127.255.255.0/24 on Spamhaus, 127.0.0.255 on dnswl.org), usually
// because it was asked through a public or shared resolver.
var ErrRefused = errors.New("the DNSBL refused the query: use your own resolver")

// ErrBadAnswer means the zone answered with an address outside 127.0.0.0/8,
// which no DNSBL uses as a return code; typically the zone has expired and
// its domain now resolves every name.
var ErrBadAnswer = errors.New("the DNSBL answered outside 127.0.0.0/8")

// Options configures a Checker. The zero value is usable.
type Options struct {
	// Resolver is the "host:port" of the DNS server to ask (":53" is added
	// when the port is missing). It is asked over UDP, and over TCP when an
	// answer is truncated. Empty means the system resolver.
	Resolver string
	// Timeout bounds one lookup of one zone, A and TXT records together
	// (default DefaultTimeout). A timeout means "not listed", with Err set.
	Timeout time.Duration
	// CacheTTL is how long listed and not-listed answers are kept (default
	// DefaultCacheTTL; negative disables the cache).
	CacheTTL time.Duration
	// CacheSize bounds the number of cached answers (default
	// DefaultCacheSize); when it is full the oldest answer goes first.
	CacheSize int
	// Clock returns the current time for cache expiry (default time.Now).
	Clock func() time.Time
}

// Checker looks addresses up on DNS zones (DNSBL "listed?" and, with the
// same mechanism, DNSWL). Safe for concurrent use.
type Checker struct {
	res     *net.Resolver
	server  string // the resolver asked, "" for the system's
	timeout time.Duration
	cache   *cache // nil when caching is off
	flights flights
}

// Result is the answer of one zone.
type Result struct {
	// Zone is the zone as passed to Check.
	Zone string
	// Listed reports whether the zone lists the address.
	Listed bool
	// Codes are the A records of the answer, e.g. 127.0.0.2, sorted.
	Codes []netip.Addr
	// Reason is the zone's TXT record for a listed address, best effort:
	// "" if there is none or it could not be fetched. Control characters
	// are replaced and it is cut to 300 bytes.
	Reason string
	// Err is why the zone could not say (timeout, SERVFAIL, ErrRefused,
	// ErrBadAnswer, a bad zone name, ctx ended); Listed is then false.
	Err error
}

// New returns a Checker for opts.
func New(opts Options) *Checker {
	c := &Checker{timeout: opts.Timeout}
	c.res, c.server = newResolver(opts.Resolver)
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	ttl := opts.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	if ttl > 0 {
		size := opts.CacheSize
		if size <= 0 {
			size = DefaultCacheSize
		}
		now := opts.Clock
		if now == nil {
			now = time.Now
		}
		c.cache = newCache(ttl, size, now)
	}
	return c
}

// newResolver returns the system resolver for "", else a pure-Go resolver
// that sends every query to addr, and addr with its port.
func newResolver(addr string) (*net.Resolver, string) {
	if addr == "" {
		return &net.Resolver{}, ""
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "53")
	}
	return &net.Resolver{
		PreferGo: true,
		// Go's resolver dials "udp" first and "tcp" when the answer is
		// truncated; whatever server it picked, ask addr.
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, addr
}

// Check looks addr up on every zone concurrently and returns when all
// answered or ctx or the timeout ended; results are in zone order.
func (c *Checker) Check(ctx context.Context, addr netip.Addr, zones []string) []Result {
	results := make([]Result, len(zones))
	var wg sync.WaitGroup
	for i, zone := range zones {
		results[i].Zone = zone
		name, err := queryName(addr, zone)
		if err != nil {
			results[i].Err = fmt.Errorf("dnsbl %s: %w", zone, err)
			continue
		}
		if c.cache != nil {
			if ans, ok := c.cache.get(name); ok {
				results[i] = makeResult(zone, ans)
				continue
			}
		}
		wg.Go(func() {
			ans, err := c.flights.do(ctx, name, c.timeout, func(fctx context.Context) answer {
				ans := c.lookup(fctx, name)
				if ans.err == nil && c.cache != nil {
					c.cache.put(name, ans)
				}
				return ans
			})
			if err != nil {
				ans = answer{err: err}
			}
			results[i] = makeResult(zone, ans)
		})
	}
	wg.Wait()
	return results
}

// Listed returns the first zone, in zone order, that lists addr, with its
// reason ("" and "" if none does). Errors count as not listed; use Check to
// see them.
func (c *Checker) Listed(ctx context.Context, addr netip.Addr, zones []string) (zone string, reason string) {
	for _, r := range c.Check(ctx, addr, zones) {
		if r.Listed {
			return r.Zone, r.Reason
		}
	}
	return "", ""
}

func makeResult(zone string, ans answer) Result {
	r := Result{Zone: zone, Listed: ans.listed, Codes: slices.Clone(ans.codes), Reason: ans.reason}
	if ans.err != nil {
		r.Err = fmt.Errorf("dnsbl %s: %w", zone, ans.err)
	}
	return r
}

// lookup asks for the A records of name and, if they say listed, its TXT
// record. An answer with err == nil may be cached.
func (c *Checker) lookup(ctx context.Context, name string) answer {
	ips, err := c.res.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			return answer{} // NXDOMAIN or no A record: not listed
		} else if ok && c.server != "" {
			// Go names the server from resolv.conf; the query went to ours.
			e := *dnsErr
			e.Server = c.server
			err = &e
		}
		return answer{err: err}
	}
	codes := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		codes = append(codes, ip.Unmap())
	}
	slices.SortFunc(codes, netip.Addr.Compare)
	codes = slices.Compact(codes)

	ans := answer{codes: codes}
	refused := false
	for _, code := range codes {
		switch {
		case !loopback.Contains(code):
			// Ignore the rest: a zone that answers with public addresses
			// cannot be trusted to mean anything by its 127 codes either.
			return answer{codes: codes, err: fmt.Errorf("%w: %s", ErrBadAnswer, joinAddrs(codes))}
		case refusedCodes.Contains(code) || code == dnswlBlocked:
			refused = true
		default:
			ans.listed = true
		}
	}
	if !ans.listed {
		if refused {
			ans.err = fmt.Errorf("%w (answer %s)", ErrRefused, joinAddrs(codes))
		}
		return ans
	}
	if txts, err := c.res.LookupTXT(ctx, name); err == nil {
		ans.reason = cleanReason(strings.Join(txts, "; "))
	}
	return ans
}

var (
	loopback     = netip.MustParsePrefix("127.0.0.0/8")
	refusedCodes = netip.MustParsePrefix("127.255.255.0/24")
	dnswlBlocked = netip.MustParseAddr("127.0.0.255")
)

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// cleanReason makes a TXT record safe to put into an SMTP reply or a log
// line: invalid UTF-8 and non-printable characters become spaces, runs of
// spaces collapse, and the result is cut to maxReasonLen bytes.
func cleanReason(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		n := utf8.RuneLen(r)
		if space {
			n++
		}
		if b.Len()+n > maxReasonLen {
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
