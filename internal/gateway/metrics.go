package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/sdnotify"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/spamscan"
	"github.com/postern/postern/internal/tlsconf"
)

// observe is the gateway's metrics (when metrics.listen is set) and its
// service manager notifications (when started by one).
type observe struct {
	m       *metrics.Metrics // nil: metrics off
	srv     *metrics.Server
	grant   atomic.Pointer[func(netip.Addr) bool]
	certs   atomic.Pointer[[]svcCerts] // the certificates served, for scrapes
	serving atomic.Bool                // Run has put the front-ends in service
	notify  *sdnotify.Notifier
}

type svcCerts struct {
	svc   service.Service
	certs *tlsconf.Certs
}

// startMetrics creates the metrics and binds their listener, when
// configured; it runs before privileges drop.
func (g *Gateway) startMetrics(ctx context.Context, snap *snapshot.Snapshot) error {
	g.obs.notify = sdnotify.FromEnv()
	mc := snap.Config.Metrics
	if !mc.On() {
		return nil
	}
	grant, err := metricsGrant(snap)
	if err != nil {
		return err
	}
	g.obs.grant.Store(&grant)
	g.obs.m = metrics.New()
	g.obs.srv, err = g.obs.m.Listen(ctx, mc.Listen.Value, metricsServerOptions(g))
	if err != nil {
		return listenError("metrics", mc.Listen.Value, err)
	}
	g.log.Info("listening", "service", "metrics", "addr", g.obs.srv.Addr().String())
	return nil
}

func metricsServerOptions(g *Gateway) metrics.ServerOptions {
	return metrics.ServerOptions{
		Grant: func(a netip.Addr) bool { return (*g.obs.grant.Load())(a) },
		Ready: g.ready,
		Log:   g.log,
	}
}

// metricsGrant compiles metrics.grant (loopback when not set).
func metricsGrant(snap *snapshot.Snapshot) (func(netip.Addr) bool, error) {
	return grantOf(snap, "metrics.grant", snap.Config.Metrics.Grant)
}

// observer is the engine's observer: the metrics, or none.
func (g *Gateway) observer() guard.Observer {
	if g.obs.m == nil {
		return nil
	}
	return g.obs.m
}

// MetricsAddr returns the metrics listener's address, or nil when metrics
// are off.
func (g *Gateway) MetricsAddr() fmt.Stringer {
	if g.obs.srv == nil {
		return nil
	}
	return g.obs.srv.Addr()
}

// ready says why the gateway is not ready: /readyz and the watchdog.
func (g *Gateway) ready() error {
	switch {
	case g.holder.Load() == nil:
		return errors.New("no configuration loaded")
	case g.db == nil || g.engine == nil:
		return errors.New("block store not open")
	case !g.obs.serving.Load():
		return errors.New("listeners not in service yet")
	}
	if err := g.db.Ping(context.Background()); err != nil {
		return fmt.Errorf("block store: %w", err)
	}
	return nil
}

// runMetrics serves the metrics listener and the watchdog, and tells the
// service manager the gateway is ready; Run calls it once the front-ends
// are in service.
func (g *Gateway) runMetrics(ctx context.Context, wg *sync.WaitGroup) {
	if g.obs.m != nil {
		g.obs.m.SetState(gatewayState{g})
		g.obs.m.Loaded(time.Now())
	}
	g.publishCerts()
	g.obs.serving.Store(true)
	if g.obs.srv != nil {
		wg.Go(func() {
			if err := g.obs.srv.Serve(ctx); err != nil {
				g.log.Error("metrics listener stopped", "err", err)
			}
		})
	}
	if g.obs.notify != nil {
		wg.Go(func() { g.obs.notify.Watchdog(ctx, g.ready) })
		g.notifyErr(g.obs.notify.Ready(fmt.Sprintf("serving %d services", len(g.slots))))
	}
}

// reloadStarted tells the service manager a reload has begun.
func (g *Gateway) reloadStarted() { g.notifyErr(g.obs.notify.Reloading()) }

// reloadDone counts a reload and tells the service manager the gateway
// serves again (with the reason when the reload was rejected).
func (g *Gateway) reloadDone(err error) {
	if g.obs.m != nil {
		g.obs.m.Reload(err == nil, time.Now())
	}
	g.webhooksReloaded(err)
	status := fmt.Sprintf("serving %d services", len(g.slots))
	if err == nil {
		g.publishCerts()
		if gr, gerr := metricsGrant(g.holder.Load()); gerr == nil && g.obs.m != nil {
			g.obs.grant.Store(&gr) // apply has checked that it compiles
		}
	} else {
		status += "; the last reload was rejected: " + err.Error()
	}
	g.notifyErr(g.obs.notify.Ready(status))
}

// closeMetrics closes the metrics listener of a gateway that never ran.
func (g *Gateway) closeMetrics() {
	if g.obs.srv != nil && !g.obs.serving.Load() {
		g.obs.srv.Close()
	}
}

// stopping tells the service manager the gateway is shutting down.
func (g *Gateway) stopping() { g.notifyErr(g.obs.notify.Stopping()) }

