package config

import (
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/internal/diag"
)

// DNSBLZone is the DNS blocklist zone served from the block table: off
// when Listen is not set.
type DNSBLZone struct {
	// Listen is host:port, bound on UDP and TCP ("127.0.0.1:5353").
	Listen Text `yaml:"listen"`
	// Zone is the zone's name ("dnsbl.example.com").
	Zone Text `yaml:"zone"`
	// Grant is a pattern expression of the client addresses that may
	// query (addresses and networks only); default loopback.
	Grant Text `yaml:"grant"`
	// TTL of the answers; default 60s.
	TTL Duration `yaml:"ttl"`
	// NS is the name server of the zone's NS and SOA records; default ns.<zone>.
	NS Text `yaml:"ns"`
	// Hostmaster is the SOA contact; default hostmaster.<zone>.
	Hostmaster Text `yaml:"hostmaster"`
}

// On reports whether the zone is configured.
func (z DNSBLZone) On() bool { return z.Listen.IsSet() && z.Listen.Value != "" }

func (f *File) validateDNSBLZone(d *decoder) {
	z := f.DNSBLZone
	if !z.On() {
		for _, t := range []Text{z.Zone, z.Grant, z.NS, z.Hostmaster} {
			if t.IsSet() {
				d.errs.Add(diag.Errorf(t.Pos, "dnsbl_zone needs dnsbl_zone.listen"))
				return
			}
		}
		if z.TTL.Set {
			d.errs.Add(diag.Errorf(z.TTL.Pos, "dnsbl_zone needs dnsbl_zone.listen"))
		}
		return
	}
	if err := parseListen(z.Listen.Value); err != nil {
		d.errs.Add(diag.Errorf(z.Listen.Pos, "dnsbl_zone.listen: %v", err))
	}
	if !z.Zone.IsSet() || z.Zone.Value == "" {
		d.errs.Add(diag.Errorf(z.Listen.Pos, "dnsbl_zone needs a zone name (dnsbl_zone.zone)"))
	} else if !domainName(z.Zone.Value) {
		d.errs.Add(diag.Errorf(z.Zone.Pos, "dnsbl_zone.zone: bad domain name %q", z.Zone.Value))
	}
	for _, t := range []struct {
		key string
		v   Text
	}{{"ns", z.NS}, {"hostmaster", z.Hostmaster}} {
		if t.v.IsSet() && !domainName(t.v.Value) {
			d.errs.Add(diag.Errorf(t.v.Pos, "dnsbl_zone.%s: bad domain name %q", t.key, t.v.Value))
		}
	}
	if z.TTL.Set && (z.TTL.D < time.Second || z.TTL.D > 24*time.Hour) {
		d.errs.Add(diag.Errorf(z.TTL.Pos, "dnsbl_zone.ttl: %v is out of range (1s to 24h)", z.TTL.D))
	}
}

// domainName reports whether s is a domain name of at least two labels.
func domainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	n, ok := dns.IsDomainName(s)
	return ok && n >= 2 && !strings.ContainsAny(s, " *")
}
