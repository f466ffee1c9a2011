// Package snapshot compiles a configuration into one immutable Snapshot —
// GeoIP data, patterns, access policy, the bypass list and the engine
// settings together — and holds the current
// one for the running gateway. A reload builds a whole new Snapshot and
// swaps it in atomically; a bad configuration is rejected and the running
// Snapshot stays.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/bypass"
	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/fcrdns"
	"github.com/postern/postern/internal/geoip"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/policy"
)

// Snapshot is one compiled configuration. Nothing in it changes after Build;
// it is safe for concurrent use.
type Snapshot struct {
	Config   *config.File
	GeoIP    *geoip.DB // nil when no database is configured
	Patterns *patterns.Registry
	Policy   *policy.Policy
	Guard    *guard.Settings // intrusion prevention settings for the engine
	// Names verifies client names for host masks (forward-confirmed reverse
	// DNS through dns.resolver, with its own cache); nil when no DNS server
	// is usable, and then a host mask anywhere is an error.
	Names    *fcrdns.Resolver
	Warnings []error
	Built    time.Time

	bypass *bypass.List // the compiled bypass list, for Files
}

// Load reads the configuration file at path and builds a Snapshot.
func Load(ctx context.Context, path string, now time.Time) (*Snapshot, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return Build(ctx, cfg, now)
}

// Build compiles a decoded configuration.
func Build(ctx context.Context, cfg *config.File, now time.Time) (*Snapshot, error) {
	s := &Snapshot{Config: cfg, Built: now}
	if len(cfg.GeoIP.Databases) > 0 {
		srcs := make([]geoip.Source, len(cfg.GeoIP.Databases))
		var missing diag.List
		for i, d := range cfg.GeoIP.Databases {
			srcs[i] = geoip.Source{Path: d.Path.Value, Format: geoip.Format(d.Format.Value), Country: d.Country.Value, Pos: d.Path.Pos}
			if _, err := os.Stat(d.Path.Value); d.URL.IsSet() && errors.Is(err, fs.ErrNotExist) {
				missing.Add(diag.Errorf(d.URL.Pos, "geoip database %s is not downloaded yet from %s (postern serve downloads it before it starts)", d.Path.Value, redact(d.URL.Value)))
			}
		}
		if err := missing.Err(); err != nil {
			return nil, err
		}
		db, err := geoip.Load(ctx, srcs)
		if err != nil {
			return nil, err
		}
		s.GeoIP = db
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("building configuration: %w", err)
	}
	srcs := make([]patterns.Source, len(cfg.Patterns))
	for i, p := range cfg.Patterns {
		srcs[i] = patterns.Source{Name: p.Name, Text: p.Text.Value, Pos: p.Text.Pos, Quoted: p.Text.Quoted}
	}
	opts := patterns.Options{ValidCountry: geoip.ValidCountryCode}
	if s.GeoIP != nil {
		opts.Geo = s.GeoIP
	}
	names, err := fcrdns.New(fcrdns.Options{Server: cfg.DNS.Resolver.Value, Timeout: cfg.DNS.Timeout.D, TTL: cfg.DNS.Cache.D})
	if err == nil {
		s.Names, opts.Names = names, names
	}
	reg, err := patterns.Compile(srcs, opts)
	if err != nil {
		return nil, err
	}
	s.Patterns = reg
	s.Warnings = append(s.Warnings, reg.Warnings()...)
	pol, warns, err := policy.Build(cfg, reg)
	if err != nil {
		return nil, err
	}
	s.Policy = pol
	s.Warnings = append(s.Warnings, warns...)

	// The bypass list and the engine settings are both checked, so one run
	// reports the errors of both.
	var errs diag.List
	var byp *bypass.List
	if bf := cfg.IntrusionPrevention.BypassFile; bf.IsSet() {
		if byp, err = bypass.Load(ctx, bf.Value, bf.Pos, nil); err != nil {
			errs.Add(err)
		}
	}
	gs, err := guard.Compile(cfg, reg, pol, byp)
	if err != nil {
		errs.Add(err)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	s.Guard = gs
	s.bypass = byp
	return s, nil
}

// Files returns every file the snapshot was built from: the configuration
// file, the GeoIP databases, the include files of patterns and lists, and
// the bypass file with the files it pulls in; each once, in that order.
// Certificates and keys are not among them: they are reloaded on their
// own (package tlsconf).
func (s *Snapshot) Files() []string {
	var files []string
	add := func(p string) {
		if p != "" && !slices.Contains(files, p) {
			files = append(files, p)
		}
	}
	if s.Config != nil {
		add(s.Config.Path)
		for _, d := range s.Config.GeoIP.Databases {
			add(d.Path.Value)
		}
	}
	for _, p := range s.Patterns.Files() {
		add(p)
	}
	for _, p := range s.bypass.Files() {
		add(p)
	}
	return files
}

// redact hides the password of a url for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(bad url)"
	}
	return u.Redacted()
}

// Holder holds the current Snapshot. Readers call Load on every decision
// they make, so they always see one whole configuration, old or new.
type Holder struct {
	cur atomic.Pointer[Snapshot]
}

// NewHolder returns a Holder with s current.
func NewHolder(s *Snapshot) *Holder {
	h := &Holder{}
	h.cur.Store(s)
	return h
}

// Load returns the current Snapshot.
func (h *Holder) Load() *Snapshot { return h.cur.Load() }

// Store makes s current.
func (h *Holder) Store(s *Snapshot) { h.cur.Store(s) }

// Reload builds a new Snapshot from the file at path and makes it current.
// On error the current Snapshot stays and the error says why.
func (h *Holder) Reload(ctx context.Context, path string, now time.Time) (*Snapshot, error) {
	s, err := Load(ctx, path, now)
	if err != nil {
		return nil, fmt.Errorf("reload rejected, the running configuration stays: %w", err)
	}
	h.cur.Store(s)
	return s, nil
}

// ErrorCount returns how many errors err holds (a diag.List counts each).
func ErrorCount(err error) int {
	if l, ok := err.(diag.List); ok {
		return len(l)
	}
	if err == nil {
		return 0
	}
	return 1
}
