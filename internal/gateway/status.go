package gateway

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/buildinfo"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// What a status request does to check the backends: a TCP connect to
// each distinct backend address, closed at once, each within
// statusDialTimeout; at most statusDialParallel dials at a time, whatever
// the number of requests asking.
const (
	statusDialTimeout  = 2 * time.Second
	statusDialParallel = 8
)

// statusState is what the gateway records for its status as it runs:
// written by Start, reloads and commits (Run's goroutine), read by the
// administration API's requests.
type statusState struct {
	mu       sync.Mutex
	started  time.Time
	node     string
	build    buildinfo.Info
	file     string
	loaded   time.Time
	reload   *admin.ReloadStatus
	reloads  int
	services []serviceState // in configuration order
	dials    chan struct{}  // places for backend dials, shared by the requests
}

// serviceState is one configured service as the last commit left it.
type serviceState struct {
	name     service.Service
	listen   string              // as configured
	ln       *netlisten.Listener // the listener serving it; nil when not bound
	backends []string            // host:port to dial
	problem  string
}

// noteStarted records what status says of the process itself.
func (g *Gateway) noteStarted(node string) {
	b := g.opts.Build
	if b.Version == "" {
		b = buildinfo.Current("", "", "")
	}
	g.status.mu.Lock()
	defer g.status.mu.Unlock()
	g.status.node, g.status.build = node, b
	g.status.dials = make(chan struct{}, statusDialParallel)
}

// noteLoaded records a configuration put in service (at start or by a
// reload).
func (g *Gateway) noteLoaded(s *snapshot.Snapshot) {
	now := time.Now()
	g.status.mu.Lock()
	defer g.status.mu.Unlock()
	if g.status.started.IsZero() {
		g.status.started = now
	}
	g.status.file, g.status.loaded = s.Config.Path, now
}

// noteReloaded records an applied reload: the keys it applied, those
// waiting for a restart, what it could not do.
func (g *Gateway) noteReloaded(applied, later []string, problems []error) {
	r := &admin.ReloadStatus{Time: time.Now(), OK: true, Applied: nonNil(applied), Restart: nonNil(later), Problems: []string{}}
	for _, p := range problems {
		r.Problems = append(r.Problems, p.Error())
	}
	g.noteReload(r)
}

// noteReloadFailed records a rejected reload (the running configuration
// stayed).
func (g *Gateway) noteReloadFailed(err error) {
	g.noteReload(&admin.ReloadStatus{Time: time.Now(), Error: err.Error(), Applied: []string{}, Restart: []string{}, Problems: []string{}})
}

func (g *Gateway) noteReload(r *admin.ReloadStatus) {
	g.status.mu.Lock()
	defer g.status.mu.Unlock()
	g.status.reloads++
	r.Count = g.status.reloads
	g.status.reload = r
}

// noteServices records the services of a committed plan and the
// listeners now serving them. It runs where the slots change.
func (g *Gateway) noteServices(p *plan) {
	list := make([]serviceState, 0, len(p.services))
	for _, b := range p.services {
		st := serviceState{name: b.name, listen: b.svc.Listen.Value}
		switch sl := g.slots[b.name]; {
		case sl == nil:
			st.problem = "configured but not listening on " + st.listen + " (a restart binds it; see the log)"
		case sl.listen != st.listen:
			st.ln = sl.ln
			st.problem = "still on " + sl.ln.Addr().String() + ", not the configured " + st.listen + " (a restart moves it; see the log)"
		default:
			st.ln = sl.ln
		}
		if b.name == service.Web {
			for _, u := range b.svc.WebBackends() {
				st.backends = append(st.backends, webBackendAddr(u))
			}
		} else if b.svc.Backend.Value != "" {
			st.backends = []string{b.svc.Backend.Value}
		}
		list = append(list, st)
	}
	g.status.mu.Lock()
	defer g.status.mu.Unlock()
	g.status.services = list
}

// webBackendAddr is the host:port of a web backend's URL.
func webBackendAddr(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Status is the running gateway's state for the administration API
// (GET /v1/status, which adds the blocks and judges health): build,
// uptime, configuration, last reload, each service with its listener,
// open sessions and whether each backend accepts a TCP connection now,
// and the store. The backends are dialed on each call, in parallel,
// each within a few seconds; ctx ends the dials early.
func (g *Gateway) Status(ctx context.Context) admin.Status {
	g.status.mu.Lock()
	st := admin.Status{
		Version: g.status.build.Version, Revision: g.status.build.RevisionText(), GoVersion: g.status.build.GoVersion,
		Node: g.status.node, Started: g.status.started.UTC(),
		Config: admin.ConfigStatus{File: g.status.file, Loaded: g.status.loaded.UTC()},
	}
	if r := g.status.reload; r != nil {
		c := *r
		c.Time = c.Time.UTC()
		st.LastReload = &c
	}
	services := slices.Clone(g.status.services)
	sem := g.status.dials
	started := g.status.started // with its monotonic reading
	g.status.mu.Unlock()
	st.Uptime = int64(time.Since(started).Seconds())

	var addrs []string
	for _, s := range services {
		for _, a := range s.backends {
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	dials := dialAll(ctx, addrs, sem)
	st.Services = make([]admin.ServiceStatus, 0, len(services))
	for _, s := range services {
		ss := admin.ServiceStatus{Name: s.name.String(), Listen: s.listen, Problem: s.problem, Backends: []admin.BackendStatus{}}
		if s.ln != nil {
			ss.Bound = s.ln.Addr().String()
			ss.Sessions, _ = s.ln.Stats()
		}
		for _, a := range s.backends {
			ss.Backends = append(ss.Backends, dials[a])
		}
		st.Services = append(st.Services, ss)
	}
	st.Store = g.storeStatus()
	return st
}

// dialAll connects to each address (a TCP connect, closed at once), as
// many at a time as sem has places (nil: statusDialParallel). A dial that
// waits for a place past ctx's end fails with ctx's error.
func dialAll(ctx context.Context, addrs []string, sem chan struct{}) map[string]admin.BackendStatus {
	if sem == nil {
		sem = make(chan struct{}, statusDialParallel)
	}
	out := make(map[string]admin.BackendStatus, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			var r admin.BackendStatus
			select {
			case sem <- struct{}{}:
				r = dialBackend(ctx, a)
				<-sem
			case <-ctx.Done():
				r = admin.BackendStatus{Address: a, Error: "not dialed: " + ctx.Err().Error()}
			}
			mu.Lock()
			out[a] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func dialBackend(ctx context.Context, addr string) admin.BackendStatus {
	ctx, cancel := context.WithTimeout(ctx, statusDialTimeout)
	defer cancel()
	begin := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	r := admin.BackendStatus{Address: addr, DialMS: float64(time.Since(begin).Microseconds()) / 1000}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err // "connect: connection refused", without the addresses said already
		}
		r.Error = err.Error()
		return r
	}
	c.Close()
	r.Reachable = true
	return r
}

// storeStatus is the block store's file, size and last write.
func (g *Gateway) storeStatus() admin.StoreStatus {
	s := admin.StoreStatus{LastWriteOK: true}
	if g.db == nil {
		return s
	}
	s.Path = g.db.Path()
	for _, f := range []string{s.Path, s.Path + "-wal"} {
		if fi, err := os.Stat(f); err == nil {
			s.SizeBytes += fi.Size()
		}
	}
	if w, ok := g.db.LastWrite(); ok {
		t := w.Time.UTC()
		s.LastWrite = &t
		if w.Err != nil {
			s.LastWriteOK, s.LastWriteError = false, w.Err.Error()
		}
	}
	return s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
