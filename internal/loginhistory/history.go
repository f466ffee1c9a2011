// Package loginhistory remembers, per account, the countries (and ASNs)
// of its successful logins over a window, and judges a new login against
// them: a country never seen for the account, and impossible travel (two
// logins whose countries' centroids are farther apart than a speed allows
// for the time between them).
//
// Memory is bounded: at most MaxAccounts accounts (the least recently
// seen account is evicted) and MaxCountries countries per account (the
// least recently seen country is evicted). Entries older than the window
// are forgotten. The history is saved to and loaded from a small JSON
// file. Nothing here runs on the accept path.
package loginhistory

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config bounds a History.
type Config struct {
	// Window is how long a country stays remembered after its last login.
	Window time.Duration
	// MaxAccounts bounds the accounts remembered.
	MaxAccounts int
	// MaxCountries bounds the countries remembered per account.
	MaxCountries int
	// MaxSpeedKmh is the fastest travel believed between two logins;
	// 0 disables impossible-travel alerts.
	MaxSpeedKmh float64
}

// Seen is one country an account logged in from.
type Seen struct {
	Country string    `json:"country"`       // ISO 3166-1 alpha-2, upper case
	ASN     uint32    `json:"asn,omitempty"` // the last login's ASN from it; 0: unknown
	First   time.Time `json:"first"`         // first login from it within the window
	Last    time.Time `json:"last"`          // last login from it
}

// Travel is an impossible-travel finding: the previous login's country
// and time, and the speed the two logins imply.
type Travel struct {
	From       string    // the previous login's country
	FromTime   time.Time // the previous login's time
	DistanceKm float64   // great-circle distance between the centroids
	SpeedKmh   float64   // DistanceKm over the time between the logins
}

// Verdict is what a login's history says about it.
type Verdict struct {
	// HasHistory: the account had logins remembered before this one.
	HasHistory bool
	// NewCountry: it has history and the country is not in it.
	NewCountry bool
	// Previous are the countries remembered before this login, sorted.
	Previous []string
	// Travel is set when the login is impossible travel from the last one.
	Travel *Travel
}

type account struct {
	name string
	seen []Seen // most recently seen last
	elem *list.Element
}

// History is the per-account login history. It is safe for concurrent use.
type History struct {
	mu       sync.Mutex
	cfg      Config
	now      func() time.Time
	accounts map[string]*account
	lru      *list.List // of *account, least recently seen at the front
	dirty    bool
}

// New returns an empty history; now is its clock (nil: time.Now).
func New(cfg Config, now func() time.Time) *History {
	if now == nil {
		now = time.Now
	}
	if cfg.MaxAccounts <= 0 {
		cfg.MaxAccounts = 1
	}
	if cfg.MaxCountries <= 0 {
		cfg.MaxCountries = 1
	}
	return &History{cfg: cfg, now: now, accounts: make(map[string]*account), lru: list.New()}
}

// Key is the account key: lower case, as the history stores it.
func Key(account string) string { return strings.ToLower(account) }

// prune drops the countries of a older than the window.
func (h *History) prune(a *account, now time.Time) {
	if h.cfg.Window <= 0 {
		return
	}
	cut := now.Add(-h.cfg.Window)
	a.seen = slices.DeleteFunc(a.seen, func(s Seen) bool { return s.Last.Before(cut) })
}

// Check judges a login of acct from country at the clock's time without
// recording it.
func (h *History) Check(acct, country string) Verdict {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	a := h.accounts[Key(acct)]
	if a != nil {
		h.prune(a, now)
	}
	return h.judge(a, strings.ToUpper(country), now)
}

func (h *History) judge(a *account, country string, now time.Time) Verdict {
	var v Verdict
	if a == nil || len(a.seen) == 0 || country == "" {
		return v
	}
	v.HasHistory = true
	known := false
	for _, s := range a.seen {
		v.Previous = append(v.Previous, s.Country)
		if s.Country == country {
			known = true
		}
	}
	slices.Sort(v.Previous)
	v.NewCountry = !known
	last := a.seen[len(a.seen)-1]
	if h.cfg.MaxSpeedKmh > 0 && last.Country != country {
		if km, ok := CountryDistanceKm(last.Country, country); ok {
			dt := now.Sub(last.Last)
			speed := km / dt.Hours()
			if dt <= 0 {
				speed = km * 3600 // as if one second apart
			}
			if speed > h.cfg.MaxSpeedKmh {
				v.Travel = &Travel{From: last.Country, FromTime: last.Last, DistanceKm: km, SpeedKmh: speed}
			}
		}
	}
	return v
}

// Record judges a successful login of acct from country (asn 0: unknown)
// at the clock's time, then remembers it. A login with no country (the
// address is in no country of the GeoIP data) is neither judged nor
// remembered.
func (h *History) Record(acct, country string, asn uint32) Verdict {
	country = strings.ToUpper(country)
	if acct == "" || country == "" {
		return Verdict{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	k := Key(acct)
	a := h.accounts[k]
	if a != nil {
		h.prune(a, now)
	}
	v := h.judge(a, country, now)
	if a == nil {
		for len(h.accounts) >= h.cfg.MaxAccounts {
			old := h.lru.Front().Value.(*account)
			h.lru.Remove(old.elem)
			delete(h.accounts, old.name)
		}
		a = &account{name: k}
		a.elem = h.lru.PushBack(a)
		h.accounts[k] = a
	} else {
		h.lru.MoveToBack(a.elem)
	}
	first := now
	if i := slices.IndexFunc(a.seen, func(s Seen) bool { return s.Country == country }); i >= 0 {
		first = a.seen[i].First
		a.seen = slices.Delete(a.seen, i, i+1)
	}
	a.seen = append(a.seen, Seen{Country: country, ASN: asn, First: first, Last: now})
	if n := len(a.seen) - h.cfg.MaxCountries; n > 0 {
		a.seen = slices.Delete(a.seen, 0, n)
	}
	h.dirty = true
	return v
}

// Countries returns what is remembered of acct, least recently seen first.
func (h *History) Countries(acct string) []Seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.accounts[Key(acct)]
	if a == nil {
		return nil
	}
	h.prune(a, h.now())
	return slices.Clone(a.seen)
}

// Len returns the number of accounts remembered.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.accounts)
}
