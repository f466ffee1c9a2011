package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/postern/postern/internal/webhook"
)

// Webhooks counts webhook deliveries; it implements webhook.Observer.
// Its labels are the webhook's configured name, the attempt's result (ok,
// http_error, error) and the delivery's outcome (delivered, rejected,
// failed, expired, dropped): bounded by the configuration.
type Webhooks struct {
	attempts   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
}

// NewWebhooks registers the webhook counters in m's registry; call it
// once per Metrics.
func (m *Metrics) NewWebhooks() *Webhooks {
	f := factory{m.reg}
	return &Webhooks{
		attempts: f.counterVec("postern_webhook_attempts_total",
			"Webhook delivery attempts by webhook and result (ok, http_error, error).", "webhook", "result"),
		deliveries: f.counterVec("postern_webhook_deliveries_total",
			"Webhook events by webhook and outcome (delivered, rejected, failed, expired, dropped).", "webhook", "outcome"),
	}
}

// Attempt counts one delivery attempt.
func (w *Webhooks) Attempt(hook, result string) { w.attempts.WithLabelValues(hook, result).Inc() }

// Outcome counts the end of one event's delivery.
func (w *Webhooks) Outcome(hook string, o webhook.Outcome) {
	w.deliveries.WithLabelValues(hook, string(o)).Inc()
}
