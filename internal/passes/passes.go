// Package passes holds travel passes: time-limited grants that let one
// account (or every account of a @domain) log in from an extra list of
// addresses, networks, countries or [patterns], on top of its login IP
// restriction. A pass ends by itself: every check compares its expiry with
// the table's clock, so no background job is needed; List hides expired
// passes and Sweep drops them.
package passes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/internal/patterns"
)

// MaxDuration is the longest a pass may last.
const MaxDuration = 365 * 24 * time.Hour

// MaxComment is the longest comment a pass may carry, in bytes.
const MaxComment = 500

// maxFrom bounds the length of a pass's address list, in bytes.
const maxFrom = 2000

// Pass is one travel pass.
type Pass struct {
	// ID names the pass (16 hex digits).
	ID string `json:"id"`
	// Account is the account ("alice@example.com", as the backend
	// resolves it) or domain ("@example.com") it is for.
	Account string `json:"account"`
	// From is the extra list, in the login restriction's syntax
	// ("country:TH", "203.0.113.0/24 [office]").
	From string `json:"from"`
	// Created is when the pass was added; Until when it ends.
	Created time.Time `json:"created"`
	Until   time.Time `json:"until"`
	// By is who added it (the admin actor); Comment is free text.
	By      string `json:"by,omitempty"`
	Comment string `json:"comment,omitempty"`
}

// Compiler compiles a pass's From list against the running
// configuration's patterns and GeoIP data. It refuses mail masks.
type Compiler func(from string) (*patterns.Set, error)

// ParseDuration reads a pass's length: a Go duration ("36h", "90m") or a
// whole number of days or weeks ("14d", "2w"). It must be positive and at
// most MaxDuration.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration: want e.g. 14d, 2w or 36h")
	}
	var d time.Duration
	if n, unit := s[:len(s)-1], s[len(s)-1]; unit == 'd' || unit == 'w' {
		v, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q: want a whole number of days (14d) or weeks (2w)", s)
		}
		d = time.Duration(v) * 24 * time.Hour
		if unit == 'w' {
			d *= 7
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("bad duration %q: want e.g. 14d, 2w or 36h", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q is not positive", s)
	}
	if d > MaxDuration {
		return 0, fmt.Errorf("duration %q is longer than the 365d a pass may last", s)
	}
	return d, nil
}

// CheckAccount checks that s is an account (local@domain) or a @domain,
// already in the form the backend resolves (see policy.LoginNames.Canon).
func CheckAccount(s string) error {
	switch {
	case s == "":
		return errors.New("no account: want alice@example.com or @example.com")
	case len(s) > 320:
		return fmt.Errorf("account %.40q... is longer than 320 bytes", s)
	case strings.ContainsAny(s, " \t\r\n*?;,=[]{}\"'\\"):
		return fmt.Errorf("account %q has a character that cannot be in an address", s)
	}
	at := strings.IndexByte(s, '@')
	if at < 0 || at != strings.LastIndexByte(s, '@') {
		return fmt.Errorf("account %q is not an address or @domain: want alice@example.com or @example.com", s)
	}
	dom := s[at+1:]
	if dom == "" || strings.HasPrefix(dom, ".") || strings.HasSuffix(dom, ".") || strings.Contains(dom, "..") {
		return fmt.Errorf("account %q has no valid domain", s)
	}
	return nil
}

// Check validates a pass that is about to be added at now: its account,
// its list (compiled with compile), its end (after now, at most
// MaxDuration away) and its comment. It returns the compiled list.
func Check(p *Pass, now time.Time, compile Compiler) (*patterns.Set, error) {
	if err := CheckAccount(p.Account); err != nil {
		return nil, err
	}
	if strings.TrimSpace(p.From) == "" {
		return nil, errors.New("no --from list: want e.g. country:TH, 203.0.113.0/24 or [pattern]")
	}
	if len(p.From) > maxFrom {
		return nil, fmt.Errorf("the --from list is longer than %d bytes", maxFrom)
	}
	if len(p.Comment) > MaxComment {
		return nil, fmt.Errorf("the comment is longer than %d bytes", MaxComment)
	}
	if strings.ContainsAny(p.Comment, "\r\n\x00") {
		return nil, errors.New("the comment has a line break or NUL")
	}
	if !p.Until.After(now) {
		return nil, fmt.Errorf("the pass would end at %s, which is not in the future", p.Until.UTC().Format(time.RFC3339))
	}
	if p.Until.Sub(now) > MaxDuration {
		return nil, fmt.Errorf("the pass would end at %s, more than 365 days away", p.Until.UTC().Format(time.RFC3339))
	}
	set, err := compile(p.From)
	if err != nil {
		return nil, fmt.Errorf("pass for %s: --from %q: %w", p.Account, p.From, err)
	}
	return set, nil
}

