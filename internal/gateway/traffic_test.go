package gateway

import (
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/service"
)

// The dashboard's rates are the counts of the last minute over its
// length: samples older than a minute no longer count.
func TestTrafficRatesOverTheLastMinute(t *testing.T) {
	m := metrics.New()
	now := time.Unix(1_000_000, 0)
	tr := newTraffic(m, func() time.Time { return now }, func() []service.Service { return []service.Service{service.IMAP, service.Web} })
	for range 30 {
		m.Connection(service.IMAP, guard.ConnAccepted)
	}
	m.Login(service.IMAP, guard.LoginFailed)
	m.Login(service.IMAP, guard.LoginRestricted)
	m.Login(service.IMAP, guard.LoginOK)
	m.Connection(service.IMAP, guard.ConnRefusedBlock) // refused: not admitted
	now = now.Add(10 * time.Second)
	got := tr.Traffic()
	if len(got) != 2 || got[0].Service != "imap" || got[1].Service != "web" {
		t.Fatalf("services: %+v", got)
	}
	if g := got[0]; g.Connections != 30 || g.ConnectionsPerS != 3 || g.LoginsFailed != 2 || g.LoginsFailedPerS != 0.2 || g.LoginsOK != 1 || g.Window != 10 {
		t.Fatalf("imap after 10 s: %+v", g)
	}
	if g := got[1]; g.Connections != 0 || g.ConnectionsPerS != 0 {
		t.Fatalf("web: %+v", g)
	}
	// a sample every 5 s for 70 s: the first 30 connections fall out of
	// the window, the 12 made since count over one minute
	for i := range 14 {
		if i >= 2 {
			m.Connection(service.IMAP, guard.ConnAccepted)
		}
		now = now.Add(5 * time.Second)
		tr.sample()
	}
	g := tr.Traffic()[0]
	if g.Window != 60 || g.Connections != 12 || g.ConnectionsPerS != 0.2 || g.LoginsFailed != 0 {
		t.Fatalf("imap after the window moved: %+v", g)
	}
	if len(tr.samples) != trafficKeep {
		t.Fatalf("%d samples kept, want %d", len(tr.samples), trafficKeep)
	}
}