func (g *Gateway) notifyErr(err error) {
	if err != nil {
		g.log.Warn("service manager notification", "err", err)
	}
}

// refused counts a connection refused outside the engine.
func (g *Gateway) refused(svc service.Service, why metrics.Why) {
	if g.obs.m != nil {
		g.obs.m.Refused(svc, why)
	}
}

// publishCerts records the certificates each service serves, for
// scrapes; Run's goroutine calls it after the slots change.
func (g *Gateway) publishCerts() {
	var cs []svcCerts
	for _, name := range service.All {
		if sl := g.slots[name]; sl != nil && sl.certs != nil {
			cs = append(cs, svcCerts{name, sl.certs})
		}
	}
	g.obs.certs.Store(&cs)
}

// gatewayState is the running gateway as a scrape reads it.
type gatewayState struct{ g *Gateway }

func (s gatewayState) LiveSessionsByService() [service.Count]int {
	return s.g.engine.LiveSessionsByService()
}

func (s gatewayState) ActiveBlocksByReason(fn func(reason.Code, int)) {
	s.g.engine.ActiveBlocksByReason(fn)
}

func (s gatewayState) Certificates(fn func(service.Service, time.Time)) {
	if cs := s.g.obs.certs.Load(); cs != nil {
		for _, c := range *cs {
			fn(c.svc, c.certs.NotAfter())
		}
	}
}

func (s gatewayState) GeoIPBuilds(fn func(string, time.Time)) {
	for _, info := range s.g.holder.Load().GeoIP.Sources() {
		if !info.BuildTime.IsZero() {
			fn(filepath.Base(info.Path), info.BuildTime)
		}
	}
}

// handshakeFailed counts a service's failed TLS handshakes; nil when
// metrics are off.
func (g *Gateway) handshakeFailed(svc service.Service) func() {
	if g.obs.m == nil {
		return nil
	}
	m := g.obs.m
	return func() { m.HandshakeFailed(svc) }
}

// earlyTalker counts a service's early talkers; nil when metrics are off.
func (g *Gateway) earlyTalker(svc service.Service) func() {
	if g.obs.m == nil {
		return nil
	}
	m := g.obs.m
	return func() { m.EarlyTalker(svc) }
}

// smtpObserver is the SMTP gateways' observer: the metrics, or none.
func (g *Gateway) smtpObserver() smtpproxy.Observer {
	if g.obs.m == nil {
		return nil
	}
	return g.obs.m
}

// measureDialer has a mail service's backend dialer report its
// connections and the bytes its sessions relay.
func (g *Gateway) measureDialer(d *relay.Dialer, svc service.Service) {
	m := g.obs.m
	if m == nil {
		return
	}
	backend := d.Addr
	d.Observe = func(t time.Duration, err error) { m.BackendDial(svc, backend, t, err) }
	d.Relayed = func(up, down int64) {
		m.Relayed(svc, metrics.DirToBackend, up)
		m.Relayed(svc, metrics.DirToClient, down)
	}
}

// scanner wraps a spam scanner with its metrics.
func (g *Gateway) scanner(sc spamscan.Scanner) spamscan.Scanner {
	if g.obs.m == nil {
		return sc
	}
	return measuredScanner{sc, g.obs.m}
}

type measuredScanner struct {
	spamscan.Scanner
	m *metrics.Metrics
}

func (s measuredScanner) Scan(ctx context.Context, msg spamscan.Message) (spamscan.Verdict, error) {
	start := time.Now()
	v, err := s.Scanner.Scan(ctx, msg)
	res := metrics.SpamHam
	switch {
	case err != nil:
		res = metrics.SpamError
	case v.Action == "reject" || v.Threshold > 0 && v.Score >= v.Threshold:
		res = metrics.SpamSpam
	}
	s.m.SpamScan(res, time.Since(start))
	return v, err
}

// dnsbl wraps the SMTP gateways' DNSBL lookups with their metrics; nil
// stays nil.
func (g *Gateway) dnsbl(d smtpproxy.DNSBL) smtpproxy.DNSBL {
	if g.obs.m == nil || d == nil {
		return d
	}
	return measuredDNSBL{d, g.obs.m, g.dnswlZones}
}

// dnswlZones are the whitelist zones of the running configuration.
func (g *Gateway) dnswlZones() []string {
	if b := g.holder.Load().Guard.Bypass; b != nil {
		return b.Zones
	}
	return nil
}

type measuredDNSBL struct {
	smtpproxy.DNSBL
	m     *metrics.Metrics
	allow func() []string // the whitelist zones, to tell them from the blocklists
}

func (d measuredDNSBL) Listed(ctx context.Context, addr netip.Addr, zones []string) (string, string) {
	if len(zones) == 0 {
		return d.DNSBL.Listed(ctx, addr, zones)
	}
	start := time.Now()
	zone, why := d.DNSBL.Listed(ctx, addr, zones)
	list := metrics.ListBlock
	if d.allow != nil && slices.Contains(d.allow(), zones[0]) {
		list = metrics.ListAllow
	}
	d.m.DNSBL(list, zone, time.Since(start))
	return zone, why
}
