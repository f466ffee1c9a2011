package gateway

import (
	"fmt"
	"reflect"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/webhook"
)

// webhookState is the gateway's webhook dispatcher: the engine's notifier
// (blocks, unblocks, escalations) and the sender of reload_failed.
type webhookState struct {
	d       *webhook.Dispatcher
	node    string
	targets []webhook.Target // in service; compared at reload
}

// startWebhooks creates the dispatcher with the configured webhooks. It
// exists even with none configured, so that a reload can add some.
func (g *Gateway) startWebhooks(cfg *config.File, node string) (guard.Notifier, error) {
	targets, err := webhookTargets(cfg)
	if err != nil {
		return nil, err
	}
	var obs webhook.Observer
	if g.obs.m != nil {
		obs = g.obs.m.NewWebhooks()
	}
	g.hooks = webhookState{node: node, targets: targets,
		d: webhook.New(webhook.Options{Node: node, Log: g.log, Observer: obs})}
	g.hooks.d.Configure(targets)
	for _, t := range targets {
		g.log.Info("webhook", "name", t.Name, "events", t.Events) // the URL may carry a token in its path: not logged
	}
	return g.hooks.d, nil
}

// webhooksReloaded follows a reload: a rejected one is announced
// (reload_failed); after an applied one the webhooks in service are
// replaced when their configuration or a secret changed (queued events
// of a replaced webhook are dropped).
func (g *Gateway) webhooksReloaded(err error) {
	d := g.hooks.d
	if d == nil {
		return
	}
	if err != nil {
		d.Send(webhook.ReloadFailed(err, g.hooks.node, time.Now()))
		return
	}
	targets, terr := webhookTargets(g.holder.Load().Config)
	if terr != nil {
		g.log.Error("webhooks: the webhooks in service stay", "err", terr)
		d.Send(webhook.ReloadFailed(terr, g.hooks.node, time.Now()))
		return
	}
	if !reflect.DeepEqual(targets, g.hooks.targets) {
		d.Configure(targets)
		g.hooks.targets = targets
		g.log.Info("webhooks reconfigured", "count", len(targets))
	}
}

// closeWebhooks stops the deliveries; events still queued are dropped.
func (g *Gateway) closeWebhooks() {
	if g.hooks.d != nil {
		g.hooks.d.Close()
	}
}

// webhookTargets reads the configured webhooks and their secrets.
func webhookTargets(cfg *config.File) ([]webhook.Target, error) {
	var ts []webhook.Target
	for _, w := range cfg.Webhooks {
		secret, err := config.ReadWebhookSecret(w.SecretFile.Value)
		if err != nil {
			return nil, fmt.Errorf("webhook %q: %w", w.Name.Value, err)
		}
		t := webhook.Target{
			Name: w.Name.Value, URL: w.URL.Value, Secret: secret, Timeout: w.Timeout.D, Deadline: w.Deadline.D,
			MaxAttempts: w.MaxAttempts, Queue: w.Queue,
		}
		for _, e := range w.Events {
			t.Events = append(t.Events, e.Value)
		}
		ts = append(ts, t)
	}
	return ts, nil
}
