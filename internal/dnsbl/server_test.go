package dnsbl

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testServer is a DNS server on 127.0.0.1 (UDP and TCP on one port) that
// serves the test zones below and counts the queries it gets.
//
//   - bl.test: 2.0.0.127 and 7.113.0.203 listed (A + TXT), 2001:db8::1
//     listed with a TXT record too long for UDP (forces TCP), 9.113.0.203
//     exists with a TXT record but no A record, everything else NXDOMAIN.
//   - refused.test: every name answers 127.255.255.254.
//   - dnswl.test: every name answers 127.0.0.255 (dnswl.org "blocked").
//   - bad.test: every name answers 192.0.2.1.
//   - servfail.test: SERVFAIL.
//   - slow.test: never answers.
//   - held.test: answers 127.0.0.2 once release is closed.
//   - *.multi.test: names in zones z0, z2, z4, ... answer 127.0.0.2, the
//     others NXDOMAIN.
type testServer struct {
	addr        string
	release     chan struct{}
	releaseOnce sync.Once

	mu      sync.Mutex
	queries map[string]int // "A 2.0.0.127.bl.test." -> count
	tcp     int            // queries that came over TCP
}

// longTXT is a reason longer than an EDNS0 UDP answer of 1232 bytes.
var longTXT = func() []string {
	s := make([]string, 8)
	for i := range s {
		s[i] = fmt.Sprintf("part%d-", i) + strings.Repeat("x", 200)
	}
	return s
}()

func startServer(t *testing.T) *testServer {
	t.Helper()
	s := &testServer{release: make(chan struct{}), queries: make(map[string]int)}

	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	s.addr = pc.LocalAddr().String()

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
	t.Cleanup(s.Release) // runs first: a held handler must not block Shutdown
	return s
}

// Release lets the held.test answers go.
func (s *testServer) Release() { s.releaseOnce.Do(func() { close(s.release) }) }

func (s *testServer) count(qtype, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[qtype+" "+name]
}

func (s *testServer) tcpQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp
}

func (s *testServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	udp := w.LocalAddr().Network() == "udp"
	s.mu.Lock()
	s.queries[dns.TypeToString[q.Qtype]+" "+name]++
	if !udp {
		s.tcp++
	}
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	a := func(ip string) {
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP(ip),
			})
		}
	}
	txt := func(s ...string) {
		if q.Qtype == dns.TypeTXT {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: s,
			})
		}
	}

	switch {
	case strings.HasSuffix(name, ".slow.test."):
		return // never answer
	case strings.HasSuffix(name, ".servfail.test."):
		m.Rcode = dns.RcodeServerFailure
	case strings.HasSuffix(name, ".refused.test."):
		a("127.255.255.254")
	case strings.HasSuffix(name, ".dnswl.test."):
		a("127.0.0.255")
	case strings.HasSuffix(name, ".bad.test."):
		a("192.0.2.1")
	case strings.HasSuffix(name, ".held.test."):
		<-s.release
		a("127.0.0.2")
		txt("held")
	case strings.HasSuffix(name, ".multi.test."):
		labels := dns.SplitDomainName(name)
		var n int
		if _, err := fmt.Sscanf(labels[len(labels)-3], "z%d", &n); err == nil && n%2 == 0 {
			a("127.0.0.2")
		} else {
			m.Rcode = dns.RcodeNameError
		}
	case name == "2.0.0.127.bl.test.":
		a("127.0.0.2")
		txt("test entry")
	case name == "7.113.0.203.bl.test.":
		a("127.0.0.4")
		a("127.0.0.2")
		txt("Listed: see ", "https://bl.test/query/203.0.113.7\r\n\x00bye")
	case name == "9.113.0.203.bl.test.":
		txt("no A here")
	case name == v6Name("2001:db8::1", "bl.test"):
		a("127.0.0.3")
		txt(longTXT...)
	default:
		m.Rcode = dns.RcodeNameError
	}
	if udp {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// v6Name is the query name of addr in zone, written out independently of
// queryName.
func v6Name(addr, zone string) string {
	n, err := dns.ReverseAddr(addr)
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(n, "ip6.arpa.") + zone + "."
}
