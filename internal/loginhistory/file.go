package loginhistory

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern/postern/internal/geoip"
	"github.com/postern/postern/internal/safefile"
)

// maxFile bounds the history file read at start.
const maxFile = 256 << 20

// fileFormat is the saved history.
type fileFormat struct {
	Version  int           `json:"version"`
	Accounts []fileAccount `json:"accounts"` // least recently seen first
}

type fileAccount struct {
	Account string `json:"account"`
	Seen    []Seen `json:"seen"`
}

// Save writes the history to path atomically (a temporary file in the
// same directory, synced and renamed), mode 0600.
func (h *History) Save(path string) error {
	h.mu.Lock()
	ff := fileFormat{Version: 1}
	for e := h.lru.Front(); e != nil; e = e.Next() {
		a := e.Value.(*account)
		ff.Accounts = append(ff.Accounts, fileAccount{Account: a.name, Seen: append([]Seen(nil), a.seen...)})
	}
	h.dirty = false
	h.mu.Unlock()
	b, err := json.Marshal(ff)
	if err != nil {
		return fmt.Errorf("login history %s: encode: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".loginhistory-*")
	if err != nil {
		return fmt.Errorf("login history %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("login history %s: write: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("login history %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("login history %s: close: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("login history %s: %w", path, err)
	}
	return nil
}

// Dirty says the history changed since it was last saved or loaded.
func (h *History) Dirty() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dirty
}

// Load replaces the history with the one saved at path; a missing file is
// an empty history. Entries outside the window, with an invalid country,
// or beyond the bounds are dropped (the most recently seen are kept).
func (h *History) Load(path string) error {
	b, err := safefile.ReadFile(path, maxFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("login history: %w", err)
	}
	var ff fileFormat
	if err := json.Unmarshal(b, &ff); err != nil {
		return fmt.Errorf("login history %s: %w", path, err)
	}
	if ff.Version != 1 {
		return fmt.Errorf("login history %s: unknown version %d", path, ff.Version)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.accounts = make(map[string]*account)
	h.lru.Init()
	now := h.now()
	for _, fa := range ff.Accounts {
		k := Key(fa.Account)
		if k == "" {
			continue
		}
		if old := h.accounts[k]; old != nil {
			h.lru.Remove(old.elem)
			delete(h.accounts, k)
		}
		a := &account{name: k}
		var last time.Time
		for _, s := range fa.Seen {
			s.Country = strings.ToUpper(s.Country)
			if !geoip.ValidCountryCode(s.Country) || s.Last.Before(last) {
				continue
			}
			last = s.Last
			a.seen = append(a.seen, s)
		}
		h.prune(a, now)
		if n := len(a.seen) - h.cfg.MaxCountries; n > 0 {
			a.seen = a.seen[n:]
		}
		if len(a.seen) == 0 {
			continue
		}
		for len(h.accounts) >= h.cfg.MaxAccounts {
			old := h.lru.Front().Value.(*account)
			h.lru.Remove(old.elem)
			delete(h.accounts, old.name)
		}
		a.elem = h.lru.PushBack(a)
		h.accounts[k] = a
	}
	h.dirty = false
	return nil
}
