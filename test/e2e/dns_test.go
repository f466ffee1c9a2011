package e2e

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dnsblZone is the DNS blocklist the gateways consult (D). The test's DNS
// server lists the addresses in listed, and nothing else (NXDOMAIN).
const dnsblZone = "bl.postern-e2e.invalid"

// dnsServer answers the DNSBL zone on 127.0.0.1 (UDP and TCP, one port).
type dnsServer struct {
	Addr string

	mu      sync.Mutex
	listed  map[string]string // query name → TXT reason
	queries map[string]int    // query name → A queries
}

// startDNS starts the server; listed are the IPv4 addresses on the
// blocklist.
func startDNS(t *testing.T, listed ...string) *dnsServer {
	t.Helper()
	s := &dnsServer{listed: map[string]string{}, queries: map[string]int{}}
	for _, a := range listed {
		s.listed[s.queryName(netip.MustParseAddr(a))] = "listed by the postern e2e test: " + a
	}
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("dns server: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("dns server did not start")
		}
		t.Cleanup(func() {
			srv.Shutdown()
			<-errc
		})
	}
	return s
}

// queryName is the DNSBL name of an IPv4 address: 7.113.0.203.zone.
func (s *dnsServer) queryName(a netip.Addr) string {
	b := a.As4()
	return dns.Fqdn(strings.Join([]string{itoa(b[3]), itoa(b[2]), itoa(b[1]), itoa(b[0]), dnsblZone}, "."))
}

func itoa(b byte) string { return strconv.Itoa(int(b)) }

// lookups returns how many A queries the server got for addr.
func (s *dnsServer) lookups(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[s.queryName(netip.MustParseAddr(addr))]
}

func (s *dnsServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	if len(r.Question) != 1 {
		m.SetRcode(r, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	if q.Qtype == dns.TypeA {
		s.queries[name]++
	}
	reason, ok := s.listed[name]
	s.mu.Unlock()
	m.SetReply(r)
	m.Authoritative = true
	if !ok {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
	switch q.Qtype {
	case dns.TypeA:
		hdr.Rrtype = dns.TypeA
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 2)})
	case dns.TypeTXT:
		hdr.Rrtype = dns.TypeTXT
		m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{reason}})
	}
	w.WriteMsg(m)
}
