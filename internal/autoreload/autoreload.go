// Package autoreload asks for a configuration reload by itself when the
// data behind the running configuration changes: a GeoIP database
// configured with a url is downloaded again every refresh (package
// geoupdate checks it and swaps it in), and every local file the running
// snapshot was read from — GeoIP databases, zone and include files, the
// bypass file and its includes — is watched with inotify. A new good
// download, or a change of a watched file once it has settled (debounced),
// calls the reload function the caller gives; the caller reloads as on
// SIGHUP, which builds and checks a whole new snapshot before it swaps it
// in, so a half-written or broken file is refused and the running
// configuration stays.
//
// The configuration file itself is not watched: it changes when an
// administrator means it to, with SIGHUP. Certificates are reloaded by
// package tlsconf.
package autoreload

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/geoip"
	"github.com/postern/postern/internal/geoupdate"
	"github.com/postern/postern/internal/snapshot"
)

// Defaults of Options.
const (
	// DefaultDebounce is how long a watched file must stay quiet after a
	// change before the reload is asked for, so that a file written in
	// several steps is read once, whole.
	DefaultDebounce = 2 * time.Second
	// DefaultRetry is the wait after a failed download before the next
	// try; it doubles with each failure up to the database's refresh.
	DefaultRetry = 5 * time.Minute
)

// Options tune a Refresher; the zero value takes the defaults.
type Options struct {
	Logger   *slog.Logger       // nil: slog.Default()
	Updater  *geoupdate.Updater // nil: geoupdate.New with its defaults
	Debounce time.Duration
	Retry    time.Duration
	Now      func() time.Time // nil: time.Now
}

// Refresher watches the files of the running snapshot and downloads its
// GeoIP databases that have a url. Create it with New, run it with Run,
// and give it each snapshot put in service with Apply.
type Refresher struct {
	log      *slog.Logger
	updater  *geoupdate.Updater
	debounce time.Duration
	retry    time.Duration
	now      func() time.Time

	mu      sync.Mutex
	snap    *snapshot.Snapshot
	applied [2]chan struct{} // wakes the watch and the download loops

	synced func() // tests: called when the watch list was (re)built
}

// New returns a Refresher for the running snapshot s.
func New(s *snapshot.Snapshot, opts Options) *Refresher {
	r := &Refresher{log: opts.Logger, updater: opts.Updater, debounce: opts.Debounce, retry: opts.Retry, now: opts.Now, snap: s}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.updater == nil {
		r.updater = geoupdate.New(geoupdate.Options{})
	}
	if r.debounce <= 0 {
		r.debounce = DefaultDebounce
	}
	if r.retry <= 0 {
		r.retry = DefaultRetry
	}
	if r.now == nil {
		r.now = time.Now
	}
	for i := range r.applied {
		r.applied[i] = make(chan struct{}, 1)
	}
	return r
}

// Apply tells the Refresher that s is now in service: its files are
// watched and its databases downloaded from then on. It never blocks; on
// a nil Refresher it does nothing.
func (r *Refresher) Apply(s *snapshot.Snapshot) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.snap = s
	r.mu.Unlock()
	for _, c := range r.applied {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func (r *Refresher) current() *snapshot.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap
}

// Run watches and downloads until ctx is done. reload is called, from
// Run's goroutines, with the reason whenever a download put a new good
// file in place or a watched file changed; it must not block for long
// (hand the request to the reload loop and return). Failures are logged
// and never end Run. On a nil Refresher it returns at once.
func (r *Refresher) Run(ctx context.Context, reload func(why string)) {
	if r == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.watchLoop(ctx, reload) })
	wg.Go(func() { r.downloadLoop(ctx, reload) })
	wg.Wait()
}

// Downloads returns the databases of cfg that are downloaded.
func Downloads(cfg *config.File) []Download {
	if cfg == nil {
		return nil
	}
	var out []Download
	for _, d := range cfg.GeoIP.Databases {
		if !d.URL.IsSet() {
			continue
		}
		out = append(out, Download{
			Source: geoupdate.Source{URL: d.URL.Value, Path: d.Path.Value, Format: geoip.Format(d.Format.Value),
				Country: d.Country.Value, MaxDrop: d.MaxDrop.Value, MinNetworks: d.MinNetworks},
			Refresh: d.Refresh.D,
		})
	}
	return out
}

// Download is one database kept fresh from its url.
type Download struct {
	geoupdate.Source
	Refresh time.Duration
}

// watched returns the files of s to watch: every file it was read from
// but the configuration file and the downloaded databases.
func watched(s *snapshot.Snapshot) []string {
	if s == nil {
		return nil
	}
	skip := map[string]bool{}
	if s.Config != nil {
		skip[s.Config.Path] = true
	}
	for _, d := range Downloads(s.Config) {
		skip[d.Path] = true
	}
	var out []string
	for _, f := range s.Files() {
		if !skip[f] {
			out = append(out, f)
		}
	}
	return out
}

