// Package fcrdnstest runs a small authoritative-style DNS server on
// 127.0.0.1 for tests of reverse and forward lookups.
package fcrdnstest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Zone is a DNS server on 127.0.0.1:0 answering from records added with
// Add. Unknown names get NXDOMAIN; names made Silent are never answered;
// names made Fail are answered SERVFAIL. It stops when the test ends.
type Zone struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string

	mu      sync.Mutex
	records map[string][]dns.RR
	silent  map[string]bool
	fail    map[string]bool
	queries atomic.Int64
}

// Start starts a Zone with the records given in zone-file syntax.
func Start(t testing.TB, records ...string) *Zone {
	t.Helper()
	z := &Zone{records: make(map[string][]dns.RR), silent: make(map[string]bool), fail: make(map[string]bool)}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.Addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.serve)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	z.Add(t, records...)
	return z
}

// Queries returns how many queries the server has received.
func (z *Zone) Queries() int64 { return z.queries.Load() }

// Add adds records in zone-file syntax, e.g. "mail.example.com. 300 IN A 192.0.2.1".
func (z *Zone) Add(t testing.TB, records ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.ToLower(rr.Header().Name)
		z.records[name] = append(z.records[name], rr)
	}
}

// Silent makes the server ignore queries for the name (a FQDN).
func (z *Zone) Silent(name string) {
	z.mu.Lock()
	z.silent[strings.ToLower(name)] = true
	z.mu.Unlock()
}

// Fail makes the server answer SERVFAIL for the name (a FQDN).
func (z *Zone) Fail(name string) {
	z.mu.Lock()
	z.fail[strings.ToLower(name)] = true
	z.mu.Unlock()
}

// PTR returns the zone-file line of a PTR record from addr to name.
func PTR(t testing.TB, addr, name string) string {
	t.Helper()
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return rev + " 300 IN PTR " + name
}

// Reverse returns the reverse-lookup name of addr, e.g. 1.2.0.192.in-addr.arpa.
func Reverse(t testing.TB, addr string) string {
	t.Helper()
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func (z *Zone) serve(w dns.ResponseWriter, req *dns.Msg) {
	z.queries.Add(1)
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	silent, fail := z.silent[name], z.fail[name]
	var answer []dns.RR
	known := false
	for _, rr := range z.records[name] {
		known = true
		if rr.Header().Rrtype == q.Qtype {
			answer = append(answer, rr)
		}
	}
	z.mu.Unlock()
	if silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	switch {
	case fail:
		m.Rcode = dns.RcodeServerFailure
	case !known:
		m.Rcode = dns.RcodeNameError
	default:
		m.Answer = answer
	}
	_ = w.WriteMsg(m)
}
