package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/postern/postern/internal/console"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/service"
)

// The console dashboard's rates: the metrics' totals are sampled every
// trafficEvery and a rate is the difference between now and the oldest
// sample of the last trafficWindow.
const (
	trafficEvery  = 5 * time.Second
	trafficWindow = time.Minute
	trafficKeep   = int(trafficWindow/trafficEvery) + 1
)

// trafficTotals is one sample: each service's totals.
type trafficTotals struct {
	at     time.Time
	counts [service.Count][3]uint64 // admitted, logins ok, logins failed
}

// traffic turns the metrics' totals into the dashboard's rates per
// service. The engine counts into the metrics as it does for a scrape;
// nothing is added to the accept path.
type traffic struct {
	m        *metrics.Metrics
	now      func() time.Time
	services func() []service.Service // the services shown

	mu      sync.Mutex
	samples []trafficTotals // oldest first, at most trafficKeep
}

func newTraffic(m *metrics.Metrics, now func() time.Time, services func() []service.Service) *traffic {
	t := &traffic{m: m, now: now, services: services}
	t.sample()
	return t
}

func (t *traffic) read() trafficTotals {
	s := trafficTotals{at: t.now()}
	for svc := service.SMTP; int(svc) < service.Count; svc++ {
		a, ok, f := t.m.Counts(svc)
		s.counts[svc] = [3]uint64{a, ok, f}
	}
	return s
}

// sample records the totals as they are now.
func (t *traffic) sample() {
	s := t.read()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.samples) == trafficKeep {
		t.samples = append(t.samples[:0], t.samples[1:]...)
	}
	t.samples = append(t.samples, s)
}

// run samples until ctx is done.
func (t *traffic) run(ctx context.Context) {
	tk := time.NewTicker(trafficEvery)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.sample()
		}
	}
}

// Traffic implements console.Traffic: the counts since the oldest sample
// of the last minute, and their rates per second.
func (t *traffic) Traffic() []console.ServiceTraffic {
	cur := t.read()
	t.mu.Lock()
	base := t.samples[0]
	for _, s := range t.samples {
		if cur.at.Sub(s.at) <= trafficWindow {
			base = s
			break
		}
	}
	t.mu.Unlock()
	window := cur.at.Sub(base.at)
	secs := max(window.Seconds(), 1) // a rate over less than a second says little
	var out []console.ServiceTraffic
	for _, svc := range t.services() {
		d := func(i int) uint64 { return cur.counts[svc][i] - base.counts[svc][i] }
		out = append(out, console.ServiceTraffic{
			Service:          svc.String(),
			Window:           window.Seconds(),
			Connections:      d(0),
			LoginsOK:         d(1),
			LoginsFailed:     d(2),
			ConnectionsPerS:  float64(d(0)) / secs,
			LoginsOKPerS:     float64(d(1)) / secs,
			LoginsFailedPerS: float64(d(2)) / secs,
		})
	}
	return out
}

// ensureMetrics makes the counters the console's dashboard reads when
// metrics are off: the same counters, with no listener.
func (g *Gateway) ensureMetrics() {
	if g.obs.m == nil {
		g.obs.m = metrics.New()
	}
}

// trafficServices is the services of the running configuration, in the
// order of service.All, and the console's sign-ins.
func (g *Gateway) trafficServices() []service.Service {
	cfg := g.holder.Load().Config
	var out []service.Service
	for _, svc := range service.All {
		if cfg.Services[svc] != nil {
			out = append(out, svc)
		}
	}
	return append(out, service.Console)
}
