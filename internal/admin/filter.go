package admin

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// Filter selects blocks for ListBlocks. The zero Filter selects every block.
type Filter struct {
	Reason  reason.Code  // 0: any reason
	Service string       // "": any service; else compared without case
	Search  netip.Prefix // invalid: anywhere; else blocks overlapping it (an address is a /32 or /128)
	Active  *bool        // nil: all; true: not expired; false: expired

	// Since and Until select by time: a block passes when it was seen in
	// the window, that is its last_seen is at or after Since and its
	// first_seen is at or before Until. Unset bounds are open.
	Since, Until TimeBound
	// ExpiresBefore keeps blocks whose expiry is set and before it; blocks
	// that never expire do not pass.
	ExpiresBefore TimeBound
}

// TimeBound is a point in time given either absolutely (RFC 3339, or a
// date meaning its midnight UTC) or as a span before the server's clock
// ("2h", "30m", "7d"; "+2h" is two hours after it): relative bounds are
// resolved by the server, so the client's clock does not matter. The zero
// TimeBound is unset.
type TimeBound struct {
	at       time.Time
	ago      time.Duration
	abs, set bool
}

// At returns a bound at the absolute time t.
func At(t time.Time) TimeBound { return TimeBound{at: t, abs: true, set: true} }

// Ago returns a bound d before the server's clock (after it when d is
// negative).
func Ago(d time.Duration) TimeBound { return TimeBound{ago: d, set: true} }

// IsSet reports whether the bound is given.
func (b TimeBound) IsSet() bool { return b.set }

// Resolve returns the bound's time when the server's clock reads now.
func (b TimeBound) Resolve(now time.Time) time.Time {
	if b.abs {
		return b.at
	}
	return now.Add(-b.ago)
}

// String writes the bound as ParseTimeBound reads it: RFC 3339 with
// nanoseconds for an absolute one, a Go duration for a relative one.
func (b TimeBound) String() string {
	switch {
	case !b.set:
		return ""
	case b.abs:
		return b.at.Format(time.RFC3339Nano)
	case b.ago < 0:
		return "+" + (-b.ago).String()
	}
	return b.ago.String()
}

// ParseTimeBound reads an RFC 3339 time (2026-05-01T12:00:00Z), a date
// (2026-05-01, midnight UTC), a span before now (90s, 30m, 2h, 1h30m, 7d)
// or, with a leading +, a span after now (+2h). An empty string is an
// unset bound.
func ParseTimeBound(s string) (TimeBound, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return TimeBound{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return At(t), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return At(t), nil
	}
	if len(s) > 4 && s[4] == '-' {
		return TimeBound{}, fmt.Errorf("bad time %q: want RFC 3339 such as 2026-05-01T12:00:00Z or a date such as 2026-05-01", s)
	}
	span, ahead := strings.CutPrefix(s, "+")
	d, err := config.ParseDuration(span)
	if err != nil || span != strings.TrimSpace(span) {
		return TimeBound{}, fmt.Errorf("bad time %q: want RFC 3339 such as 2026-05-01T12:00:00Z, a date such as 2026-05-01, a span before now such as 30m, 2h or 7d, or after now such as +2h", s)
	}
	if d > maxAgo {
		return TimeBound{}, fmt.Errorf("bad time %q: a span can be at most %d days", s, maxAgo/(24*time.Hour))
	}
	if ahead {
		d = -d
	}
	return Ago(d), nil
}

// maxAgo bounds relative times, so that now minus the span stays a
// sensible time.
const maxAgo = 100 * 365 * 24 * time.Hour

// values encodes the filter as query parameters.
func (f Filter) values() url.Values {
	q := url.Values{}
	if f.Reason != 0 {
		q.Set("reason", f.Reason.String())
	}
	if f.Service != "" {
		q.Set("service", f.Service)
	}
	if f.Search.IsValid() {
		q.Set("search", FormatTarget(f.Search))
	}
	if f.Active != nil {
		q.Set("active", strconv.FormatBool(*f.Active))
	}
	for _, p := range []struct {
		name string
		b    TimeBound
	}{{"since", f.Since}, {"until", f.Until}, {"expires_before", f.ExpiresBefore}} {
		if p.b.IsSet() {
			q.Set(p.name, p.b.String())
		}
	}
	return q
}

// parseFilter decodes the query parameters of GET /v1/blocks.
func parseFilter(q url.Values) (Filter, error) {
	var f Filter
	if s := q.Get("reason"); s != "" {
		r, err := reason.Parse(s)
		if err != nil {
			return f, fmt.Errorf("reason: %w", err)
		}
		f.Reason = r
	}
	f.Service = strings.TrimSpace(q.Get("service"))
	if s := q.Get("search"); s != "" {
		p, err := ParseTarget(s)
		if err != nil {
			return f, fmt.Errorf("search: %w", err)
		}
		f.Search = p
	}
	if s := q.Get("active"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return f, fmt.Errorf("active: want true or false, got %q", s)
		}
		f.Active = &b
	}
	for _, p := range []struct {
		name string
		b    *TimeBound
	}{{"since", &f.Since}, {"until", &f.Until}, {"expires_before", &f.ExpiresBefore}} {
		b, err := ParseTimeBound(q.Get(p.name))
		if err != nil {
			return f, fmt.Errorf("%s: %w", p.name, err)
		}
		*p.b = b
	}
	return f, nil
}

// check refuses a window that ends before it begins, once relative bounds
// are resolved at the server's clock now.
func (f Filter) check(now time.Time) error {
	if f.Since.IsSet() && f.Until.IsSet() {
		if s, u := f.Since.Resolve(now), f.Until.Resolve(now); s.After(u) {
			return fmt.Errorf("since (%s) is after until (%s): the window is empty",
				s.UTC().Format(time.RFC3339), u.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// Match reports whether b passes the filter at now.
func (f Filter) Match(b *store.Block, now time.Time) bool {
	if f.Reason != 0 && b.Reason != f.Reason {
		return false
	}
	if f.Service != "" && !strings.EqualFold(b.Service, f.Service) {
		return false
	}
	if f.Search.IsValid() && !f.Search.Overlaps(b.Prefix) {
		return false
	}
	if f.Active != nil && *f.Active == b.Expired(now) {
		return false
	}
	if f.Since.IsSet() && b.LastSeen.Before(f.Since.Resolve(now)) {
		return false
	}
	if f.Until.IsSet() && b.FirstSeen.After(f.Until.Resolve(now)) {
		return false
	}
	if f.ExpiresBefore.IsSet() && (b.Expires.IsZero() || !b.Expires.Before(f.ExpiresBefore.Resolve(now))) {
		return false
	}
	return true
}

// sortBlocks orders blocks by last seen, newest first, then by prefix, so
// every listing and export of the same blocks is the same.
func sortBlocks(bs []store.Block) {
	slices.SortFunc(bs, func(a, b store.Block) int {
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
}
