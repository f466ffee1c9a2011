package preflight

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/tlsconf"
)

// endpoint is one address serve binds.
type endpoint struct {
	who  string // "imap", "admin.listen"
	host netip.Addr
	wild bool // ":port" or "[::]:port": every address, IPv4 and IPv6
	port uint16
	text string
	pos  diag.Pos
}

// parseEndpoint reads a listen address as serve binds it.
func parseEndpoint(who, s string, pos diag.Pos) (endpoint, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return endpoint{}, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return endpoint{}, false
	}
	e := endpoint{who: who, port: uint16(n), text: s, pos: pos}
	switch host {
	case "", "::":
		e.wild = true
	case "localhost":
		e.host = netip.MustParseAddr("127.0.0.1")
	default:
		a, err := netip.ParseAddr(host)
		if err != nil {
			return endpoint{}, false
		}
		e.host = a.Unmap()
	}
	return e, true
}

// clash reports whether two endpoints on one port cannot both be bound.
func (e endpoint) clash(o endpoint) bool {
	if e.port != o.port || e.port == 0 {
		return false
	}
	if e.wild || o.wild {
		return true
	}
	if e.host == o.host {
		return true
	}
	return e.host.Is4() == o.host.Is4() && (e.host.IsUnspecified() || o.host.IsUnspecified())
}

func sortedServices(f *config.File) []service.Service {
	var out []service.Service
	for _, sv := range service.All {
		if f.Services[sv] != nil {
			out = append(out, sv)
		}
	}
	return out
}

// listens reports listen addresses that clash (two services on one port)
// and, with Options.Bind, addresses this machine will not let serve bind.
func (c *checker) listens() {
	f := c.s.Config
	var eps []endpoint
	for _, sv := range sortedServices(f) {
		svc := f.Services[sv]
		if e, ok := parseEndpoint(sv.String(), svc.Listen.Value, svc.Listen.Pos); ok {
			eps = append(eps, e)
		}
	}
	if l, ok := strings.CutPrefix(f.Admin.Listen.Value, "tcp:"); ok {
		if e, ok := parseEndpoint("admin.listen", l, f.Admin.Listen.Pos); ok {
			eps = append(eps, e)
		}
	}
	clashed := make(map[int]bool)
	for i := range eps {
		if clashed[i] {
			continue
		}
		group := []int{i}
		for j := i + 1; j < len(eps); j++ {
			if !clashed[j] && eps[i].clash(eps[j]) {
				group = append(group, j)
			}
		}
		if len(group) == 1 {
			continue
		}
		var who []string
		for _, k := range group {
			clashed[k] = true
			who = append(who, eps[k].who+" ("+eps[k].text+" at "+eps[k].pos.String()+")")
		}
		last := eps[group[len(group)-1]]
		c.add("", Error, last.pos, "%s listen on the same port %d: the second bind would fail with \"address already in use\"; give each service its own port", joinAnd(who), last.port)
	}
	if !c.o.Bind {
		return
	}
	var denied []string
	var deniedPos diag.Pos
	probed := make(map[string]bool)
	for i, e := range eps {
		if e.port == 0 || clashed[i] {
			continue
		}
		ap := netip.AddrPortFrom(e.host, e.port)
		key := ap.String()
		if e.wild {
			key = ":" + strconv.Itoa(int(e.port))
			ap = netip.AddrPortFrom(netip.Addr{}, e.port)
		}
		if probed[key] {
			continue
		}
		probed[key] = true
		err := probeBind(ap)
		switch {
		case err == nil:
		case errors.Is(err, errDenied):
			if len(denied) == 0 {
				deniedPos = e.pos
			}
			denied = append(denied, e.who+" "+e.text)
		case errors.Is(err, errInUse):
			sev, tail := Warning, "serve cannot start while it is (no matter if it is the postern serving this configuration: a reload, SIGHUP, binds nothing)"
			if c.o.Mode == ModeServe {
				sev, tail = Error, "stop what holds it, or move the service"
			}
			c.add("", sev, e.pos, "service %s: %s is in use by another program now; %s", e.who, e.text, tail)
		case errors.Is(err, errNotLocal):
			c.add("", Error, e.pos, "service %s: %s: %s is not an address of this machine, so it cannot be bound", e.who, e.text, e.host)
		default:
			c.add("", Warning, e.pos, "service %s: cannot try to bind %s: %v", e.who, e.text, err)
		}
	}
	if len(denied) > 0 {
		sev, tail := Warning, "start serve as root (it drops to run_as after binding) or give it CAP_NET_BIND_SERVICE (examples/systemd)"
		if c.o.Mode == ModeServe {
			sev = Error
		}
		c.add("", sev, deniedPos, "%s: ports below %d are privileged and this process (uid %d) may not bind them; %s",
			joinAnd(denied), unprivilegedPortStart(), os.Geteuid(), tail)
	}
}