// NewID returns a fresh random pass ID.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

type entry struct {
	p   Pass
	set *patterns.Set // nil: the list no longer compiles (never matches)
}

// Table holds the passes in force. It is safe for concurrent use.
type Table struct {
	clock func() time.Time

	mu     sync.RWMutex
	byID   map[string]*entry
	broken map[string]error // pass ID -> why its list no longer compiles
}

// NewTable returns an empty table reading the time from clock (nil:
// time.Now).
func NewTable(clock func() time.Time) *Table {
	if clock == nil {
		clock = time.Now
	}
	return &Table{clock: clock, byID: make(map[string]*entry)}
}

// Now is the table's clock.
func (t *Table) Now() time.Time { return t.clock() }

// Put adds or replaces a pass whose list is already compiled (by Check).
func (t *Table) Put(p Pass, set *patterns.Set) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID[p.ID] = &entry{p: p, set: set}
	delete(t.broken, p.ID)
}

// Load replaces every pass with ps (as read from the store), compiling
// their lists with compile; a list that no longer compiles (a pattern
// removed from the configuration) keeps the pass but never matches, and
// its error is returned among the others.
func (t *Table) Load(ps []Pass, compile Compiler) []error {
	m := make(map[string]*entry, len(ps))
	broken := make(map[string]error)
	var errs []error
	for _, p := range ps {
		set, err := compile(p.From)
		if err != nil {
			err = fmt.Errorf("pass %s for %s: --from %q no longer compiles: %w", p.ID, p.Account, p.From, err)
			broken[p.ID] = err
			errs = append(errs, err)
			set = nil
		}
		m[p.ID] = &entry{p: p, set: set}
	}
	t.mu.Lock()
	t.byID, t.broken = m, broken
	t.mu.Unlock()
	return errs
}

// Recompile compiles every pass's list again (after a reload).
func (t *Table) Recompile(compile Compiler) []error {
	return t.Load(t.all(), compile)
}

func (t *Table) all() []Pass {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Pass, 0, len(t.byID))
	for _, e := range t.byID {
		out = append(out, e.p)
	}
	return out
}

// Remove deletes the pass with the given ID and returns it.
func (t *Table) Remove(id string) (Pass, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byID[id]
	if !ok {
		return Pass{}, false
	}
	delete(t.byID, id)
	delete(t.broken, id)
	return e.p, true
}

// Get returns the pass with the given ID, also when expired.
func (t *Table) Get(id string) (Pass, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.byID[id]
	if !ok {
		return Pass{}, false
	}
	return e.p, true
}

// List returns the passes in force, by account then end; expired ones are
// hidden.
func (t *Table) List() []Pass {
	now := t.clock()
	var out []Pass
	for _, p := range t.all() {
		if p.Until.After(now) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Pass) int {
		if c := strings.Compare(a.Account, b.Account); c != 0 {
			return c
		}
		if c := a.Until.Compare(b.Until); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Sweep removes the expired passes and returns them.
func (t *Table) Sweep() []Pass {
	now := t.clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Pass
	for id, e := range t.byID {
		if !e.p.Until.After(now) {
			out = append(out, e.p)
			delete(t.byID, id)
			delete(t.broken, id)
		}
	}
	return out
}

// Allow reports the pass, if any, that lets account (as the backend
// resolves it) log in from addr now: a pass for the account itself or
// for its @domain, not expired, whose list holds addr. A nil Table allows
// nothing.
func (t *Table) Allow(ctx context.Context, account string, addr netip.Addr) (Pass, bool) {
	if t == nil || account == "" {
		return Pass{}, false
	}
	now := t.clock()
	dom := ""
	if i := strings.LastIndexByte(account, '@'); i >= 0 {
		dom = account[i:]
	}
	t.mu.RLock()
	var cands []*entry
	for _, e := range t.byID {
		if (e.p.Account == account || (dom != "" && e.p.Account == dom)) && e.set != nil && e.p.Until.After(now) {
			cands = append(cands, e)
		}
	}
	t.mu.RUnlock()
	// The set lookup may resolve a host name: never under the lock.
	slices.SortFunc(cands, func(a, b *entry) int { return strings.Compare(a.p.ID, b.p.ID) })
	for _, e := range cands {
		if e.set.ContainsClient(ctx, addr) {
			return e.p, true
		}
	}
	return Pass{}, false
}
