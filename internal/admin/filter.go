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

	"github.com/postern/postern/internal/store"
)

// Filter selects blocks for ListBlocks. The zero Filter selects every block.
type Filter struct {
	Reason  store.Reason // 0: any reason
	Service string       // "": any service; else compared without case
	Search  netip.Prefix // invalid: anywhere; else blocks overlapping it (an address is a /32 or /128)
	Active  *bool        // nil: all; true: not expired; false: expired
}

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
	return q
}

// parseFilter decodes the query parameters of GET /v1/blocks.
func parseFilter(q url.Values) (Filter, error) {
	var f Filter
	if s := q.Get("reason"); s != "" {
		r, err := store.ParseReason(s)
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
	return f, nil
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
