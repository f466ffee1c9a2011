// Package preflight finds what would make a loaded configuration fail
// once it runs, beyond what loading it checks: a service no client can log
// in through, trusted upstreams that catch ordinary clients, networks
// written with host bits, a run_as user that does not exist or cannot read
// the files a reload reads, two services on one address, ports that cannot
// be bound, certificates that do not load, have expired or are about to,
// and stale GeoIP data.
//
// `postern check` prints every Diag (exit 2 when one is an Error);
// `postern serve` runs the same Check before it binds and refuses to start
// on an Error. Each cause is reported once, however many places it bites.
package preflight

import (
	"context"
	"fmt"
	"os/user"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/snapshot"
)

// Severity says whether a Diag stops postern.
type Severity uint8

// The severities.
const (
	// Warning: postern runs, but something does less than it seems.
	Warning Severity = iota + 1
	// Error: serve refuses to start; check exits 2.
	Error
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "warning"
}

// Diag is one finding, at the place in the configuration that causes it.
type Diag struct {
	Severity Severity
	Pos      diag.Pos // where it is written; the file alone when there is no better place
	Msg      string
}

// Error formats the finding as file:line:column: message.
func (d Diag) Error() string {
	if !d.Pos.IsValid() {
		return d.Msg
	}
	return d.Pos.String() + ": " + d.Msg
}

// Mode says who asks.
type Mode uint8

// The modes.
const (
	// ModeCheck is `postern check`: it runs anywhere, often not as the
	// user that serves. A port it may not bind is a warning (serve may run
	// with more privileges), an address in use a warning (the running
	// postern may hold it), an expired certificate an error.
	ModeCheck Mode = iota
	// ModeServe is `postern serve` before it binds: a port it may not bind
	// is an error; an expired certificate is a warning (serving it beats
	// not serving at all, and a renewal is picked up without a restart).
	ModeServe
)

// DefaultGeoIPMaxAge is how old an MMDB database may be before Check warns:
// GeoLite2 and ip-location-db are rebuilt at least weekly, so a month
// means the updates have stopped.
const DefaultGeoIPMaxAge = 30 * 24 * time.Hour

// DefaultCertWarn is how long before its expiry a certificate is warned
// about.
const DefaultCertWarn = 14 * 24 * time.Hour

// Options tune a Check. The zero value checks as `postern check` does,
// at time.Now.
type Options struct {
	Mode Mode
	// Bind probes every listen address (socket and bind with
	// SO_REUSEADDR, never listen, so it takes no port from anyone).
	Bind bool
	// Now is the time certificates and GeoIP data are judged at; zero:
	// time.Now().
	Now time.Time
	// GeoIPMaxAge, CertWarn: zero takes the defaults above.
	GeoIPMaxAge time.Duration
	CertWarn    time.Duration
	// LookupUser finds the run_as user; nil: os/user.Lookup. Tests set it.
	LookupUser func(name string) (*user.User, error)
	// GOOS is the system judged; empty: runtime.GOOS. Tests set it.
	GOOS string
}

// Check runs every preflight check on a loaded configuration and returns
// its findings, errors first, each cause once.
func Check(ctx context.Context, s *snapshot.Snapshot, o Options) []Diag {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.GeoIPMaxAge == 0 {
		o.GeoIPMaxAge = DefaultGeoIPMaxAge
	}
	if o.CertWarn == 0 {
		o.CertWarn = DefaultCertWarn
	}
	if o.LookupUser == nil {
		o.LookupUser = user.Lookup
	}
	if o.GOOS == "" {
		o.GOOS = runtime.GOOS
	}
	c := &checker{s: s, o: o, seen: make(map[string]bool)}
	c.logins()
	c.hostBits()
	c.trusted()
	c.listens()
	c.certs()
	c.geoip()
	c.runAs()
	c.system()
	slices.SortStableFunc(c.out, func(a, b Diag) int { return int(b.Severity) - int(a.Severity) })
	return c.out
}

// Err returns the errors among ds as one error (a diag.List), or nil when
// there are none: what serve refuses to start on.
func Err(ds []Diag) error {
	var l diag.List
	for _, d := range ds {
		if d.Severity == Error {
			l.Add(d)
		}
	}
	return l.Err()
}

// Warnings returns the warnings among ds.
func Warnings(ds []Diag) []Diag {
	var w []Diag
	for _, d := range ds {
		if d.Severity == Warning {
			w = append(w, d)
		}
	}
	return w
}

type checker struct {
	s    *snapshot.Snapshot
	o    Options
	out  []Diag
	seen map[string]bool // causes already reported
}

// add records a finding once per key (the cause).
func (c *checker) add(key string, sev Severity, pos diag.Pos, format string, args ...any) {
	if key != "" {
		if c.seen[key] {
			return
		}
		c.seen[key] = true
	}
	c.out = append(c.out, Diag{Severity: sev, Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// filePos is the configuration file itself, for findings with no better
// place.
func (c *checker) filePos() diag.Pos { return diag.Pos{File: c.s.Config.Path} }

// joinAnd joins "a", "b", "c" as "a, b and c".
func joinAnd(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

// system reports what the configuration asks of the system that this one
// lacks: the nftables export needs Linux's nftables (the start fails
// there). A check may run on another machine than the one that serves, so
// it warns; serve refuses.
func (c *checker) system() {
	n := c.s.Config.Nftables
	if !n.Enabled || c.o.GOOS == "linux" {
		return
	}
	sev := Warning
	if c.o.Mode == ModeServe {
		sev = Error
	}
	pos := n.Table.Pos
	if !pos.IsValid() {
		pos = c.filePos()
	}
	c.add("", sev, pos, "nftables.enabled: the nftables export needs Linux's nftables, and this system is %s: turn it off here", c.o.GOOS)
}