// unprivilegedPortStart is the first port anyone may bind
// (net.ipv4.ip_unprivileged_port_start, 1024 by default).
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return 1024
}

// certs loads every certificate and key pair a service names: a pair that
// does not load (unreadable, not PEM, the key not the certificate's) is
// an error; an expired certificate an error for check and a warning for
// serve; one that expires within CertWarn, or is not valid yet, a warning.
func (c *checker) certs() {
	f := c.s.Config
	for _, sv := range sortedServices(f) {
		name := sv.String()
		t := f.Services[sv].TLS
		if t == nil || !t.Cert.IsSet() || !t.Key.IsSet() {
			continue
		}
		key := "tls " + t.Cert.Value + "\x00" + t.Key.Value
		if c.seen[key] {
			continue
		}
		c.seen[key] = true
		certs, err := tlsconf.Load(t.Cert.Value, t.Key.Value)
		if err != nil {
			c.add("", Error, t.Cert.Pos, "service %s: the certificate and key do not load: %v", name, err)
			continue
		}
		leaf := certs.Certificate().Leaf
		if leaf == nil {
			continue
		}
		now := c.o.Now
		switch {
		case now.After(leaf.NotAfter):
			sev := Error
			if c.o.Mode == ModeServe {
				sev = Warning
			}
			c.add("", sev, t.Cert.Pos, "service %s: the certificate %s expired on %s: clients refuse it; renew it (a renewal is picked up without a restart)",
				name, t.Cert.Value, leaf.NotAfter.UTC().Format(time.DateOnly))
		case now.Before(leaf.NotBefore):
			c.add("", Warning, t.Cert.Pos, "service %s: the certificate %s is not valid before %s", name, t.Cert.Value, leaf.NotBefore.UTC().Format(time.RFC3339))
		case leaf.NotAfter.Sub(now) < c.o.CertWarn:
			c.add("", Warning, t.Cert.Pos, "service %s: the certificate %s expires on %s, in %s: renew it", name, t.Cert.Value,
				leaf.NotAfter.UTC().Format(time.DateOnly), days(leaf.NotAfter.Sub(now)))
		}
	}
}

func days(d time.Duration) string {
	n := int(d / (24 * time.Hour))
	if n == 0 {
		return "less than a day"
	}
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// geoip warns about MMDB databases older than GeoIPMaxAge (CSV and zone
// files carry no build date; their modification time says nothing about
// the data's age).
func (c *checker) geoip() {
	if c.s.GeoIP == nil {
		return
	}
	pos := make(map[string]diag.Pos)
	for _, db := range c.s.Config.GeoIP.Databases {
		pos[db.Path.Value] = db.Path.Pos
	}
	for _, src := range c.s.GeoIP.Sources() {
		if src.Format != "mmdb" || src.BuildTime.IsZero() {
			continue
		}
		if age := c.o.Now.Sub(src.BuildTime); age > c.o.GeoIPMaxAge {
			c.add("", Warning, pos[src.Path], "the GeoIP database %s was built on %s, %s ago: address blocks change hands every week, so country rules drift; update it (geoipupdate for GeoLite2, or a fresh ip-location-db file)",
				src.Path, src.BuildTime.UTC().Format(time.DateOnly), days(age))
		}
	}
}
