package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/console"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/tlsconf"
)

// consoleSide is the web console of a gateway: bound by Start (before
// privileges drop), served by Run. Its listen address, certificates and
// users file are read at start; its grant follows the running
// configuration.
type consoleSide struct {
	ln    net.Listener
	certs *tlsconf.Certs // nil: plain HTTP
	srv   *console.Server
	rates *traffic // the dashboard's connections and logins per second

	listeners atomic.Pointer[[]console.Listener] // noted by Run's goroutine

	mu       sync.Mutex
	grantFor *snapshot.Snapshot // the snapshot grant was compiled from
	grant    func(netip.Addr) bool
}

// consoleReloadWait bounds how long the console's reload button waits to
// see the new configuration in service.
const consoleReloadWait = 30 * time.Second

// bindConsole binds the console's listener and loads its certificates,
// when the configuration has a console.
func (g *Gateway) bindConsole(ctx context.Context, snap *snapshot.Snapshot) error {
	c := &snap.Config.Console
	if !c.Enabled() {
		return nil
	}
	if _, err := consoleGrant(snap); err != nil {
		return err
	}
	cs := &consoleSide{}
	if c.TLS != nil {
		certs, err := tlsconf.Load(c.TLS.Cert.Value, c.TLS.Key.Value)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		cs.certs = certs
	}
	ln, err := console.Listen(ctx, c.Listen.Value)
	if err != nil {
		return listenError("console", c.Listen.Value, err)
	}
	cs.ln = ln
	g.con = cs
	g.ensureMetrics() // the dashboard's rates are read from the metrics' counters
	return nil
}

// newConsole builds the console server on the engine, once it runs.
func (g *Gateway) newConsole(token string) error {
	cs := g.con
	if cs == nil {
		return nil
	}
	c := g.holder.Load().Config.Console
	cs.rates = newTraffic(g.obs.m, time.Now, g.trafficServices)
	opts := console.Options{
		Engine:      g.engine,
		Explain:     explain.Func(g.holder.Load, g.engine),
		Token:       token,
		UsersFile:   c.UsersFile.Value,
		Grant:       g.consoleGrants,
		IdleTimeout: c.IdleTimeout.D,
		Reload:      g.consoleReload,
		Config:      g.consoleConfig,
		Stats:       cs,
		Traffic:     cs.rates,
		Country:     g.consoleCountry,
		Passes:      g.passes,
		Log:         g.log,
	}
	if cs.certs != nil {
		opts.TLS = cs.certs.ServerConfig()
	}
	srv, err := console.New(opts)
	if err != nil {
		return err
	}
	cs.srv = srv
	return nil
}

// serveConsole serves the console until ctx is done; Run's goroutine
// calls it in its own goroutine.
func (g *Gateway) serveConsole(ctx context.Context) {
	cs := g.con
	go cs.rates.run(ctx)
	if cs.certs != nil {
		go cs.certs.Watch(ctx, time.Minute, func(msg string, args ...any) { g.log.Warn("console: "+msg, args...) })
	}
	if err := cs.srv.Serve(ctx, cs.ln); err != nil {
		g.log.Error("console stopped", "err", err)
	}
}

// closeConsole closes the console's listener (a second close, after
// Serve closed it, does nothing).
func (g *Gateway) closeConsole() {
	if g.con != nil {
		g.con.ln.Close()
	}
}

// consoleGrant compiles console.grant (loopback when not set).
func consoleGrant(snap *snapshot.Snapshot) (func(netip.Addr) bool, error) {
	return grantOf(snap, "console.grant", snap.Config.Console.Grant)
}

// consoleGrants answers the grant of the running configuration; a
// configuration whose grant does not compile keeps the last one.
func (g *Gateway) consoleGrants(a netip.Addr) bool {
	cs := g.con
	snap := g.holder.Load()
	cs.mu.Lock()
	if cs.grantFor != snap {
		if gr, err := consoleGrant(snap); err == nil {
			cs.grant = gr
		} else if cs.grant == nil {
			cs.grant = netip.Addr.IsLoopback
		}
		cs.grantFor = snap
	}
	gr := cs.grant
	cs.mu.Unlock()
	return gr(a)
}

// consoleReload asks Run for a reload, as SIGHUP does, and waits (bounded)
// to see a new configuration in service. A configuration that does not
// load is reported at once.
func (g *Gateway) consoleReload() error {
	old := g.holder.Load()
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.ReloadTimeout)
	defer cancel()
	if _, err := g.opts.Load(ctx, g.path, time.Now()); err != nil {
		return err
	}
	select {
	case g.auto <- "asked for in the console":
	default: // a reload is asked for already
	}
	deadline := time.Now().Add(min(consoleReloadWait, g.opts.ReloadTimeout))
	for time.Now().Before(deadline) {
		if g.holder.Load() != old {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the new configuration was not put in service within %s; the log says why", consoleReloadWait)
}

// consoleCountry names an address's country from the running
// configuration's GeoIP databases; "" when it has none or none holds it.
func (g *Gateway) consoleCountry(a netip.Addr) string {
	if c := explain.Country(g.holder.Load(), a); c != nil {
		return c.Country
	}
	return ""
}

// consoleConfig shows the running configuration file.
func (g *Gateway) consoleConfig() console.ConfigInfo {
	snap := g.holder.Load()
	ci := console.ConfigInfo{Path: snap.Config.Path, LoadedAt: snap.Built}
	if data, err := os.ReadFile(snap.Config.Path); err == nil && len(data) < 1<<20 {
		ci.Text = string(data)
	} else if err != nil {
		ci.Text = "(cannot be read: " + err.Error() + ")"
	}
	return ci
}

// noteListeners records each service's listener for the dashboard; Run's
// goroutine calls it after the front-ends change.
func (g *Gateway) noteListeners() {
	if g.con == nil {
		return
	}
	out := make([]console.Listener, 0, len(g.slots))
	cfg := g.holder.Load().Config
	for name, sl := range g.slots {
		l := console.Listener{Service: name.String(), Listen: sl.listen, Up: sl.gen != nil}
		if svc := cfg.Services[name]; svc != nil && svc.Backend.IsSet() {
			l.Detail = "backend " + svc.Backend.Value
		}
		if sl.ln != nil {
			l.Listen = sl.ln.Addr().String()
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	g.con.listeners.Store(&out)
}

// Listeners gives the dashboard the listeners last noted.
func (cs *consoleSide) Listeners() []console.Listener {
	if p := cs.listeners.Load(); p != nil {
		return *p
	}
	return nil
}

// ConsoleAddr returns the address the console listens on, or nil.
func (g *Gateway) ConsoleAddr() net.Addr {
	if g.con == nil {
		return nil
	}
	return g.con.ln.Addr()
}