// watchLoop watches the directories of the snapshot's files (a file
// replaced by a rename is still seen) and asks for a reload once changes
// have been quiet for the debounce time.
func (r *Refresher) watchLoop(ctx context.Context, reload func(string)) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Error("cannot watch configuration files; changes need SIGHUP", "err", err)
		<-ctx.Done()
		return
	}
	defer w.Close()
	var (
		names   map[string]string // cleaned path (or link target) → file as configured
		dirs    = map[string]bool{}
		changed = map[string]bool{}
		timer   *time.Timer
		fire    <-chan time.Time
		first   = true
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	resync := func() {
		files := watched(r.current())
		names = make(map[string]string, len(files))
		want := map[string]bool{}
		for _, f := range files {
			f = filepath.Clean(f)
			names[f] = f
			want[filepath.Dir(f)] = true
			if t, err := filepath.EvalSymlinks(f); err == nil && t != f {
				names[t] = f
				want[filepath.Dir(t)] = true
			}
		}
		for d := range dirs {
			if !want[d] {
				_ = w.Remove(d)
				delete(dirs, d)
			}
		}
		for _, d := range slices.Sorted(maps.Keys(want)) {
			if dirs[d] {
				continue
			}
			if err := w.Add(d); err != nil {
				r.log.Warn("cannot watch a directory; changes of its files need SIGHUP", "dir", d, "err", err)
				continue
			}
			dirs[d] = true
		}
		level := slog.LevelDebug
		if first {
			level, first = slog.LevelInfo, false
		}
		r.log.Log(ctx, level, "watching files for changes", "files", len(files), "directories", len(dirs))
		if r.synced != nil {
			r.synced()
		}
	}
	resync()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.applied[0]:
			resync()
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			f, mine := names[filepath.Clean(ev.Name)]
			if !mine || ev.Op == fsnotify.Chmod {
				continue
			}
			changed[f] = true
			if timer == nil {
				timer = time.NewTimer(r.debounce)
			} else {
				timer.Reset(r.debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload to be sure.
			r.log.Warn("watching files", "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				changed["(events lost)"] = true
				if timer == nil {
					timer = time.NewTimer(r.debounce)
				} else {
					timer.Reset(r.debounce)
				}
				fire = timer.C
			}
		case <-fire:
			fire = nil
			why := "changed: " + strings.Join(slices.Sorted(maps.Keys(changed)), ", ")
			clear(changed)
			r.log.Info("configuration files changed, reloading", "files", why)
			reload(why)
		}
	}
}

// downloadLoop downloads each database when it is due: at once when its
// file is missing or its last check is older than its refresh, then
// every refresh; after a failure again after the retry time, doubled
// with each failure up to the refresh.
func (r *Refresher) downloadLoop(ctx context.Context, reload func(string)) {
	type entry struct {
		Download
		due      time.Time
		failures int
	}
	var entries []*entry
	resync := func() {
		old := entries
		entries = nil
		var cfg *config.File
		if s := r.current(); s != nil {
			cfg = s.Config
		}
		for _, d := range Downloads(cfg) {
			var e *entry
			for _, o := range old {
				if o.Source == d.Source {
					e = o
					break
				}
			}
			if e == nil {
				e = &entry{due: r.firstDue(d)}
			} else if soon := r.now().Add(d.Refresh); d.Refresh < e.Refresh && e.failures == 0 && soon.Before(e.due) {
				e.due = soon // a shorter refresh takes effect at once
			}
			e.Download = d
			entries = append(entries, e)
		}
	}
	resync()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var next *entry
		for _, e := range entries {
			if next == nil || e.due.Before(next.due) {
				next = e
			}
		}
		var fire <-chan time.Time
		if next != nil {
			timer.Reset(max(next.due.Sub(r.now()), 0))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-r.applied[1]:
			timer.Stop()
			resync()
			continue
		case <-fire:
		}
		res, err := r.updater.Update(ctx, next.Source)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			next.failures++
			wait := min(r.retry<<min(next.failures-1, 16), max(next.Refresh, r.retry))
			next.due = r.now().Add(wait)
			r.log.Error("geoip download failed; the last good file stays", "path", next.Path, "err", err, "retry_in", wait)
			continue
		}
		next.failures = 0
		next.due = r.now().Add(next.Refresh)
		switch {
		case res.Changed:
			r.log.Info("geoip database downloaded", "path", next.Path, "url", geoupdate.Redact(next.URL),
				"networks", res.Networks, "previous", res.Previous)
			reload("geoip database " + next.Path + " updated")
		case res.NotModified:
			r.log.Debug("geoip database not modified", "path", next.Path, "url", geoupdate.Redact(next.URL))
		}
	}
}

// firstDue returns when d is first asked for: at once without a file or
// a state, else a refresh after its last check.
func (r *Refresher) firstDue(d Download) time.Time {
	now := r.now()
	st, ok := geoupdate.ReadState(d.Path, d.URL)
	if !ok {
		return now
	}
	due := st.Checked.Add(d.Refresh)
	if due.After(now.Add(d.Refresh)) {
		due = now.Add(d.Refresh) // a check time in the future: a clock set back
	}
	return due
}

// FetchMissing downloads, once, each database of cfg that has a url and
// no file yet, so that the gateway can start with it; call it before the
// first snapshot is built (which fails without the file). A database
// whose file is there starts with that file, the last good one, and is
// checked by the Refresher when due. A failure is logged and left to the
// snapshot build to report. u may be nil.
func FetchMissing(ctx context.Context, cfg *config.File, u *geoupdate.Updater, log *slog.Logger) {
	if u == nil {
		u = geoupdate.New(geoupdate.Options{})
	}
	if log == nil {
		log = slog.Default()
	}
	for _, d := range Downloads(cfg) {
		if _, err := os.Stat(d.Path); err == nil {
			continue
		}
		res, err := u.Update(ctx, d.Source)
		if err != nil {
			log.Error("geoip download failed", "path", d.Path, "err", err)
			continue
		}
		log.Info("geoip database downloaded", "path", d.Path, "url", geoupdate.Redact(d.URL), "networks", res.Networks)
	}
}
