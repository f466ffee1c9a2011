// Package dnsblzone serves postern's block table as a DNS blocklist zone
// (RFC 5782): a query for d.c.b.a.<zone> (or the 32-nibble reversed form
// of an IPv6 address) is answered with A 127.0.0.2 and a TXT giving the
// block's reason and expiry when the address lies inside an active block,
// and NXDOMAIN otherwise. Postfix reject_rbl_client, rspamd or any MTA can
// thus consult postern's blocks. Answers are read from the engine's block
// table; the zone never writes it and is not on the accept path.
package dnsblzone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/postern/postern/internal/store"
)

// Lookup finds the active block covering an address (guard.Engine.BlockOf).
type Lookup interface {
	BlockOf(addr netip.Addr) (store.Block, bool)
}

// Options configure a Zone.
type Options struct {
	// Zone is the zone's name ("dnsbl.example.com").
	Zone string
	// Lookup answers whether an address is blocked.
	Lookup Lookup
	// Grant reports whether a client may query; nil: loopback only.
	Grant func(netip.Addr) bool
	// TTL of the answers; default 60s.
	TTL time.Duration
	// NS is the name server named in the apex NS and SOA records;
	// default "ns.<zone>".
	NS string
	// Mbox is the SOA contact; default "hostmaster.<zone>".
	Mbox string
	// Now is the clock (for TXT expiry and the SOA serial); default time.Now.
	Now func() time.Time
}

// listedA is the A record of a listed address (RFC 5782: 127.0.0.2), and
// the IPv4 test entry.
var listedA = netip.AddrFrom4([4]byte{127, 0, 0, 2})

// Zone answers DNS queries for one zone.
type Zone struct {
	zone  string // FQDN, lower case
	look  Lookup
	grant func(netip.Addr) bool
	ttl   uint32
	ns    string
	mbox  string
	now   func() time.Time
}

// New checks opts and returns the Zone.
func New(opts Options) (*Zone, error) {
	name := strings.ToLower(strings.TrimSuffix(opts.Zone, "."))
	if name == "" {
		return nil, errors.New("dnsbl zone: no zone name")
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("dnsbl zone: bad zone name %q", opts.Zone)
	}
	if opts.Lookup == nil {
		return nil, errors.New("dnsbl zone: no block lookup")
	}
	z := &Zone{zone: dns.Fqdn(name), look: opts.Lookup, grant: opts.Grant, ttl: 60, now: opts.Now}
	if z.grant == nil {
		z.grant = netip.Addr.IsLoopback
	}
	if opts.TTL > 0 {
		z.ttl = uint32(opts.TTL / time.Second)
	}
	if z.now == nil {
		z.now = time.Now
	}
	z.ns = dns.Fqdn(strings.ToLower(opts.NS))
	if opts.NS == "" {
		z.ns = "ns." + z.zone
	}
	z.mbox = dns.Fqdn(strings.ToLower(opts.Mbox))
	if opts.Mbox == "" {
		z.mbox = "hostmaster." + z.zone
	}
	return z, nil
}

// Name returns the zone's name, a FQDN.
func (z *Zone) Name() string { return z.zone }

// ServeDNS answers one query.
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_ = w.WriteMsg(z.Answer(remoteAddr(w.RemoteAddr()), req))
}

func remoteAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Answer builds the reply to req from client.
func (z *Zone) Answer(client netip.Addr, req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		return m.SetRcode(req, dns.RcodeNotImplemented)
	}
	m.SetReply(req)
	m.RecursionAvailable = false
	if !client.IsValid() || !z.grant(client) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	if !dns.IsSubDomain(z.zone, name) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	if name == z.zone {
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = append(m.Answer, z.soa())
		case dns.TypeNS:
			m.Answer = append(m.Answer, z.nsRR())
		case dns.TypeANY:
			m.Answer = append(m.Answer, z.soa(), z.nsRR())
		default:
			m.Ns = append(m.Ns, z.soa())
		}
		return m
	}
	addr, ok := ParseName(name[:len(name)-len(z.zone)-1])
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, z.soa())
		return m
	}
	text, listed := z.lookup(addr)
	if !listed {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, z.soa())
		return m
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: z.ttl}
	}
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: listedA.AsSlice()})
	}
	if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{text}})
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, z.soa())
	}
	return m
}

