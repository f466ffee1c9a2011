package gateway

import (
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/webproxy"
)

// measureWeb has a web service count the bytes its backend connections
// carry and its failed TLS handshakes with clients, when metrics are on.
func (g *Gateway) measureWeb(cfg *webproxy.Config) {
	m := g.obs.m
	if m == nil {
		return
	}
	svc := cfg.Service
	cfg.Relayed = func(toBackend, toClient int64) {
		m.Relayed(svc, metrics.DirToBackend, toBackend)
		m.Relayed(svc, metrics.DirToClient, toClient)
	}
	if cfg.TLS != nil {
		cfg.HandshakeFailed = g.handshakeFailed(svc)
	}
}
