package dnsblzone

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// table is a block table: the active block covering an address, longest
// prefix first, as guard.Engine.BlockOf answers.
type table struct {
	mu     sync.Mutex
	blocks []store.Block
}

func (t *table) BlockOf(a netip.Addr) (store.Block, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.blocks {
		if b.Prefix.Contains(a.Unmap()) {
			return b, true
		}
	}
	return store.Block{}, false
}

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func startZone(t *testing.T, grant func(netip.Addr) bool) (string, *table) {
	t.Helper()
	tbl := &table{blocks: []store.Block{
		{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: reason.Login, Expires: now.Add(3 * time.Hour)},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: reason.Manual},
		{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Reason: reason.Login, Expires: now.Add(time.Hour)},
	}}
	z, err := New(Options{Zone: "Bl.Example.", Lookup: tbl, Grant: grant, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen("127.0.0.1:0", z)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	return srv.Addr().String(), tbl
}

func query(t *testing.T, netw, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	var r *dns.Msg
	var err error
	// the UDP socket is bound before Serve starts: a query sent first is
	// queued; retry a refused TCP connection until the deadline.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, _, err = c.Exchange(m, server)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", netw, name, err)
	}
	return r
}

func TestZoneAnswers(t *testing.T) {
	server, _ := startZone(t, nil)
	v6 := func(a string) string { return nibbles(netip.MustParseAddr(a)) + ".bl.example" }
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name   string
			qtype  uint16
			rcode  int
			answer string // substring of the answer section
		}{
			{"7.2.0.192.bl.example", dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
			{"7.2.0.192.BL.example", dns.TypeTXT, dns.RcodeSuccess, "postern: failed logins (192.0.2.7/32), until 2026-12-03T15:00:00Z"},
			{"8.2.0.192.bl.example", dns.TypeA, dns.RcodeNameError, ""},
			{"99.100.51.198.bl.example", dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
			{"99.100.51.198.bl.example", dns.TypeTXT, dns.RcodeSuccess, "(198.51.100.0/24), no expiry"},
			{"2.0.0.127.bl.example", dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
			{"2.0.0.127.bl.example", dns.TypeTXT, dns.RcodeSuccess, "test entry"},
			{"1.0.0.127.bl.example", dns.TypeA, dns.RcodeNameError, ""},
			{v6("2001:db8:1:2::5"), dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
			{v6("2001:db8:1:2::5"), dns.TypeTXT, dns.RcodeSuccess, "(2001:db8:1::/48), until 2026-12-03T13:00:00Z"},
			{v6("2001:db8:2::5"), dns.TypeA, dns.RcodeNameError, ""},
			{v6("::ffff:7f00:2"), dns.TypeA, dns.RcodeSuccess, "127.0.0.2"},
			{"7.2.0.192.bl.example", dns.TypeMX, dns.RcodeSuccess, ""},
			{"07.2.0.192.bl.example", dns.TypeA, dns.RcodeNameError, ""},
			{"2.0.192.bl.example", dns.TypeA, dns.RcodeNameError, ""},
			{"bl.example", dns.TypeSOA, dns.RcodeSuccess, "ns.bl.example. hostmaster.bl.example. 1796299200"},
			{"bl.example", dns.TypeNS, dns.RcodeSuccess, "NS\tns.bl.example."},
			{"bl.example", dns.TypeA, dns.RcodeSuccess, ""},
			{"7.2.0.192.other.example", dns.TypeA, dns.RcodeRefused, ""},
			{"example", dns.TypeSOA, dns.RcodeRefused, ""},
		} {
			r := query(t, netw, server, c.name, c.qtype)
			if r.Rcode != c.rcode {
				t.Errorf("%s %s %s: rcode %s, want %s", netw, c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
				continue
			}
			var ans []string
			for _, rr := range r.Answer {
				ans = append(ans, rr.String())
			}
			got := strings.Join(ans, "\n")
			if c.answer == "" && got != "" || !strings.Contains(got, c.answer) {
				t.Errorf("%s %s %s: answer %q, want %q", netw, c.name, dns.TypeToString[c.qtype], got, c.answer)
			}
			if c.rcode != dns.RcodeRefused && !r.Authoritative {
				t.Errorf("%s %s: not authoritative", netw, c.name)
			}
			if (c.rcode == dns.RcodeNameError || got == "") && c.rcode != dns.RcodeRefused && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Errorf("%s %s: authority %v, want the SOA", netw, c.name, r.Ns)
			}
		}
	}
}

func TestZoneFollowsTable(t *testing.T) {
	server, tbl := startZone(t, nil)
	if r := query(t, "udp", server, "9.113.0.203.bl.example", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before block: %s", dns.RcodeToString[r.Rcode])
	}
	tbl.mu.Lock()
	tbl.blocks = append(tbl.blocks, store.Block{Prefix: netip.MustParsePrefix("203.0.113.0/28"), Reason: reason.Manual})
	tbl.mu.Unlock()
	if r := query(t, "udp", server, "9.113.0.203.bl.example", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after block: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

func TestZoneGrant(t *testing.T) {
	// only 127.0.0.9 may query: the client bound to 127.0.0.1 is refused.
	server, _ := startZone(t, func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.9") })
	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, netw, server, "2.0.0.127.bl.example", dns.TypeA)
		if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || len(r.Ns) != 0 {
			t.Fatalf("%s ungranted client: %s %v %v", netw, dns.RcodeToString[r.Rcode], r.Answer, r.Ns)
		}
	}
	for _, netw := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: netw, Timeout: 5 * time.Second}
		if netw == "udp" {
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)}}
		} else {
			c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}}
		}
		m := new(dns.Msg)
		m.SetQuestion("2.0.0.127.bl.example.", dns.TypeA)
		r, _, err := c.Exchange(m, server)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s granted client: %s %v", netw, dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
}

