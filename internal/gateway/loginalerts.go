package gateway

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/loginhistory"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/webhook"
)

// loginAlertState is the login history and its alerts (login_alerts),
// made at start; nil alerts when off. Its settings are read at start
// only: a reload keeps them.
type loginAlertState struct {
	alerts    *loginhistory.Alerts
	file      string
	saveEvery time.Duration
}

// snapshotGeo finds countries in the running configuration's GeoIP data.
type snapshotGeo struct{ g *Gateway }

func (s snapshotGeo) Country(a netip.Addr) (string, bool) {
	cc, _, ok := s.g.holder.Load().GeoIP.Country(a)
	return cc, ok
}

func (s snapshotGeo) ASN(a netip.Addr) (uint32, bool) { return s.g.holder.Load().GeoIP.ASN(a) }

// loginAnnouncer counts login alerts and sends them to the webhooks.
type loginAnnouncer struct {
	m    *metrics.LoginAlerts // nil: no metrics
	d    *webhook.Dispatcher  // nil: no webhooks
	node string
}

func (la loginAnnouncer) LoginAlert(a loginhistory.Alert) {
	if la.m != nil {
		if a.Kind == loginhistory.KindImpossibleTravel {
			la.m.ImpossibleTravel(a.Service)
		} else {
			la.m.NewCountry(a.Service)
		}
	}
	if la.d != nil {
		la.d.Send(webhook.FromLoginAlert(a, la.node))
	}
}

// startLoginAlerts makes the login history (loaded from its file) when
// login_alerts is on. Call it after startWebhooks.
func (g *Gateway) startLoginAlerts(cfg *config.File, node string) error {
	lc := cfg.LoginAlerts
	if !lc.On() {
		return nil
	}
	h := loginhistory.New(loginhistory.Config{Window: lc.Window.D, MaxAccounts: lc.MaxAccounts,
		MaxCountries: lc.MaxCountriesPerAccount, MaxSpeedKmh: lc.MaxSpeedKmh}, nil)
	if lc.File.Value != "" {
		if err := h.Load(lc.File.Value); err != nil {
			return err
		}
	}
	ann := loginAnnouncer{d: g.hooks.d, node: node}
	if g.obs.m != nil {
		ann.m = g.obs.m.NewLoginAlerts()
	}
	g.logins = loginAlertState{file: lc.File.Value, saveEvery: lc.SaveEvery.D, alerts: &loginhistory.Alerts{
		History: h, Geo: snapshotGeo{g}, BlockNewCountry: lc.BlockNewCountry, Announce: ann, Log: g.log}}
	g.log.Info("login alerts", "accounts", h.Len(), "block_new_country", lc.BlockNewCountry, "file", lc.File.Value)
	return nil
}

// loginWatcher is what the login gates report successful logins to; nil
// when login alerts are off.
func (g *Gateway) loginWatcher() gate.LoginWatcher {
	if g.logins.alerts == nil {
		return nil
	}
	return g.logins.alerts
}

// runLoginAlerts saves a changed history every save_every until ctx ends.
func (g *Gateway) runLoginAlerts(ctx context.Context, wg *sync.WaitGroup) {
	if g.logins.alerts == nil || g.logins.file == "" {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(g.logins.saveEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				g.saveLoginHistory()
			}
		}
	}()
}

// saveLoginHistory saves the history when it changed.
func (g *Gateway) saveLoginHistory() {
	h := g.logins.alerts.History
	if !h.Dirty() {
		return
	}
	if err := h.Save(g.logins.file); err != nil {
		g.log.Error("saving the login history", "err", err)
	}
}

// closeLoginAlerts saves the history a last time.
func (g *Gateway) closeLoginAlerts() {
	if g.logins.alerts != nil && g.logins.file != "" {
		g.saveLoginHistory()
	}
}