// testV6 is the IPv6 test entry of RFC 5782 (::FFFF:7F00:2), always listed
// with 127.0.0.2.
var testV6 = netip.MustParseAddr("::ffff:7f00:2")

// lookup returns the TXT of a listed address.
func (z *Zone) lookup(addr netip.Addr) (string, bool) {
	if addr == listedA || addr == testV6 {
		return "postern: test entry", true
	}
	b, ok := z.look.BlockOf(addr)
	if !ok {
		return "", false
	}
	return TXT(b), true
}

// TXT returns the TXT text of a block: its reason and expiry, no detail
// (which may name an account).
func TXT(b store.Block) string {
	name := b.Reason.Name()
	if name == "" {
		name = "blocked"
	}
	s := "postern: " + name + " (" + b.Prefix.String() + ")"
	if b.Expires.IsZero() {
		return s + ", no expiry"
	}
	return s + ", until " + b.Expires.UTC().Format(time.RFC3339)
}

func (z *Zone) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: z.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: z.ttl},
		Ns:      z.ns,
		Mbox:    z.mbox,
		Serial:  uint32(z.now().Unix()),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  z.ttl,
	}
}

func (z *Zone) nsRR() dns.RR {
	return &dns.NS{Hdr: dns.RR_Header{Name: z.zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: z.ttl}, Ns: z.ns}
}

// ParseName reads the address of a DNSBL query name without the zone:
// "d.c.b.a" (IPv4, decimal octets without leading zeros) or 32 reversed
// hexadecimal nibbles (IPv6). Anything else is not an address.
func ParseName(s string) (netip.Addr, bool) {
	labels := strings.Split(s, ".")
	switch len(labels) {
	case 4:
		var b [4]byte
		for i, l := range labels {
			n, ok := octet(l)
			if !ok {
				return netip.Addr{}, false
			}
			b[3-i] = n
		}
		return netip.AddrFrom4(b), true
	case 32:
		var b [16]byte
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			v, ok := nibble(l[0])
			if !ok {
				return netip.Addr{}, false
			}
			pos := 31 - i // nibble index from the left
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

func octet(l string) (byte, bool) {
	if l == "" || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
		return 0, false
	}
	n := 0
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return 0, false
		}
		n = n*10 + int(l[i]-'0')
	}
	if n > 255 {
		return 0, false
	}
	return byte(n), true
}

func nibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Server serves a Zone over UDP and TCP.
type Server struct {
	udp, tcp *dns.Server
	pc       net.PacketConn
	ln       net.Listener
	once     sync.Once
}

// Listen binds addr (host:port) on UDP and TCP; the TCP port is the one
// UDP got when addr's port is 0.
func Listen(addr string, z *Zone) (*Server, error) {
	var pc net.PacketConn
	var ln net.Listener
	var err error
	// with port 0 the TCP port may be taken already: try a few UDP ports.
	for range 10 {
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("dnsbl zone: %w", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dnsbl zone: %w", err)
	}
	return NewServer(pc, ln, z), nil
}

// NewServer serves z on sockets bound by the caller (on the same address).
func NewServer(pc net.PacketConn, ln net.Listener, z *Zone) *Server {
	s := &Server{pc: pc, ln: ln}
	s.udp = &dns.Server{PacketConn: pc, Handler: z, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	s.tcp = &dns.Server{Listener: ln, Handler: z, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		IdleTimeout: func() time.Duration { return 10 * time.Second }, MaxTCPQueries: 64}
	return s
}

// Addr returns the bound address (the same port on UDP and TCP).
func (s *Server) Addr() netip.AddrPort {
	return s.pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Serve answers queries until ctx ends, then shuts both listeners down.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var first error
	running := 2
	select {
	case <-ctx.Done():
	case first = <-errc:
		running--
		if first != nil {
			first = fmt.Errorf("dnsbl zone: %w", first)
		}
	}
	s.Close()
	// the other goroutines end once their listener is shut down or closed.
	for ; running > 0; running-- {
		<-errc
	}
	return first
}

// Close stops the listeners.
func (s *Server) Close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.udp.ShutdownContext(ctx); err != nil {
			s.pc.Close()
		}
		if err := s.tcp.ShutdownContext(ctx); err != nil {
			s.ln.Close()
		}
	})
}
