package config

import "github.com/postern/postern/internal/diag"

// Metrics is the listener of the Prometheus metrics (/metrics) and the
// health endpoints (/healthz, /readyz): off when Listen is not set.
type Metrics struct {
	// Listen is host:port, plain HTTP ("127.0.0.1:9433").
	Listen Text `yaml:"listen"`
	// Grant is a pattern expression of the addresses that may connect
	// (addresses and networks only, like admin.grant); default loopback.
	Grant Text `yaml:"grant"`
}

// On reports whether the metrics listener is configured.
func (m Metrics) On() bool { return m.Listen.IsSet() && m.Listen.Value != "" }

func (f *File) validateMetrics(d *decoder) {
	m := f.Metrics
	if m.Listen.IsSet() {
		if err := parseListen(m.Listen.Value); err != nil {
			d.errs.Add(diag.Errorf(m.Listen.Pos, "metrics.listen: %v", err))
		}
	}
	if m.Grant.IsSet() && !m.On() {
		d.errs.Add(diag.Errorf(m.Grant.Pos, "metrics.grant needs metrics.listen"))
	}
}