func TestParseName(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3.4":   "4.3.2.1",
		"0.0.0.0":   "0.0.0.0",
		"255.2.3.4": "4.3.2.255",
		"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4": "4321:0:1:2:3:4:567:89ab",
	} {
		a, ok := ParseName(in)
		if !ok || a.String() != want {
			t.Errorf("%q: %v %v, want %s", in, a, ok, want)
		}
	}
	for _, in := range []string{"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.1.1.1", "a.1.1.1", "-1.1.1.1",
		strings.Repeat("0.", 31) + "g", strings.Repeat("0.", 31) + "00"} {
		if a, ok := ParseName(in); ok {
			t.Errorf("%q: parsed as %v", in, a)
		}
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Options{Zone: "", Lookup: &table{}}); err == nil {
		t.Error("empty zone accepted")
	}
	if _, err := New(Options{Zone: "bl.example"}); err == nil {
		t.Error("no lookup accepted")
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4", "01.1.1.1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := ParseName(s)
		if !ok {
			return
		}
		// a parsed name is the canonical reversed form of its address.
		var back string
		if a.Is4() {
			b := a.As4()
			back = strings.Join([]string{itoa(b[3]), itoa(b[2]), itoa(b[1]), itoa(b[0])}, ".")
		} else {
			back = nibbles(a)
		}
		if !strings.EqualFold(back, s) {
			t.Errorf("%q parsed as %v, which reads back as %q", s, a, back)
		}
	})
}

func itoa(b byte) string { return netip.AddrFrom4([4]byte{0, 0, 0, b}).String()[6:] }

// nibbles writes the reversed nibble form of an IPv6 address (mapped ones
// included) without a zone.
func nibbles(a netip.Addr) string {
	b := a.As16()
	const hex = "0123456789abcdef"
	var out []string
	for i := 15; i >= 0; i-- {
		out = append(out, string(hex[b[i]&15]), string(hex[b[i]>>4]))
	}
	return strings.Join(out, ".")
}
